"""Sequences: one SwitchML host per port (WorkerSequence), frames the switch must drop
(NoiseSequence), and the virtual sequence that runs them on every port's sequencer
(AllReduceSequence). Every frame goes to the driver through start_item / finish_item.
"""

from __future__ import annotations

import itertools
import random

import cocotb
from cocotb.triggers import ClockCycles, Event, First
from pyuvm import uvm_sequence

from tb.cocotb.harness import fix_lengths
from tb.model import frames as F
from tb.uvm.config import dtype_name, knob
from tb.uvm.host import (MISMATCH_KINDS, Send, count_choices, encode_values, mismatch_frame,
                         rogue_addr)
from tb.uvm.items import (ACCEPTED_FIRST, ACCEPTED_RETX, FIRST, MISMATCH, NOISE, RETX,
                          FrameItem)


class FrameSequence(uvm_sequence):
    """Base: send one frame through the sequencer (start_item, fill in, finish_item)."""

    async def send_frame(self, frame, *, origin, verdicts, chunk=None, attempt=1, label="",
                         lossy=False, lost=False) -> FrameItem:
        item = FrameItem(f"{origin}{'' if chunk is None else chunk}")
        await self.start_item(item)
        item.port = self.sequencer.port
        item.frame = frame
        item.origin, item.verdicts, item.chunk = origin, frozenset(verdicts), chunk
        item.attempt, item.label, item.lossy = attempt, label, lossy
        item.force_lost = lost
        await self.finish_item(item)
        return item


class WorkerSequence(FrameSequence):
    """Runs one HostWorker (tb/uvm/host.py) on its port: sends its chunks and
    retransmissions, reacts to the RESULTs the ResultChannel delivers and to its timeouts.
    Before the first copy of a chunk it may send a MISMATCH frame (knob `mismatch`): only
    when the golden model shows the chunk's round in progress without this worker, so that
    the round cannot complete before the frame arrives (this worker's own contribution is
    queued behind it) and the verdict is certainly MISMATCH."""

    def __init__(self, name, host, tb, supported, rng: random.Random, mismatch_p: float):
        super().__init__(name)
        self.host, self.tb, self.supported = host, tb, supported
        self.rng, self.mismatch_p = rng, mismatch_p
        self.mismatches = 0
        self.progress = Event()   # pulsed after each first copy of a chunk

    async def body(self):
        h, tb, seqr = self.host, self.tb, self.sequencer
        clk = tb.dut.clk
        sends = h.start(tb.cycle)
        while True:
            for s in sends:
                if not s.retx:
                    await self._maybe_mismatch(s.chunk)
                await self.send_frame(s.frame, origin=RETX if s.retx else FIRST,
                                      verdicts=ACCEPTED_RETX if s.retx else ACCEPTED_FIRST,
                                      chunk=s.chunk, attempt=s.attempt, lossy=True)
                if not s.retx:
                    self.progress.set()
            sends = []
            while not seqr.inbox.empty():
                txn = seqr.inbox.get_nowait()
                sends += h.on_result(txn.rec.data, tb.cycle)
            sends += h.expire(tb.cycle)
            if sends:
                continue
            if h.done or h.gave_up:
                return
            seqr.inbox_event.clear()
            deadline = h.next_deadline()
            if deadline is None:
                await seqr.inbox_event.wait()
            else:
                await First(seqr.inbox_event.wait(),
                            ClockCycles(clk, max(1, deadline - tb.cycle)))

    async def _maybe_mismatch(self, i: int):
        if self.mismatch_p <= 0 or self.rng.random() >= self.mismatch_p:
            return
        plan, port = self.host.plan, self.host.port
        c = plan.chunks[i]
        model = self.tb.model
        job = model.job_table[plan.job]
        st = model.state[job.slot_base + c.slot][c.bank]
        if not (st.bitmap and not st.complete and st.seq == c.seq and not st.bitmap >> port & 1):
            return
        kinds = list(MISMATCH_KINDS)
        self.rng.shuffle(kinds)
        for kind in kinds:
            f = mismatch_frame(plan, c, self.host.rank, rogue_addr(port), kind, self.rng,
                               self.supported)
            if f is not None:
                self.mismatches += 1
                await self.send_frame(f, origin=MISMATCH, verdicts={"mismatch"}, chunk=i,
                                      label=kind)
                return


def noise_catalogue(tb, plan, supported, rng: random.Random):
    """Frames that every admission rule of docs/SPEC.md §10.2 drops, as
    {port: [(name, frame, drop code)]}: the catalogue of tb/cocotb/test_switch.py (rules
    1-10, INT32 frames; the rule-10 cases only on their own port), plus for every dtype a
    truncated frame (MALFORMED), for every dtype the build does not admit a well-formed
    frame (MALFORMED, "not supported by this build"), and for every admitted dtype a frame
    of a disabled job, of a slot past the job's range and with another port's worker index.
    All come from other source addresses than the workers'."""
    from tb.cocotb.test_switch import _static_drop_cases
    P = tb.ports
    cases = {p: [] for p in range(P)}
    for name, port, frame, code, _slot in _static_drop_cases(tb):
        for p in ([port] if code == F.WORKER else range(P)):
            cases[p].append((name, frame, code))
    se, jobs = tb.p.slot_elems, tb.p.jobs
    job0 = tb.model.job_table[plan.job]

    def frame(port, dtype, **kw):
        lo, hi, step = count_choices(dtype, se)
        count = rng.randrange(lo, hi + 1, step)
        vals = [rng.randint(-1000, 1000) for _ in range(count)]
        mac, ip, udp = rogue_addr(port)
        args = dict(worker_mac=mac, worker_ip=ip, worker_port=udp, job=plan.job,
                    slot=rng.randrange(job0.slot_count), worker=tb.worker_rank(port),
                    seq=rng.getrandbits(32), dtype=dtype, count=count,
                    scale=rng.randint(-4, 4), bank=rng.randrange(2),
                    payload=encode_values(dtype, vals, count, 0))
        args.update(kw)
        return F.data_frame(**args)

    for d in F.DTYPES:
        name = dtype_name(d)
        for p in range(P):
            cases[p].append((f"{name}: truncated, lengths consistent",
                             fix_lengths(frame(p, d)[:-1]), F.MALFORMED))
            if d not in supported:
                cases[p].append((f"{name}: not admitted by this build", frame(p, d),
                                 F.MALFORMED))
                continue
            cases[p].append((f"{name}: job disabled or past the table",
                             frame(p, d, job=rng.choice([j for j in range(1, jobs)] + [jobs])),
                             F.JOB_DISABLED))
            cases[p].append((f"{name}: slot past the job's range",
                             frame(p, d, slot=job0.slot_count + rng.randrange(4)),
                             F.SLOT_RANGE))
            cases[p].append((f"{name}: another port's worker index",
                             frame(p, d, worker=(tb.worker_rank(p) + 1 + rng.randrange(P - 1))
                                   % P if P > 1 else 0xFF),
                             F.WORKER))
    return cases


class NoiseSequence(FrameSequence):
    """Frames the switch must drop, on one port, mixed into its worker's traffic: each time
    the worker sends a chunk, with probability `p`, one of the port's catalogue entries
    (noise_catalogue), in turn in a shuffled order so that every case is sent before any
    repeats; one time in ten a burst of 4 to 12 of them back to back (a dropped frame takes
    no engine descriptor, but its beats need buffer room until its verdict: behind admitted
    frames and a stalled egress it waits on `tready`). Runs until `stop()`."""

    def __init__(self, name, worker: "WorkerSequence", cases, rng: random.Random, p: float):
        super().__init__(name)
        self.worker, self.cases, self.rng, self.p = worker, cases, rng, p
        self.stopped = False
        self.sent = 0

    def stop(self):
        self.stopped = True
        self.worker.progress.set()

    async def body(self):
        order = []
        while True:
            self.worker.progress.clear()
            await self.worker.progress.wait()
            if self.stopped:
                return
            if self.rng.random() >= self.p:
                continue
            for _ in range(self.rng.randint(4, 12) if self.rng.random() < 0.1 else 1):
                if not order:
                    order = list(range(len(self.cases)))
                    self.rng.shuffle(order)
                name, frame, code = self.cases[order.pop()]
                self.sent += 1
                await self.send_frame(frame, origin=NOISE, verdicts={F.DROP_REASONS[code]},
                                      label=name)


class SendSequence(FrameSequence):
    """Sends a host's frames (tb.uvm.host.Send) in turn, none of them lost (all of them,
    with `lost`: a directed loss before the switch)."""

    def __init__(self, name, sends, lost=False):
        super().__init__(name)
        self.sends, self.lost = sends, lost

    async def body(self):
        for s in self.sends:
            await self.send_frame(s.frame, origin=RETX if s.retx else FIRST,
                                  verdicts=ACCEPTED_RETX if s.retx else ACCEPTED_FIRST,
                                  chunk=s.chunk, attempt=s.attempt, lost=self.lost)


class StormSequence(FrameSequence):
    """`n` frames that are not AGG traffic, back to back on one port: IPv6 packets and UDP
    datagrams to another port, from four beats up to the longest valid AGG frame. The
    switch drops every one as NOT_AGG; behind a stalled engine they must wait on tready
    like any frame (long enough that tready can fall in the middle of one: it falls a
    cycle or two after the last beat of an admitted frame; see
    AllReduceSequence.storm_behind_stall)."""

    KINDS = ("ipv6", "udp")

    def __init__(self, name, port: int, n: int, rng: random.Random, params):
        super().__init__(name)
        self.port, self.n, self.rng = port, n, rng
        self.min_bytes = max(60, 4 * params.beat_bytes)
        self.max_bytes = max(self.min_bytes, params.max_frame_bytes)

    def frame(self, kind: str) -> bytes:
        mac, ip, udp = rogue_addr(self.port)
        size = self.rng.randint(self.min_bytes, self.max_bytes)
        if kind == "udp":   # a valid IPv4/UDP datagram, to another UDP port
            f = F.data_frame(worker_mac=mac, worker_ip=ip, worker_port=udp, job=0, slot=0,
                             worker=0, seq=0, dtype=F.INT32, count=1, scale=0,
                             payload=bytes(4), bank=0, retx=False)
            dport = (F.DEFAULT_AGG_PORT + 1 + self.rng.randrange(1000)).to_bytes(2, "big")
            f = f[:36] + dport + f[38:60]
            return fix_lengths(f + bytes(self.rng.getrandbits(8) for _ in range(size - 60)))
        eth = (0xFF_FF_FF_FF_FF_FF).to_bytes(6, "big") + mac.to_bytes(6, "big")
        return eth + b"\x86\xdd" + bytes(self.rng.getrandbits(8) for _ in range(size - 14))

    async def body(self):
        for _ in range(self.n):
            kind = self.rng.choice(self.KINDS)
            await self.send_frame(self.frame(kind), origin=NOISE, verdicts={"not_agg"},
                                  label=f"storm: {kind}")


class AllReduceSequence(uvm_sequence):
    """Virtual sequence: a WorkerSequence on every port of the job, NoiseSequences beside
    them, until every worker holds every chunk's RESULT (or one gives up, or no worker gets
    a new chunk's RESULT for `watchdog` cycles); then the epilogue."""

    def __init__(self, name, env):
        super().__init__(name)
        self.env = env
        self.workers = []
        self.noise = []
        self.failure = None

    async def body(self):
        env = self.env
        tb = env.tb
        noise_p = float(knob(env, "noise"))
        noise_tasks = []
        for h in env.hosts:
            seqr = env.agents[h.port].sequencer
            w = WorkerSequence(f"worker{h.rank}", h, tb, tb.supported_dtypes,
                               random.Random(f"{tb.seed}/mismatch/{h.port}"),
                               float(knob(env, "mismatch")))
            if noise_p > 0:
                n = NoiseSequence(f"noise{h.port}", w, env.noise_cases[h.port],
                                  random.Random(f"{tb.seed}/noise/{h.port}"), noise_p)
                self.noise.append(n)
                noise_tasks.append(cocotb.start_soon(n.start(seqr)))
            self.workers.append((w, cocotb.start_soon(w.start(seqr))))
        watchdog = int(knob(env, "watchdog"))
        clk = tb.dut.clk
        last, idle = -1, 0
        while not all(t.done() for _, t in self.workers):
            await ClockCycles(clk, 64)
            got = sum(len(h.results) for h in env.hosts)
            idle = 0 if got != last else idle + 64
            last = got
            if idle >= watchdog:
                self.failure = (f"no host got a new chunk's RESULT for {idle} cycles (watchdog); "
                                + "; ".join(f"worker {h.rank}: {len(h.results)}/{len(h.plan)} "
                                            f"chunks, waiting for {h.unanswered()[:8]}"
                                            for h in env.hosts)
                                + f"; {tb.state_summary()}")
                for _, t in self.workers:
                    t.cancel()
                break
        for n in self.noise:
            n.stop()
        for t in noise_tasks:
            await t
        if self.failure is None and all(h.done for h in env.hosts):
            await self.epilogue()

    async def epilogue(self):
        """With the switch otherwise idle (no ingress idle cycles, no back-pressure, no loss,
        nothing in flight for the harness' quiet time), one more chunk whose last contribution
        arrives alone, then a lone retransmission of it by one worker: the RESULTs of both
        (multicast, then a unicast resend) must come after exactly LATENCY cycles
        (docs/SPEC.md §9, §10.4; the scoreboard classifies them as idle)."""
        env = self.env
        tb, hosts = env.tb, env.hosts
        rng = random.Random(f"{tb.seed}/epilogue")
        tb.set_idle_generator(None)
        tb.set_backpressure_generator(None)
        for a in env.agents:
            a.channel.loss = 0.0
        await tb.settle()
        c = env.plan.add_chunk(rng)
        for h in hosts[:-1]:
            await self._send(h, [h.adopt(c.index, tb.cycle)])
        await tb.settle()
        last = hosts[-1]
        await self._send(last, [last.adopt(c.index, tb.cycle)])
        await tb.settle()
        h = hosts[rng.randrange(len(hosts))]
        h.stats["retransmissions"] += 1
        await self._send(h, [Send(c.index, True, h.frame(c.index, retx=True), 2)])
        await tb.settle()
        await self.burst_loss(rng)
        await self.storm_behind_stall(rng)
        for h in hosts:   # the worker sequences have ended: hand the RESULTs over here
            inbox = env.agents[h.port].sequencer.inbox
            while not inbox.empty():
                h.on_result(inbox.get_nowait().rec.data, tb.cycle)

    async def burst_loss(self, rng):
        """A link flap: every worker's first copy of one more chunk is lost before the
        switch, and each worker retransmits it (RETX). The first retransmission to arrive
        must start the round, the others join and complete it (a round started by a
        retransmission is rare in random traffic: every first copy must be lost)."""
        env = self.env
        tb = env.tb
        c = env.plan.add_chunk(rng, smallest=True)   # storm_behind_stall resends it
        for h in env.hosts:
            await self._send(h, [h.adopt(c.index, tb.cycle)], lost=True)
        for h in env.hosts:
            await self._send(h, [h.adopt(c.index, tb.cycle, retx=True)])
        await tb.settle()

    async def storm_behind_stall(self, rng, n: int = 24):
        """Every port at once: `n` back-to-back frames that are not AGG traffic
        (StormSequence), while every egress is stalled and one worker, its timeout too
        short, retransmits a completed short chunk again and again: the unicast resends
        fill its egress FIFO, the engine waits, the retransmissions' descriptors fill that
        port's ingress queue, and tready falls in the middle of the storm frame behind the
        last one admitted. Every frame must still be answered or dropped and counted,
        nothing lost, and the switch must carry on: one more chunk after the storm."""
        env = self.env
        tb = env.tb
        c = env.plan.chunks[-1]          # complete: every worker holds its RESULT
        h = env.hosts[0]
        resends = tb.p.buffer_beats + 16
        tb.set_backpressure_generator(lambda: itertools.repeat(True))
        tasks = [cocotb.start_soon(self._send(h, [h.adopt(c.index, tb.cycle, retx=True)
                                                  for _ in range(resends)]))]
        tasks += [cocotb.start_soon(StormSequence(
                      f"storm{g.port}", g.port, n, random.Random(f"{tb.seed}/storm/{g.port}"),
                      tb.p).start(env.agents[g.port].sequencer))
                  for g in env.hosts]
        await ClockCycles(tb.dut.clk, 40 * tb.p.buffer_beats)
        tb.set_backpressure_generator(None)
        for t in tasks:
            await t
        await tb.settle()
        c = env.plan.add_chunk(rng)
        for g in env.hosts:
            await self._send(g, [g.adopt(c.index, tb.cycle)])
        await tb.settle()

    async def _send(self, host, sends, lost=False):
        await SendSequence(f"epilogue{host.rank}", sends, lost).start(
            self.env.agents[host.port].sequencer)
