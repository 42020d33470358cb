"""Simulate an Amaranth block over a stream of input vectors, for the unit tests of the
numeric conversion blocks (tests/test_unit_numerics_rtl.py): in Icarus Verilog on the
block's own Verilog export when Icarus is installed, in Amaranth's simulator otherwise.
Both apply the same vectors at the same clock edges and sample the same outputs; Icarus
evaluates those blocks about 50 times faster, and an X or Z on a sampled output fails the
run there."""

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from amaranth import Cat, Elaboratable, Module, Signal
from amaranth.sim import Simulator

__all__ = ["Packed", "simulate"]


class Packed(Elaboratable):
    """Drives the DUT's input ports from slices of one wide signal, in the order given."""

    def __init__(self, dut, ports):
        self.dut = dut
        self.ports = ports
        self.widths = [len(p) for p in ports]
        self.signed = [p.shape().signed for p in ports]
        self.inp = Signal(sum(self.widths))

    def pack(self, values):
        assert len(values) == len(self.widths), "a test vector needs a value for every port"
        word, off = 0, 0
        for v, w, sg in zip(values, self.widths, self.signed):
            lo, hi = (-(1 << (w - 1)), 1 << (w - 1)) if sg else (0, 1 << w)
            assert lo <= v < hi, f"test vector value {v} does not fit the port"  # no silent wrap
            word |= (v & ((1 << w) - 1)) << off
            off += w
        return word

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = self.dut
        off = 0
        for p, w in zip(self.ports, self.widths):
            m.d.comb += p.eq(self.inp[off:off + w])
            off += w
        return m


def simulate(dut, ports, outputs, vectors, latency=0):
    """Apply each vector (a tuple of ints, one per port of `ports`) and sample `outputs`
    (signals of the block, each an int as `ctx.get` returns it): for a combinational block
    (`latency` 0) once the vector has settled, for a clocked one after `latency` rising
    edges with the vector held. With `latency` 1 this is a stream: one vector a cycle, the
    outputs sampled after each edge."""
    top = Packed(dut, ports)
    words = [top.pack(v) for v in vectors]
    if shutil.which("iverilog") and shutil.which("vvp"):
        return _simulate_icarus(top, outputs, words, latency)
    results = []

    async def bench(ctx):
        for w in words:
            ctx.set(top.inp, w)
            for _ in range(latency):
                await ctx.tick()
            results.append(tuple(ctx.get(o) for o in outputs))

    sim = Simulator(top)
    if latency:
        sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return results


class _Probe(Elaboratable):
    """`Packed` with the sampled outputs gathered into one output port."""

    def __init__(self, top, outputs):
        self.top = top
        self.outputs = outputs
        self.inp = Signal(len(top.inp))
        self.out = Signal(sum(len(o) for o in outputs))

    def elaborate(self, platform):
        m = Module()
        m.submodules.top = self.top
        m.d.comb += [self.top.inp.eq(self.inp), self.out.eq(Cat(*self.outputs))]
        return m


def _simulate_icarus(top, outputs, words, latency):
    """`simulate` in Icarus: the vectors go in through $readmemh, one per `latency` clock
    cycles (or 1 ns for a combinational block), and the outputs come back as hex lines."""
    from amaranth.back import verilog
    probe = _Probe(top, outputs)
    text = verilog.convert(probe, name="dut", ports=[probe.inp, probe.out])
    clocked = re.search(r"^\s*input\s+(wire\s+)?clk\s*;", text, re.M) is not None
    assert clocked == bool(latency), "a block with registers needs a latency, and only it"
    n_in, n_out = len(probe.inp), len(probe.out)
    # the inputs settle for 1 ns before each rising edge, and the outputs 1 ns after
    step = "#1 clk = 1; #1 clk = 0; " * latency + "#1 "
    bench = f"""module bench;
  reg clk = 0;
  reg [{n_in - 1}:0] inp;
  wire [{n_out - 1}:0] out;
  reg [{n_in - 1}:0] vectors [0:{len(words) - 1}];
  integer i, f;
  dut dut(.inp(inp), .out(out){", .clk(clk), .rst(1'b0)" if clocked else ""});
  initial begin
    $readmemh("vectors.hex", vectors);
    f = $fopen("outputs.hex", "w");
    for (i = 0; i < {len(words)}; i = i + 1) begin
      inp = vectors[i];
      {step}$fwrite(f, "%h\\n", out);
    end
    $fclose(f);
    $finish;
  end
endmodule
"""
    with tempfile.TemporaryDirectory(prefix="numerics_") as tmp:
        d = Path(tmp)
        (d / "dut.v").write_text(text)
        (d / "bench.v").write_text(bench)
        (d / "vectors.hex").write_text("".join(f"{w:x}\n" for w in words))
        subprocess.run(["iverilog", "-o", "bench.vvp", "-s", "bench", "bench.v", "dut.v"],
                       cwd=d, check=True, capture_output=True, timeout=120)
        subprocess.run(["vvp", "-n", "bench.vvp"], cwd=d, check=True, capture_output=True,
                       timeout=600)
        lines = (d / "outputs.hex").read_text().split()
    assert len(lines) == len(words), f"{len(lines)} outputs for {len(words)} vectors"
    results = []
    for line in lines:
        word = int(line, 16)        # an x or z digit raises: the block left a bit undriven
        values = []
        for o in outputs:
            v = word & ((1 << len(o)) - 1)
            word >>= len(o)
            if o.shape().signed and v >> (len(o) - 1):
                v -= 1 << len(o)
            values.append(v)
        results.append(tuple(values))
    return results
