"""Knobs of the pyuvm environment.

A test builds one :class:`UvmConfig` in its build phase and stores it in the ConfigDB as
``cfg`` for every component (``ConfigDB().set(None, "*", "cfg", cfg)``). A component reads
a knob with :func:`knob`, which prefers a ConfigDB entry of the knob's own name at the
component's path, so a test can override one knob for one component only, e.g.::

    ConfigDB().set(None, "uvm_test_top.env.agent1.driver", "data_loss", 0.2)

Every knob can also be set from the environment as ``AGGSWITCH_UVM_<NAME>`` (upper case),
for instance ``AGGSWITCH_UVM_DATA_LOSS=0.2`` or ``AGGSWITCH_UVM_DTYPES=int32,fp32``. Knobs
left at ``None`` are drawn from the run's seed within the ranges below (``resolve``), so
the regression explores them seed by seed; the values used are logged and written to the
run's summary.
"""

from __future__ import annotations

import dataclasses
import os
import random
from dataclasses import dataclass, fields

from tb.model import frames as F

# Ranges of the knobs drawn per seed (inclusive).
LOSS_RANGE = (0.0, 0.20)      # DATA and RESULT loss rates
IDLE_RANGE = (0.0, 0.5)       # ingress idle probability (bursty pauses of the sources)
BP_RANGE = (0.0, 0.8)         # egress back-pressure probability (bursty pauses of the sinks)
STALL_CHOICES = (0.0, 0.0, 0.002, 0.005)  # long egress stalls (fill the switch's buffers)
WINDOW_MAX = 16               # windows drawn in 1..min(WINDOW_MAX, slots)
MAX_LOSS = 0.5                # loss rates above this are refused


def dtype_code(name) -> int:
    """dtype code from a SPEC §4 name (``int32``, ``fp32``, ...) or a code."""
    if isinstance(name, int):
        return name
    s = str(name).strip().lower()
    if s.isdigit():
        return int(s)
    if s not in F.DTYPE_NAMES:
        raise ValueError(f"unknown dtype {name!r} (expected one of {', '.join(F.DTYPE_NAMES)})")
    return F.DTYPE_NAMES.index(s)


def dtype_name(code: int) -> str:
    return F.DTYPE_NAMES[code] if 0 <= code < len(F.DTYPE_NAMES) else f"dtype{code}"


@dataclass
class UvmConfig:
    """Every knob of the environment. ``None``: drawn from the seed (see :meth:`resolve`)."""

    dtypes: tuple | None = None       # dtypes the workers use; None: every dtype the build admits
    chunks: int | None = None         # chunks per worker (the tensor); None: 4 * window, >= 16
    window: int | None = None         # outstanding slots per worker; None: drawn
    data_loss: float | None = None    # DATA frames lost before the switch, 0..0.5
    result_loss: float | None = None  # RESULT frames lost before the host, 0..0.5
    idle: float | None = None         # ingress idle probability
    backpressure: float | None = None  # egress back-pressure probability
    stalls: float | None = None       # per back-pressure burst: a long egress stall instead
    timeout: int | None = None        # cycles before a host retransmits; None: from the params
    backoff: int = 2                  # timeout multiplier per retransmission of a chunk
    max_timeout: int | None = None    # cap of the backed-off timeout; None: 8 * timeout
    max_retries: int = 40             # a host gives up (test fails) after this many
    retransmit: bool = True           # hosts retransmit on timeout (off: loss is fatal)
    noise: float = 0.5                # per chunk a worker sends: a frame the switch must drop
    mismatch: float = 0.25            # per chunk: a MISMATCH frame before the genuine one
    extreme: float = 0.15             # per chunk: values that saturate the sum (OVERFLOW)
    nan: float = 0.05                 # per contribution (dtypes with NaN): one NaN element
    scale_range: int = 6              # scales drawn in [-scale_range, scale_range]
    source_queue: int = 1             # frames queued per ingress source besides the one in flight
    watchdog: int | None = None       # cycles without progress before the test gives up
    transcript: bool = True           # write the cycle-stamped transcripts
    coverage: bool = True             # collect functional coverage and write the report

    # ------------------------------------------------------------- construction
    @classmethod
    def from_env(cls, env=None, **defaults) -> "UvmConfig":
        """`defaults` (a test's choices), overridden by AGGSWITCH_UVM_<NAME> variables."""
        env = os.environ if env is None else env
        cfg = cls(**defaults)
        for f in fields(cls):
            raw = env.get(f"AGGSWITCH_UVM_{f.name.upper()}")
            if raw is None or raw.strip() == "":
                continue
            setattr(cfg, f.name, _parse(f.name, raw))
        return cfg

    def resolve(self, rng: random.Random, params, supported: tuple) -> "UvmConfig":
        """A copy with every ``None`` knob drawn from `rng` (or derived from the parameter
        set), checked against the build: the workers may only use dtypes it admits."""
        c = dataclasses.replace(self)
        if c.dtypes is None:
            c.dtypes = tuple(supported)
        c.dtypes = tuple(dtype_code(d) for d in c.dtypes)
        bad = [d for d in c.dtypes if d not in supported]
        if bad:
            raise ValueError(
                f"dtype(s) {', '.join(dtype_name(d) for d in bad)} not admitted by this build "
                f"(it admits {', '.join(dtype_name(d) for d in supported)}; docs/SPEC.md §10.2)")
        if not c.dtypes:
            raise ValueError("no dtype to aggregate")
        mx_max = min(params.slot_elems, F.MX_MAX_COUNT)
        if all(F.is_mx(d) for d in c.dtypes) and mx_max < F.MX_BLOCK:
            raise ValueError("MX dtypes need slot_elems >= 32")
        if c.window is None:
            c.window = rng.randint(1, min(WINDOW_MAX, params.slots))
        if not 1 <= c.window <= params.slots:
            raise ValueError(f"window {c.window} outside 1..{params.slots} slots")
        if c.chunks is None:
            c.chunks = max(16, 4 * c.window)
        if c.chunks < 1:
            raise ValueError("chunks must be at least 1")
        for name, rng_range in (("data_loss", LOSS_RANGE), ("result_loss", LOSS_RANGE),
                                ("idle", IDLE_RANGE), ("backpressure", BP_RANGE)):
            if getattr(c, name) is None:
                setattr(c, name, round(rng.uniform(*rng_range), 3))
        if c.stalls is None:
            c.stalls = rng.choice(STALL_CHOICES)
        for name in ("data_loss", "result_loss"):
            v = getattr(c, name)
            if not 0.0 <= v <= MAX_LOSS:
                raise ValueError(f"{name} {v} outside 0..{MAX_LOSS}")
        for name in ("idle", "backpressure", "stalls", "noise", "mismatch", "extreme", "nan"):
            v = getattr(c, name)
            if not 0.0 <= v < 1.0:
                raise ValueError(f"{name} {v} outside [0, 1)")
        if c.timeout is None:
            c.timeout = default_timeout(params, c)
        if c.max_timeout is None:
            c.max_timeout = 8 * c.timeout
        if c.watchdog is None:
            c.watchdog = 4 * c.max_timeout + 20000
        return c

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if self.dtypes is not None:
            d["dtypes"] = [dtype_name(x) for x in self.dtypes]
        return d


def default_timeout(params, cfg: UvmConfig) -> int:
    """A host's retransmission timeout in cycles: a few times the round trip of a loaded
    switch: four times the fixed latency, plus a whole window of full frames ahead of this
    one on each port, at (frame beats + 2) cycles each, slowed down by the ingress idles or
    the egress back-pressure. When the engine falls back to one frame per pass (workers out
    of step) the round trip can exceed it: those retransmissions are spurious (duplicates
    and resends the protocol must absorb, and the coverage wants); the backoff bounds them."""
    from aggswitch import latency
    frame_beats = -(-params.max_frame_bytes // params.beat_bytes)
    busy = cfg.window * (frame_beats + 2)
    slow = 1.0 / max(0.2, 1.0 - max(cfg.backpressure or 0.0, cfg.idle or 0.0))
    return int(4 * latency(params) + busy * slow)


def knob(comp, name: str):
    """Knob `name` for component `comp`: a ConfigDB entry `name` at its path, else the
    ``cfg`` object's attribute."""
    from pyuvm import UVMConfigItemNotFound
    try:
        return comp.cdb_get(name)
    except UVMConfigItemNotFound:
        return getattr(comp.cdb_get("cfg"), name)


def _parse(name: str, raw: str):
    kind = {f.name: f.type for f in fields(UvmConfig)}[name]
    raw = raw.strip()
    if name == "dtypes":
        return tuple(dtype_code(x) for x in raw.split(",") if x.strip())
    if "bool" in str(kind):
        return raw.lower() not in ("0", "false", "no", "off", "")
    if "float" in str(kind):
        return float(raw)
    return int(raw)


__all__ = ["UvmConfig", "knob", "dtype_code", "dtype_name", "default_timeout"]
