"""Simulation speed of the model alone: the clock toggling and nothing else (no bus
models, no monitor, no scoreboard), so the figure is the simulator's and cocotb's own
cost per cycle. `make sim IDLE_SPEED=1` runs it (sim/allreduce.py --idle-speed) and prints
the figure; the README quotes it.

The test releases reset, waits until every ingress port is ready (the switch has
initialised its slots) and then lets AGGSWITCH_IDLE_CYCLES cycles (default 100,000) pass
with one `ClockCycles` trigger, timing them with the wall clock. It checks that the switch
stayed idle meanwhile (no egress tvalid, every ingress port still ready), which also
shows that the cycles were simulated. Writes $AGGSWITCH_OUT_DIR/idle_speed.json.
"""

import json
import os
import time
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge

from tb.cocotb.harness import CLK_PERIOD_NS, params_from_env


@cocotb.test(timeout_time=1000, timeout_unit="ms")
async def test_idle_speed(dut):
    p = params_from_env()
    cycles = int(os.environ.get("AGGSWITCH_IDLE_CYCLES", "100000"))
    Clock(dut.clk, CLK_PERIOD_NS, unit="ns").start()
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

    t0 = time.perf_counter()
    await ClockCycles(dut.clk, cycles)
    seconds = time.perf_counter() - t0

    assert all(str(r.value) == "1" for r in ready), "an ingress port dropped tready while idle"
    assert all(str(v.value) == "0" for v in valid), "an egress port raised tvalid while idle"
    speed = cycles / seconds
    summary = {"params": p.name(), "sim": os.environ.get("AGGSWITCH_SIM", "?"),
               "cycles": cycles, "seconds": seconds, "cycles_per_second": speed}
    out = Path(os.environ.get("AGGSWITCH_OUT_DIR", "."))
    out.mkdir(parents=True, exist_ok=True)
    (out / "idle_speed.json").write_text(json.dumps(summary, indent=2) + "\n")
    dut._log.info("idle speed: %d cycles in %.2f s, %.0f cycles/s", cycles, seconds, speed)
