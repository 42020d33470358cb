"""Multi-tenant isolation, job-table reconfiguration and the AXI4-Lite slave under stress
(SPEC §5, §8, §10.2 rules 8-10, §10.7; docs/control-plane.md).

Every test configures the switch over AXI4-Lite with the register driver
(`aggswitch.driver.AggSwitchDriver`, `tb.driver`), keeps the golden model's job table in
step with what it wrote (and checks that it reads back the same), and ends with `finish`:
every RESULT frame against the golden model (ports, learned addresses per (job, port),
payloads, order, latency) and every counter against the model's.

- test_tenant_random: three tenants on overlapping port sets and adjacent, disjoint slot
  ranges, SwitchML-style traffic of every job on every port of its mask at once, mixed
  with isolation attacks (spoofed worker indices, slot indices at and past the range and
  aliasing into another job's range, disabled and out-of-range jobs, frames from ports
  outside a job's mask) and duplicates, mismatches and resends.
- test_reconfigure_mid_round: the job-table rules of §10.7 with the switch otherwise quiet.
- test_axil_concurrency: the AXI4-Lite slave under concurrent, back-pressured, pipelined
  reads and writes while traffic flows; partial `wstrb`; SLVERR; live counters.

Tests are parameter-generic; the ones that need more ports, jobs or slots than the
parameter set has log a warning and return.
"""

from __future__ import annotations

import collections
import itertools
import random
from dataclasses import dataclass

import cocotb
from cocotb.triggers import RisingEdge, with_timeout
from cocotbext.axi import AxiResp

from aggswitch.regmap import (GLOBAL_COUNTER_BASE, GLOBAL_COUNTERS, JOB_BASE, JOB_STRIDE,
                              PORT_COUNTER_BASE, PORT_COUNTER_STRIDE, PORT_COUNTERS, by_name,
                              register_map)
from tb.cocotb.harness import INT32_MAX, INT32_MIN, TB, bursty_pause, start
from tb.cocotb.test_switch import check_result, column_sums, expect, extreme_values, finish
from tb.model import frames as F
from tb.model.switch import Job

TIMEOUT_US = 5000  # per test, simulated time (the clock period is 4 ns)
INF = float("inf")
JOB_FIELDS = {"CTRL": "enable", "PORT_MASK": "port_mask", "SLOT_BASE": "slot_base",
              "SLOT_COUNT": "slot_count"}


# ----------------------------------------------------------------- helpers

def ports_of(mask: int) -> list:
    return [q for q in range(mask.bit_length()) if mask >> q & 1]


def rank(mask: int, port: int) -> int:
    """Worker index of `port` in a job with port mask `mask` (SPEC §8)."""
    return bin(mask & ((1 << port) - 1)).count("1")


def host_addr(port: int, job: int):
    """(MAC, IPv4, UDP source port) of job `job`'s worker process on the host of `port`:
    one host per port, one UDP port per job."""
    return 0x02_00_00_00_10_00 + port, 0x0A_00_01_02 + port, 0xC000 + 0x100 * job + port


def rogue_addr(port: int):
    """Source address of every frame a test expects to be dropped: were one admitted by
    mistake, the learned address of (job, port) would change and every later RESULT to
    that port would show it."""
    return 0x02_BA_D0_00_00_00 + port, 0x0A_BA_D0_00 + port, 0xBAD0 + port


@dataclass
class Tenant:
    job: int
    mask: int
    base: int
    count: int

    @property
    def ports(self) -> list:
        return ports_of(self.mask)

    def rank(self, port: int) -> int:
        return rank(self.mask, port)

    def gslot(self, slot: int) -> int:
        return self.base + slot


def tenant_layout(p) -> list:
    """Up to three tenants on overlapping port sets with adjacent, disjoint slot ranges
    covering the pool (default parameters: job 0 on every port, slots 0..15; job 1 on
    ports 1-3, slots 16..39; job 2 on ports 0 and 2, slots 40..63)."""
    P, S = p.ports, p.slots
    n = min(3, p.jobs, S)
    if n < 2:
        return []
    masks = [(1 << P) - 1, sum(1 << q for q in range(1, P))]
    if n == 3:
        masks.append(0b101 if P >= 3 else 0b01)
        c0 = max(1, S // 4)
        c1 = max(1, (S - c0) // 2)
        counts = [c0, c1, S - c0 - c1]
    else:
        counts = [S // 2, S - S // 2]
    out, base = [], 0
    for j in range(n):
        out.append(Tenant(j, masks[j], base, counts[j]))
        base += counts[j]
    return out


async def configure(tb: TB, tenants):
    """Write every tenant's job-table entry with the driver (tb.configure_job keeps the
    model in step) and check that the switch reads back the model's table."""
    for t in tenants:
        await tb.configure_job(t.job, port_mask=t.mask, slot_base=t.base, slot_count=t.count)
    await check_job_table(tb)


async def check_job_table(tb: TB):
    """The switch's job table (read over AXI4-Lite) equals the golden model's."""
    for j in range(tb.p.jobs):
        got = await tb.driver.job(j)
        m = tb.model.job_table[j]
        want = {"enable": bool(m.enable), "port_mask": m.port_mask, "slot_base": m.slot_base,
                "slot_count": m.slot_count}
        assert got == want, f"job {j}: switch reads {got}, the golden model holds {want}"


async def set_job_field(tb: TB, job: int, field: str, value: int, quiet: bool = True):
    """Write one job-table register (CTRL, PORT_MASK, SLOT_BASE, SLOT_COUNT) and the same
    field of the model's table. With `quiet` the switch is first let settle, so no frame
    is in flight across the write (SPEC §10.7)."""
    if quiet:
        await tb.settle(quiet=8)
    await tb.driver.write(f"JOB{job}_{field}", int(value))
    setattr(tb.model.job_table[job], JOB_FIELDS[field], bool(value) if field == "CTRL" else value)


def parse_result(data: bytes):
    h = F.parse_frame(data).hdr
    return h, (h.job, h.slot, h.flags & F.FLAG_BANK, h.seq)


# ----------------------------------------------------------- SwitchML hosts

@dataclass
class Chunk:
    job: int
    index: int
    slot: int       # job-relative
    bank: int
    seq: int
    count: int
    vals: dict      # port -> values

    @property
    def key(self):
        return (self.job, self.slot, self.bank, self.seq)


class Hosts:
    """SwitchML-style worker processes: for every tenant and every port of its mask, a
    coroutine sends chunk i of the job to job-relative slot window[i % w], bank
    (i // w) % 2, once its port has received the RESULT of chunk i - w (same slot, other
    bank). All jobs use the same window indices and seq numbers, so the only thing that
    tells their frames apart is the job field (and the pool slot it maps to).

    Also: retransmissions of the previous chunk of a slot (resends), repeated frames
    (duplicates, or resends when the round completed in between), and MISMATCH frames.
    A mismatch frame is sent only when the golden model shows the chunk's round in
    progress without this port's contribution: the round cannot complete before the frame
    (the port's own contribution comes after it), so it is certainly a mismatch and never
    starts a bogus round.

    `nchunks` per job, or None: open-ended until `stop()`. Every frame the hosts send is
    recorded with the verdict the test expects (`self.expected`: frame bytes -> set of
    acceptable drop codes, None meaning accepted)."""

    def __init__(self, tb: TB, tenants, *, window: int, nchunks=None, dup_p=0.05,
                 retx_p=0.1, mismatch_p=0.1, extreme_p=0.2):
        self.tb = tb
        self.tenants = {t.job: t for t in tenants}
        rng = tb.rng
        min_count = min(t.count for t in tenants)
        self.window = rng.sample(range(min_count), min(window, min_count))
        self.w = len(self.window)
        self.limit = {t.job: (INF if nchunks is None else nchunks) for t in tenants}
        self.claimed = {t.job: 0 for t in tenants}
        self.current = {}
        self.dup_p, self.retx_p = dup_p, retx_p
        self.mismatch_p, self.extreme_p = mismatch_p, extreme_p
        self._chunks = {}
        self._seed = rng.getrandbits(64)
        P = tb.ports
        self.got = [dict() for _ in range(P)]   # port -> key -> first RESULT received
        self.expected = {}                      # frame bytes -> set of drop codes (None = accepted)
        self.labels = {}                        # frame bytes -> label (attacks)
        self.sent_kinds = collections.Counter()
        self.queues = [tb.subscribe(q) for q in range(P)]
        self.wrng = {(q, t.job): random.Random(rng.getrandbits(64))
                     for t in tenants for q in t.ports}
        self.done = False
        self._tasks = []
        self._collectors = []
        for t in tenants:
            self.current[t.job] = self.chunk(t.job, 0)

    # chunks are generated on demand, each from its own seed: every worker of a job sees
    # the same chunk whatever the order they ask for it
    def chunk(self, job: int, i: int) -> Chunk:
        k = (job, i)
        if k not in self._chunks:
            t = self.tenants[job]
            r = random.Random(f"{self._seed}/{job}/{i}")
            se = self.tb.p.slot_elems
            count = r.choice((1, se, r.randint(1, se), r.randint(1, min(se, 64))))
            ports = t.ports
            if r.random() < self.extreme_p:
                ext = extreme_values(r, count, len(ports))
                vals = {q: ext[k] for k, q in enumerate(ports)}
            else:
                P = self.tb.ports
                vals = {q: [r.randint(INT32_MIN // P, INT32_MAX // P) for _ in range(count)]
                        for q in ports}
            self._chunks[k] = Chunk(job, i, self.window[i % self.w], (i // self.w) % 2,
                                    1000 + i, count, vals)
        return self._chunks[k]

    def issued(self, job: int) -> list:
        n = self.limit[job]
        return [self.chunk(job, i) for i in range(int(n))]

    def frame(self, q: int, c: Chunk, retx: bool = False) -> bytes:
        t = self.tenants[c.job]
        return self.tb.data(q, c.slot, c.vals[q], seq=c.seq, bank=c.bank, job=c.job,
                            worker=t.rank(q), retx=retx, src=host_addr(q, c.job))

    def send(self, q: int, frame: bytes, codes, label: str | None = None):
        """Queue a frame and record the verdicts it may get."""
        codes = set(codes)
        prev = self.expected.get(frame)
        if prev is not None and prev != codes:
            raise RuntimeError(f"test bug: one frame with two expected verdicts ({label})")
        self.expected[frame] = codes
        if label:
            self.labels[frame] = label
            self.sent_kinds[label] += 1
        self.tb.send(q, frame)

    def send_genuine(self, q: int, c: Chunk, retx: bool = False):
        # the first copy starts or joins the round; a repeat is a duplicate, or a resend
        # if the round completed in between
        self.send(q, self.frame(q, c, retx), {None, F.DUPLICATE})

    def try_mismatch(self, q: int, c: Chunk, r: random.Random):
        t = self.tenants[c.job]
        st = self.tb.model.state[t.gslot(c.slot)][c.bank]
        if not (st.bitmap and not st.complete and st.seq == c.seq and not st.bitmap >> q & 1):
            return
        se = self.tb.p.slot_elems
        kind = r.choice(("seq", "scale", "count"))
        vals, seq, scale = c.vals[q], c.seq, 0
        if kind == "seq":
            seq = c.seq + r.choice((1, -1, 1 << 16)) & 0xFFFFFFFF
        elif kind == "scale":
            scale = r.choice((1, -1, 127, -128))
        else:
            vals = vals[:-1] if c.count == se or (c.count > 1 and r.random() < 0.5) else vals + [7]
        f = self.tb.data(q, c.slot, vals, seq=seq, bank=c.bank, job=c.job, worker=t.rank(q),
                         scale=scale, src=rogue_addr(q))
        self.send(q, f, {F.MISMATCH}, f"mismatch ({kind})")

    def diverged(self) -> bool:
        """The switch sent a RESULT the golden model does not expect: waiting on would only
        hang (a missing one shows as a timeout)."""
        ep = self.tb.epoch
        return bool(self.tb.errors) or any(len(ep.egress[p]) > len(ep.expected[p])
                                           for p in range(self.tb.ports))

    async def wait_result(self, q: int, key):
        tb = self.tb
        await tb.wait_until(lambda: key in self.got[q] or self.diverged(), 20000,
                            f"RESULT {key} on port {q}")
        if key not in self.got[q]:
            errs = tb.check(raise_on_error=False)
            raise AssertionError(f"waiting for RESULT {key} on port {q}: the switch departed "
                                 "from the golden model:\n" + "\n".join(errs[:10]))

    async def _collect(self, q: int):
        while True:
            rec = await self.queues[q].get()
            try:
                _, key = parse_result(rec.data)
            except ValueError:
                continue  # the scoreboard reports it
            self.got[q].setdefault(key, rec.data)

    async def _worker(self, q: int, t: Tenant):
        tb, r, j, w = self.tb, self.wrng[(q, t.job)], t.job, self.w
        i = 0
        while i < self.limit[j]:
            c = self.chunk(j, i)
            self.claimed[j] = max(self.claimed[j], i + 1)
            self.current[j] = c
            if i >= w:
                prev = self.chunk(j, i - w)
                await self.wait_result(q, prev.key)
                if r.random() < self.retx_p:       # lost RESULT: resent (unicast)
                    self.send_genuine(q, prev, retx=True)
            if r.random() < self.mismatch_p:
                self.try_mismatch(q, c, r)
            self.send_genuine(q, c)
            if r.random() < self.dup_p:
                self.send_genuine(q, c, retx=True)
            await tb.source_below(q, 2, 200000)
            i += 1
        for k in range(max(0, i - w), i):
            await self.wait_result(q, self.chunk(j, k).key)

    def start(self, extra=()):
        for q in range(self.tb.ports):
            self._collectors.append(cocotb.start_soon(self._collect(q)))
        for t in self.tenants.values():
            for q in t.ports:
                self._tasks.append(cocotb.start_soon(self._worker(q, t)))
        for coro in extra:
            self._tasks.append(cocotb.start_soon(coro))

    def stop(self):
        """Open-ended traffic: every worker finishes the chunks claimed so far."""
        for j in self.limit:
            self.limit[j] = self.claimed[j]

    async def join(self, timeout_us: int = 3000):
        workers = [t for t in self._tasks]
        for t in workers:
            await with_timeout(t, timeout_us, "us")
        self.done = True

    async def epilogue(self):
        """With the switch quiet, one more chunk per job, every verdict in a known order:
        the first worker starts the round and repeats its frame (DUPLICATE), the next one
        sends a mismatching frame (MISMATCH), the rest complete the round, and the first
        worker retransmits (a unicast resend). Jobs in turn; the chunk continues each job's
        sequence, so its bank holds no contribution of a round in progress."""
        tb = self.tb
        for j, t in self.tenants.items():
            i = int(self.limit[j])
            self.limit[j] = i + 1
            c = self.chunk(j, i)
            first, rest = t.ports[0], t.ports[1:]
            f = self.frame(first, c)
            self.expected[f] = {None, F.DUPLICATE}
            expect(await tb.send_wait(first, f), action="new",
                   what=f"job {j} epilogue, first worker")
            if rest:
                expect(await tb.send_wait(first, f), drop=F.DUPLICATE,
                       what=f"job {j} epilogue, repeated frame")
                q = rest[0]
                bad = tb.data(q, c.slot, c.vals[q], seq=c.seq + 1, bank=c.bank, job=j,
                              worker=t.rank(q), src=rogue_addr(q))
                self.expected[bad] = {F.MISMATCH}
                self.labels[bad] = "mismatch (seq)"
                expect(await tb.send_wait(q, bad), drop=F.MISMATCH,
                       what=f"job {j} epilogue, mismatch")
                for k, q in enumerate(rest):
                    f2 = self.frame(q, c)
                    self.expected[f2] = {None, F.DUPLICATE}
                    rec = await tb.send_wait(q, f2)
                    expect(rec, action="join", completed=k == len(rest) - 1,
                           what=f"job {j} epilogue, worker {t.rank(q)}")
            await tb.settle()
            for q in t.ports:
                assert c.key in self.got[q], f"job {j} epilogue: no RESULT on port {q}"
            f3 = self.frame(first, c, retx=True)
            self.expected[f3] = {None, F.DUPLICATE}
            expect(await tb.send_wait(first, f3), action="resend",
                   what=f"job {j} epilogue, retransmission")
            await tb.settle()

    def check_verdicts(self):
        """Every ingress frame of the epoch got a verdict the test intended, per the golden
        model (the scoreboard then holds the switch to the model)."""
        errs = []
        seen = collections.Counter()
        for rec in self.tb.epoch.ingress:
            codes = self.expected.get(rec.data)
            o = rec.outcome
            label = self.labels.get(rec.data, "genuine")
            if codes is None:
                errs.append(f"port {rec.port}: frame the hosts did not send")
                continue
            if o is None or o.drop not in codes:
                errs.append(f"port {rec.port} {label}: golden model says "
                            f"{'?' if o is None else o.drop_name or o.action}, the test expects "
                            + "/".join("accepted" if c is None else F.DROP_REASONS[c]
                                       for c in codes))
            seen[label] += 1
            if label == "genuine" and o is not None:
                seen[f"genuine: {o.drop_name or o.action}"] += 1
        assert not errs, "test or model out of step:\n" + "\n".join(errs[:20])
        return seen

    def check_isolation(self):
        """Explicit isolation claims (independent of the golden model): a RESULT of job A
        reaches only ports in A's mask, addressed to A's worker process there, for a chunk
        A's hosts sent, and carries the sum of A's contributions alone."""
        tb = self.tb
        keys = {j: {c.key for c in self.issued(j)} for j in self.tenants}
        for q in range(tb.ports):
            for g in tb.epoch.egress[q]:
                h, key = parse_result(g.data)
                t = self.tenants.get(h.job)
                assert t is not None, f"port {q}: RESULT of job {h.job}, which has no tenant"
                assert t.mask >> q & 1, (f"port {q}: RESULT of job {h.job} outside its port "
                                         f"mask 0x{t.mask:x}")
                assert key in keys[h.job], \
                    f"port {q}: RESULT {key} of a chunk job {h.job} never sent"
                pf = F.parse_frame(g.data)
                assert (pf.dst_mac, pf.dst_ip, pf.dst_port) == host_addr(q, h.job), (
                    f"port {q}: RESULT of job {h.job} addressed to "
                    f"{F.mac_str(pf.dst_mac)}/{F.ip_str(pf.dst_ip)}:{pf.dst_port}, not to job "
                    f"{h.job}'s worker on that port")
        for j, t in self.tenants.items():
            for c in self.issued(j):
                sums = column_sums([c.vals[m] for m in t.ports])
                for q in t.ports:
                    assert c.key in self.got[q], f"port {q}: no RESULT for {c.key}"
                    check_result(self.got[q][c.key], q, job=j, slot=c.slot, bank=c.bank,
                                 seq=c.seq, sums=sums, dst=host_addr(q, j),
                                 what=f"job {j} chunk {c.index}")


# ------------------------------------------------------------ attacks

class Attacker:
    """Isolation attacks from the host of one port, at random times while the hosts run.
    Each attack copies the fields of a round in progress (job-relative slot, bank, seq,
    count) of some job, so that a frame admitted by mistake would corrupt a live round;
    each is dropped by a rule of §10.2 that the test names beforehand."""

    def __init__(self, hosts: Hosts, port: int, rng: random.Random):
        self.h = hosts
        self.q = port
        self.r = rng
        tb = hosts.tb
        self.p = tb.p
        self.mine = [t for t in hosts.tenants.values() if t.mask >> port & 1]
        self.others = [t for t in hosts.tenants.values() if not t.mask >> port & 1]
        self.disabled = [j for j in range(self.p.jobs) if j not in hosts.tenants]
        kinds = ["bad worker index", "slot = slot_count", "slot past slot_count",
                 "slot aliasing another job", "job >= jobs"]
        if any(len(t.ports) > 1 for t in self.mine):
            kinds.append("spoofed worker of the job")
        if self.others:
            kinds.append("port outside the job's mask")
        if self.disabled:
            kinds.append("disabled job")
        if any(self._foreign_ranks(t) for t in self.mine):
            kinds.append("rank from another job")
        self.kinds = kinds

    def _foreign_ranks(self, t: Tenant) -> set:
        """The port's worker index in the other jobs (in or out of their masks: where it
        would sit), unless it is also its index in job t."""
        ranks = {x.rank(self.q) for x in self.h.tenants.values() if x is not t}
        ranks.discard(t.rank(self.q))
        return ranks

    def frame(self, t: Tenant, c: Chunk, *, job=None, slot=None, worker=None):
        vals = [self.r.randint(-1 << 20, 1 << 20) for _ in range(c.count)]
        return self.h.tb.data(self.q, c.slot if slot is None else slot, vals, seq=c.seq,
                              bank=c.bank, job=t.job if job is None else job,
                              worker=t.rank(self.q) if worker is None else worker,
                              src=rogue_addr(self.q))

    def build(self, kind):
        r, q, h, S = self.r, self.q, self.h, self.p.slots
        t = r.choice(self.mine)
        c = h.current[t.job]
        if kind == "spoofed worker of the job":
            t = r.choice([x for x in self.mine if len(x.ports) > 1])
            c = h.current[t.job]
            other = r.choice([m for m in t.ports if m != q])
            return self.frame(t, c, worker=t.rank(other)), F.WORKER
        if kind == "bad worker index":
            w = r.choice((len(t.ports), len(t.ports) + r.randrange(8), 0x7F, 0xFF))
            return self.frame(t, c, worker=w), F.WORKER
        if kind == "rank from another job":
            t = r.choice([x for x in self.mine if self._foreign_ranks(x)])
            c = h.current[t.job]
            return self.frame(t, c, worker=r.choice(sorted(self._foreign_ranks(t)))), F.WORKER
        if kind == "port outside the job's mask":
            o = r.choice(self.others)
            co = h.current[o.job]
            w = r.choice((o.rank(q), r.randrange(len(o.ports))))
            return self.frame(o, co, worker=w), F.WORKER
        if kind == "slot = slot_count":
            return self.frame(t, c, slot=t.count), F.SLOT_RANGE
        if kind == "slot past slot_count":
            return self.frame(t, c, slot=t.count + r.choice((1, r.randrange(1, 2 * S + 2),
                                                            0xFFFF - t.count))), F.SLOT_RANGE
        if kind == "slot aliasing another job":
            # aim at a round in progress of another job: pool slot g, reached by job t's
            # slot_base + slot modulo 2^m for an adder m bits wide
            o = r.choice([x for x in h.tenants.values() if x is not t])
            co = h.current[o.job]
            g = o.gslot(co.slot)
            sb = max(1, (S - 1).bit_length())
            m = r.choice((sb, sb + 1, 16))
            slot = (g - t.base) % (1 << m)
            assert slot >= t.count   # g lies outside t's range
            vals = [r.randint(-1 << 20, 1 << 20) for _ in range(co.count)]
            f = self.h.tb.data(q, slot, vals, seq=co.seq, bank=co.bank, job=t.job,
                               worker=t.rank(q), src=rogue_addr(q))
            return f, F.SLOT_RANGE
        if kind == "disabled job":
            return self.frame(t, c, job=r.choice(self.disabled)), F.JOB_DISABLED
        if kind == "job >= jobs":
            # an index that truncates to one of this port's jobs, or far out
            jb = max(1, (self.p.jobs - 1).bit_length())
            alias = t.job + (1 << jb) * r.randint(1, 3)
            job = r.choice((alias if alias >= self.p.jobs else self.p.jobs, self.p.jobs, 0xFFFF))
            return self.frame(t, c, job=job), F.JOB_DISABLED
        raise ValueError(kind)

    async def run(self, mean_gap: int = 80):
        tb, r = self.h.tb, self.r
        order = list(self.kinds)
        r.shuffle(order)
        for n, kind in enumerate(itertools.cycle(order)):
            # every kind once early on (the traffic of a small parameter set is short),
            # then at random
            await tb.cycles(r.randint(2, 20) if n < len(order)
                            else r.randint(mean_gap // 4, 2 * mean_gap))
            if self.h.done or all(self.h.claimed[j] >= self.h.limit[j] for j in self.h.limit):
                return
            f, code = self.build(kind)
            if f in self.h.expected and self.h.expected[f] != {code}:
                continue  # (would need an identical genuine frame: never, but be safe)
            self.h.send(self.q, f, {code}, kind)


# ------------------------------------------------------------- tests

@cocotb.test(timeout_time=TIMEOUT_US, timeout_unit="us")
async def test_tenant_random(dut):
    """Tenants on overlapping port sets and disjoint slot ranges, configured with the
    driver; random SwitchML traffic of every job on every port of its mask (both banks,
    random counts, ingress idle cycles, egress back-pressure), mixed with isolation
    attacks, duplicates, mismatches and resends. Besides the scoreboard and the counters:
    every frame's verdict is the one the test intends, no RESULT of a job reaches a port
    outside its mask or another job's worker, and each job's sums are its own workers'."""
    tb = await start(dut, "test_tenant_random")
    if tb.driver is None:
        tb.log.warning("no register map (aggswitch.driver) in this build: skipped")
        return
    tenants = tenant_layout(tb.p)
    if not tenants:
        tb.log.warning("needs 2 jobs and 2 slots: skipped")
        return
    await configure(tb, tenants)
    for t in tenants:
        tb.log.info("job %d: ports %s, slots %d..%d", t.job, t.ports, t.base,
                    t.base + t.count - 1)
    hosts = Hosts(tb, tenants, window=6, nchunks=4 * min(6, min(t.count for t in tenants)),
                  mismatch_p=0.5)
    attackers = [Attacker(hosts, q, random.Random(tb.rng.getrandbits(64)))
                 for q in range(tb.ports)]
    tb.random_idle(0.3)
    tb.random_backpressure(0.4)
    hosts.start(extra=[a.run() for a in attackers])
    await hosts.join()
    tb.set_idle_generator(None)
    tb.set_backpressure_generator(None)
    await tb.settle()
    seen = hosts.check_verdicts()
    tb.log.info("random phase, frames by kind: %s", dict(sorted(seen.items())))
    await hosts.epilogue()
    seen = hosts.check_verdicts()
    want = {k for a in attackers for k in a.kinds}
    missing = want - set(seen)
    assert not missing, f"attacks never sent (raise the traffic or the rate): {missing}"
    hosts.check_isolation()
    await check_job_table(tb)
    lats = [lat for _, _, lat in tb.latencies()]
    tb.log.info("%d RESULT frames, latency min %d max %d (documented %d)", len(lats),
                min(lats), max(lats), tb.latency)
    await finish(tb)


@cocotb.test(timeout_time=TIMEOUT_US, timeout_unit="us")
async def test_reconfigure_mid_round(dut):
    """SPEC §10.7 with the switch otherwise quiet: disabling a job with rounds in progress
    (both banks) drops its frames as JOB_DISABLED (resends included) while another job
    carries on; re-enabling resumes every round where it stood; a round decided before the
    disable still sends its RESULTs; removing a port that has not contributed from a
    disabled job's mask lets the round complete on the new mask (ranks shift, RESULTs go
    to the new mask's ports); adding one back makes the round wait for it; a removal that
    leaves the round covered keeps it incomplete until a frame of it is accepted; moving a
    job's slot range leaves the slot state where it was; entries the driver refuses (a
    range past the pool, no slots, no ports) drop frames under the right reasons; reset
    restores the defaults."""
    tb = await start(dut, "test_reconfigure_mid_round")
    P, p = tb.ports, tb.p
    k1 = 8
    if tb.driver is None or P < 3 or p.jobs < 2 or p.slots < 3 * k1:
        tb.log.warning("needs the register map, 3 ports, 2 jobs and %d slots: skipped", 3 * k1)
        return
    all_ports = (1 << P) - 1
    mask1 = sum(1 << q for q in range(1, P)) if P >= 4 else all_ports
    base1, free_base = p.slots - 2 * k1, p.slots - k1
    await tb.configure_job(0, port_mask=all_ports, slot_base=0, slot_count=base1)
    await tb.configure_job(1, port_mask=mask1, slot_base=base1, slot_count=k1)
    await check_job_table(tb)
    m = ports_of(mask1)
    m0, m1, m2 = m[0], m[1], m[2]
    n = min(16, p.slot_elems)
    state = {"mask": mask1}
    vals = {}

    def v(tag):
        """Values of every port for round `tag` = (job, seq)."""
        if tag not in vals:
            vals[tag] = {q: tb.random_values(n, -1000000, 1000000) for q in range(P)}
        return vals[tag]

    def frame(job, q, slot, seq, bank=0, worker=None, retx=False):
        mask = state["mask"] if job == 1 else all_ports
        vv = v((job, seq))[q]
        return tb.data(q, slot, vv, seq=seq, bank=bank, job=job,
                       worker=rank(mask, q) if worker is None else worker, retx=retx,
                       src=host_addr(q, job))

    async def contribute(job, ports, slot, seq, bank=0, isolated_last=False):
        recs = []
        for i, q in enumerate(ports):
            f = frame(job, q, slot, seq, bank)
            if isolated_last and i == len(ports) - 1:
                recs.append(await tb.send_isolated(q, f))
            else:
                recs.append(await tb.send_wait(q, f))
        return recs

    def results(q, job=None, seq=None):
        out = []
        for g in tb.epoch.egress[q]:
            h, _ = parse_result(g.data)
            if (job is None or h.job == job) and (seq is None or h.seq == seq):
                out.append(g)
        return out

    def check_round(job, slot, seq, bank, contributors, dest, ts=None, what=""):
        sums = column_sums([vals[(job, seq)][q] for q in contributors])
        for q in range(P):
            got = results(q, job, seq)
            if q in dest:
                assert len(got) == 1, \
                    f"{what}: port {q} got {len(got)} RESULTs of job {job} seq {seq}"
                check_result(got[0].data, q, job=job, slot=slot, bank=bank, seq=seq, sums=sums,
                             dst=host_addr(q, job), ts=ts, what=what)
            else:
                assert not got, f"{what}: port {q} (not in the job's mask) got a RESULT"

    async def set_mask(mask):
        await set_job_field(tb, 1, "CTRL", 0)
        await set_job_field(tb, 1, "PORT_MASK", mask)
        await set_job_field(tb, 1, "CTRL", 1)
        state["mask"] = mask
        await check_job_table(tb)

    # --- A: disable with rounds in progress in both banks; job 0 carries on ---------------
    expect((await contribute(1, [m0], 0, 10))[0], action="new", what="job 1 round A, first worker")
    recs = await contribute(1, [m0, m1], 1, 11, bank=1)
    expect(recs[1], action="join", what="job 1 round B (bank 1), second worker")
    recs = await contribute(1, m, 2, 12, isolated_last=True)
    expect(recs[-1], completed=True, what="job 1 round C")
    await tb.settle()
    check_round(1, 2, 12, 0, m, m, ts=recs[-1].t_last, what="job 1 round C")
    # job 0, same job-relative slot and seq as round A: every port but the last
    recs = await contribute(0, list(range(P - 1)), 0, 10)
    expect(recs[-1], action="join", completed=False, what="job 0 round, before the disable")

    await set_job_field(tb, 1, "CTRL", 0)
    await check_job_table(tb)
    egress_before = [len(tb.epoch.egress[q]) for q in range(P)]
    cases = [("round A, next worker", m1, frame(1, m1, 0, 10)),
             ("round B, missing worker", m2, frame(1, m2, 1, 11, bank=1)),
             ("retransmission of complete round C (no resend)", m0, frame(1, m0, 2, 12, retx=True)),
             ("new round", m0, frame(1, m0, 3, 13))]
    if not mask1 & 1:
        cases.append(("port outside the mask (rule 8 before rule 10)", 0,
                      frame(1, 0, 0, 10, worker=0)))
    for what, q, f in cases:
        expect(await tb.send_wait(q, f), drop=F.JOB_DISABLED, what=f"job 1 disabled: {what}")
    done = await tb.send_isolated(P - 1, frame(0, P - 1, 0, 10))
    expect(done, completed=True, what="job 0 round completes while job 1 is disabled")
    await tb.settle()
    check_round(0, 0, 10, 0, range(P), range(P), ts=done.t_last, what="job 0 during the disable")
    for q in range(P):
        new = tb.epoch.egress[q][egress_before[q]:]
        assert all(parse_result(g.data)[0].job == 0 for g in new), \
            f"port {q}: a RESULT of disabled job 1"

    await set_job_field(tb, 1, "CTRL", 1)
    await check_job_table(tb)
    recs = await contribute(1, m[1:], 0, 10, isolated_last=True)
    expect(recs[-1], completed=True, what="job 1 round A resumed")
    await tb.settle()
    check_round(1, 0, 10, 0, m, m, ts=recs[-1].t_last, what="job 1 round A after re-enable")
    recs = await contribute(1, m[2:], 1, 11, bank=1, isolated_last=True)
    expect(recs[-1], completed=True, what="job 1 round B resumed")
    await tb.settle()
    check_round(1, 1, 11, 1, m, m, ts=recs[-1].t_last, what="job 1 round B after re-enable")
    r = await tb.send_isolated(m0, frame(1, m0, 2, 12, retx=True))
    expect(r, action="resend", what="retransmission of round C after re-enable")
    await tb.settle()
    got = results(m0, 1, 12)
    assert len(got) == 2 and F.parse_frame(got[1].data).hdr.flags & F.FLAG_UNICAST, \
        "round C: no unicast resend after re-enable"

    # --- B: a round decided before the disable still sends its RESULTs -----------------
    for s in tb.sinks:
        s.pause = True
    recs = await contribute(1, m, 4, 14)
    expect(recs[-1], completed=True, what="job 1 round D, egress stalled")
    m_valid = [getattr(dut, f"m{q}_axis_tvalid") for q in m]
    await tb.wait_until(lambda: all(bool(x.value) for x in m_valid), 10 * tb.latency,
                        "round D's RESULTs presented")
    await set_job_field(tb, 1, "CTRL", 0, quiet=False)
    expect(await tb.send_wait(m0, frame(1, m0, 4, 14, retx=True)), drop=F.JOB_DISABLED,
           what="retransmission of round D after the disable")
    for s in tb.sinks:
        s.pause = False
    await tb.settle()
    check_round(1, 4, 14, 0, m, m, what="round D, decided before the disable")
    await set_job_field(tb, 1, "CTRL", 1)

    # --- C: remove a port that has not contributed, mid-round ---------------------------
    expect((await contribute(1, [m0], 5, 15))[0], action="new", what="round E, first worker")
    old_mask = state["mask"]
    await set_mask(old_mask & ~(1 << m1))
    expect(await tb.send_wait(m1, frame(1, m1, 5, 15, worker=rank(old_mask, m1))),
           drop=F.WORKER, what="removed port")
    expect(await tb.send_wait(m2, frame(1, m2, 5, 15, worker=rank(old_mask, m2))),
           drop=F.WORKER, what="old rank after the removal")
    rest = [q for q in ports_of(state["mask"]) if q != m0]
    recs = await contribute(1, rest, 5, 15, isolated_last=True)
    for rr in recs[:-1]:
        expect(rr, action="join", completed=False, what="round E on the new mask")
    expect(recs[-1], action="join", completed=True, what="round E completes on the new mask")
    await tb.settle()
    check_round(1, 5, 15, 0, [m0] + rest, ports_of(state["mask"]), ts=recs[-1].t_last,
                what="round E (port removed)")

    # --- D: add the port back, mid-round -------------------------------------------------
    expect((await contribute(1, [m0], 6, 16))[0], action="new", what="round F, first worker")
    await set_mask(mask1)
    recs = await contribute(1, [q for q in m if q not in (m0, m1)], 6, 16)
    expect(recs[-1], action="join", completed=False, what="round F waits for the added port")
    await tb.settle()
    assert not any(results(q, 1, 16) for q in range(P)), "round F: RESULT before the added port"
    done = await tb.send_isolated(m1, frame(1, m1, 6, 16))
    expect(done, completed=True, what="round F completes with the added port")
    await tb.settle()
    check_round(1, 6, 16, 0, m, m, ts=done.t_last, what="round F (port added)")

    # --- E: a removal that leaves the round covered -----------------------------------
    # Every remaining worker has contributed, but completion is decided when a frame of the
    # round is accepted, and their frames are now duplicates: the round waits.
    recs = await contribute(1, [q for q in m if q != m1], 7, 17)
    expect(recs[-1], completed=False, what="round G without the port about to be removed")
    await set_mask(mask1 & ~(1 << m1))
    expect(await tb.send_wait(m0, frame(1, m0, 7, 17, retx=True)), drop=F.DUPLICATE,
           what="round G covered by the new mask: retransmission is a duplicate")
    await tb.settle()
    assert not any(results(q, 1, 17) for q in range(P)), \
        "round G completed without an accepted frame"
    await set_mask(mask1)
    done = await tb.send_isolated(m1, frame(1, m1, 7, 17))
    expect(done, completed=True, what="round G completes when the port is back")
    await tb.settle()
    check_round(1, 7, 17, 0, m, m, ts=done.t_last, what="round G")

    # --- F: moving the slot range leaves slot state where it was --------------------------
    expect((await contribute(1, [m0], 3, 18, bank=1))[0], action="new",
           what="round H, first worker")
    await set_job_field(tb, 1, "CTRL", 0)
    await set_job_field(tb, 1, "SLOT_BASE", free_base)
    await set_job_field(tb, 1, "CTRL", 1)
    await check_job_table(tb)
    expect(await tb.send_wait(m1, frame(1, m1, 3, 18, bank=1)), action="new",
           what="round H's slot after the move: a fresh pool slot")
    await set_job_field(tb, 1, "CTRL", 0)
    await set_job_field(tb, 1, "SLOT_BASE", base1)
    await set_job_field(tb, 1, "CTRL", 1)
    await check_job_table(tb)
    recs = await contribute(1, m[1:], 3, 18, bank=1, isolated_last=True)
    expect(recs[0], action="join", what="round H after moving back: the old state is there")
    expect(recs[-1], completed=True, what="round H completes")
    await tb.settle()
    check_round(1, 3, 18, 1, m, m, ts=recs[-1].t_last, what="round H (range moved and back)")

    # --- G: entries configure_job refuses, written register by register -------------------
    # A range reaching past the pool (rule 9 checks slot_base + slot against the pool as
    # well as slot against slot_count), a base past the pool, no slots, no ports.
    await set_job_field(tb, 1, "SLOT_COUNT", 2 * k1 + 8)
    await check_job_table(tb)
    for slot in (2 * k1, 2 * k1 + 7):
        expect(await tb.send_wait(m0, frame(1, m0, slot, 19)), drop=F.SLOT_RANGE,
               what=f"job-relative slot {slot}: pool slot {base1 + slot}, past the pool")
    expect(await tb.send_wait(m0, frame(1, m0, 2 * k1 - 1, 19)), action="new",
           what="the pool's last slot, inside the enlarged range")
    await set_job_field(tb, 1, "SLOT_BASE", (1 << by_name(p)["JOB1_SLOT_BASE"].bits) - 1)
    expect(await tb.send_wait(m0, frame(1, m0, 0, 19)), drop=F.SLOT_RANGE,
           what="base past the pool")
    await set_job_field(tb, 1, "SLOT_BASE", base1)
    await set_job_field(tb, 1, "SLOT_COUNT", 0)
    expect(await tb.send_wait(m0, frame(1, m0, 0, 19)), drop=F.SLOT_RANGE, what="slot_count 0")
    await set_job_field(tb, 1, "SLOT_COUNT", k1)
    await set_job_field(tb, 1, "PORT_MASK", 0)
    expect(await tb.send_wait(m0, frame(1, m0, 0, 19, worker=0)), drop=F.WORKER, what="empty mask")
    await set_job_field(tb, 1, "PORT_MASK", mask1)
    await check_job_table(tb)
    await tb.settle()
    await tb.check_counters()   # recorded; finish() raises on any error

    # --- reset restores the job table's defaults (SPEC §10.1, §10.6) ---------------------
    await tb.reset()
    await check_job_table(tb)   # the model restarted with the defaults
    assert tb.model.job_table[1].enable is False and tb.model.job_table[0].slot_count == p.slots
    expect(await tb.send_wait(m0, frame(1, m0, 0, 20)), drop=F.JOB_DISABLED,
           what="job 1 after reset")
    vals0 = [tb.random_values(n) for _ in range(P)]
    for q in range(P - 1):
        tb.send(q, tb.data(q, p.slots - 1, vals0[q], seq=21, src=host_addr(q, 0)))
    done = await tb.send_isolated(P - 1, tb.data(P - 1, p.slots - 1, vals0[-1], seq=21,
                                                 src=host_addr(P - 1, 0)))
    expect(done, completed=True, what="job 0 over the whole pool after reset")
    await tb.settle()
    for q in range(P):
        check_result(tb.epoch.egress[q][-1].data, q, slot=p.slots - 1, bank=0, seq=21,
                     sums=column_sums(vals0), dst=host_addr(q, 0), ts=done.t_last,
                     what="job 0 after reset")
    await finish(tb)


# ------------------------------------------------------- AXI4-Lite stress

class AxilMonitor:
    """AXI4-Lite protocol checks on the switch's slave ports, every cycle: a response's
    valid stays high and its payload stable until the handshake; no response without its
    request (B after both AW and W, R after AR); no X on handshake signals. Also counts
    what happened, so a test can show it exercised concurrency and back-pressure."""

    def __init__(self, tb: TB):
        self.tb = tb
        self.stats = collections.Counter()
        self._task = cocotb.start_soon(self._run())

    async def _run(self):
        tb, dut = self.tb, self.tb.dut
        s = {n: getattr(dut, f"s_axil_{n}") for n in (
            "awvalid", "awready", "wvalid", "wready", "bvalid", "bready", "bresp",
            "arvalid", "arready", "rvalid", "rready", "rresp", "rdata", "araddr", "awaddr")}
        edge = RisingEdge(dut.clk)
        n_aw = n_w = n_b = n_ar = n_r = 0
        held_b = held_r = None

        def bit(name):
            try:
                return bool(s[name].value)
            except ValueError:
                tb.error(f"cycle {tb.cycle}: s_axil_{name} is {s[name].value}")
                return False

        while True:
            await edge
            if bit_rst(dut):
                n_aw = n_w = n_b = n_ar = n_r = 0
                held_b = held_r = None
                continue
            aw = bit("awvalid") and bit("awready")
            w = bit("wvalid") and bit("wready")
            ar = bit("arvalid") and bit("arready")
            bv, rv = bit("bvalid"), bit("rvalid")
            # B channel
            if bv:
                cur = int(s["bresp"].value)
                if held_b is not None and cur != held_b:
                    tb.error(f"cycle {tb.cycle}: bresp changed while bvalid was stalled")
                if n_b >= min(n_aw, n_w):
                    tb.error(f"cycle {tb.cycle}: bvalid without an outstanding write")
                if bit("bready"):
                    n_b += 1
                    held_b = None
                else:
                    held_b = cur
                    self.stats["b stalled"] += 1
            elif held_b is not None:
                tb.error(f"cycle {tb.cycle}: bvalid fell before bready")
                held_b = None
            # R channel
            if rv:
                cur = (int(s["rresp"].value), int(s["rdata"].value))
                if held_r is not None and cur != held_r:
                    tb.error(f"cycle {tb.cycle}: rdata/rresp changed while rvalid was stalled")
                if n_r >= n_ar:
                    tb.error(f"cycle {tb.cycle}: rvalid without an outstanding read")
                if bit("rready"):
                    n_r += 1
                    held_r = None
                else:
                    held_r = cur
                    self.stats["r stalled"] += 1
            elif held_r is not None:
                tb.error(f"cycle {tb.cycle}: rvalid fell before rready")
                held_r = None
            n_aw += aw
            n_w += w
            n_ar += ar
            self.stats["aw"] += aw
            self.stats["w"] += w
            self.stats["ar"] += ar
            if (aw or w) and ar:
                self.stats["read and write same cycle"] += 1
            if bit("awvalid") and not bit("wvalid"):
                self.stats["aw before w"] += 1
            if bit("wvalid") and not bit("awvalid"):
                self.stats["w before aw"] += 1
            self.stats["max outstanding reads"] = max(self.stats["max outstanding reads"],
                                                      n_ar - n_r)


def bit_rst(dut) -> bool:
    try:
        return bool(dut.rst.value)
    except ValueError:
        return True


class ModelHistory:
    """The golden model's per-port rx and ingress-drop counters, per cycle, over the last
    `depth` cycles: lower bounds for counters read while traffic flows."""

    INGRESS_REASONS = (F.NOT_AGG, F.MALFORMED, F.JOB_DISABLED, F.SLOT_RANGE, F.WORKER)

    def __init__(self, tb: TB, depth: int = 128):
        self.tb = tb
        self.hist = collections.deque(maxlen=depth)
        self._task = cocotb.start_soon(self._run())

    def snapshot(self):
        c = self.tb.model.counters
        return {"rx": list(c.rx), **{f"drop_{F.DROP_REASONS[k]}": list(c.drops[k])
                                     for k in self.INGRESS_REASONS}}

    async def _run(self):
        edge = RisingEdge(self.tb.dut.clk)
        while True:
            await edge
            self.hist.append((self.tb.cycle, self.snapshot()))

    def before(self, cycles: int):
        """The snapshot `cycles` cycles ago (or the oldest kept)."""
        if not self.hist:
            return None
        now = self.tb.cycle
        for cyc, snap in reversed(self.hist):
            if cyc is not None and now is not None and (now - cyc) & 0xFFFFFFFF >= cycles:
                return snap
        return self.hist[0][1]


def model_counter(tb: TB, name: str):
    """The golden model's value of register `name` (a counter), or None."""
    c = tb.model.counters
    if name in ("RESULTS", "OVERFLOWS", "NANS"):
        return getattr(c, name.lower())
    if name.startswith("P") and "_" in name:
        port, field = name[1:].split("_", 1)
        field = field.lower()
        q = int(port)
        if field == "drop_egress_stall":
            return 0    # the pause watchdog never fires here: no egress is stalled that long
        if field.startswith("drop_"):
            return c.drops[F.DROP_REASONS.index(field[5:])][q]
        return getattr(c, field)[q]
    return None


def unmapped_addresses(p, rng: random.Random, extra: int = 8) -> list:
    mapped = {r.offset for r in register_map(p)}
    cands = [0x024, 0x03C, 0x050, 0x0FC, JOB_BASE + JOB_STRIDE * p.jobs, 0x7FC,
             GLOBAL_COUNTER_BASE + 4 * len(GLOBAL_COUNTERS), 0x0FFC,
             PORT_COUNTER_BASE + 4 * len(PORT_COUNTERS),
             PORT_COUNTER_BASE + PORT_COUNTER_STRIDE - 4,
             PORT_COUNTER_BASE + PORT_COUNTER_STRIDE * p.ports, 0x2000, 0x8000, 0xFFFC]
    while len(cands) < 14 + extra:
        cands.append(rng.randrange(0, 1 << 14) * 4)
    return [a for a in dict.fromkeys(cands) if a not in mapped]


def merge(old: int, addr: int, data: bytes, bits: int) -> int:
    """Register value after writing `data` at byte address `addr` (wstrb = those bytes),
    bits above the register's width ignored."""
    v = old
    for i, b in enumerate(data):
        lane = (addr + i) % 4
        v = (v & ~(0xFF << 8 * lane)) | (b << 8 * lane)
    return v & ((1 << bits) - 1)


@cocotb.test(timeout_time=TIMEOUT_US, timeout_unit="us")
async def test_axil_concurrency(dut):
    """The AXI4-Lite slave under stress while traffic flows: reads and writes issued
    concurrently (several outstanding, read and write channels at once, random stalls on
    all five channels), back-to-back counter reads (monotonic, between the model's counts
    before and after), CYCLES monotonic over sequential and pipelined reads, partial-wstrb
    writes (read back), SLVERR for writes to read-only or unmapped and reads of unmapped
    addresses (changing nothing); then partial writes of the switch address with the switch
    quiet, and RESULTs from the new address. Ends with the scoreboard and every counter."""
    tb = await start(dut, "test_axil_concurrency")
    if tb.driver is None:
        tb.log.warning("no register map (aggswitch.driver) in this build: skipped")
        return
    p, P, rng = tb.p, tb.ports, tb.rng
    regs = by_name(p)
    axil = tb.axil
    mon = AxilMonitor(tb)
    hist = ModelHistory(tb)
    shadow = {r.name: r.reset for r in register_map(p) if r.access == "rw"}
    fixed = {r.name: r.reset for r in register_map(p) if r.access == "ro"}
    scratch = p.jobs - 1 if p.jobs >= 2 else None

    async def raw_read(addr):
        return await with_timeout(axil.read(addr, 4), 100, "us")

    async def raw_write(addr, data: bytes):
        return await with_timeout(axil.write(addr, data), 100, "us")

    async def check_register_file(what):
        for r in register_map(p):
            got = await tb.bus.read(r.offset)
            if r.access == "ro":
                assert got == fixed[r.name], \
                    f"{what}: {r.name} reads {got:#x}, not {fixed[r.name]:#x}"
            elif r.access == "rw":
                assert got == shadow[r.name], \
                    f"{what}: {r.name} reads {got:#x}, expected {shadow[r.name]:#x}"

    def sync_scratch_model():
        j = scratch
        tb.model.job_table[j] = Job(bool(shadow[f"JOB{j}_CTRL"] & 1), shadow[f"JOB{j}_PORT_MASK"],
                                    shadow[f"JOB{j}_SLOT_BASE"], shadow[f"JOB{j}_SLOT_COUNT"])

    await check_register_file("after reset")

    # --- traffic (job 0 on every port) and stalls on every AXI4-Lite channel ----------
    t0 = Tenant(0, (1 << P) - 1, 0, p.slots)
    hosts = Hosts(tb, [t0], window=min(8, p.slots - 1) if p.slots > 1 else 1, nchunks=None,
                  mismatch_p=0.05)
    tb.random_idle(0.3)
    tb.random_backpressure(0.3)
    chans = [axil.write_if.aw_channel, axil.write_if.w_channel, axil.write_if.b_channel,
             axil.read_if.ar_channel, axil.read_if.r_channel]
    for ch in chans:
        ch.set_pause_generator(bursty_pause(random.Random(rng.getrandbits(64)), 0.3, 4))
    hosts.start()
    await tb.wait_until(lambda: any(tb.epoch.egress), 20000, "first RESULT")
    egress_at_start = sum(len(x) for x in tb.epoch.egress)

    # (a) a concurrent mix: writers of the scratch job's registers, readers of the same
    # registers (each read returns a value of the register's write sequence, never going
    # back), readers of fixed registers and counters, no-op writes of the switch address,
    # and SLVERR cases, all in flight at once
    histories = {}
    errors = []

    async def writer(name, values):
        off = regs[name].offset
        for val in values:
            resp = await raw_write(off, val.to_bytes(4, "little"))
            if resp.resp != AxiResp.OKAY:
                errors.append(f"write {name} = {val:#x}: {AxiResp(resp.resp).name}")
            histories[name].append(val & ((1 << regs[name].bits) - 1))

    async def reader(name, n):
        # The value read is one of the register's write sequence: one whose write has
        # completed, or the one whose write is in flight; never an older one than the
        # previous read returned.
        off = regs[name].offset
        full = [shadow[name]] + pending[name]
        last_idx = 0
        for _ in range(n):
            resp = await raw_read(off)
            val = int.from_bytes(resp.data, "little")
            if resp.resp != AxiResp.OKAY:
                errors.append(f"read {name}: {AxiResp(resp.resp).name}")
                continue
            top = min(len(histories[name]), len(full) - 1)
            idx = next((k for k in range(last_idx, top + 1) if full[k] == val), None)
            if idx is None:
                errors.append(f"read {name} = {val:#x}: not in its write sequence "
                              f"{[hex(x) for x in full]} between positions {last_idx} and {top}")
            else:
                last_idx = idx

    async def fixed_reader(names, n):
        for _ in range(n):
            name = rng.choice(names)
            got = await tb.bus.read(regs[name].offset)
            if got != fixed[name]:
                errors.append(f"{name} reads {got:#x} under load, not {fixed[name]:#x}")

    async def counter_reader(names, n):
        last = {}
        for _ in range(n):
            name = rng.choice(names)
            got = await tb.bus.read(regs[name].offset)
            hi = model_counter(tb, name)
            if got < last.get(name, 0):
                errors.append(f"{name} went back from {last[name]} to {got}")
            if hi is not None and got > hi:
                errors.append(f"{name} reads {got}, more than the model's {hi} so far")
            last[name] = got

    async def expect_slverr(kind, addr):
        if kind == "read":
            resp = await raw_read(addr)
        else:
            resp = await raw_write(addr, rng.getrandbits(32).to_bytes(4, "little"))
        if resp.resp != AxiResp.SLVERR:
            errors.append(f"{kind} 0x{addr:04X}: {AxiResp(resp.resp).name}, expected SLVERR")

    pending = {}
    tasks = []
    if scratch is not None:
        for field in ("PORT_MASK", "SLOT_BASE", "SLOT_COUNT"):
            name = f"JOB{scratch}_{field}"
            bits = regs[name].bits
            k = min(6, 1 << bits)
            vals_ = rng.sample(range(1 << bits), k)
            # some with bits above the register's width set: they must be ignored
            vals_ = [v | (rng.getrandbits(32 - bits) << bits if rng.random() < 0.5 else 0)
                     for v in vals_]
            histories[name] = [shadow[name]]
            pending[name] = [v & ((1 << bits) - 1) for v in vals_]
            tasks.append(cocotb.start_soon(writer(name, vals_)))
            tasks.append(cocotb.start_soon(reader(name, 12)))
        name = f"JOB{scratch}_CTRL"
        histories[name] = [0]
        pending[name] = [0]
        # enable bit 0 clear, every other bit set: the job stays disabled
        tasks.append(cocotb.start_soon(writer(name, [0xFFFFFFFE, 0])))
        tasks.append(cocotb.start_soon(reader(name, 6)))
    for name in ("SWITCH_MAC_HI", "SWITCH_MAC_LO", "SWITCH_IP", "AGG_PORT"):
        histories[name] = [shadow[name]]
        tasks.append(cocotb.start_soon(writer(name, [shadow[name]] * 3)))
    tasks.append(cocotb.start_soon(fixed_reader(sorted(fixed), 24)))
    counters = [r.name for r in register_map(p) if r.access == "counter" and r.name != "CYCLES"]
    tasks.append(cocotb.start_soon(counter_reader(counters, 24)))
    tasks.append(cocotb.start_soon(counter_reader(counters, 24)))
    ro_names = sorted(fixed) + ["CYCLES"] + rng.sample(counters, min(6, len(counters)))
    bad = unmapped_addresses(p, rng)
    for a in bad[:10]:
        tasks.append(cocotb.start_soon(expect_slverr("read", a)))
        tasks.append(cocotb.start_soon(expect_slverr("write", a)))
    for name in ro_names:
        tasks.append(cocotb.start_soon(expect_slverr("write", regs[name].offset)))
    for t in tasks:
        await with_timeout(t, 500, "us")
    assert not errors, "concurrent AXI4-Lite accesses:\n" + "\n".join(errors[:20])
    if scratch is not None:
        for field in ("PORT_MASK", "SLOT_BASE", "SLOT_COUNT", "CTRL"):
            name = f"JOB{scratch}_{field}"
            shadow[name] = histories[name][-1]
            got = await tb.bus.read(regs[name].offset)
            assert got == shadow[name], \
                f"{name} reads {got:#x} after the writes, last written {shadow[name]:#x}"
        sync_scratch_model()
    tb.log.info("concurrent mix done at cycle %d: %s", tb.cycle, dict(mon.stats))

    # (b) back-to-back reads of every counter, three times over: each value monotonic,
    # at most the model's count when the read completes, and (rx and the ingress drop
    # reasons, which the switch counts within a few cycles) at least the model's count a
    # few dozen cycles before the read was issued
    prev = {}
    for rnd in range(3):
        for name in counters:
            lo_snap = hist.before(32)
            got = await tb.bus.read(regs[name].offset)
            hi = model_counter(tb, name)
            assert got <= hi, f"{name} reads {got}, the model has counted only {hi}"
            assert got >= prev.get(name, 0), f"{name} went back from {prev[name]} to {got}"
            prev[name] = got
            if lo_snap is not None and name.startswith("P"):
                q, field = name[1:].split("_", 1)
                lo = lo_snap.get(field.lower())
                if lo is not None:
                    assert got >= lo[int(q)], (f"{name} reads {got} while traffic flows, but the "
                                               f"model had counted {lo[int(q)]} 32 cycles before")

    # (c) CYCLES: sequential reads strictly increasing and within the cycles of the read;
    # pipelined reads (issued at once, several outstanding) strictly increasing in order
    last = -1
    for _ in range(24):
        before = tb.cycle
        got = await tb.driver.read("CYCLES")
        after = tb.cycle
        assert before <= got <= after, f"CYCLES read {got}, the cycle counter was {before}..{after}"
        assert got > last, f"CYCLES not monotonic: {last} then {got}"
        last = got
    names = ["CYCLES", "CYCLES", "ID", "CYCLES", counters[0], "CYCLES", "CYCLES", "PORTS"] * 3
    before = tb.cycle
    reads = [cocotb.start_soon(axil.read(regs[nm].offset, 4)) for nm in names]
    resps = [await with_timeout(t, 100, "us") for t in reads]
    after = tb.cycle
    cyc = []
    for nm, resp in zip(names, resps):
        assert resp.resp == AxiResp.OKAY, f"pipelined read of {nm}: {AxiResp(resp.resp).name}"
        val = int.from_bytes(resp.data, "little")
        if nm == "CYCLES":
            cyc.append(val)
        elif nm in fixed:
            assert val == fixed[nm], f"pipelined read of {nm}: {val:#x}"
    assert all(before <= c <= after for c in cyc) and cyc == sorted(set(cyc)), \
        f"pipelined CYCLES reads {cyc} not strictly increasing within {before}..{after}"

    # (d) partial writes of the scratch job's registers while traffic flows
    if scratch is not None:
        for field in ("SLOT_BASE", "SLOT_COUNT", "PORT_MASK", "CTRL"):
            name = f"JOB{scratch}_{field}"
            r = regs[name]
            for lanes in ((0,), (1,), (2, 3), (1, 2), (3,)):
                data = bytes(rng.getrandbits(8) for _ in lanes)
                if field == "CTRL" and 0 in lanes:
                    data = bytes([data[0] & 0xFE]) + data[1:]  # keep the job disabled
                addr = r.offset + lanes[0]
                resp = await raw_write(addr, data)
                assert resp.resp == AxiResp.OKAY, \
                    f"partial write of {name}: {AxiResp(resp.resp).name}"
                shadow[name] = merge(shadow[name], addr, data, r.bits)
                got = await tb.bus.read(r.offset)
                assert got == shadow[name], (f"{name} after writing bytes {lanes} = {data.hex()}: "
                                             f"reads {got:#x}, expected {shadow[name]:#x}")
        sync_scratch_model()
    await check_register_file("after the writes under load")

    egress_at_end = sum(len(x) for x in tb.epoch.egress)
    assert egress_at_end > egress_at_start, "no RESULT flowed while the AXI4-Lite stress ran"
    hosts.stop()
    await hosts.join()
    for ch in chans:
        ch.set_pause_generator(None)
        ch.pause = False
    tb.set_idle_generator(None)
    tb.set_backpressure_generator(None)
    await tb.settle()
    seen = hosts.check_verdicts()
    tb.log.info("traffic: %d chunks per worker, %d RESULTs (%d during the stress); AXI4-Lite: %s",
                hosts.limit[0], sum(len(x) for x in tb.epoch.egress),
                egress_at_end - egress_at_start, dict(mon.stats))
    tb.log.info("frames by verdict: %s", dict(sorted(seen.items())))
    for k in ("read and write same cycle", "b stalled", "r stalled", "aw before w", "w before aw"):
        assert mon.stats[k] > 0, f"the stress never produced '{k}'"
    assert mon.stats["max outstanding reads"] >= 1

    # --- partial writes of the switch address, the switch quiet ----------------------------
    writes = [("SWITCH_IP", 1, b"\xab"),            # byte 1 only
              ("SWITCH_IP", 3, b"\x0b"),            # byte 3 only
              ("SWITCH_MAC_LO", 2, b"\x5a\xa5"),    # bytes 2..3
              ("SWITCH_MAC_HI", 0, b"\x06"),        # byte 0 (bit 1 set: still unicast)
              ("SWITCH_MAC_HI", 2, b"\xff\xff"),    # above the 16-bit width: ignored
              ("AGG_PORT", 0, b"\x99"),             # byte 0
              ("AGG_PORT", 2, b"\x12\x34")]         # above the 16-bit width: ignored
    for name, lane, data in writes:
        r = regs[name]
        await tb.settle(quiet=8)
        resp = await raw_write(r.offset + lane, data)
        assert resp.resp == AxiResp.OKAY, f"partial write of {name}: {AxiResp(resp.resp).name}"
        shadow[name] = merge(shadow[name], r.offset + lane, data, r.bits)
        got = await tb.bus.read(r.offset)
        assert got == shadow[name], (f"{name} after writing byte(s) {lane}.. = {data.hex()}: reads "
                                     f"{got:#x}, expected {shadow[name]:#x}")
    tb.model.switch_mac = (shadow["SWITCH_MAC_HI"] << 32) | shadow["SWITCH_MAC_LO"]
    tb.model.switch_ip = shadow["SWITCH_IP"]
    tb.model.agg_port = shadow["AGG_PORT"]
    new_switch = (tb.model.switch_mac, tb.model.switch_ip, tb.model.agg_port)
    assert new_switch[1] == (F.DEFAULT_IP & 0x00FF00FF) | 0x0B00AB00, hex(new_switch[1])

    # a round on a slot the traffic never used: RESULTs from the new address
    S = next(s for s in range(p.slots) if s not in hosts.window)
    n = min(16, p.slot_elems)
    vals = [tb.random_values(n) for _ in range(P)]
    for q in range(P - 1):
        tb.send(q, tb.data(q, S, vals[q], seq=77, src=host_addr(q, 0)))
    done = await tb.send_isolated(P - 1, tb.data(P - 1, S, vals[-1], seq=77,
                                                 src=host_addr(P - 1, 0)))
    expect(done, completed=True, what="round after the address change")
    await tb.settle()
    for q in range(P):
        check_result(tb.epoch.egress[q][-1].data, q, slot=S, bank=0, seq=77, sums=column_sums(vals),
                     dst=host_addr(q, 0), switch=new_switch, ts=done.t_last,
                     what="after partial writes of the switch address")
    await check_register_file("at the end")
    await check_job_table(tb)
    await finish(tb)
