"""The worker library (hw/aggswitch/worker) over real UDP sockets on 127.0.0.1, against the
golden model of the switch (tb/model/switch.py) behind the library's own UDP port bridge
(aggswitch.worker.bridge.UdpPorts) running in a thread: workers in threads all-reduce
tensors of every dtype, with and without DATA/RESULT loss, and every result must equal,
bit for bit, what the switch must return (each chunk's contributions summed exactly and
converted, docs/SPEC.md §4). Nothing here imports cocotb; tests/test_serve.py runs the same
library against the RTL."""

import threading
import time

import numpy as np
import pytest

from aggswitch.worker import AllReduceError, Worker
from aggswitch.worker import convert
from aggswitch.worker.bridge import UdpPorts
from tb.model import frames as F
from tb.model.switch import SwitchModel


class GoldenSwitch:
    """The golden model as a UDP device: one loopback socket per port; frames are
    processed in arrival order (a counter stands in for the cycle)."""

    def __init__(self, ports=2, slots=8, slot_elems=64, loss=0.0, seed=1):
        self.model = SwitchModel(ports=ports, slots=slots, slot_elems=slot_elems, jobs=2,
                                 supported_dtypes=F.DTYPES)
        self.net = UdpPorts(ports, loss=loss, seed=seed)
        self.addresses = self.net.addresses
        self.frames = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            if not self.net.wait(0.02):
                continue
            for port, frame in self.net.receive():
                self.frames += 1
                for q, res in self.model.process(port, frame, self.frames).results:
                    self.net.deliver(q, res)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)
        self.net.close()


def run_workers(addresses, calls, **kw):
    """Worker k on addresses[k] makes the all-reduce calls `calls[k]` = [(tensor, dtype,
    scale), ...] in threads. Returns (results per worker, the Workers)."""
    results = [None] * len(addresses)
    errors = []
    workers = [Worker(a, k, **kw) for k, a in enumerate(addresses)]

    def body(k):
        try:
            results[k] = [workers[k].allreduce(t, d, s) for t, d, s in calls[k]]
        except Exception as e:  # reported by the main thread
            errors.append(f"worker {k}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=body, args=(k,), daemon=True) for k in range(len(addresses))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    for w in workers:
        w.close()
    assert not any(t.is_alive() for t in threads), "a worker thread did not finish"
    assert not errors, "\n".join(errors)
    return results, workers


def test_int32_exact_over_calls():
    """Integer tensors, three calls of different sizes (banks and seqs run on across
    calls): the exact sums, every round completed once, nothing dropped."""
    rng = np.random.default_rng(1)
    sizes = (1000, 37, 300)
    tensors = [[rng.integers(-2**30, 2**30, n) for n in sizes] for _ in range(2)]
    with GoldenSwitch(ports=2) as sw:
        res, workers = run_workers(sw.addresses, [[(t, "int32", 0) for t in ts] for ts in tensors],
                                   window=4, slot_elems=64, timeout=5.0)
    for i in range(len(sizes)):
        want = tensors[0][i] + tensors[1][i]
        for k in range(2):
            assert res[k][i].dtype == np.int64
            np.testing.assert_array_equal(res[k][i], want)
    c = sw.model.counters
    chunks = sum(-(-n // 64) for n in sizes)
    assert c.results == chunks
    assert c.accepted == [chunks, chunks] and sum(c.drops_total(p) for p in range(2)) == 0
    assert workers[0].stats["retransmissions"] == 0


@pytest.mark.parametrize("dtype", F.DTYPE_NAMES)
def test_every_dtype_bit_exact(dtype):
    """Three workers, real-valued tensors at a job scale: each result is exactly the
    switch's answer (reduce_reference), and close to the float64 sum."""
    rng = np.random.default_rng(2)
    scale = 16
    tensors = [rng.normal(0, 1, 500).astype(np.float32) for _ in range(3)]
    with GoldenSwitch(ports=3) as sw:
        res, _ = run_workers(sw.addresses, [[(t, dtype, scale)] for t in tensors],
                             window=3, slot_elems=64, timeout=0.5)
    code = convert.dtype_code(dtype)
    want = convert.to_values(convert.reduce_reference(code, tensors, scale, 64), scale)
    for k in range(3):
        assert res[k][0].dtype == np.float64
        np.testing.assert_array_equal(res[k][0], want)
    err = np.abs(want - np.sum(np.array(tensors, dtype=np.float64), axis=0)).max()
    assert err < {"int32": 1e-4, "fp32": 1e-4, "bf16": 0.1}.get(dtype, 1.5)


def test_loss_recovered():
    """20 % of DATA and RESULT datagrams lost: lost DATA is retransmitted, lost RESULTs come
    back as unicast resends, and the results are still exact."""
    rng = np.random.default_rng(3)
    a = [rng.integers(-2**28, 2**28, 700) for _ in range(2)]
    b = [rng.normal(0, 1, 400) for _ in range(2)]
    with GoldenSwitch(ports=2, loss=0.2, seed=3) as sw:
        res, workers = run_workers(sw.addresses, [[(a[k], "int32", 0), (b[k], "fp32", 20)]
                                                  for k in range(2)],
                                   window=4, slot_elems=64, timeout=0.05, max_retries=60)
    for k in range(2):
        np.testing.assert_array_equal(res[k][0], a[0] + a[1])
        np.testing.assert_array_equal(
            res[k][1], convert.to_values(convert.reduce_reference(F.FP32, b, 20, 64), 20))
    net, c = sw.net.counts, sw.model.counters
    assert net["lost_data"] > 0 and net["lost_results"] > 0
    assert sum(w.stats["retransmissions"] for w in workers) > 0
    assert sum(c.resent) > 0 and sum(w.stats["unicast_results"] for w in workers) > 0


def test_no_answer_fails_in_bounded_time():
    """A switch port that never answers: AllReduceError after max_retries, not a hang."""
    silent = UdpPorts(1)
    try:
        w = Worker(silent.addresses[0], 0, timeout=0.02, max_timeout=0.1, max_retries=5)
        t0 = time.monotonic()
        with pytest.raises(AllReduceError, match="gave up"):
            w.allreduce(np.arange(10), "int32")
        assert time.monotonic() - t0 < 5
        w.close()
    finally:
        silent.close()


def test_only_loopback():
    with pytest.raises(ValueError):
        UdpPorts(1, host="0.0.0.0")


@pytest.mark.parametrize("dtype", F.DTYPE_NAMES)
def test_contribution_any_length(dtype):
    """convert.contribution of a tensor longer than one MX payload (2048 elements) equals,
    element for element, the contributions of the 64-element chunks a worker sends (what
    the DDP comparison hook sums with gloo); alone in its job a worker gets its
    contribution back (result_of_sum re-encodes values the dtype already holds)."""
    rng = np.random.default_rng(4)
    code = convert.dtype_code(dtype)
    x = rng.normal(0, 1, 5000).astype(np.float32)
    whole = convert.contribution(code, x, 16)
    chunks = np.concatenate([convert.contribution(code, x[a:a + 64], 16)
                             for a in range(0, x.size, 64)])
    np.testing.assert_array_equal(whole, chunks)
    assert np.abs(convert.to_values(whole, 16) - x).max() < 1.0
    np.testing.assert_array_equal(convert.result_of_sum(code, whole, 16, 64), whole)
