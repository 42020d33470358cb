"""Transaction-level golden model of the aggswitch switch.

Frames are fed one at a time with :meth:`SwitchModel.process`, in the
processing order of SPEC 10.3 (order of the ``tlast`` handshake, same-cycle
frames in ascending port order); the caller is responsible for that order.
Each call returns an :class:`Outcome` with the RESULT frames the frame
causes, byte for byte.

Slot state is kept per (global slot, bank), the global slot being
``slot_base + slot`` of the frame's job (slots are a shared pool). Bitmaps
are indexed by port (worker k of a job is the k-th set port of its mask, so
this is equivalent to indexing by worker). Accumulators are exact Python
integers: a sum never wraps.

Choices where the spec is silent (see also :mod:`tb.model.numerics`):

* A frame whose worker bit is already set never *joins* the round, so it is
  never a MISMATCH (SPEC §5 rules 2 and 3): in a round in progress it is a
  DUPLICATE whatever its dtype, count, scale or seq, and in a complete round
  it triggers a resend of the stored RESULT whatever its fields. MISMATCH
  (rule 11) is for a frame that would join: bit clear, round in progress,
  other dtype, count, scale or seq.
* A round is complete when every port of the job's current port mask has
  its bit set in the bitmap.
* Port-mask bits at or above ``ports`` are ignored.
* A job whose range runs past the pool (``slot_base + slot >= slots``) drops
  the frame as SLOT_RANGE (rule 9 extended to the pool bound).
* MX frames with ``count`` > 2048 are MALFORMED (the 64-byte scale line holds
  64 block scales), whatever ``slot_elems``.
* IPv4 checksum validity is the RFC 1071 check (one's-complement sum of the
  ten header words = 0xFFFF).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from . import numerics
from .frames import (AGG_VER, DEFAULT_AGG_PORT, DEFAULT_IP, DEFAULT_MAC,
                     DROP_REASONS, DTYPES, DUPLICATE, ETHERTYPE_IPV4, FLAG_BANK,
                     FLAG_NAN, FLAG_OVERFLOW, FLAG_UNICAST, IPPROTO_UDP,
                     JOB_DISABLED, MALFORMED, MISMATCH, MX_BLOCK, MX_DTYPES,
                     MX_MAX_COUNT, NOT_AGG, OP_DATA, OP_RESULT, RESULT_WORKER,
                     SLOT_RANGE, WORKER, AggHeader, build_frame,
                     ipv4_checksum_valid, parse_frame, payload_len)

ACTIONS = ("new", "join", "resend")


@dataclass
class Job:
    """One job-table entry (SPEC 8)."""

    enable: bool = False
    port_mask: int = 0
    slot_base: int = 0
    slot_count: int = 0


@dataclass
class Outcome:
    """What processing one frame did.

    drop: reason code (frames.NOT_AGG..DUPLICATE) or None if accepted.
    action: "new" (started a round), "join" (joined a round in progress),
    "resend" (retransmitted a stored RESULT) or None when dropped.
    completed: this frame completed its round.
    results: (egress port, RESULT frame bytes), ascending port order.
    """

    drop: Optional[int] = None
    action: Optional[str] = None
    completed: bool = False
    results: list = field(default_factory=list)

    @property
    def drop_name(self) -> Optional[str]:
        return None if self.drop is None else DROP_REASONS[self.drop]


class DropCounters(dict):
    """drops[reason] -> per-port list. `reason` is a code (0..6) or its name
    from DROP_REASONS; iteration/keys use the codes."""

    def __init__(self, ports: int):
        super().__init__({code: [0] * ports for code in range(len(DROP_REASONS))})

    @staticmethod
    def _key(reason):
        return DROP_REASONS.index(reason) if isinstance(reason, str) else reason

    def __getitem__(self, reason):
        return super().__getitem__(self._key(reason))

    def __contains__(self, reason):
        return super().__contains__(self._key(reason))


class Counters:
    """Counters of SPEC 8, as updated by :meth:`SwitchModel.process`.

    Per port (lists indexed by port):

    * ``rx``       -- every frame given to process() on that port, dropped or
      not (one per frame).
    * ``accepted`` -- frames not dropped (new, join or resend).
    * ``tx``       -- RESULT frames sent on that port: multicast results and
      unicast resends alike.
    * ``resent``   -- the subset of ``tx`` that are unicast resends.
    * ``drops[reason]`` -- dropped frames by reason (code or name), each frame
      counted under exactly one reason; ``rx == accepted + sum(drops)``.

    Global:

    * ``results``   -- completed rounds (one per round, not per port; resends
      not counted).
    * ``overflows`` -- completed rounds whose RESULT has OVERFLOW.
    * ``nans``      -- completed rounds whose RESULT has NAN.

    Item access (``counters["rx"]``) works as well as attributes.
    """

    def __init__(self, ports: int):
        self.ports = ports
        self.rx = [0] * ports
        self.accepted = [0] * ports
        self.tx = [0] * ports
        self.resent = [0] * ports
        self.drops = DropCounters(ports)
        self.results = 0
        self.overflows = 0
        self.nans = 0

    def __getitem__(self, name):
        return getattr(self, name)

    def drops_total(self, port: int) -> int:
        return sum(v[port] for v in self.drops.values())

    def as_dict(self) -> dict:
        d = {k: list(getattr(self, k)) for k in ("rx", "accepted", "tx", "resent")}
        d["drops"] = {DROP_REASONS[c]: list(v) for c, v in self.drops.items()}
        d.update(results=self.results, overflows=self.overflows, nans=self.nans)
        return d


@dataclass(eq=False)
class SlotState:
    """State of one (global slot, bank). Compares by value."""

    bitmap: int = 0          # by port
    complete: bool = False
    dtype: int = 0
    count: int = 0
    scale: int = 0
    seq: int = 0
    nan: bool = False
    acc: Optional[np.ndarray] = None   # exact sums (int64: see SwitchModel.process)
    # stored at completion, for resends
    timestamp: int = 0
    flags: int = 0            # BANK | OVERFLOW | NAN of the RESULT
    payload: bytes = b""
    job: int = 0
    slot: int = 0             # job-relative, as received

    def as_tuple(self) -> tuple:
        acc = None if self.acc is None else tuple(int(x) for x in self.acc)
        return (self.bitmap, self.complete, self.dtype, self.count, self.scale,
                self.seq, self.nan, acc, self.timestamp, self.flags, self.payload,
                self.job, self.slot)

    def __eq__(self, other):
        if not isinstance(other, SlotState):
            return NotImplemented
        return self.as_tuple() == other.as_tuple()


def popcount(x: int) -> int:
    return bin(x).count("1")


def tkeep_valid(tkeep_beats, data_width: int) -> bool:
    """Rule 1 helper: `tkeep_beats` is the list of tkeep values of a frame's
    beats. Non-last beats all ones, last beat non-zero and contiguous from
    bit 0."""
    full = (1 << (data_width // 8)) - 1
    if not tkeep_beats:
        return False
    if any(k != full for k in tkeep_beats[:-1]):
        return False
    last = tkeep_beats[-1]
    return last != 0 and (last & (last + 1)) == 0 and last <= full


class SwitchModel:
    """Golden model of one aggswitch instance (see module docstring)."""

    def __init__(self, ports: int = 4, slots: int = 64, slot_elems: int = 256,
                 jobs: int = 4, supported_dtypes=(0,)):
        self.ports = ports
        self.slots = slots
        self.slot_elems = slot_elems
        self.jobs = jobs
        self.supported_dtypes = tuple(supported_dtypes)
        self.reset()

    # ------------------------------------------------------------------ reset
    def reset(self) -> None:
        """SPEC 10.6: empty slots, zero counters and learned addresses,
        restore the defaults of 10.1."""
        self.switch_mac = DEFAULT_MAC
        self.switch_ip = DEFAULT_IP
        self.agg_port = DEFAULT_AGG_PORT
        self.job_table = [Job(True, (1 << self.ports) - 1, 0, self.slots)] + \
            [Job(False, 0, 0, 0) for _ in range(self.jobs - 1)]
        # learned[job][port] = (mac, ip, udp_port)
        self.learned = [[(0, 0, 0) for _ in range(self.ports)]
                        for _ in range(self.jobs)]
        self.state = [[SlotState(), SlotState()] for _ in range(self.slots)]
        self.counters = Counters(self.ports)

    # ------------------------------------------------------------- helpers
    @property
    def all_ports(self) -> int:
        return (1 << self.ports) - 1

    def job_mask(self, job: int) -> int:
        return self.job_table[job].port_mask & self.all_ports

    def slot_state(self, gslot: int, bank: int) -> SlotState:
        return self.state[gslot][bank & 1]

    def snapshot(self) -> tuple:
        """Plain-data copy of all slot state and learned addresses (for
        comparisons; counters and configuration excluded)."""
        return (tuple(tuple(b.as_tuple() for b in banks) for banks in self.state),
                tuple(tuple(row) for row in self.learned))

    # ------------------------------------------------------------ admission
    def admit(self, port: int, frame: bytes, tkeep_ok: bool = True) -> Optional[int]:
        """Static admission rules 1-10 of SPEC 10.2. Returns the drop reason
        code of the first failing rule, or None."""
        return self._admit(port, frame, tkeep_ok)[0]

    def _admit(self, port: int, frame: bytes, tkeep_ok: bool = True):
        """admit(), returning (drop reason or None, the parsed frame or None: parsed
        once the frame is long enough, so that process() need not parse it again)."""
        f = bytes(frame)
        n = len(f)
        # 1
        if not tkeep_ok or n < 14:
            return MALFORMED, None
        # 2
        if int.from_bytes(f[12:14], "big") != ETHERTYPE_IPV4:
            return NOT_AGG, None
        # 3
        if n < 34:
            return MALFORMED, None
        if f[14] >> 4 != 4 or f[14] & 0xF != 5 or not ipv4_checksum_valid(f[14:34]):
            return MALFORMED, None
        # 4
        if f[23] != IPPROTO_UDP:
            return NOT_AGG, None
        # 5
        if n < 42:
            return MALFORMED, None
        # 6
        if int.from_bytes(f[36:38], "big") != self.agg_port:
            return NOT_AGG, None
        # 7
        if n < 64:
            return MALFORMED, None
        p = parse_frame(f)
        h = p.hdr
        if p.ip_total_length != n - 14 or p.udp_length != n - 34:
            return MALFORMED, p
        if h.ver != AGG_VER or h.op != OP_DATA:
            return MALFORMED, p
        if h.dtype not in DTYPES or h.dtype not in self.supported_dtypes:
            return MALFORMED, p
        if h.count == 0 or h.count > self.slot_elems:
            return MALFORMED, p
        if h.dtype in MX_DTYPES and (h.count % MX_BLOCK or h.count > MX_MAX_COUNT):
            return MALFORMED, p
        if n != 64 + payload_len(h.dtype, h.count):
            return MALFORMED, p
        # 8
        if h.job >= self.jobs or not self.job_table[h.job].enable:
            return JOB_DISABLED, p
        job = self.job_table[h.job]
        # 9
        if h.slot >= job.slot_count or job.slot_base + h.slot >= self.slots:
            return SLOT_RANGE, p
        # 10
        mask = self.job_mask(h.job)
        if not (mask >> port) & 1:
            return WORKER, p
        if h.worker != popcount(mask & ((1 << port) - 1)):
            return WORKER, p
        return None, p

    # ----------------------------------------------------------- processing
    def process(self, port: int, frame: bytes, t_last: int,
                tkeep_ok: bool = True) -> Outcome:
        """Admission (10.2 rules 1-10), then the SPEC 5 state machine (rules
        11-12, new / join / resend), counters and RESULT frames.
        `t_last` is the cycle-counter value when the frame's last beat was
        accepted."""
        if not 0 <= port < self.ports:
            raise ValueError("port out of range")
        c = self.counters
        c.rx[port] += 1
        drop, p = self._admit(port, frame, tkeep_ok)
        if drop is not None:
            c.drops[drop][port] += 1
            return Outcome(drop=drop)

        h = p.hdr
        bank = h.flags & FLAG_BANK
        job = self.job_table[h.job]
        gslot = job.slot_base + h.slot
        st = self.state[gslot][bank]
        other = self.state[gslot][bank ^ 1]
        bit = 1 << port
        in_progress = st.bitmap != 0 and not st.complete
        fields = (h.dtype, h.count, h.scale, h.seq)

        # rule 12 (bit set: never joins), then rule 11 (joins with other fields)
        if st.bitmap & bit and not st.complete:
            c.drops[DUPLICATE][port] += 1
            return Outcome(drop=DUPLICATE)
        if not st.bitmap & bit and in_progress and fields != (st.dtype, st.count, st.scale, st.seq):
            c.drops[MISMATCH][port] += 1
            return Outcome(drop=MISMATCH)

        # accepted
        c.accepted[port] += 1
        self.learned[h.job][port] = (p.src_mac, p.src_ip, p.src_port)

        if st.bitmap & bit:   # complete round: resend (rule 2)
            flags = st.flags | FLAG_UNICAST
            frm = self._result_frame(self.learned[h.job][port], st, flags)
            c.tx[port] += 1
            c.resent[port] += 1
            return Outcome(action="resend", results=[(port, frm)])

        # rule 1: bit clear
        q, nan = numerics.decode(h.dtype, p.payload, h.count, h.scale)
        other.bitmap &= ~bit
        if in_progress:
            action = "join"
            st.bitmap |= bit
            st.acc = st.acc + q
            st.nan = st.nan or nan
        else:
            action = "new"
            st.bitmap = bit
            st.complete = False
            st.dtype, st.count, st.scale, st.seq = fields
            # Exact sums in int64: decode() gives int32-range contributions and a
            # round has at most one per port, so |sum| <= ports * 2**31 < 2**63.
            st.acc = q.astype(np.int64)
            st.nan = nan
        out = Outcome(action=action)

        mask = self.job_mask(h.job)
        if st.bitmap & mask == mask:
            st.complete = True
            payload, overflow = numerics.encode(st.dtype, st.acc, st.count, st.scale)
            st.payload = payload
            st.timestamp = t_last & 0xFFFFFFFF
            st.flags = bank | (FLAG_OVERFLOW if overflow else 0) | \
                (FLAG_NAN if st.nan else 0)
            st.job, st.slot = h.job, h.slot
            c.results += 1
            c.overflows += int(overflow)
            c.nans += int(st.nan)
            out.completed = True
            for q_port in range(self.ports):
                if (mask >> q_port) & 1:
                    out.results.append(
                        (q_port, self._result_frame(self.learned[h.job][q_port],
                                                    st, st.flags)))
                    c.tx[q_port] += 1
        return out

    def _result_frame(self, addr, st: SlotState, flags: int) -> bytes:
        """RESULT frame of the round stored in `st` (SPEC 10.5), to the
        learned address `addr` = (mac, ip, udp port)."""
        mac, ip, udp = addr
        hdr = AggHeader(ver=AGG_VER, op=OP_RESULT, dtype=st.dtype, job=st.job,
                        slot=st.slot, worker=RESULT_WORKER, flags=flags,
                        seq=st.seq, count=st.count, scale=st.scale,
                        reserved=st.timestamp.to_bytes(4, "big") + bytes(3))
        return build_frame(src_mac=self.switch_mac, dst_mac=mac,
                           src_ip=self.switch_ip, dst_ip=ip,
                           src_port=self.agg_port, dst_port=udp, hdr=hdr,
                           payload=st.payload, ttl=64, ip_id=0)
