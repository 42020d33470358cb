"""`make bench` machinery (sim/bench.py, tb/cocotb/test_bench.py) on a short run:
two patterns, two dtypes and a few frames produce the JSON with accepted fractions in
(0, 1], checked RESULTs and the simulation speed; and a RESULT corrupted on its way to the checker (the test
hook flips one payload bit) is reported as a mismatch and fails the run.

The parameter set is the default, as `make bench` runs it, whose Verilator model the RTL
regression builds anyway, so this adds no simulator build of its own. Both runs share one
cocotb output directory, so they run one after the other in one test.
"""

import json

import pytest

from aggswitch import Params
from sim import bench
from sim.toolchain import available_simulators
from tests.groups import model

SIMS = available_simulators()
DEFAULT = Params()


def _param_args(p):
    return ["--ports", str(p.ports), "--data-width", str(p.data_width), "--slots",
            str(p.slots), "--slot-elems", str(p.slot_elems), "--jobs", str(p.jobs)]


@pytest.mark.skipif(not SIMS, reason="no simulator available")
@model(DEFAULT)
def test_bench_small(tmp_path, capsys):
    sim = SIMS[0]
    base = ["--sim", sim, "--stall", "1500", "--seed", "3"] + _param_args(DEFAULT)

    # --- a clean run: two patterns x two dtypes
    out = tmp_path / "clean"
    rc = bench.main(base + ["--frames", "10", "--patterns", "lockstep,stalled_port",
                            "--dtypes", "int32,mxint8", "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    data = json.loads((out / "bench.json").read_text())
    runs = {(r["pattern"], r["dtype"]): r for r in data["runs"]}
    assert set(runs) == {(p, d) for p in ("lockstep", "stalled_port") for d in ("int32", "mxint8")}
    for r in runs.values():
        assert 0 < r["accepted"] <= 1, r
        assert 0 < r["presented"] <= 1, r
        kinds = r["by_outcome"].values()
        beats, stalls = sum(k["beats"] for k in kinds), sum(k["stalls"] for k in kinds)
        assert stalls == r["stall_cycles"] and r["presented"] == beats / (beats + stalls), r
        assert r["accepted_of_presented"] <= r["presented"], r
        assert all(0 <= x <= 1 for x in r["per_port"]), r
        assert r["results_checked"] > 0 and r["mismatches"] == 0 and not r["errors"], r
        assert r["latency"]["min"] >= data["latency_documented"], r
        # the run's speed: at least the cycles the traffic took, over its wall time
        assert r["sim_cycles"] >= r["cycles"] > 0 and r["cycles_per_second"] > 0, r
    s = runs[("stalled_port", "int32")]["stall"]
    assert s["port"] == DEFAULT.ports - 1 and 0 < s["others_accepted"] <= 1
    assert "rx" in s["counters_at_stall_end"]
    assert data["mismatches"] == 0 and data["passed"]
    assert "lockstep" in text and "PASS" in text
    sp = data["sim_speed"]
    assert sp["sim_cycles"] == sum(r["sim_cycles"] for r in runs.values())
    assert sp["cycles_per_second"] > 0 and "cycles/s" in text
    try:
        import matplotlib  # noqa: F401
        assert (out / "bench.png").stat().st_size > 0
    except ImportError:
        pass

    # --- one flipped bit in the checker's copy of the first RESULT: reported, run fails
    out = tmp_path / "flip"
    # (a few frames: only the first RESULT is flipped)
    rc = bench.main(base + ["--frames", "3", "--patterns", "lockstep", "--dtypes", "int32",
                            "--out", str(out), "--flip-result", "1"])
    text = capsys.readouterr().out
    assert rc == 1, text
    data = json.loads((out / "bench.json").read_text())
    assert data["mismatches"] == 1 and not data["passed"]
    (run,) = data["runs"]
    assert any("differs" in e for e in run["errors"]), run["errors"]
    assert "FAIL" in text


def _record(port, t_first, seq, outcome, *, stalls=0, retx=False, beat_bytes=64):
    """An ingress record as the harness keeps it: a full INT32 frame of 16 elements
    (64 + 64 bytes: two beats at 64 bytes) and the golden model's outcome."""
    from tb.cocotb.harness import IngressRecord
    from tb.model import frames as F
    data = F.data_frame(worker_mac=0x020000000001 + port, worker_ip=0x0A000001 + port,
                        worker_port=5000, job=0, slot=0, worker=port, seq=seq,
                        dtype=F.INT32, count=16, scale=0, payload=F.int32_payload(range(16)),
                        retx=retx)
    beats = -(-len(data) // beat_bytes)
    return IngressRecord(port=port, t_last=t_first + beats + stalls - 1, data=data,
                         tkeep_ok=True, exact=False, outcome=outcome, t_first=t_first,
                         stalls=stalls)


def test_presented_counts_dropped_frames_as_taken():
    """"Of presented" is the switch's share of the cycles in which a host held tvalid high:
    the beats it took over those beats plus the cycles it held tready low. A duplicate
    that the switch takes at line rate and then drops (SPEC §5) is not back-pressure: with
    no stall cycle the figure is 1.0 whatever the outcomes (the bench once divided only the
    accepted frames' beats by the presented cycles and reported loss as 8 % back-pressure),
    and each stall cycle counts against it."""
    from tb.cocotb.test_bench import window_metrics
    from tb.model import frames as F
    from tb.model.switch import Outcome
    new, join = Outcome(action="new"), Outcome(action="join", completed=True)
    dup = Outcome(drop=F.DUPLICATE)
    recs = [_record(0, 0, 1, new), _record(1, 0, 1, join),
            _record(0, 2, 1, dup, retx=True), _record(1, 2, 1, Outcome(action="resend"), retx=True),
            _record(0, 8, 2, new), _record(1, 8, 2, join)]    # the window ends with these
    m = window_metrics(recs, [0, 1], 64)
    assert m["presented"] == 1.0
    assert m["window_cycles"] == 10
    assert m["stall_cycles"] == 0 and m["dropped_beats"] == 2
    assert m["accepted_of_presented"] == 10 / 12
    assert m["by_outcome"]["duplicate"] == {"frames": 1, "beats": 2, "stalls": 0}
    assert m["by_outcome"]["resend_retx"]["frames"] == 1
    # three cycles of tready low during the duplicate: 12 beats over 15 cycles
    recs[2] = _record(0, 2, 1, dup, stalls=3, retx=True)
    m = window_metrics(recs, [0, 1], 64)
    assert m["stall_cycles"] == 3 and m["presented"] == 12 / 15
    assert m["by_outcome"]["duplicate"]["stalls"] == 3
