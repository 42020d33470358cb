"""A SwitchML-style worker: all-reduces tensors through an aggswitch over UDP.

The datagram is the AGG header and payload of docs/SPEC.md §3 (the frame's bytes 42..):
whatever sits between the worker and the switch (a MAC and UDP/IP stack in front of the
RTL on a board, or `make serve` in simulation) adds and strips the Ethernet, IPv4 and UDP
headers.

Protocol (SPEC §5). A tensor is cut into chunks of at most `slot_elems` elements. Chunk
``i`` of a call goes to job-relative slot ``slots[i % W]`` (W = the window) and the
worker keeps at most W chunks outstanding: chunk ``i + W`` (same slot, other bank) is
sent only once the RESULT of chunk ``i`` is in, so no worker can start a bank's next
round while another worker may still need its result. Banks alternate per slot across
calls, and seq numbers run on across calls, so every worker of the job must make the same
sequence of calls. A chunk whose RESULT has not come within `timeout` seconds is sent
again with the RETX flag (the timeout doubles up to `max_timeout`): a lost DATA frame is
thereby replaced, and a lost RESULT comes back as the switch's unicast resend (§5
rule 2). After `max_retries` copies of one chunk, or `deadline` seconds for the whole
call, :class:`AllReduceError` is raised: nothing waits forever.

A job's workers must start on slots whose banks are idle (a freshly reset switch, or
slots no earlier session used): bank state outlives a session. After an AllReduceError the
workers no longer agree on banks and seqs with the switch: the job starts over (new
Workers, a reset switch or other slots).
"""

from __future__ import annotations

import collections
import select
import socket
import time
from dataclasses import dataclass, field

import numpy as np

from . import convert
from . import wire as F


class AllReduceError(RuntimeError):
    """The all-reduce could not complete (retries or deadline exhausted, bad RESULT)."""


@dataclass
class _Chunk:
    index: int
    lo: int
    hi: int
    slot: int
    bank: int
    seq: int
    count: int
    payload: bytes
    sends: int = 0
    timeout: float = 0.0
    deadline: float = 0.0


@dataclass
class CallInfo:
    """What the last :meth:`Worker.allreduce` call did."""
    chunks: int = 0
    overflow: bool = False    # some RESULT had OVERFLOW (int32 saturation, MX NaN block)
    nan: bool = False         # some RESULT had NAN
    seconds: float = 0.0
    stats: dict = field(default_factory=dict)
    # The switch's cycle counter in the RESULTs taken (bytes 15..18, docs/SPEC.md §10.4:
    # the cycle the round completed), first and last; None before any RESULT.
    first_timestamp: int | None = None
    last_timestamp: int | None = None


class Worker:
    """One worker (rank `rank` of job `job`) talking to the switch port at `switch`
    = (host, UDP port). See the module docstring for the protocol.

    window: chunks outstanding, one job-relative slot each (slots 0..window-1 unless
    `slots` names them); slot_elems: elements per chunk (the switch's `slot_elems`).
    """

    def __init__(self, switch, rank: int, *, job: int = 0, window: int = 8, slots=None,
                 slot_elems: int = 256, timeout: float = 0.2, max_timeout: float = 2.0,
                 max_retries: int = 30, deadline: float = 120.0,
                 bind=("127.0.0.1", 0), seq_base: int = 0):
        self.switch = (str(switch[0]), int(switch[1]))
        self.rank, self.job = int(rank), int(job)
        self.slots = list(range(window)) if slots is None else [int(s) for s in slots]
        if not self.slots or len(set(self.slots)) != len(self.slots):
            raise ValueError(f"slots {self.slots}: need at least one, all different")
        self.slot_elems = int(slot_elems)
        self.timeout, self.max_timeout = float(timeout), float(max_timeout)
        self.max_retries, self.deadline = int(max_retries), float(deadline)
        self.bank = {s: 0 for s in self.slots}     # bank of each slot's next round
        self.seq = int(seq_base) & 0xFFFFFFFF      # seq of the next chunk
        self.stats = collections.Counter()
        self.last = CallInfo()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.sock.bind(bind)
            self.sock.setblocking(False)
        except OSError:
            self.sock.close()
            raise

    @property
    def address(self):
        """(host, port) the worker's socket is bound to: where RESULTs come back."""
        return self.sock.getsockname()

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------ chunks
    def _plan(self, x: np.ndarray, dtype: int, scale: int) -> list:
        step = convert.chunk_elems(dtype, self.slot_elems)
        W = len(self.slots)
        chunks = []
        for i, lo in enumerate(range(0, x.size, step)):
            hi = min(x.size, lo + step)
            slot = self.slots[i % W]
            count = convert.padded(dtype, hi - lo)
            chunks.append(_Chunk(i, lo, hi, slot, (self.bank[slot] + i // W) & 1,
                                 (self.seq + i) & 0xFFFFFFFF, count,
                                 convert.encode(dtype, x[lo:hi], count, scale)))
        return chunks

    def _datagram(self, c: _Chunk, dtype: int, scale: int, retx: bool) -> bytes:
        hdr = F.AggHeader(op=F.OP_DATA, dtype=dtype, job=self.job, slot=c.slot,
                          worker=self.rank, flags=c.bank | (F.FLAG_RETX if retx else 0),
                          seq=c.seq, count=c.count, scale=scale)
        return hdr.pack() + c.payload

    def _send(self, c: _Chunk, dtype: int, scale: int, now: float):
        retx = c.sends > 0
        c.timeout = min(c.timeout * 2, self.max_timeout) if retx else self.timeout
        c.sends += 1
        c.deadline = now + c.timeout
        self.stats["retransmissions" if retx else "chunks_sent"] += 1
        try:
            self.sock.sendto(self._datagram(c, dtype, scale, retx), self.switch)
        except (BlockingIOError, ConnectionRefusedError) as e:
            # A full socket buffer or an ICMP error from an earlier datagram: the datagram
            # counts as lost and the timeout sends it again.
            self.stats["send_errors"] += 1
            self.stats[f"send_error_{type(e).__name__}"] += 1

    # --------------------------------------------------------------- allreduce
    def allreduce(self, tensor, dtype="int32", scale: int = 0) -> np.ndarray:
        """Sum `tensor` over the job's workers through the switch.

        `dtype`: a SPEC §4 name or code; `scale`: the job scale (values travel as
        ``RNE(x · 2^scale)``, docs above). Returns the reduced tensor in `tensor`'s shape:
        int64 fixed-point sums for an integer tensor sent as INT32, else float64 reals."""
        code = convert.dtype_code(dtype)
        if not -128 <= int(scale) <= 127:
            raise ValueError(f"scale {scale} outside -128..127")
        scale = int(scale)
        arr = np.asarray(tensor)
        x = arr.reshape(-1)
        t0 = time.monotonic()
        chunks = self._plan(x, code, scale)
        out = np.zeros(x.size, dtype=np.int64)
        self.last = info = CallInfo(chunks=len(chunks))
        before = self.stats.copy()
        W = len(self.slots)
        outstanding = {}                     # slot -> chunk
        for c in chunks[:W]:
            outstanding[c.slot] = c
            self._send(c, code, scale, t0)
        done = 0
        end = t0 + self.deadline
        while done < len(chunks):
            now = time.monotonic()
            if now >= end:
                raise AllReduceError(self._stuck(f"deadline of {self.deadline} s", outstanding))
            wake = min(min(c.deadline for c in outstanding.values()), end)
            ready, _, _ = select.select([self.sock], [], [], max(0.0, wake - now))
            if ready:
                for data in self._drain():
                    c = self._match(data, outstanding, code, scale)
                    if c is None:
                        continue
                    q, flags, ts = self._result(c, data, code, scale)
                    out[c.lo:c.hi] = q[:c.hi - c.lo]
                    info.first_timestamp = ts if info.first_timestamp is None else \
                        min(info.first_timestamp, ts)
                    info.last_timestamp = ts if info.last_timestamp is None else \
                        max(info.last_timestamp, ts)
                    info.overflow |= bool(flags & F.FLAG_OVERFLOW)
                    info.nan |= bool(flags & F.FLAG_NAN)
                    del outstanding[c.slot]
                    done += 1
                    nxt = c.index + W
                    if nxt < len(chunks):
                        outstanding[chunks[nxt].slot] = chunks[nxt]
                        self._send(chunks[nxt], code, scale, time.monotonic())
            now = time.monotonic()
            for c in list(outstanding.values()):
                if c.deadline <= now:
                    self.stats["timeouts"] += 1
                    if c.sends > self.max_retries:
                        raise AllReduceError(self._stuck(f"{c.sends} copies of chunk {c.index}",
                                                         outstanding))
                    self._send(c, code, scale, now)
        # every slot used by this call ends with its banks advanced by its rounds
        for s, n in collections.Counter(c.slot for c in chunks).items():
            self.bank[s] = (self.bank[s] + n) & 1
        self.seq = (self.seq + len(chunks)) & 0xFFFFFFFF
        info.seconds = time.monotonic() - t0
        info.stats = dict(self.stats - before)
        if code == F.INT32 and convert.is_fixed_input(x):
            return out.reshape(arr.shape)
        return convert.to_values(out, scale).reshape(arr.shape)

    def _drain(self):
        while True:
            try:
                data, src = self.sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionRefusedError:       # ICMP port unreachable of a sent datagram
                self.stats["send_errors"] += 1
                continue
            if src[0] != self.switch[0] or src[1] != self.switch[1]:
                self.stats["strays"] += 1
                continue
            yield data

    def _match(self, data: bytes, outstanding: dict, code: int, scale: int):
        """The outstanding chunk a RESULT datagram answers, or None (counted)."""
        if len(data) < F.AGG_HDR_LEN:
            self.stats["strays"] += 1
            return None
        h = F.AggHeader.unpack(data)
        if h.ver != F.AGG_VER or h.op != F.OP_RESULT or h.job != self.job:
            self.stats["strays"] += 1
            return None
        c = outstanding.get(h.slot)
        if c is None or c.seq != h.seq or c.bank != h.flags & F.FLAG_BANK:
            # most often the resend of a chunk already complete (a spurious retransmission)
            self.stats["stale_results"] += 1
            return None
        want = (code, c.count, scale, F.payload_len(code, c.count))
        got = (h.dtype, h.count, h.scale, len(data) - F.AGG_HDR_LEN)
        if want != got:
            raise AllReduceError(f"worker {self.rank}: RESULT of chunk {c.index} (slot {c.slot}, "
                                 f"seq {c.seq}) has dtype, count, scale, payload bytes {got}, "
                                 f"expected {want}")
        return c

    def _result(self, c: _Chunk, data: bytes, code: int, scale: int):
        h = F.AggHeader.unpack(data)
        self.stats["results"] += 1
        if h.flags & F.FLAG_UNICAST:
            self.stats["unicast_results"] += 1
        q, _ = convert.decode(code, data[F.AGG_HDR_LEN:], c.count, scale)
        return q, h.flags, h.timestamp

    def _stuck(self, why: str, outstanding: dict) -> str:
        waiting = ", ".join(f"chunk {c.index} (slot {c.slot} bank {c.bank} seq {c.seq}, "
                            f"{c.sends} copies)" for c in list(outstanding.values())[:4])
        return (f"worker {self.rank} -> {self.switch[0]}:{self.switch[1]}: gave up after {why}; "
                f"waiting for {waiting}; stats {dict(self.stats)}")
