"""The pyuvm environment (tb/uvm/) in simulation: the short subset `make test` runs. The
full random regression is `make regress` (sim/regress.py).

- test_uvm_determinism: the same seed gives the identical cycle-stamped transcript of every
  egress (and ingress) frame twice on Verilator and once on Icarus (small parameter set;
  transcripts under build/determinism/, a readable diff on failure). With one simulator
  installed, twice on it.
- test_uvm_default_params: one random seed with the default parameters on Verilator (the
  default set is slow on Icarus: `make regress SIM=icarus` covers it).
- test_uvm_max_loss: 20 % DATA and 20 % RESULT loss, on each simulator.
- test_uvm_watchdog: hosts that do not retransmit cannot finish a lossy run, and the
  environment says so (its liveness check can fail).

Each run's outputs (log, uvm_summary.json, coverage report, transcripts) are in
sim/out/<params>/<sim>/test_uvm/<test>/.
"""

import difflib
import json
import shutil
from pathlib import Path

import pytest

from aggswitch import Params
from sim.runner import build_and_run, out_dir_for
from sim.toolchain import available_simulators
from tests.groups import model

REPO = Path(__file__).resolve().parent.parent
MODULE = "tb.uvm.test_uvm"
SIMS = available_simulators()
SMALL = Params(ports=2, data_width=128, slots=8, slot_elems=32, jobs=2)
DET_ROOT = REPO / "build" / "determinism"
DET_SEED = 3
TRANSCRIPTS = ("transcript_egress.txt", "transcript_ingress.txt")

needs_verilator = pytest.mark.skipif("verilator" not in SIMS, reason="Verilator not installed")


def run(params, sim, test, seed, **knobs):
    env = {f"AGGSWITCH_UVM_{k.upper()}": v for k, v in knobs.items()}
    res = build_and_run(params, sim, MODULE, testcase=test, seed=seed, extra_env=env)
    return res, out_dir_for(params, sim, MODULE, test)


def summary(out: Path) -> dict:
    f = out / "uvm_summary.json"
    return json.loads(f.read_text()) if f.exists() else {}


@pytest.mark.skipif(not SIMS, reason="no simulator installed")
@model(SMALL)
def test_uvm_determinism():
    runs = [(SIMS[0], 1), (SIMS[0], 2)] + [(sim, 1) for sim in SIMS[1:]]
    base = DET_ROOT / SMALL.name() / f"seed-{DET_SEED}"
    shutil.rmtree(base, ignore_errors=True)
    dirs = []
    for sim, n in runs:
        res, out = run(SMALL, sim, "UvmRandomTest", DET_SEED)
        assert res.ok, res.summary()
        d = base / f"{sim}-{n}"
        d.mkdir(parents=True)
        for name in TRANSCRIPTS:
            shutil.copy(out / name, d / name)
        dirs.append(d)
    ref = dirs[0]
    for d in dirs[1:]:
        for name in TRANSCRIPTS:
            a, b = (ref / name).read_text().splitlines(), (d / name).read_text().splitlines()
            if a != b:
                diff = list(difflib.unified_diff(a, b, str(ref / name), str(d / name),
                                                 lineterm="", n=2))
                shown = "\n".join(diff[:60]) + ("\n..." if len(diff) > 60 else "")
                pytest.fail(f"seed {DET_SEED}: {name} differs between {ref.name} and {d.name} "
                            f"({len(a)} vs {len(b)} lines):\n{shown}", pytrace=False)
    assert len((ref / TRANSCRIPTS[0]).read_text().splitlines()) > 20


@needs_verilator
@model(Params())
def test_uvm_default_params():
    res, out = run(Params(), "verilator", "UvmRandomTest", 1, chunks=24)
    assert res.ok, res.summary()
    s = summary(out)
    assert s["passed"] and s["latency"].get("idle_exact", 0) >= 2, s.get("latency")


@pytest.mark.skipif(not SIMS, reason="no simulator installed")
@pytest.mark.parametrize("sim", [pytest.param(s, marks=model(SMALL)) if s == "verilator"
                                 else s for s in SIMS or ["none"]])
def test_uvm_max_loss(sim):
    res, out = run(SMALL, sim, "UvmLossTest", 2)
    assert res.ok, res.summary()
    s = summary(out)
    assert s["data_lost"] > 0 and s["results_lost"] > 0, s
    assert s["outcomes"].get("resend", 0) > 0, s["outcomes"]


@pytest.mark.skipif(not SIMS, reason="no simulator installed")
@model(SMALL)
def test_uvm_watchdog():
    """Without retransmissions, lost frames are never repaired: the run must fail (cocotb
    expects the failure), on the watchdog, naming the chunks that never got a RESULT."""
    res, out = run(SMALL, SIMS[0], "UvmNoRetransmitTest", 4)
    assert res.ok, res.summary()
    s = summary(out)
    assert not s["passed"], s
    assert any("watchdog" in e for e in s["first_errors"]), s["first_errors"]
    assert any("no RESULT for chunks" in e for e in s["first_errors"]), s["first_errors"]
