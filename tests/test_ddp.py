"""The PyTorch DDP communication hook (aggswitch.worker.ddp) end to end: the example
examples/ddp_train.py trains for a few steps with 2 ranks in the system Python (Debian's
python3-torch and python3-sklearn; $AGGSWITCH_TORCH_PYTHON overrides /usr/bin/python3),
every gradient bucket all-reduced through the simulated RTL (`make serve`, started here on
ephemeral loopback ports). Every bucket must equal the golden model's answer bit for bit
(for INT32 also gloo's exact int64 sum of the quantised gradients), stay within the
dtype's rounding of gloo's float all-reduce, and leave identical parameters on both ranks;
the FP32 run loses 5 % of the frames on the way."""

import json
import os
import subprocess

import pytest

from aggswitch import Params
from sim.runner import REPO
from sim.serve import running
from sim.toolchain import available_simulators

PYTHON = os.environ.get("AGGSWITCH_TORCH_PYTHON", "/usr/bin/python3")
PARAMS = Params(ports=2, data_width=128, slots=8, slot_elems=32, jobs=2)
SIMS = available_simulators()
STEPS = 5


def have_torch() -> bool:
    try:
        probe = "import importlib.util as u, sys; " \
                "sys.exit(not all(u.find_spec(m) for m in ('torch', 'sklearn', 'numpy')))"
        return subprocess.run([PYTHON, "-c", probe],
                              capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


pytestmark = [pytest.mark.skipif(not SIMS, reason="no simulator"),
              pytest.mark.skipif(not have_torch(), reason=f"{PYTHON} lacks torch or sklearn")]


@pytest.mark.parametrize("dtype,loss", [("int32", 0.0), ("fp32", 0.05)])
def test_ddp_hook_matches_gloo(tmp_path, dtype, loss):
    out = tmp_path / "ranks.json"
    with running(PARAMS, SIMS[0], tmp_path / "serve", loss=loss, seed=7, idle=60) as srv:
        switch = ",".join(f"{h}:{p}" for h, p in srv.addresses)
        run = subprocess.run(
            [PYTHON, str(REPO / "examples" / "ddp_train.py"), "--switch", switch,
             "--dtype", dtype, "--scale", "16", "--steps", str(STEPS), "--slot-elems",
             str(PARAMS.slot_elems), "--window", str(PARAMS.slots), "--timeout", "0.1",
             "--check", "--json", str(out)],
            capture_output=True, text=True, timeout=300, cwd=tmp_path)
        status = srv.stop()
        summary = srv.summary()
    assert run.returncode == 0 and "PASS" in run.stdout, run.stdout + run.stderr
    ranks = json.loads(out.read_text())
    for r in ranks:
        assert len(r["steps"]) == STEPS and r["params_equal_across_ranks"]
        for s in r["steps"]:
            assert s["buckets"] >= 1 and s["exact"] and s["within_tol"], s
            assert s["max_err"] <= 2 * 2.0 ** -17 * 1.01 + 1e-6
    assert status == 0 and summary["error_count"] == 0, summary["errors"]
    assert summary["counters"]["results"] > 0
    if loss:
        assert summary["network"]["lost_data"] + summary["network"]["lost_results"] > 0
        assert sum(r["stats"].get("retransmissions", 0) for r in ranks) > 0
