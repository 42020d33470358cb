"""`make serve` end to end: the exported RTL, simulated, as a UDP device on 127.0.0.1
(sim/serve.py, tb/cocotb/serve.py), and two workers of the worker library in threads
all-reducing an INT32 and an FP32 tensor through it while 15 % of DATA and RESULT frames
are lost. The results must equal the NumPy sum (INT32) and the golden numerics' sum (FP32)
bit for bit; a malformed datagram gets nothing back and is counted; the server, stopped
with SIGTERM, must report every RESULT and counter as the golden model predicts.

The parameter set is the regression's small one (tests/test_rtl.py), so the build is
shared with it."""

import socket

import numpy as np
import pytest

from aggswitch import Params
from aggswitch.worker import Worker
from aggswitch.worker import convert
from sim.serve import running
from sim.toolchain import available_simulators
from tb.model import frames as F
from test_worker import run_workers

PARAMS = Params(ports=2, data_width=128, slots=8, slot_elems=32, jobs=2)
SIMS = available_simulators()


@pytest.mark.parametrize("sim", SIMS)
def test_serve_allreduce_with_loss(tmp_path, sim):
    rng = np.random.default_rng(13)
    a = [rng.integers(-2**29, 2**29, 600) for _ in range(2)]
    b = [rng.normal(0, 1, 300).astype(np.float32) for _ in range(2)]
    with running(PARAMS, sim, tmp_path, loss=0.15, seed=13, idle=60) as srv:
        res, workers = run_workers(
            srv.addresses, [[(a[k], "int32", 0), (b[k], "fp32", 20)] for k in range(2)],
            window=8, slot_elems=PARAMS.slot_elems, timeout=0.1, max_retries=40)
        # a malformed datagram (a truncated AGG header): nothing comes back
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            s.settimeout(1.0)
            s.sendto(b"\x10\x00junk", srv.addresses[0])
            with pytest.raises(socket.timeout):
                s.recvfrom(65535)
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
    chunks = 600 // 32 + 1 + 300 // 32 + 1
    c = summary["counters"]
    assert c["results"] == chunks
    assert c["ports"][0]["drop_malformed"] == 1 and c["ports"][1]["drop_malformed"] == 0
    net = summary["network"]
    assert net["lost_data"] > 0 and net["lost_results"] > 0
    assert sum(w.stats["retransmissions"] for w in workers) > 0
    assert sum(p["resent"] for p in c["ports"]) > 0
    assert "switch port 1: udp 127.0.0.1:" in log and "results %d" % chunks in log


@pytest.mark.skipif(not SIMS, reason="no simulator")
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
