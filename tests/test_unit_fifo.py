"""BlockRAMFIFO (fifo.py): Amaranth's SyncFIFOBuffered with its storage marked for block
RAM. It must behave exactly as SyncFIFOBuffered, cycle by cycle, and Yosys must put its
storage in ECP5 block RAM without the bypass logic a read-during-write would need."""

import random
import shutil
import subprocess

import pytest
from amaranth import Elaboratable, Module
from amaranth.back import verilog
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.sim import Simulator

from aggswitch.fifo import BlockRAMFIFO

YOSYS = shutil.which("yosys")


class Pair(Elaboratable):
    def __init__(self, width, depth):
        self.ref = SyncFIFOBuffered(width=width, depth=depth)
        self.dut = BlockRAMFIFO(width=width, depth=depth)

    def elaborate(self, platform):
        m = Module()
        m.submodules.ref = self.ref
        m.submodules.dut = self.dut
        return m


@pytest.mark.parametrize("depth", [1, 2, 5, 32])
def test_block_ram_fifo_is_sync_fifo_buffered(depth):
    """Random pushes and pops, the same on both: every output equal in every cycle."""
    top = Pair(12, depth)
    rng = random.Random(depth)
    errors = []

    async def bench(ctx):
        for cycle in range(600):
            w_en, r_en, data = rng.random() < 0.6, rng.random() < 0.5, rng.getrandbits(12)
            for f in (top.ref, top.dut):
                ctx.set(f.w_en, w_en)
                ctx.set(f.r_en, r_en)
                ctx.set(f.w_data, data)
            for name in ("r_rdy", "w_rdy", "level"):
                a, b = ctx.get(getattr(top.ref, name)), ctx.get(getattr(top.dut, name))
                if a != b:
                    errors.append(f"cycle {cycle}: {name} {b}, SyncFIFOBuffered {a}")
            if ctx.get(top.ref.r_rdy) and ctx.get(top.ref.r_data) != ctx.get(top.dut.r_data):
                errors.append(f"cycle {cycle}: r_data differs")
            await ctx.tick()

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert not errors, errors[:4]


@pytest.mark.skipif(YOSYS is None, reason="yosys not installed")
@pytest.mark.parametrize("width", [40, 304])
def test_block_ram_fifo_maps_to_block_ram(width, tmp_path):
    """32 entries deep, as the egress queues: block RAM, no LUT RAM, and fewer flip-flops
    than data bits (a bypass for a read of the address being written would register the
    write data: 103 flip-flops at width 40 without `no_rw_check`)."""
    fifo = BlockRAMFIFO(width=width, depth=32)
    rtl = tmp_path / "fifo.v"
    rtl.write_text(verilog.convert(fifo, name="fifo", ports=[
        fifo.w_data, fifo.w_en, fifo.w_rdy, fifo.r_data, fifo.r_en, fifo.r_rdy]))
    stat = tmp_path / "stat.txt"
    subprocess.run([YOSYS, "-q", "-p", f"read_verilog {rtl}; synth_ecp5 -top fifo; "
                    f"tee -q -o {stat} stat"], check=True)
    cells = {}
    for line in stat.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            cells[parts[0]] = int(parts[1])
    assert cells.get("DP16KD", 0) >= 1, cells
    assert cells.get("TRELLIS_DPR16X4", 0) == 0, cells
    assert cells.get("TRELLIS_FF", 0) < width, cells
