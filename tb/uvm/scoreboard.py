"""Scoreboard: every RESULT frame against the golden model, fed by the monitors through
uvm_tlm_analysis_fifo.

The ingress FIFO carries every frame the switch received, with the golden model's verdict
and the RESULT frames it predicts (tb/cocotb/harness.py feeds the model in the processing
order of docs/SPEC.md §10.3); the egress FIFO every frame the switch sent. Per port, the
switch's frames must be the predicted ones, one for one and in order (header, payload,
destination port and address, UNICAST flag: byte for byte), none missing at the end and
none extra. Besides, every ingress frame must get the verdict the environment meant it
to get (a worker's first copy starts or joins its round, a mismatch frame is a MISMATCH,
a noise frame is dropped for its reason): a check that the stimulus still exercises what
it claims to.

Latency (docs/SPEC.md §9, §10.4): every RESULT comes at least LATENCY cycles
(``aggswitch.latency(params)``) after the tlast of the DATA frame that caused it, and
exactly LATENCY when the switch was idle around it: no other frame's tlast in the
``quiet`` cycles before (the harness' bound for the switch to finish everything) and no
other frame on any egress port from then until the RESULT is due.
"""

from __future__ import annotations

import bisect
import collections

from pyuvm import uvm_analysis_port, uvm_scoreboard, uvm_tlm_analysis_fifo

from tb.cocotb.harness import COUNTER_MASK, Expected, describe_frame, worker_addr
from tb.model import frames as F

MAX_ERRORS = 50


class Scoreboard(uvm_scoreboard):
    def build_phase(self):
        self.tb = self.cdb_get("tb")
        P = self.tb.ports
        self.ingress_fifo = uvm_tlm_analysis_fifo("ingress_fifo", self)
        self.egress_fifo = uvm_tlm_analysis_fifo("egress_fifo", self)
        self.ap_latency = uvm_analysis_port("ap_latency", self)
        self.expected = [collections.deque() for _ in range(P)]
        self.n_out = [0] * P
        self.matched = []       # (port, index, Expected, EgressRecord)
        self.ingress = []       # IngressRecord, processing order
        self.egress = []        # EgressRecord, as they completed
        self.outcomes = collections.Counter()
        self.errors = []
        self.latency_stats = collections.Counter()
        self.latencies = []

    def error(self, msg: str):
        self.errors.append(msg)
        if len(self.errors) <= MAX_ERRORS:
            self.logger.error(msg)

    # ---------------------------------------------------------------- online
    async def run_phase(self):
        while True:
            txn = await self.egress_fifo.get()
            self.drain()
            self.check_result(txn)

    def drain(self):
        while True:
            ok, t = self.ingress_fifo.try_get()
            if not ok:
                return
            self.on_ingress(t)

    def on_ingress(self, t):
        rec = t.rec
        self.ingress.append(rec)
        self.outcomes[t.outcome] += 1
        if t.item is None:
            self.error(f"port {rec.port} cycle {rec.t_last}: a frame the environment did not "
                       f"send: {describe_frame(rec.data)}")
        elif t.outcome not in t.item.verdicts:
            self.error(f"port {rec.port} cycle {rec.t_last}: {t.item.origin} frame "
                       f"({t.item.label or 'chunk ' + str(t.item.chunk)}): golden model says "
                       f"{t.outcome}, the environment meant {'/'.join(sorted(t.item.verdicts))} "
                       f"-- stimulus or model out of step with docs/SPEC.md")
        if rec.outcome is not None:
            for q, frm in rec.outcome.results:
                self.expected[q].append(Expected(q, frm, rec.t_last, False, rec))

    def check_result(self, txn):
        q, g = txn.port, txn.rec
        i = self.n_out[q]
        self.n_out[q] += 1
        self.egress.append(g)
        if not self.expected[q]:
            self.error(f"port {q}: unexpected frame at cycle {g.t_first} (RESULT #{i}): "
                       f"{describe_frame(g.data)}")
            return
        e = self.expected[q].popleft()
        err = self.tb.result_error(q, i, e, g)
        if err:
            self.error(err)
            return
        # explicit claims, independent of the model's frame: the RESULT goes to the host of
        # this port (every frame from another address is dropped, so the learned address
        # is the worker's), and UNICAST marks exactly the resends
        pf = F.parse_frame(g.data)
        if (pf.dst_mac, pf.dst_ip, pf.dst_port) != worker_addr(q):
            self.error(f"port {q} RESULT #{i}: addressed to {F.mac_str(pf.dst_mac)}/"
                       f"{F.ip_str(pf.dst_ip)}:{pf.dst_port}, not to the worker on port {q}")
        resend = e.cause.outcome.action == "resend"
        if bool(pf.hdr.flags & F.FLAG_UNICAST) != resend or (pf.hdr.op, pf.hdr.worker) != \
                (F.OP_RESULT, F.RESULT_WORKER):
            self.error(f"port {q} RESULT #{i}: flags {pf.hdr.flags:#x} op {pf.hdr.op} worker "
                       f"{pf.hdr.worker:#x} for a {'resend' if resend else 'completed round'}")
        self.matched.append((q, i, e, g))

    # ------------------------------------------------------------------- end
    def final(self) -> list:
        """End-of-test checks: nothing unanswered, latencies. Returns every error."""
        self.drain()
        L = self.tb.latency
        for q, exp in enumerate(self.expected):
            for e in list(exp)[:4]:
                self.error(f"port {q}: missing RESULT (due at cycle {e.t_trigger + L}): "
                           f"{describe_frame(e.frame)}")
            if len(exp) > 4:
                self.error(f"port {q}: ... {len(exp)} RESULTs missing in all")
        self.classify_latencies()
        return self.errors

    def classify_latencies(self):
        tb, L = self.tb, self.tb.latency
        quiet = tb.quiet_cycles()
        ing = sorted(r.t_last for r in self.ingress)
        eg = sorted((g.t_first, g.t_last, id(g)) for g in self.egress)
        eg_first = [x[0] for x in eg]
        longest = max((x[1] - x[0] for x in eg), default=0)
        caused = collections.defaultdict(set)
        for q, i, e, g in self.matched:
            caused[id(e.cause)].add(id(g))
        for q, i, e, g in self.matched:
            t = e.t_trigger
            lat = (g.t_first - t) & COUNTER_MASK
            others = bisect.bisect_right(ing, t) - bisect.bisect_left(ing, t - quiet) - 1
            idle = others == 0
            if idle:
                mine = caused[id(e.cause)]
                lo = bisect.bisect_left(eg_first, t - quiet - longest)
                hi = bisect.bisect_right(eg_first, t + L)
                idle = not any(eg[k][2] not in mine and eg[k][1] >= t - quiet
                               for k in range(lo, hi))
            unicast = e.cause.outcome.action == "resend"
            cls = "idle_exact" if idle else "loaded"
            self.latency_stats[cls] += 1
            self.latencies.append(lat)
            if idle and lat != L:
                self.error(f"port {q} RESULT #{i} ({describe_frame(g.data)}): latency {lat} "
                           f"cycles on an idle switch, documented exactly {L} (DATA tlast at "
                           f"cycle {t}, first tvalid at {g.t_first})")
            self.ap_latency.write((cls, unicast))
