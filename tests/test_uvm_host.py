"""The host model of the pyuvm environment (tb/uvm/host.py) against the golden model alone,
without a simulator: SwitchML-style workers with a window of slots, bank alternation,
timeouts and retransmissions, over a network that loses DATA and RESULT frames, delays
RESULTs and serves the ports in random order. Every tensor must come out exactly reduced;
without retransmissions a lossy run must not complete; a wrong sum must be reported.

These run in a second and catch a broken protocol before any RTL simulation does."""

import heapq
import random
from collections import deque

import numpy as np
import pytest

from tb.cocotb.harness import worker_addr
from tb.model import frames as F
from tb.model.switch import SwitchModel
from tb.uvm.config import UvmConfig, dtype_code
from tb.uvm.host import (MISMATCH_KINDS, HostWorker, JobPlan, expected_result, mismatch_frame,
                         rogue_addr)

ALL = F.DTYPES


class Network:
    """Workers on `ports` ports, the golden model as the switch. Each tick every port with
    a frame waiting delivers it with probability 1/2 (ascending port order, as SPEC §10.3
    orders same-cycle frames); RESULTs reach their host 3..40 ticks later, in any order."""

    def __init__(self, seed, *, ports=4, slots=8, slot_elems=64, window=4, chunks=24,
                 dtypes=(F.INT32,), data_loss=0.0, result_loss=0.0, retransmit=True,
                 timeout=80):
        self.rng = random.Random(seed)
        self.model = SwitchModel(ports=ports, slots=slots, slot_elems=slot_elems, jobs=2,
                                 supported_dtypes=ALL)
        self.plan = JobPlan(random.Random(seed * 7 + 1), workers=ports, slot_count=slots,
                            slot_elems=slot_elems, window=window, chunks=chunks, dtypes=dtypes,
                            scale_range=6, extreme=0.2, nan=0.1)
        self.hosts = [HostWorker(self.plan, p, p, addr=worker_addr(p), timeout=timeout,
                                 retransmit=retransmit) for p in range(ports)]
        self.data_loss, self.result_loss = data_loss, result_loss
        self.wire = [deque() for _ in range(ports)]
        self.back = []
        self.order = 0
        self.lost = {"data": 0, "result": 0}
        self.outcomes = []

    def emit(self, port, sends):
        for s in sends:
            if self.rng.random() < self.data_loss:
                self.lost["data"] += 1
            else:
                self.wire[port].append(s.frame)

    def run(self, max_ticks=200000):
        rng = self.rng
        for p, h in enumerate(self.hosts):
            self.emit(p, h.start(0))
        now = 0
        while now < max_ticks and not all(h.done for h in self.hosts):
            for p in range(len(self.wire)):
                if self.wire[p] and rng.random() < 0.5:
                    o = self.model.process(p, self.wire[p].popleft(), now)
                    self.outcomes.append(o)
                    for q, frm in o.results:
                        self.order += 1
                        heapq.heappush(self.back, (now + rng.randint(3, 40), self.order, q, frm))
            while self.back and self.back[0][0] <= now:
                _, _, q, frm = heapq.heappop(self.back)
                if rng.random() < self.result_loss:
                    self.lost["result"] += 1
                else:
                    self.emit(q, self.hosts[q].on_result(frm, now))
            for p, h in enumerate(self.hosts):
                self.emit(p, h.expire(now))
            now += 1
        return now


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("dtypes", [(F.INT32,), ALL], ids=["int32", "all"])
def test_lossy_allreduce_is_exact(seed, dtypes):
    net = Network(seed, dtypes=dtypes, data_loss=0.2, result_loss=0.2)
    net.run()
    errs = [e for h in net.hosts for e in h.errors]
    assert not errs, errs[:5]
    assert all(h.done for h in net.hosts), [h.unanswered() for h in net.hosts]
    assert net.lost["data"] and net.lost["result"], net.lost
    # every chunk completed exactly once in the switch; losses were repaired by
    # retransmissions (joins), resends (unicast) and duplicates
    c = net.model.counters
    assert c.results == len(net.plan)
    actions = {o.action or F.DROP_REASONS[o.drop] for o in net.outcomes}
    assert {"new", "join", "resend", "duplicate"} <= actions, actions
    # NumPy reference of the whole tensor for INT32 jobs
    ref = net.plan.int32_tensors()
    if ref is not None:
        _, want = ref
        for h in net.hosts:
            got = np.concatenate([F.int32_from_payload(F.parse_frame(h.results[i]).payload)
                                  for i in range(len(net.plan))])
            assert np.array_equal(got, want)


def test_no_loss_needs_no_retransmission():
    net = Network(1, data_loss=0.0, result_loss=0.0, timeout=10**6)
    net.run()
    assert all(h.done for h in net.hosts)
    assert sum(h.stats["retransmissions"] for h in net.hosts) == 0
    assert net.model.counters.results == len(net.plan)


def test_without_retransmission_loss_is_fatal():
    """The checker can fail: a host that never retransmits cannot finish a lossy run."""
    net = Network(3, data_loss=0.2, result_loss=0.2, retransmit=False)
    net.run(max_ticks=20000)
    assert not all(h.done for h in net.hosts)


def test_wrong_sum_is_reported():
    """The checker can fail: a RESULT that differs from the independent sum is an error."""
    net = Network(4, chunks=6)
    c = net.plan.chunks[2]
    c.expected = bytes([c.expected[0] ^ 1]) + c.expected[1:]
    net.run()
    errs = [e for h in net.hosts for e in h.errors]
    assert len(errs) == len(net.hosts) and all("chunk 2 " in e for e in errs), errs


def test_expected_result_matches_model():
    """The host's independent sum equals the golden model's RESULT, for every dtype."""
    rng = random.Random(5)
    for dtype in ALL:
        plan = JobPlan(rng, workers=3, slot_count=4, slot_elems=64, window=2, chunks=6,
                       dtypes=(dtype,), scale_range=5, extreme=0.3, nan=0.3)
        m = SwitchModel(ports=3, slots=4, slot_elems=64, jobs=1, supported_dtypes=ALL)
        for c in plan.chunks:
            out = None
            for w in range(3):
                out = m.process(w, plan.data_frame(c, w, worker_addr(w)), 0)
            pf = F.parse_frame(out.results[0][1])
            assert (pf.payload, pf.hdr.flags) == (c.expected, c.flags), (dtype, c.index)


@pytest.mark.parametrize("kind", MISMATCH_KINDS)
def test_mismatch_frames(kind):
    """A mismatch frame joins a round in progress with one field changed: MISMATCH."""
    rng = random.Random(kind)
    plan = JobPlan(rng, workers=2, slot_count=4, slot_elems=64, window=2, chunks=8,
                   dtypes=(F.INT32, F.FP32))
    m = SwitchModel(ports=2, slots=4, slot_elems=64, jobs=1, supported_dtypes=ALL)
    made = 0
    for c in plan.chunks:
        m.process(0, plan.data_frame(c, 0, worker_addr(0)), 0)
        f = mismatch_frame(plan, c, 1, rogue_addr(1), kind, rng, supported=(F.INT32, F.FP32))
        if f is not None:
            made += 1
            assert m.process(1, f, 0).drop == F.MISMATCH
        assert m.process(1, plan.data_frame(c, 1, worker_addr(1)), 0).completed
    assert made


def test_config_knobs_from_environment():
    from aggswitch import Params
    env = {"AGGSWITCH_UVM_DTYPES": "int32", "AGGSWITCH_UVM_DATA_LOSS": "0.15",
           "AGGSWITCH_UVM_RETRANSMIT": "0", "AGGSWITCH_UVM_CHUNKS": "12"}
    cfg = UvmConfig.from_env(env).resolve(random.Random(1), Params(), (F.INT32,))
    assert cfg.dtypes == (F.INT32,) and cfg.data_loss == 0.15 and cfg.retransmit is False
    assert cfg.chunks == 12 and 0 <= cfg.result_loss <= 0.2 and cfg.timeout > 0
    with pytest.raises(ValueError, match="not admitted by this build"):
        UvmConfig(dtypes=(dtype_code("fp32"),)).resolve(random.Random(1), Params(), (F.INT32,))
    with pytest.raises(ValueError):
        UvmConfig(data_loss=0.9).resolve(random.Random(1), Params(), (F.INT32,))


def test_expected_result_flags():
    payloads = [F.int32_payload([(1 << 31) - 1])] * 2
    pl, flags = expected_result(F.INT32, payloads, 1, 0, 1)
    assert flags == F.FLAG_BANK | F.FLAG_OVERFLOW and F.int32_from_payload(pl)[0] == (1 << 31) - 1
