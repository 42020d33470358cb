"""Transactions of the pyuvm environment.

* :class:`FrameItem` -- a sequence item: one frame for one ingress port, with what the
  sender means by it (``origin``) and the verdicts of the golden model it may get.
* :class:`IngressTxn` / :class:`EgressTxn` -- what the monitor publishes: the harness'
  cycle-stamped records plus the fields coverage and checks need, computed when the frame
  was processed (the slot state the frame met).
* :class:`Registry` -- frame bytes -> the FrameItem that sent them, so the monitor side can
  tell what each observed frame was meant to be.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyuvm import uvm_sequence_item

from tb.model import frames as F

# origin of a frame
FIRST, RETX, MISMATCH, NOISE = "first", "retx", "mismatch", "noise"
ORIGINS = (FIRST, RETX, MISMATCH, NOISE)

# verdicts, as the golden model's Outcome names them (action, or drop reason)
ACCEPTED_FIRST = frozenset({"new", "join", "complete"})
ACCEPTED_RETX = frozenset({"new", "join", "complete", "resend", "duplicate"})

# Round outcomes (coverage and reports): the action of an accepted frame, "complete" for the
# one that completes its round, or the drop reason.
OUTCOMES = ("new", "join", "complete", "resend", "duplicate", "mismatch", "not_agg",
            "malformed", "job_disabled", "slot_range", "worker")


def outcome_name(o) -> str | None:
    """Round outcome of a golden-model Outcome (None when the model failed)."""
    if o is None:
        return None
    if o.drop is not None:
        return F.DROP_REASONS[o.drop]
    return "complete" if o.completed else o.action


class FrameItem(uvm_sequence_item):
    """One frame for the driver of one port."""

    def __init__(self, name="frame"):
        super().__init__(name)
        self.port = 0
        self.frame = b""            # bytes, or (bytes, per-byte tkeep list) for a tkeep test
        self.origin = FIRST
        self.chunk = None           # chunk index (worker frames)
        self.attempt = 1
        self.verdicts = frozenset()  # outcome names the golden model may give it
        self.label = ""             # mismatch kind or noise case
        self.lossy = False          # subject to DATA loss injection
        self.force_lost = False     # lost before the switch whatever the loss rate (a
                                    # directed loss: tb/uvm/sequences.py epilogue)
        self.lost = False           # set by the driver: dropped before the switch

    @property
    def observed(self) -> bytes:
        """The bytes the monitor records for this frame: those of the lanes tkeep keeps."""
        f = self.frame
        if isinstance(f, tuple):
            data, keep = f
            return bytes(b for b, k in zip(data, keep) if k)
        return bytes(f)

    def __str__(self):
        return (f"{self.get_name()} port {self.port} {self.origin} {self.label} chunk "
                f"{self.chunk} attempt {self.attempt}{' LOST' if self.lost else ''}")


class Registry:
    """Frame bytes -> the items that sent them (the same bytes may be sent more than once,
    always with the same meaning)."""

    def __init__(self):
        self._items: dict[bytes, FrameItem] = {}

    def add(self, item: FrameItem):
        key = item.observed
        prev = self._items.get(key)
        if prev is not None and (prev.origin, prev.verdicts) != (item.origin, item.verdicts):
            raise RuntimeError(f"one frame sent with two meanings: {prev} / {item}")
        self._items[key] = item

    def get(self, data: bytes):
        return self._items.get(bytes(data))


@dataclass
class IngressTxn:
    rec: object                 # harness IngressRecord (t_first, t_last, data, outcome, ...)
    outcome: str | None         # OUTCOMES name
    item: FrameItem | None      # what the environment sent (None: not from the environment)
    hdr: object = None          # AggHeader, when the frame has 64 bytes
    position: int | None = None  # arrival position in its round (new/join/complete)
    gslot: int | None = None

    @property
    def port(self):
        return self.rec.port

    @property
    def dtype(self):
        """The header's dtype, for an AGG frame (not NOT_AGG) whose header is complete."""
        if self.hdr is None or self.outcome == "not_agg" or self.hdr.dtype not in F.DTYPES:
            return None
        return self.hdr.dtype

    @property
    def bank(self):
        return None if self.hdr is None else self.hdr.flags & F.FLAG_BANK


@dataclass
class EgressTxn:
    rec: object                 # harness EgressRecord (port, t_first, t_last, data, stalls)
    hdr: object = None
    delivered: bool | None = None   # set by the ResultChannel: reached the host or lost
    extra: dict = field(default_factory=dict)

    @property
    def port(self):
        return self.rec.port

    @property
    def unicast(self):
        return self.hdr is not None and bool(self.hdr.flags & F.FLAG_UNICAST)
