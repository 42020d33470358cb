"""Simulation speed of the model alone: the clock toggling and nothing else (no bus
models, no monitor, no scoreboard), so the figure is the simulator's and cocotb's own
cost per cycle. `make sim IDLE_SPEED=1` runs it (sim/allreduce.py --idle-speed) and prints
the figure; the README quotes it.

The test releases reset, waits until every ingress port is ready (the switch has
initialised its slots) and then lets AGGSWITCH_IDLE_CYCLES cycles (default 100,000) pass
with cocotb's C++ clock and one `Timer`, timing them with the wall clock: no Python runs
in the measured window. It checks that the switch
stayed idle meanwhile (no egress tvalid, every ingress port still ready), which also
shows that the cycles were simulated. Writes $AGGSWITCH_OUT_DIR/idle_speed.json.

test_cost_per_cycle measures what the bus traffic of a busy cycle adds to that, without
any testbench logic (sim/allreduce.py --idle-speed runs it after test_idle_speed).
"""

import json
import os
import time
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, RisingEdge, Timer, with_timeout
from cocotb.utils import get_sim_time

from tb.cocotb.harness import CLK_PERIOD_NS, params_from_env


@cocotb.test(timeout_time=1000, timeout_unit="ms")
async def test_idle_speed(dut):
    p = params_from_env()
    cycles = int(os.environ.get("AGGSWITCH_IDLE_CYCLES", "100000"))
    clock = Clock(dut.clk, CLK_PERIOD_NS, unit="ns")
    clock.start()
    ready = [getattr(dut, f"s{n}_axis_tready") for n in range(p.ports)]
    valid = [getattr(dut, f"m{n}_axis_tvalid") for n in range(p.ports)]
    for n in range(p.ports):
        getattr(dut, f"s{n}_axis_tvalid").value = 0
        getattr(dut, f"m{n}_axis_tready").value = 1
    dut.s_axil_awvalid.value = 0
    dut.s_axil_wvalid.value = 0
    dut.s_axil_arvalid.value = 0
    dut.s_axil_bready.value = 0
    dut.s_axil_rready.value = 0
    dut.rst.value = 1
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    for _ in range(4 * p.slots + 500):
        await RisingEdge(dut.clk)
        if all(str(r.value) == "1" for r in ready):
            break
    else:
        raise AssertionError("ingress ports not ready after reset")

    # The measured window runs no Python at all: cocotb's C++ clock (GPI) toggles the
    # clock and one Timer ends the window, so the figure is the model's and cocotb's own
    # scheduling. (With cocotb's Python clock and a ClockCycles count, three Python wake-ups
    # a cycle: test_cost_per_cycle's first stage, below.)
    await FallingEdge(dut.clk)
    clock.stop()
    Clock(dut.clk, CLK_PERIOD_NS, unit="ns", impl="gpi").start(start_high=False)
    t0, ns0 = time.perf_counter(), get_sim_time("ns")
    await Timer(cycles * CLK_PERIOD_NS, "ns")
    seconds = time.perf_counter() - t0
    sim_ns = get_sim_time("ns") - ns0
    # the C++ clock is running: two more rising edges within two periods
    await with_timeout(ClockCycles(dut.clk, 2), 2 * CLK_PERIOD_NS + 1, "ns")

    assert all(str(r.value) == "1" for r in ready), "an ingress port dropped tready while idle"
    assert all(str(v.value) == "0" for v in valid), "an egress port raised tvalid while idle"
    speed = cycles / seconds
    summary = {"params": p.name(), "sim": os.environ.get("AGGSWITCH_SIM", "?"),
               "cycles": cycles, "sim_ns": sim_ns, "seconds": seconds,
               "cycles_per_second": speed, "clock": "cocotb C++ (GPI) clock, one Timer"}
    out = Path(os.environ.get("AGGSWITCH_OUT_DIR", "."))
    out.mkdir(parents=True, exist_ok=True)
    (out / "idle_speed.json").write_text(json.dumps(summary, indent=2) + "\n")
    dut._log.info("idle speed: %d cycles in %.2f s, %.0f cycles/s", cycles, seconds, speed)


@cocotb.test(timeout_time=1000, timeout_unit="ms")
async def test_cost_per_cycle(dut):
    """Where a busy cycle of `make sim` goes, apart from the testbench's own logic: the
    idle switch simulated AGGSWITCH_IDLE_CYCLES cycles at a time, first with the clock
    only, then with one coroutine resumed at every rising edge, then that coroutine also
    writing every ingress port's tdata (a new value each cycle, as a busy source does; tvalid
    stays low, so the switch stays idle), then also reading every egress port's tvalid,
    tready, tdata, tkeep and tlast (the reads of a busy monitor cycle, raw as the harness
    reads them). Each stage is timed in CPU seconds of this process (the simulator runs in
    it) and in wall seconds; the differences between stages are what each costs per cycle.
    Checks that the switch stayed idle; writes $AGGSWITCH_OUT_DIR/cost_per_cycle.json."""
    from tb.cocotb.harness import raw_reader, raw_writer
    p = params_from_env()
    cycles = int(os.environ.get("AGGSWITCH_IDLE_CYCLES", "100000"))
    clock = Clock(dut.clk, CLK_PERIOD_NS, unit="ns")
    clock.start()
    ready = [getattr(dut, f"s{n}_axis_tready") for n in range(p.ports)]
    valid = [getattr(dut, f"m{n}_axis_tvalid") for n in range(p.ports)]
    for n in range(p.ports):
        getattr(dut, f"s{n}_axis_tvalid").value = 0
        getattr(dut, f"m{n}_axis_tready").value = 1
    for s in ("awvalid", "wvalid", "arvalid", "bready", "rready"):
        getattr(dut, f"s_axil_{s}").value = 0
    dut.rst.value = 1
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 4 * p.slots + 500)
    edge = RisingEdge(dut.clk)
    writers = [raw_writer(getattr(dut, f"s{n}_axis_tdata")) for n in range(p.ports)]
    readers = [raw_reader(getattr(dut, f"m{n}_axis_{s}")) for n in range(p.ports)
               for s in ("tvalid", "tready", "tdata", "tkeep", "tlast")]
    mask = (1 << p.data_width) - 1

    async def clock_only():
        await ClockCycles(dut.clk, cycles)

    async def one_coroutine():
        for _ in range(cycles):
            await edge

    async def ingress_writes():
        for i in range(cycles):
            await edge
            v = (i * 0x9E3779B97F4A7C15) & mask
            for w in writers:
                w(v)

    async def writes_and_reads():
        for i in range(cycles):
            await edge
            v = (i * 0x9E3779B97F4A7C15) & mask
            for w in writers:
                w(v)
            for r in readers:
                r()

    stages = []
    for name, body in (("clock only", clock_only),
                       ("one coroutine resumed per cycle", one_coroutine),
                       (f"+ {p.ports} ingress tdata writes per cycle", ingress_writes),
                       (f"+ {len(readers)} egress reads per cycle", writes_and_reads)):
        c0, t0 = time.process_time(), time.perf_counter()
        await body()
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
        stages.append({"stage": name, "cycles": cycles, "cpu_seconds": cpu,
                       "wall_seconds": wall, "us_per_cycle_cpu": 1e6 * cpu / cycles})
        dut._log.info("%-40s %7.1f us/cycle (CPU), %7.1f us/cycle (wall)", name,
                      1e6 * cpu / cycles, 1e6 * wall / cycles)
    assert all(str(r.value) == "1" for r in ready), "an ingress port dropped tready while idle"
    assert all(str(v.value) == "0" for v in valid), "an egress port raised tvalid while idle"
    out = Path(os.environ.get("AGGSWITCH_OUT_DIR", "."))
    out.mkdir(parents=True, exist_ok=True)
    (out / "cost_per_cycle.json").write_text(json.dumps(
        {"params": p.name(), "sim": os.environ.get("AGGSWITCH_SIM", "?"), "stages": stages},
        indent=2) + "\n")
