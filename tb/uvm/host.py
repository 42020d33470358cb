"""Host model: what a SwitchML-style worker library does, in plain Python.

A job's tensor is cut into chunks (:class:`JobPlan`, shared by every worker of the job:
same chunk boundaries, dtype, scale and seq). Chunk ``i`` goes to job-relative slot
``window[i % W]`` and bank ``(i // W) % 2`` with seq ``seq_base + i`` (the shadow-bank
scheme of docs/SPEC.md §5). Each worker (:class:`HostWorker`):

* keeps at most ``W`` chunks outstanding: it sends chunk ``i + W`` (same slot, other bank)
  only once it holds the RESULT of chunk ``i``, which is what makes the two-bank scheme
  safe (no worker can start a bank's next round while another still needs its result);
* retransmits a chunk whose RESULT has not arrived ``timeout`` cycles after its last copy,
  with the RETX flag set, backing off by ``backoff`` per retransmission up to
  ``max_timeout``, and gives up (an error) after ``max_retries``;
* checks every RESULT it receives against the expected sum of the chunk, computed here
  from the workers' own contributions with the numerics of docs/SPEC.md §4
  (tb/model/numerics.py: decode each contribution, add exactly, encode), independently of
  the switch model; a RESULT of a chunk it already holds (a resend caused by a spurious
  retransmission) is ignored, as a real host would.

Payloads of every dtype are derived from integer values with ``numerics.encode`` (the
egress conversion), so a worker's "gradient" of any dtype is a representable tensor, and
its contribution is whatever ``numerics.decode`` makes of it. Nothing here depends on
cocotb: tests/test_uvm_host.py runs the protocol against the golden model alone.
"""

from __future__ import annotations

import collections
import math
import random
from dataclasses import dataclass

import numpy as np

from tb.model import frames as F
from tb.model import numerics

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1
NEVER = math.inf

def rogue_addr(port: int):
    """Source address of the frames the switch must drop (mismatches, noise): were one
    admitted by mistake, the learned address of its port would change and every later
    RESULT to that port would show it."""
    return 0x02_BA_D0_00_00_00 + port, 0x0A_BA_D0_00 + port, 0xBAD0 + port


def has_nan(dtype: int) -> bool:
    """Whether `dtype` can encode a NaN (INT32 cannot)."""
    return dtype != F.INT32


def count_choices(dtype: int, slot_elems: int):
    """(smallest, largest, step) of a valid `count` for `dtype` (SPEC §3, §10.2 rule 7)."""
    if F.is_mx(dtype):
        return F.MX_BLOCK, min(slot_elems, F.MX_MAX_COUNT) // F.MX_BLOCK * F.MX_BLOCK, F.MX_BLOCK
    return 1, slot_elems, 1


def pick_count(rng: random.Random, dtype: int, slot_elems: int) -> int:
    lo, hi, step = count_choices(dtype, slot_elems)
    return rng.choice((lo, hi, rng.randrange(lo, hi + 1, step), rng.randrange(lo, hi + 1, step)))


def random_values(rng: random.Random, count: int, workers: int, extreme: bool) -> list:
    """Per worker, `count` int32 values. Normally within +-2^31/workers (the sum stays in
    int32); `extreme`: per element all maxima, all minima, alternating or random, so that
    partial sums leave int32 in some arrival orders and totals saturate (OVERFLOW)."""
    if not extreme:
        lim = INT32_MAX // workers
        return [[rng.randint(-lim, lim) for _ in range(count)] for _ in range(workers)]
    columns = []
    for _ in range(count):
        pick = rng.choice(_EXTREME_COLUMNS)
        columns.append([pick(w, rng) for w in range(workers)])
    return [list(row) for row in zip(*columns)]


# one element across the workers: all maxima, all minima, alternating, random
_EXTREME_COLUMNS = (
    lambda w, rng: INT32_MAX,
    lambda w, rng: INT32_MIN,
    lambda w, rng: (INT32_MAX, INT32_MIN)[w % 2],
    lambda w, rng: rng.randint(INT32_MIN, INT32_MAX),
)


def encode_values(dtype: int, values, count: int, scale: int) -> bytes:
    """Payload of `dtype` for fixed-point `values` (docs/SPEC.md §4 egress conversion)."""
    payload, _ = numerics.encode(dtype, np.array(values, dtype=object), count, scale)
    return payload


def plant_nan(dtype: int, payload: bytes, count: int, rng: random.Random) -> bytes:
    """`payload` with one NaN: an FP32/BF16 element, or a whole MX block (scale 0xFF)."""
    b = bytearray(payload)
    if dtype == F.FP32:
        k = rng.randrange(count)
        b[4 * k:4 * k + 4] = (0x7FC00000 | rng.randrange(1, 1 << 22)).to_bytes(4, "big")
    elif dtype == F.BF16:
        k = rng.randrange(count)
        b[2 * k:2 * k + 2] = (0x7F80 | rng.randrange(1, 1 << 7)).to_bytes(2, "big")
    elif F.is_mx(dtype):
        b[rng.randrange(count // F.MX_BLOCK)] = 0xFF
    else:
        raise ValueError(f"dtype {dtype} has no NaN")
    return bytes(b)


def expected_result(dtype: int, payloads, count: int, scale: int, bank: int):
    """(payload, flags) of the RESULT of a round with these contributions: each decoded to
    fixed point, summed exactly, the sum converted back (SPEC §4); flags BANK, OVERFLOW
    (int32 saturation or an MX NaN block) and NAN (any contribution carried a NaN)."""
    acc = np.zeros(count, dtype=object)
    nan = False
    for pl in payloads:
        q, n = numerics.decode(dtype, pl, count, scale)
        acc = acc + q.astype(object)
        nan = nan or n
    payload, overflow = numerics.encode(dtype, acc, count, scale)
    flags = (bank & F.FLAG_BANK) | (F.FLAG_OVERFLOW if overflow else 0) | (F.FLAG_NAN if nan else 0)
    return payload, flags


def payload_diff(dtype: int, got: bytes, want: bytes) -> str:
    """Readable difference of two payloads (elements for INT32, bytes otherwise)."""
    if len(got) != len(want):
        return f"payload of {len(got)} bytes (expected {len(want)})"
    if dtype == F.INT32:
        g, w = F.int32_from_payload(got), F.int32_from_payload(want)
        bad = np.flatnonzero(g != w)
        return (f"payload: {bad.size} of {w.size} elements differ, first [{bad[0]}] "
                f"{g[bad[0]]} (expected {w[bad[0]]})")
    bad = [i for i in range(len(got)) if got[i] != want[i]]
    return (f"payload: {len(bad)} of {len(want)} bytes differ, first at byte {bad[0]}: "
            f"{got[bad[0]]:#04x} (expected {want[bad[0]]:#04x})")


@dataclass
class Chunk:
    index: int
    slot: int          # job-relative
    bank: int
    seq: int
    dtype: int
    count: int
    scale: int
    offset: int        # index of its first element in the tensor
    values: list       # per worker: the int values its payload was encoded from
    payloads: list     # per worker: payload bytes
    nans: list         # per worker: a NaN was planted
    expected: bytes    # RESULT payload
    flags: int         # RESULT flags (BANK | OVERFLOW | NAN)
    extreme: bool = False

    @property
    def key(self):
        return (self.slot, self.bank, self.seq)


class JobPlan:
    """The chunks of one job's AllReduce and their expected results."""

    def __init__(self, rng: random.Random, *, workers: int, slot_count: int, slot_elems: int,
                 window: int, chunks: int, dtypes, job: int = 0, seq_base: int = 1000,
                 scale_range: int = 0, extreme: float = 0.0, nan: float = 0.0):
        if not 1 <= window <= slot_count:
            raise ValueError(f"window {window} outside 1..{slot_count}")
        self.workers, self.job, self.seq_base = workers, job, seq_base
        self.window = window
        self.slot_elems = slot_elems
        self.dtypes = tuple(dtypes)
        self.scale_range, self.extreme, self.nan = scale_range, extreme, nan
        self.slots = rng.sample(range(slot_count), window)
        self.chunks: list[Chunk] = []
        self.elems = 0
        for _ in range(chunks):
            self.add_chunk(rng)

    def add_chunk(self, rng: random.Random, smallest: bool = False) -> Chunk:
        """Append the job's next chunk (its slot and bank continue the scheme); `smallest`:
        with the smallest count its dtype allows (the shortest frames)."""
        i, W = len(self.chunks), self.window
        dtype = rng.choice(self.dtypes)
        count = (count_choices(dtype, self.slot_elems)[0] if smallest
                 else pick_count(rng, dtype, self.slot_elems))
        scale = rng.randint(-self.scale_range, self.scale_range)
        ext = rng.random() < self.extreme
        values = random_values(rng, count, self.workers, ext)
        payloads, nans = [], []
        for w in range(self.workers):
            pl = encode_values(dtype, values[w], count, scale)
            planted = has_nan(dtype) and rng.random() < self.nan
            if planted:
                pl = plant_nan(dtype, pl, count, rng)
            payloads.append(pl)
            nans.append(planted)
        bank = (i // W) % 2
        exp, flags = expected_result(dtype, payloads, count, scale, bank)
        c = Chunk(i, self.slots[i % W], bank, self.seq_base + i, dtype, count, scale,
                  self.elems, values, payloads, nans, exp, flags, ext)
        self.chunks.append(c)
        self.elems += count
        return c

    def __len__(self):
        return len(self.chunks)

    def chunk_of(self, seq: int):
        i = seq - self.seq_base
        return self.chunks[i] if 0 <= i < len(self.chunks) else None

    def data_frame(self, c: Chunk, rank: int, addr, *, retx: bool = False, seq=None,
                   scale=None, count=None, dtype=None, payload=None) -> bytes:
        """Worker `rank`'s DATA frame of chunk `c`, from `addr` = (MAC, IPv4, UDP port);
        the keyword arguments replace one field (mismatch frames)."""
        mac, ip, udp = addr
        return F.data_frame(worker_mac=mac, worker_ip=ip, worker_port=udp, job=self.job,
                            slot=c.slot, worker=rank, seq=c.seq if seq is None else seq,
                            dtype=c.dtype if dtype is None else dtype,
                            count=c.count if count is None else count,
                            scale=c.scale if scale is None else scale,
                            payload=c.payloads[rank] if payload is None else payload,
                            bank=c.bank, retx=retx)

    def int32_tensors(self):
        """(per-worker int64 tensors, their int32-saturated sum), NumPy only: the reference
        of an all-INT32 job, independent of tb/model."""
        if any(c.dtype != F.INT32 for c in self.chunks):
            return None
        t = [np.concatenate([np.asarray(c.values[w], dtype=np.int64) for c in self.chunks])
             for w in range(self.workers)]
        return t, np.clip(np.sum(t, axis=0), INT32_MIN, INT32_MAX)


MISMATCH_KINDS = ("seq", "scale", "count", "dtype")


def mismatch_frame(plan: JobPlan, c: Chunk, rank: int, addr, kind: str, rng: random.Random,
                   supported=()):
    """A DATA frame for chunk `c` that differs from the round's in one field (`kind`), or
    None when that kind is impossible for this chunk (another count must stay valid for the
    dtype; another dtype must be admitted by the build and fit the count)."""
    if kind == "seq":
        seq = (c.seq + rng.choice((1, -1, 1 << 16))) & 0xFFFFFFFF
        return plan.data_frame(c, rank, addr, seq=seq)
    if kind == "scale":
        options = [s for s in (c.scale - 1, c.scale + 1) if -128 <= s <= 127]
        return plan.data_frame(c, rank, addr, scale=rng.choice(options))
    if kind == "count":
        lo, hi, step = count_choices(c.dtype, plan.slot_elems)
        options = [n for n in (c.count - step, c.count + step) if lo <= n <= hi]
        if not options:
            return None
        n = rng.choice(options)
        vals = (list(c.values[rank]) + [0] * n)[:n]
        return plan.data_frame(c, rank, addr, count=n,
                               payload=encode_values(c.dtype, vals, n, c.scale))
    if kind == "dtype":
        def fits(d):
            lo, hi, step = count_choices(d, plan.slot_elems)
            return lo <= c.count <= hi and c.count % step == 0
        others = [d for d in supported if d != c.dtype and fits(d)]
        if not others:
            return None
        d = rng.choice(others)
        return plan.data_frame(c, rank, addr, dtype=d,
                               payload=encode_values(d, c.values[rank], c.count, c.scale))
    raise ValueError(kind)


@dataclass
class Send:
    """A frame a host hands to its NIC."""
    chunk: int
    retx: bool
    frame: bytes
    attempt: int       # 1 for the first copy


@dataclass
class _Pending:
    sends: int = 0
    deadline: float = NEVER
    timeout: int = 0


class HostWorker:
    """One worker of a job on one switch port (see the module docstring)."""

    def __init__(self, plan: JobPlan, rank: int, port: int, *, addr, timeout: int,
                 backoff: int = 2, max_timeout: int | None = None, max_retries: int = 40,
                 retransmit: bool = True):
        self.plan, self.rank, self.port, self.addr = plan, rank, port, addr
        self.timeout = max(1, int(timeout))
        self.backoff = max(1, int(backoff))
        self.max_timeout = int(max_timeout or 8 * self.timeout)
        self.max_retries = max_retries
        self.retransmit = retransmit
        self.n = len(plan)           # chunks of the AllReduce (the plan may grow later)
        self.pending: dict[int, _Pending] = {}
        self.results: dict[int, bytes] = {}
        self.attempts = collections.Counter()   # chunk -> copies sent
        self.received_at: dict[int, int] = {}
        self.stats = collections.Counter()
        self.errors: list[str] = []
        self.gave_up = False

    # ------------------------------------------------------------------ state
    @property
    def done(self) -> bool:
        return all(i in self.results for i in range(self.n))

    def next_deadline(self):
        """Earliest cycle at which a retransmission is due (None: nothing pending)."""
        d = min((p.deadline for p in self.pending.values()), default=NEVER)
        return None if d == NEVER else int(d)

    def frame(self, i: int, retx: bool = False) -> bytes:
        return self.plan.data_frame(self.plan.chunks[i], self.rank, self.addr, retx=retx)

    def _send(self, i: int, now: int, retx: bool) -> Send:
        p = self.pending.setdefault(i, _Pending(timeout=self.timeout))
        if p.sends:
            p.timeout = min(p.timeout * self.backoff, self.max_timeout)
        p.sends += 1
        p.deadline = now + p.timeout
        self.attempts[i] = p.sends
        self.stats["retransmissions" if retx else "chunks_sent"] += 1
        return Send(i, retx, self.frame(i, retx), p.sends)

    # ---------------------------------------------------------------- protocol
    def start(self, now: int) -> list:
        """The first window of chunks."""
        return [self._send(i, now, False) for i in range(min(self.plan.window, self.n))]

    def adopt(self, i: int, now: int, retx: bool = False) -> Send:
        """A copy of chunk `i` sent on the test's behalf outside the windowed flow (no
        timeout, nothing sent after it); its RESULT is checked like any other."""
        s = self._send(i, now, retx)
        self.pending[i].deadline = NEVER
        return s

    def on_result(self, data: bytes, now: int) -> list:
        """A RESULT frame reached the host: check it, and send the next chunk of its slot."""
        self.stats["results_received"] += 1
        try:
            pf = F.parse_frame(data)
        except ValueError as e:
            self.errors.append(f"worker {self.rank}: unparseable frame at cycle {now}: {e}")
            return []
        h = pf.hdr
        c = self.plan.chunk_of(h.seq)
        if h.op != F.OP_RESULT or h.job != self.plan.job or c is None \
                or h.slot != c.slot or (h.flags & F.FLAG_BANK) != c.bank:
            self.errors.append(f"worker {self.rank}: RESULT it cannot match at cycle {now}: "
                               f"op {h.op} job {h.job} slot {h.slot} bank {h.flags & 1} "
                               f"seq {h.seq}")
            return []
        i = c.index
        if i in self.results:
            self.stats["stale_results"] += 1
            return []
        if i not in self.pending:
            self.errors.append(f"worker {self.rank}: RESULT of chunk {i} (seq {c.seq}) at cycle "
                               f"{now}, which this worker has not sent yet: the round cannot "
                               "have completed without it")
            return []
        self._check(c, pf, now)
        self.results[i] = bytes(data)
        self.received_at[i] = now
        del self.pending[i]
        nxt = i + self.plan.window
        return [self._send(nxt, now, False)] if nxt < self.n else []

    def _check(self, c: Chunk, pf, now: int):
        h = pf.hdr
        want = {"dtype": c.dtype, "count": c.count, "scale": c.scale,
                "flags": c.flags, "payload": c.expected}
        got = {"dtype": h.dtype, "count": h.count, "scale": h.scale,
               "flags": h.flags & ~F.FLAG_UNICAST, "payload": pf.payload}
        bad = [k for k in want if want[k] != got[k]]
        if bad:
            detail = ", ".join(payload_diff(c.dtype, got[k], want[k]) if k == "payload"
                               else f"{k} {got[k]} (expected {want[k]})" for k in bad)
            self.errors.append(f"worker {self.rank}: chunk {c.index} (seq {c.seq}, "
                               f"{F.DTYPE_NAMES[c.dtype]}, count {c.count}) RESULT at cycle "
                               f"{now} differs from the sum of the contributions: {detail}")

    def expire(self, now: int) -> list:
        """Retransmissions due at cycle `now`."""
        out = []
        for i, p in self.pending.items():
            if p.deadline > now:
                continue
            self.stats["timeouts"] += 1
            if not self.retransmit:
                p.deadline = NEVER
            elif p.sends > self.max_retries:
                self.errors.append(f"worker {self.rank}: gave up on chunk {i} after "
                                   f"{p.sends} copies")
                self.gave_up = True
                p.deadline = NEVER
            else:
                out.append(self._send(i, now, True))
        return out

    def unanswered(self) -> list:
        """Chunks of the AllReduce, and chunks sent on the test's behalf, without RESULT."""
        return sorted({i for i in range(self.n) if i not in self.results}
                      | {i for i in self.pending if i not in self.results})
