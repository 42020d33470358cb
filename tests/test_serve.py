"""`make serve` end to end: the exported RTL, simulated, as a UDP device on 127.0.0.1
(sim/serve.py, tb/cocotb/serve.py), with workers of the worker library in threads:

* two workers all-reduce an INT32 and an FP32 tensor while 15 % of DATA and RESULT frames
  are lost: the results equal the NumPy sum (INT32) and the golden numerics' sum (FP32)
  bit for bit (both simulators);
* a lossless run takes the same simulated cycles twice;
* malformed datagrams sent in the middle of a run, from a stranger and from a worker's own
  socket, get nothing back, are counted as malformed, and disturb nothing else;
* two jobs share the switch's ports; one of job 0's workers (a process) is killed in the
  middle of a call: job 1 keeps completing its calls, job 0's other worker gives up in
  bounded time, and the server stops promptly.

Every server is stopped with SIGTERM and must report every RESULT and counter as the
golden model predicts.

The parameter set is the regression's small one (tests/test_rtl.py), so the build is
shared with it."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from aggswitch import Params
from aggswitch.worker import AllReduceError, Worker
from aggswitch.worker import convert
from sim.runner import REPO
from sim.serve import running
from sim.toolchain import available_simulators
from tb.model import frames as F
from tests.groups import model
from test_worker import run_workers

PARAMS = Params(ports=2, data_width=128, slots=8, slot_elems=32, jobs=2)
SIMS = available_simulators()


@pytest.mark.parametrize("sim", [pytest.param(s, marks=model(PARAMS)) if s == "verilator"
                                 else s for s in SIMS])
def test_serve_allreduce_with_loss(tmp_path, sim):
    rng = np.random.default_rng(13)
    # Icarus simulates a few times slower: half the chunks there, and more of them lost so
    # that some RESULTs still are (30 of them at 25 %: none lost 2 times in 10,000).
    na, nb, loss = (600, 300, 0.15) if sim == "verilator" else (300, 150, 0.25)
    a = [rng.integers(-2**29, 2**29, na) for _ in range(2)]
    b = [rng.normal(0, 1, nb).astype(np.float32) for _ in range(2)]
    with running(PARAMS, sim, tmp_path, loss=loss, seed=13, idle=60) as srv:
        res, workers = run_workers(
            srv.addresses, [[(a[k], "int32", 0), (b[k], "fp32", 20)] for k in range(2)],
            window=8, slot_elems=PARAMS.slot_elems, timeout=0.1, max_retries=40)
        status = srv.stop()
        summary = srv.summary()
        log = srv.log()
    assert status == 0, log[-3000:]
    assert summary["error_count"] == 0, summary["errors"]
    for k in range(2):
        np.testing.assert_array_equal(res[k][0], a[0] + a[1])
        np.testing.assert_array_equal(
            res[k][1], convert.to_values(convert.reduce_reference(F.FP32, b, 20, 32), 20))
    assert np.abs(res[0][1] - (b[0].astype(float) + b[1])).max() < 1e-5
    chunks = -(-na // 32) + -(-nb // 32)
    c = summary["counters"]
    assert c["results"] == chunks
    net = summary["network"]
    assert net["lost_data"] > 0 and net["lost_results"] > 0
    assert sum(w.stats["retransmissions"] for w in workers) > 0
    assert sum(p["resent"] for p in c["ports"]) > 0
    assert "switch port 1: udp 127.0.0.1:" in log and "results %d" % chunks in log


@pytest.mark.skipif(not SIMS, reason="no simulator")
@model(PARAMS)
def test_serve_cycles_deterministic(tmp_path):
    """The same lossless calls take the same simulated cycles, however the two workers'
    datagrams interleave in wall-clock time (frames enter an idle switch one at a time)."""
    rng = np.random.default_rng(5)
    a = [rng.integers(-2**29, 2**29, 1000) for _ in range(2)]
    cycles = []
    for trial in range(2):
        with running(PARAMS, SIMS[0], tmp_path / str(trial), idle=60) as srv:
            res, _ = run_workers(srv.addresses, [[(a[k], "int32", 0)] for k in range(2)],
                                 window=8, slot_elems=PARAMS.slot_elems, timeout=5.0)
            assert srv.stop() == 0
            cycles.append(srv.summary()["busy_cycles"])
        np.testing.assert_array_equal(res[0][0], a[0] + a[1])
    assert cycles[0] == cycles[1] > 0


def malformed_datagrams(slot_elems: int) -> list:
    """(what, datagram) a broken or confused worker might send: each breaks one admission
    rule of SPEC §7 that makes a frame malformed (docs/SPEC.md §10.2)."""
    def agg(count=8, elems=None, **kw):
        h = dict(op=F.OP_DATA, dtype=F.INT32, job=0, slot=7, worker=0, count=count)
        h.update(kw)
        n = count if elems is None else elems
        return F.AggHeader(**h).pack() + np.arange(n, dtype=">i4").tobytes()
    return [
        ("truncated AGG header", b"\x11\x00junk"),
        ("version 2", agg(ver=2)),
        ("a RESULT sent to the switch", agg(op=F.OP_RESULT)),
        ("unknown dtype", agg(dtype=9)),
        ("count 0", agg(count=0)),
        ("count above slot_elems", agg(count=slot_elems + 1)),
        ("payload shorter than count", agg(elems=7)),
        ("payload longer than count", agg(elems=9)),
    ]


@pytest.mark.skipif(not SIMS, reason="no simulator")
@model(PARAMS)
def test_serve_malformed_datagrams(tmp_path):
    """While two workers all-reduce, malformed datagrams reach both ports: from a stranger's
    socket on port 0 and from worker 1's own socket on port 1. Nobody gets anything back
    for them, each is counted as malformed on its port, and the workers' results, rounds
    and counters are exactly those of an undisturbed run."""
    rng = np.random.default_rng(17)
    n = 2400
    a = [rng.integers(-2**29, 2**29, n) for _ in range(2)]
    bad = malformed_datagrams(PARAMS.slot_elems)
    results, errors, sent = [None, None], [], []
    with running(PARAMS, SIMS[0], tmp_path, idle=60) as srv, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
        stranger.bind(("127.0.0.1", 0))
        workers = [Worker(srv.addresses[k], k, window=8, slot_elems=PARAMS.slot_elems,
                          timeout=5.0) for k in range(2)]

        def work(k):
            try:
                results[k] = workers[k].allreduce(a[k], "int32")
            except Exception as e:
                errors.append(f"worker {k}: {type(e).__name__}: {e}")

        threads = [threading.Thread(target=work, args=(k,), daemon=True) for k in range(2)]
        for t in threads:
            t.start()
        time.sleep(0.3)
        for what, d in bad:
            stranger.sendto(d, srv.addresses[0])
            workers[1].sock.sendto(d, srv.addresses[1])
            sent.append(time.monotonic())
            time.sleep(0.05)
        for t in threads:
            t.join(120)
        done = time.monotonic()
        stranger.settimeout(0.5)
        with pytest.raises(socket.timeout):
            stranger.recvfrom(65535)
        status = srv.stop()
        summary = srv.summary()
        for w in workers:
            w.close()
    assert not errors and not any(t.is_alive() for t in threads), errors
    for k in range(2):
        np.testing.assert_array_equal(results[k], a[0] + a[1])
    chunks = -(-n // PARAMS.slot_elems)
    assert sent[-1] < done, "the malformed datagrams were not sent during the run"
    assert workers[0].last.chunks == chunks
    for w in workers:   # nothing came back for them, nothing had to be repeated
        assert w.stats["strays"] == 0 and w.stats["stale_results"] == 0, w.stats
        assert w.stats["retransmissions"] == 0 and w.stats["results"] == chunks, w.stats
    assert status == 0 and summary["error_count"] == 0, summary["errors"]
    c = summary["counters"]
    assert c["results"] == chunks
    for port in c["ports"]:
        drops = {k: v for k, v in port.items() if k.startswith("drop_") and v}
        assert drops == {"drop_malformed": len(bad)}, port
        assert port["rx"] == chunks + len(bad) and port["accepted"] == chunks, port
        assert port["tx"] == chunks and port["resent"] == 0, port
    assert summary["network"]["undeliverable"] == 0


# A worker of job 0 in its own process: three calls, printing after each; the test kills
# it in the middle of the third.
VANISHING_WORKER = r"""
import sys
import numpy as np
from aggswitch.worker import AllReduceError, Worker
w = Worker((sys.argv[1], int(sys.argv[2])), 1, job=0, window=4, slot_elems=32, timeout=0.2)
rng = np.random.default_rng(1)
for i, n in enumerate((200, 200, 20000)):
    w.allreduce(rng.integers(-1000, 1000, n), "int32")
    print("done", i, flush=True)
"""


@pytest.mark.skipif(not SIMS, reason="no simulator")
@model(PARAMS)
def test_serve_worker_vanishes_other_job_runs(tmp_path):
    """Two jobs on both ports (job 0 on slots 0-3, job 1 on slots 4-7). Worker 1 of job 0,
    a separate process, is killed (SIGKILL) in the middle of its third call. Job 1's two
    workers complete every call after that, exactly, while job 0's surviving worker is
    still retransmitting into its unfinished rounds; the survivor gives up with
    AllReduceError in bounded time; the server keeps serving and stops promptly, with
    every RESULT and counter as the golden model predicts."""
    rng_child = np.random.default_rng(1)
    child_t = [rng_child.integers(-1000, 1000, n) for n in (200, 200, 20000)]
    rng = np.random.default_rng(23)
    job0_t = [rng.integers(-1000, 1000, n) for n in (200, 200, 20000)]
    job1_t = [[rng.integers(-2**28, 2**28, n) for _ in range(2)] for n in (300, 700, 700)]
    killed = threading.Event()
    log, errors = {}, []
    with running(PARAMS, SIMS[0], tmp_path, idle=60,
                 jobs=[(0, 0b11, 0, 4), (1, 0b11, 4, 4)]) as srv:
        job1 = [Worker(srv.addresses[k], k, job=1, window=4, slot_elems=32, timeout=0.3)
                for k in range(2)]
        survivor = Worker(srv.addresses[0], 0, job=0, window=4, slot_elems=32, timeout=0.1,
                          max_timeout=0.4, max_retries=20, deadline=60)

        def run_job1(k):
            try:
                log[f"job1.{k}.0"] = job1[k].allreduce(job1_t[0][k], "int32")
                killed.wait(60)
                log[f"job1.{k}.start"] = time.monotonic()
                for i in (1, 2):
                    log[f"job1.{k}.{i}"] = job1[k].allreduce(job1_t[i][k], "int32")
                log[f"job1.{k}.end"] = time.monotonic()
            except Exception as e:
                errors.append(f"job 1 worker {k}: {type(e).__name__}: {e}")

        def run_survivor():
            for i in range(3):
                try:
                    log[f"job0.{i}"] = survivor.allreduce(job0_t[i], "int32")
                except Exception as e:
                    log[f"job0.{i}"] = e
                    log["job0.failed"] = time.monotonic()
                    return

        threads = [threading.Thread(target=run_job1, args=(k,), daemon=True) for k in range(2)]
        threads.append(threading.Thread(target=run_survivor, daemon=True))
        child = subprocess.Popen(
            [sys.executable, "-c", VANISHING_WORKER, *map(str, srv.addresses[1])],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=dict(os.environ, PYTHONPATH=str(REPO / "hw")))
        try:
            for t in threads:
                t.start()
            lines = []
            for line in child.stdout:
                lines.append(line.strip())
                if line.strip() == "done 1":
                    time.sleep(0.1)          # into the third call (625 chunks)
                    child.send_signal(signal.SIGKILL)
                    break
            child.wait(30)
            log["killed"] = time.monotonic()
            killed.set()
            for t in threads:
                t.join(120)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(30)
        t_stop = time.monotonic()
        status = srv.stop(timeout=60)
        stop_seconds = time.monotonic() - t_stop
        summary = srv.summary()
        for w in job1 + [survivor]:
            w.close()
    assert lines[-1] == "done 1" and child.returncode == -signal.SIGKILL, lines
    assert not errors and not any(t.is_alive() for t in threads), errors
    # job 0: the first two calls completed with both workers; the third cannot
    for i in (0, 1):
        np.testing.assert_array_equal(log[f"job0.{i}"], job0_t[i] + child_t[i])
    assert isinstance(log["job0.2"], AllReduceError), log["job0.2"]
    # job 1: every call exact, the last two started after the kill and finished while job
    # 0's survivor was still retransmitting into the unfinished rounds
    for k in range(2):
        for i in range(3):
            np.testing.assert_array_equal(log[f"job1.{k}.{i}"], job1_t[i][0] + job1_t[i][1])
        assert log["killed"] <= log[f"job1.{k}.start"] < log[f"job1.{k}.end"] < log["job0.failed"]
        assert job1[k].stats["strays"] == 0
    assert survivor.stats["retransmissions"] > 0
    # the server kept serving, stops on SIGTERM at once and agrees with the golden model
    assert status == 0 and stop_seconds < 30, (status, stop_seconds)
    assert summary["stopped"] == "stop file" and summary["error_count"] == 0, summary  # SIGTERM
    job1_rounds = sum(-(-n // 32) for n in (300, 700, 700))
    assert summary["counters"]["results"] >= job1_rounds + 2 * -(-200 // 32)
