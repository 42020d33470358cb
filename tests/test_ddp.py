"""The PyTorch DDP communication hook (aggswitch.worker.ddp) end to end, with 2 ranks in
the system Python (Debian's python3-torch and python3-sklearn; $AGGSWITCH_TORCH_PYTHON
overrides /usr/bin/python3) and the simulated RTL (`make serve`, started on ephemeral
loopback ports), on the regression's small parameter set.

* test_train_short: `make train` (sim/train.py) in short: 2 workers, 6 steps, a 64-4-10
  MLP (310 parameters, 10 rounds a step), 10 % of the DATA and RESULT frames lost. The
  parameters trained through the switch must equal, bit for bit after every step, those
  trained with the same quantisation summed exactly by gloo on int64; the lost frames must
  have been recovered (retransmissions, unicast resends) and the server must agree with
  the golden model.
* test_ddp_hook_matches_gloo: examples/ddp_train.py --check in FP32 with 5 % loss: every
  bucket equals the golden model's answer bit for bit, stays within the dtype's rounding of
  gloo's float all-reduce, and the parameters agree on both ranks.
* test_spawn_*, test_destroy_process_group, test_run_workers_*: what keeps those two from
  hanging (aggswitch.worker.ranks, sim.train.run_workers): a rank that stops writing, or
  fails, ends the run in bounded time with every rank's log and stacks; the process group
  is only destroyed once no DDP module is left to destroy it with the GIL held.

Every subprocess here writes to a file, not a pipe, and is ended when its time is up: a
leftover grandchild cannot hold the test."""

import json
import os
import re
import subprocess
import sys
import time

import pytest

from aggswitch import Params
from sim.runner import REPO
from sim.serve import running
from sim.toolchain import available_simulators
from tests.groups import model
from sim.train import have_torch

PYTHON = os.environ.get("AGGSWITCH_TORCH_PYTHON", "/usr/bin/python3")
PARAMS = Params(ports=2, data_width=128, slots=8, slot_elems=32, jobs=2)
SIMS = available_simulators()
STEPS = 5


pytestmark = [pytest.mark.skipif(not SIMS, reason="no simulator"),
              pytest.mark.skipif(not have_torch(PYTHON), reason=f"{PYTHON} lacks torch or sklearn")]


def run_bounded(cmd, log, timeout: float, **kw):
    """(exit status, output) of `cmd`, its stdout and stderr going to the file `log`. After
    `timeout` seconds it gets SIGTERM (sim.train then kills its workers and stops its
    server), 60 s later SIGKILL, and the test fails."""
    with open(log, "w+") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, text=True, **kw)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            f.seek(0)
            pytest.fail(f"still running after {timeout} s: {' '.join(map(str, cmd))}\n"
                        + f.read()[-6000:])
        f.seek(0)
        return proc.returncode, f.read()


@model(PARAMS)
def test_train_short(tmp_path):
    steps = 6
    p = PARAMS
    # --deadline 30: a worker that writes nothing for 2 x 30 + 60 s fails the run
    rc, out = run_bounded(
        [sys.executable, "-m", "sim.train", "--sim", SIMS[0], "--python", PYTHON,
         "--steps", str(steps), "--hidden", "4", "--batch", "32", "--loss", "0.1",
         "--seed", "3", "--print-every", "1", "--out", str(tmp_path), "--no-plot",
         "--deadline", "30",
         "--ports", str(p.ports), "--data-width", str(p.data_width), "--slots", str(p.slots),
         "--slot-elems", str(p.slot_elems), "--jobs", str(p.jobs)],
        tmp_path / "train.log", 900, cwd=REPO,
        env=dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "hw")])))
    assert rc == 0 and "PASS" in out, out[-4000:]
    res = json.loads((tmp_path / "int32-loss0.1.json").read_text())
    assert res["steps"] == steps and res["workers"] == 2 and res["parameters"] == 310
    assert res["identical"] == [True] * steps and all(res["checks"].values()), res["checks"]
    ranks = json.loads((tmp_path / "int32-loss0.1.ranks.json").read_text())
    for r in ranks:
        assert [s["identical"] for s in r["steps"]] == [True] * steps
        assert r["final"]["switch"]["identical_to_quant"]
        # the switch actually carried the gradients: its replica learned, like gloo's
        assert r["steps"][-1]["loss"]["switch"] < r["steps"][0]["loss"]["switch"]
        assert 0 < r["steps"][-1]["max_diff_gloo"] < 1e-3
    # 10 rounds a step (310 elements in slots of 32), each completed once
    assert res["counters"]["results"] == 10 * steps
    net, st = res["network"], res["worker_stats"]
    assert net["lost_data"] > 0 and net["lost_results"] > 0, net
    assert st["retransmissions"] > 0 and st["unicast_results"] > 0, st
    assert sum(p["resent"] for p in res["counters"]["ports"]) > 0
    assert f"{steps}/{steps} steps" in out
    # every worker got to the end of its process group (aggswitch.worker.ranks)
    for r in range(2):
        assert (tmp_path / "workers-int32-loss0.1" / f"rank{r}.log").read_text().endswith(
            f"rank {r}: done\n")


@model(PARAMS)
@pytest.mark.parametrize("dtype,loss", [("fp32", 0.05)])
def test_ddp_hook_matches_gloo(tmp_path, dtype, loss):
    out = tmp_path / "ranks.json"
    with running(PARAMS, SIMS[0], tmp_path / "serve", loss=loss, seed=7, idle=60) as srv:
        switch = ",".join(f"{h}:{p}" for h, p in srv.addresses)
        rc, log = run_bounded(
            [PYTHON, str(REPO / "examples" / "ddp_train.py"), "--switch", switch,
             "--dtype", dtype, "--scale", "16", "--steps", str(STEPS), "--slot-elems",
             str(PARAMS.slot_elems), "--window", str(PARAMS.slots), "--timeout", "0.1",
             "--deadline", "30", "--check", "--json", str(out)],
            tmp_path / "ddp_train.log", 300, cwd=tmp_path)
        status = srv.stop()
        summary = srv.summary()
    assert rc == 0 and "PASS" in log, log[-4000:]
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


SPAWN_SCRIPT = """
import ctypes, os, sys, time
sys.path.insert(0, {hw!r})
from aggswitch.worker import ranks

def rank_main(rank, log_dir, how):
    ranks.rank_output(rank, log_dir)
    print(f"rank {{rank}}: started", flush=True)
    if rank == 1 and how == "deadlock":
        held_gil_forever()
    if rank == 1 and how == "raise":
        raise ValueError("rank 1 gives up")

def held_gil_forever():
    # pause(2) through PyDLL keeps the GIL, like a C++ destructor joining a thread that waits for it
    while True:
        ctypes.PyDLL(None).pause()

if __name__ == "__main__":
    t0 = time.monotonic()
    try:
        ranks.spawn(rank_main, (sys.argv[1], sys.argv[2]), 2, sys.argv[1], stall=float(sys.argv[3]))
        print("RETURNED")
    except ranks.RanksFailed as e:
        print("FAILED:", e)
    print(f"after {{time.monotonic() - t0:.1f}} s")
"""


def _spawn(tmp_path, how: str, stall: float):
    script = tmp_path / "spawn_ranks.py"
    script.write_text(SPAWN_SCRIPT.format(hw=str(REPO / "hw")))
    rc, out = run_bounded([PYTHON, str(script), str(tmp_path / "logs"), how, str(stall)],
                          tmp_path / "spawn.log", 120, cwd=tmp_path)
    assert rc == 0, out
    return out, float(out.rsplit("after ", 1)[1].split()[0])


def test_spawn_returns_when_every_rank_ends(tmp_path):
    out, _ = _spawn(tmp_path, "finish", stall=60.0)
    assert "RETURNED" in out and "FAILED" not in out, out
    for r in range(2):
        assert f"rank {r}: started" in (tmp_path / "logs" / f"rank{r}.log").read_text()


def test_spawn_ends_a_rank_stuck_with_the_gil(tmp_path):
    """A rank that writes nothing for `stall` seconds while holding the GIL (as the gloo
    teardown deadlock did) is killed, with its Python stack, and the run fails."""
    # 10 s: long enough for rank 0 to start and end even on a loaded machine
    out, seconds = _spawn(tmp_path, "deadlock", stall=10.0)
    stuck = re.search(r"FAILED: rank ([0-9, ]+) wrote nothing for 10 s", out)
    assert stuck and "1" in stuck.group(1).split(", ") and "RETURNED" not in out, out
    assert seconds < 60, out
    rank1 = out[out.index("--- rank 1"):]
    assert "stacks included" in rank1 and "held_gil_forever" in rank1, out
    assert "--- rank 0" in out, out


def test_spawn_reports_a_rank_that_raises(tmp_path):
    out, seconds = _spawn(tmp_path, "raise", stall=60.0)
    assert "FAILED: ProcessRaisedException" in out and "ValueError: rank 1 gives up" in out, out
    assert seconds < 60, out


DESTROY_SCRIPT = """
import os, sys, tempfile
sys.path.insert(0, {hw!r})
import torch, torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from aggswitch.worker import ranks

def threads():
    return len(os.listdir("/proc/self/task"))

torch.set_num_threads(1)
base = threads()
dist.init_process_group("gloo", init_method="file://" + tempfile.mkdtemp() + "/init",
                        rank=0, world_size=1)
model = DistributedDataParallel(torch.nn.Linear(4, 2))
model(torch.randn(3, 4)).sum().backward()
try:
    ranks.destroy_process_group()
    print("destroyed with a DDP module alive")
except RuntimeError as e:
    print("refused:", e)
print("initialised", dist.is_initialized(), "threads", base, threads())
del model
ranks.destroy_process_group()
print("initialised", dist.is_initialized(), "threads", base, threads())
"""


def test_destroy_process_group(tmp_path):
    """Refused while a DDP module (its Reducer holding the group) is alive; afterwards the
    group is destroyed on the spot: gloo's threads are joined inside the call, not later
    by a Reducer's destructor with the GIL held."""
    script = tmp_path / "destroy.py"
    script.write_text(DESTROY_SCRIPT.format(hw=str(REPO / "hw")))
    rc, out = run_bounded([PYTHON, str(script)], tmp_path / "destroy.log", 120, cwd=tmp_path)
    assert rc == 0, out
    lines = out.splitlines()
    assert lines[0].startswith("refused: 1 DistributedDataParallel module(s) still alive"), out
    before = lines[1].split()
    after = lines[2].split()
    assert before[1] == "True" and int(before[4]) > int(before[3]), out   # gloo's threads
    assert after[1] == "False" and after[3] == after[4], out               # all joined


def test_run_workers_ends_silent_workers(tmp_path):
    """sim.train's last resort: workers (and their children) that write nothing into the
    ranks' logs for `stall` seconds are killed and the run fails."""
    from sim.train import run_workers
    pids = tmp_path / "pids"
    child = ("import os, subprocess, sys, time; "
             "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
             f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{c.pid}}'); time.sleep(600)")
    logs = tmp_path / "logs"
    logs.mkdir()
    t0 = time.monotonic()
    rc = run_workers([sys.executable, "-c", child], logs, 2, stall=2.0)
    assert rc != 0 and time.monotonic() - t0 < 60
    for pid in map(int, pids.read_text().split()):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
