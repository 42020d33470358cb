"""`make sim IDLE_SPEED=1` (sim/allreduce.py --idle-speed, tb/cocotb/test_speed.py): the
idle model's speed under cocotb. Run at the small parameter set, whose Verilator model the
RTL regression builds anyway, with few cycles: the figure must be a positive speed over
exactly the cycles asked for, and the test itself checks that the switch stayed idle
(every ingress port ready, no egress tvalid); likewise the cost-per-cycle stages that
follow it (test_cost_per_cycle). No timing is asserted: speed is a benchmark's figure, not
a pass criterion."""

import json

import pytest

from sim import allreduce
from sim.runner import out_dir_for
from sim.toolchain import available_simulators
from tb.cocotb.harness import CLK_PERIOD_NS
from tests.groups import model
from tests.test_rtl import SMALL

SIMS = available_simulators()


def _args(p, cycles):
    return ["--sim", "verilator", "--idle-speed", "1", "--idle-cycles", str(cycles),
            "--ports", str(p.ports), "--data-width", str(p.data_width), "--slots",
            str(p.slots), "--slot-elems", str(p.slot_elems), "--jobs", str(p.jobs)]


@pytest.mark.skipif("verilator" not in SIMS, reason="Verilator not installed")
@model(SMALL)
def test_idle_speed_reports(capsys):
    assert allreduce.main(_args(SMALL, 3000)) == 0
    out = capsys.readouterr().out
    assert "idle speed" in out and "PASS" in out, out
    s = json.loads((out_dir_for(SMALL, "verilator", "tb.cocotb.test_speed", "test_idle_speed")
                    / "idle_speed.json").read_text())
    assert s["cycles"] == 3000 and s["seconds"] > 0 and s["cycles_per_second"] > 0, s
    assert s["sim_ns"] == 3000 * CLK_PERIOD_NS, s       # the window is exactly those cycles
    assert s["params"] == SMALL.name()
    # the cost breakdown that follows it: four stages over exactly the cycles asked for
    assert "cost per cycle" in out, out
    c = json.loads((out_dir_for(SMALL, "verilator", "tb.cocotb.test_speed", "test_cost_per_cycle")
                    / "cost_per_cycle.json").read_text())
    assert c["params"] == SMALL.name() and len(c["stages"]) == 4, c
    assert all(st["cycles"] == 3000 and st["cpu_seconds"] > 0 for st in c["stages"]), c
