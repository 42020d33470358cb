"""cocotb harness of the exported `aggswitch` Verilog (the shape of Alex Forencich's
verilog-ethernet cocotb tests): clock, reset, one AXI4-Stream source per ingress port and
one sink per egress port, a cycle-accurate monitor and a scoreboard against the golden
model of tb/model.

Cycle counter. ``TB.cycle`` mirrors the DUT's free-running counter (docs/SPEC.md §10.4):
it is 0 in every cycle that follows a clock edge at which ``rst`` was high and grows by one
each cycle after. The monitor samples at ``RisingEdge(clk)``, where cocotb reads the values
from before the edge (as cocotbext-axi relies on): a handshake seen at an edge belongs to
the cycle that ends at that edge, whose counter value is ``TB.cycle`` before the monitor
advances it.

Monitor. For every ingress port it records each frame (bytes of the beats' kept lanes,
whether tkeep obeyed SPEC §2) with the counter value of its tlast handshake, taking the
beats from the port's source (what it drove, checked against the bus at every tlast
handshake) rather than reading back every cycle what the harness drives itself; for every
egress port each frame with the cycle of its first ``tvalid`` and of its tlast handshake.
Frames completing in the same cycle are recorded in ascending port order, so the monitor
feeds the golden model online in exactly the processing order of SPEC §10.3 (sorting by
(t_last, port)) and knows at any time which RESULT frames are due; tests wait on that
(``settle``) instead of guessing. A handshake at an edge where ``rst`` is high is void
(the DUT resets at that edge) and any partial frame is dropped; the rest of a cut ingress
frame arrives after reset as a new frame, as SPEC §10.6 describes.

Scoreboard (``check``). Per egress port the DUT's frames must equal the model's RESULT
frames one for one, byte for byte, in order: nothing missing, nothing unexpected. Each
RESULT's first ``tvalid`` must come ``LATENCY`` cycles (``aggswitch.latency(params)``)
after the tlast handshake of the DATA frame that caused it: exactly when the frame was sent
with ``exact=True`` (the test guarantees the switch is otherwise idle), at least that under
load. A reset closes an epoch: the model restarts and the epoch's frames are checked on
their own.

Set AGGSWITCH_TRACE=1 to log every ingress frame (with the golden model's verdict) and every
egress frame as the monitor records them. Set AGGSWITCH_PCAP=1 to capture every frame of
every port into ``$AGGSWITCH_OUT_DIR/<test name>.pcapng`` (tb/pcap.py; `make sim PCAP=1`).

Randomness comes from ``TB.rng``, a ``random.Random`` seeded from the run's seed
(``AGGSWITCH_SEED``, else cocotb's ``RANDOM_SEED``) and the test name, never from the
global ``random`` module, so every run is reproducible and independent of which other
tests ran.
"""

from __future__ import annotations

import collections
import functools
import logging
import os
import random
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.queue import Queue
from cocotb.simtime import get_sim_time
from cocotb.triggers import Event, RisingEdge
from cocotb.triggers import SimTimeoutError, with_timeout
from cocotbext.axi import (AxiLiteBus, AxiLiteMaster, AxiResp, AxiStreamBus, AxiStreamSink,
                           AxiStreamSource)

from aggswitch import Params, latency
from tb.model import frames as F
from tb.model.switch import SwitchModel, tkeep_valid

# cocotbext-axi 0.1.28 still uses cocotb APIs that cocotb 2 deprecates; keep the logs readable.
warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"cocotbext\.axi")

CLK_PERIOD_NS = 4
COUNTER_MASK = 0xFFFFFFFF
INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1


# ---------------------------------------------------------------------------- set-up

def params_from_env(env=None) -> Params:
    """The parameter set the DUT was exported with (set by sim/runner.py)."""
    env = os.environ if env is None else env
    d = Params()
    return Params(
        ports=int(env.get("AGGSWITCH_PORTS", d.ports)),
        data_width=int(env.get("AGGSWITCH_DATA_WIDTH", d.data_width)),
        slots=int(env.get("AGGSWITCH_SLOTS", d.slots)),
        slot_elems=int(env.get("AGGSWITCH_SLOT_ELEMS", d.slot_elems)),
        jobs=int(env.get("AGGSWITCH_JOBS", d.jobs)),
    )


def supported_dtypes_from_env(env=None, params: Params | None = None) -> tuple:
    """dtypes this build accepts (docs/SPEC.md §10.2: every dtype, except MX when
    data_width is 128): $AGGSWITCH_DTYPES (comma-separated codes), else the build's
    declaration (aggswitch.ingress.supported_dtypes) for the parameter set."""
    env = os.environ if env is None else env
    if env.get("AGGSWITCH_DTYPES"):
        return tuple(int(x) for x in env["AGGSWITCH_DTYPES"].split(",") if x.strip())
    from aggswitch.ingress import supported_dtypes
    return tuple(supported_dtypes(params_from_env(env) if params is None else params))


def run_seed() -> int:
    s = os.environ.get("AGGSWITCH_SEED")
    return int(s) if s is not None else int(cocotb.RANDOM_SEED)


def worker_addr(port: int):
    """(MAC, IPv4, UDP source port) of the worker host on switch port `port`."""
    return 0x02_00_00_00_10_00 + port, 0x0A_00_01_00 + 2 + port, 0xC000 + port


def random_pause(rng: random.Random, p: float):
    """Pause generator: paused with probability `p` each cycle."""
    while True:
        yield rng.random() < p


def bursty_pause(rng: random.Random, p: float, max_len: int = 8):
    """Pause generator with bursts: runs of 1..max_len cycles, paused with probability p."""
    while True:
        val = rng.random() < p
        for _ in range(rng.randint(1, max_len)):
            yield val


def refresh_ipv4_checksum(frame) -> bytes:
    """Recompute the IPv4 header checksum of a frame (after editing its header)."""
    f = bytearray(frame)
    f[24:26] = b"\0\0"
    f[24:26] = F.ipv4_checksum(bytes(f[14:34])).to_bytes(2, "big")
    return bytes(f)


def fix_lengths(frame) -> bytes:
    """Make the IPv4 total length and UDP length agree with the frame length."""
    f = bytearray(frame)
    n = len(f)
    f[16:18] = (n - 14).to_bytes(2, "big")
    f[38:40] = (n - 34).to_bytes(2, "big")
    return refresh_ipv4_checksum(f)


def patch(frame, offset: int, value: bytes, checksum: bool = True) -> bytes:
    """Overwrite bytes at `offset`; refresh the IPv4 checksum unless told not to."""
    f = bytearray(frame)
    f[offset:offset + len(value)] = value
    return refresh_ipv4_checksum(f) if checksum else bytes(f)


def sat32(x):
    return max(INT32_MIN, min(INT32_MAX, int(x)))


# ------------------------------------------------------------------- records

@dataclass
class IngressRecord:
    port: int
    t_last: int   # cycle of the tlast handshake
    data: bytes
    tkeep_ok: bool
    exact: bool
    outcome: object = None  # tb.model.switch.Outcome
    t_first: int = 0  # cycle of the first beat's handshake
    stalls: int = 0   # cycles the frame waited on tready (tvalid high, tready low)


@dataclass
class Expected:
    port: int
    frame: bytes
    t_trigger: int
    exact: bool
    cause: IngressRecord


@dataclass
class EgressRecord:
    port: int
    t_first: int  # cycle of the first tvalid of the frame
    t_last: int   # cycle of the tlast handshake
    data: bytes
    tkeep_ok: bool
    stalls: int = 0   # cycles the frame waited on tready (egress back-pressure)


@dataclass
class Epoch:
    """Everything between two resets."""
    ingress: list = field(default_factory=list)
    expected: list = field(default_factory=list)  # per port list of Expected
    egress: list = field(default_factory=list)    # per port list of EgressRecord
    allow_missing: bool = False                   # closed by a reset that cut results
    counters: object = None
    egress_dropped: dict = field(default_factory=dict)  # port -> Expected the watchdog dropped


class AxilError(Exception):
    pass


class AxilBus:
    """The bus interface aggswitch.driver.AggSwitchDriver expects (`read(addr)`,
    `write(addr, value)` on 32-bit words), over cocotbext-axi's AxiLiteMaster. Non-OKAY
    responses raise AxilError; every access has a timeout."""

    def __init__(self, master: AxiLiteMaster, timeout_ns: int = 20000):
        self.master = master
        self.timeout_ns = timeout_ns

    async def read(self, addr: int) -> int:
        r = await with_timeout(self.master.read(addr, 4), self.timeout_ns, "ns")
        if r.resp != AxiResp.OKAY:
            raise AxilError(f"read 0x{addr:04X}: {AxiResp(r.resp).name}")
        return int.from_bytes(r.data, "little")

    async def write(self, addr: int, value: int):
        r = await with_timeout(self.master.write(addr, int(value).to_bytes(4, "little")),
                               self.timeout_ns, "ns")
        if r.resp != AxiResp.OKAY:
            raise AxilError(f"write 0x{addr:04X}: {AxiResp(r.resp).name}")


def raw_reader(handle):
    """A function returning `handle`'s value as the simulator's bit string ("0101",
    "x"...): cocotb 2's handles keep the GPI object in ``_handle``; reading it directly
    skips building a Logic/LogicArray for every read, which is most of the cost of
    ``handle.value`` in a loop that runs every cycle. ``int(s, 2)`` of the string is the
    unsigned value and raises ValueError on X/Z, like LogicArray.to_unsigned()."""
    gpi = getattr(handle, "_handle", None)
    if gpi is not None and hasattr(gpi, "get_signal_val_binstr"):
        return gpi.get_signal_val_binstr
    return lambda: str(handle.value)


def raw_writer(handle):
    """A function depositing an int on `handle` exactly as ``handle.value = v`` does
    (cocotb's scheduled write, applied in the ReadWrite phase: cocotb.handle's
    _schedule_write with the same GPI call and value string), without the setter's type
    dispatch, range check and length query on every call. Values must be in range."""
    try:
        from cocotb.handle import LogicObject, _GPISetAction, _schedule_write, _trust_inertial
        gpi = handle._handle
        set_bin, set_int = gpi.set_signal_val_binstr, gpi.set_signal_val_int
        dep = _GPISetAction.DEPOSIT
        n = len(handle)
    except (ImportError, AttributeError):  # another cocotb: the public setter
        return lambda v: setattr(handle, "value", v)
    if _trust_inertial:
        # COCOTB_TRUST_INERTIAL_WRITES (cocotb's runner sets it for Verilator):
        # _schedule_write calls the GPI at once; so does this, without the detour
        d = dep.value
        if isinstance(handle, LogicObject):
            bits = ("0", "1")
            return lambda v: set_bin(d, bits[v])
        if n <= 32:
            return functools.partial(set_int, d)
        fmt = f"0{n}b"
        return lambda v: set_bin(d, format(v, fmt))
    if isinstance(handle, LogicObject):
        bits = ("0", "1")
        return lambda v: _schedule_write(handle, set_bin, dep, bits[v])
    if n <= 32:
        return lambda v: _schedule_write(handle, set_int, dep, v)
    fmt = f"0{n}b"
    return lambda v: _schedule_write(handle, set_bin, dep, format(v, fmt))


class IngressSource(AxiStreamSource):
    """cocotbext-axi's AxiStreamSource with a cheaper cycle: the same bus model (queue,
    send/send_nowait, pause generator, idle(), tkeep/tid/tdest/tuser, reset handling,
    the same signal values in the same cycles), but a frame is cut into whole beats once,
    when it is dequeued (``int.from_bytes`` per beat instead of a loop over the byte
    lanes), and a cycle writes only the signals whose value changes (tdata, and tvalid,
    tlast, tkeep, tid, tdest, tuser when they differ from what the source last drove).

    `_step` follows AxiStreamSource._run of cocotbext-axi 0.1.28 line for line; only the
    beat packing and the writes differ, and one IngressDriver coroutine steps the sources
    of every port instead of a coroutine per source."""

    def _beats(self, frame) -> list:
        """(tdata, tkeep, tlast, tid, tdest, tuser, side) of every beat of `frame`, as
        AxiStreamSource._run packs them (sideband values: those of the beat's last lane);
        `side` is (tkeep, tlast, tid, tdest, tuser) once more, as one tuple, so that _step
        sees with one comparison that none of them changes."""
        plain = (frame.tkeep is None and frame.tid is None and frame.tdest is None
                 and frame.tuser is None)
        frame.normalize()
        lanes, size, mask = self.byte_lanes, self.byte_size, self.byte_mask
        td, tk, ti, tde, tu = frame.tdata, frame.tkeep, frame.tid, frame.tdest, frame.tuser
        n = len(td)
        beats = []
        fast = size == 8 and isinstance(td, bytearray)
        full = (1 << lanes) - 1
        if fast and plain and n:
            # bytes only (normalize made every tkeep bit 1 and tid, tdest, tuser 0): the
            # loop below without its per-lane work
            mid = (full, 0, 0, 0, 0)
            for o in range(0, n, lanes):
                e = o + lanes
                data = int.from_bytes(td[o:e], "little")
                if e < n:
                    beats.append((data, full, 0, 0, 0, 0, mid))
                else:
                    keep = (1 << (n - o)) - 1
                    beats.append((data, keep, 1, 0, 0, 0, (keep, 1, 0, 0, 0)))
            return beats
        for o in range(0, max(n, 1), lanes):
            e = min(o + lanes, n)
            if fast:
                data = int.from_bytes(td[o:e], "little")
            else:
                data = 0
                for i in range(o, e):
                    data |= (td[i] & mask) << ((i - o) * size)
            k = tk[o:e]
            if e - o == lanes and k.count(1) == lanes:
                keep = full
            else:
                keep = 0
                for i, b in enumerate(k):
                    keep |= (b & 1) << i
            j = e - 1
            last = int(e >= n)
            beats.append((data, keep, last, ti[j], tde[j], tu[j], (keep, last, ti[j], tde[j], tu[j])))
        return beats

    def __init__(self, bus, clock, *args, driver: "IngressDriver" = None, **kwargs):
        # before the base's __init__, which starts _run (no reset signal: at once)
        self._driver = driver if driver is not None else IngressDriver(clock)
        self._st = None
        super().__init__(bus, clock, *args, **kwargs)
        self.active_event = _WakeEvent(self._driver)

    def _handle_reset(self, state):
        if state:
            self._st = None               # restarted by the next _run
        super()._handle_reset(state)

    async def _run(self):
        """Parked: the driver's one coroutine steps every source (`_step`) at each rising
        edge, which costs one wake-up per cycle for all ports instead of one per port.
        This task only (re)starts the source's state; the base kills it on reset, which
        the driver sees as `_run_cr` being None."""
        bus = self.bus
        st = _SourceState()
        st.has_tready = hasattr(bus, "tready")
        st.has_tvalid = hasattr(bus, "tvalid")
        st.has_tlast = hasattr(bus, "tlast")
        st.has_tkeep = hasattr(bus, "tkeep")
        st.has_tid = hasattr(bus, "tid")
        st.has_tdest = hasattr(bus, "tdest")
        st.has_tuser = hasattr(bus, "tuser")
        st.read_tready = raw_reader(bus.tready) if st.has_tready else None
        st.w_data = raw_writer(bus.tdata)
        st.w_valid = raw_writer(bus.tvalid) if st.has_tvalid else None
        st.w_last = raw_writer(bus.tlast) if st.has_tlast else None
        st.w_keep = raw_writer(bus.tkeep) if st.has_tkeep else None
        st.w_id = raw_writer(bus.tid) if st.has_tid else None
        st.w_dest = raw_writer(bus.tdest) if st.has_tdest else None
        st.w_user = raw_writer(bus.tuser) if st.has_tuser else None
        st.log_frames = self.log.isEnabledFor(logging.INFO)
        # tvalid: only this source drives it, so its value at an edge is the one this
        # source wrote last (read once here, where the bus holds its initial or reset 0).
        st.valid = (not st.has_tvalid) or raw_reader(bus.tvalid)() == "1"
        self.active = False
        self._st = st
        self._driver.attach(self)
        await _Never().wait()

    def _step(self, now) -> bool:
        """One rising edge of AxiStreamSource._run (cocotbext-axi 0.1.28), line for line;
        False when the source went idle (it waits for a send, as the base waits on
        active_event). `now`: the simulation time of the edge.

        Before it drives anything it keeps what the bus carried in the cycle that ends at
        this edge (tvalid and the beat: ``pv``, ``pb``, stamped ``t = now``): the monitor
        takes the ingress side from there (``bus_at``) instead of reading tdata, tkeep and
        tlast back, whether it runs before or after this step at the same edge. The tready
        sample is shared with the monitor the same way (``ready_at``)."""
        st = self._st
        st.pv, st.pb, st.t = st.valid, st.beat, now
        tready_sample = (not st.has_tready) or self.ready_at(now) == "1"
        tvalid_sample = st.valid

        if (tready_sample and tvalid_sample) or not tvalid_sample:
            if st.frame is None and not self.queue.empty():
                frame = self.queue.get_nowait()
                self.dequeue_event.set()
                self.queue_occupancy_bytes -= len(frame)
                self.queue_occupancy_frames -= 1
                self.current_frame = frame
                frame.sim_time_start = get_sim_time()
                frame.sim_time_end = None
                if st.log_frames:
                    self.log.info("TX frame: %s", frame)
                st.frame = frame
                st.beats = self._beats(frame)
                st.index = 0
                self.active = True

            if st.frame is not None and not self.pause:
                beat = st.beat = st.beats[st.index]
                data, keep, last, tid, tdest, tuser, side = beat
                st.index += 1
                if last:
                    st.frame.sim_time_end = get_sim_time()
                    st.frame.handle_tx_complete()
                    st.frame = None
                    st.beats = None
                    self.current_frame = None

                st.w_data(data)
                if st.has_tvalid:
                    st.valid = True
                    if st.d_valid != 1:
                        st.w_valid(1)
                        st.d_valid = 1
                if side == st.d_side:
                    return True           # tkeep, tlast, tid, tdest, tuser as driven last
                st.d_side = side
                if st.has_tlast and st.d_last != last:
                    st.w_last(last)
                    st.d_last = last
                if st.has_tkeep and st.d_keep != keep:
                    st.w_keep(keep)
                    st.d_keep = keep
                if st.has_tid and st.d_id != tid:
                    st.w_id(tid)
                    st.d_id = tid
                if st.has_tdest and st.d_dest != tdest:
                    st.w_dest(tdest)
                    st.d_dest = tdest
                if st.has_tuser and st.d_user != tuser:
                    st.w_user(tuser)
                    st.d_user = tuser
            else:
                if st.has_tvalid:
                    st.valid = False
                    if st.d_valid != 0:
                        st.w_valid(0)
                        st.d_valid = 0
                if st.has_tlast and st.d_last != 0:
                    st.w_last(0)
                    st.d_last = 0
                    st.d_side = None
                self.active = st.frame is not None
                if st.frame is None and self.queue.empty():
                    self.idle_event.set()
                    self.active_event.clear()
                    return False
        return True

    def ready_at(self, now) -> str:
        """tready at the edge at time `now` (raw, as raw_reader returns it), read once per
        edge for the source and the monitor together."""
        st = self._st
        if st.rt != now:
            st.rv = st.read_tready()
            st.rt = now
        return st.rv

    def bus_at(self, now):
        """(tvalid, beat) this source put on the bus for the cycle that ends at the edge at
        time `now` (the values before that edge): tvalid as a bool, the beat as a `_beats`
        tuple (tdata, tkeep, tlast, ...), None if the source has not driven one since it
        (re)started. None when the source is not running (before its first
        step, or killed by a reset): then only the bus itself can tell."""
        st = self._st
        if st is None or self._run_cr is None:
            return None
        if st.t == now:
            return st.pv, st.pb
        return st.valid, st.beat


class _SourceState:
    """What IngressSource._run kept in local variables between edges, and what the source
    drove (for the monitor: IngressSource.bus_at, ready_at)."""
    frame = None
    beats = None
    index = 0
    valid = False
    beat = None             # the beat last driven (a _beats tuple)
    pv, pb, t = False, None, None   # tvalid and beat before the step at time t
    rv, rt = None, None     # raw tready sampled at time rt
    # what the source last drove (None: unknown, write the next value whatever it is)
    d_valid = d_last = d_keep = d_id = d_dest = d_user = None
    d_side = None   # (tkeep, tlast, tid, tdest, tuser) as last driven, None: not known


class _Never(Event):
    """An event nobody sets: a parked task waits on it until it is killed."""


class _WakeEvent(Event):
    """A source's active_event: also records when it was set, and wakes the driver."""

    def __init__(self, driver: "IngressDriver"):
        super().__init__()
        self._driver = driver
        self.woke_at = -1

    def set(self, *args, **kwargs):
        self.woke_at = get_sim_time()
        super().set(*args, **kwargs)
        self._driver.wake.set()


class IngressDriver:
    """One coroutine for the IngressSources of every port on one clock. At each rising
    edge it steps every running source that is busy, in the cycle where the source's own
    loop would have run: a source that went idle is stepped again from the first edge
    after a send set its active_event (the base awaits active_event, then the next edge).
    It sleeps while every source is idle. With `external`, it has no coroutine: its owner
    calls `step` at every rising edge (TB's monitor does, first thing at each edge)."""

    def __init__(self, clock, external: bool = False):
        self.clock = clock
        self.sources = []
        self.wake = Event()
        self._task = None
        self.external = external   # stepped by its owner at every rising edge (step)

    def attach(self, src):
        if src not in self.sources:
            self.sources.append(src)
        src._busy = True
        if self._task is None and not self.external:
            self._task = cocotb.start_soon(self._run())
        self.wake.set()

    async def _run(self):
        edge = RisingEdge(self.clock)
        while True:
            await edge
            if not self.step(get_sim_time()):
                self.wake.clear()
                await self.wake.wait()

    def step(self, now) -> bool:
        """One rising edge at simulation time `now`: step every running source that is busy.
        False when every source is idle and none has been woken. The driver's own coroutine
        calls it; a testbench that already wakes at every edge (TB's monitor) calls it
        itself instead (`external`), which saves a coroutine wake-up per cycle."""
        busy = False
        for src in self.sources:
            if src._run_cr is None or src._st is None:
                continue              # in reset (killed) or not restarted yet
            if not src._busy:
                ev = src.active_event
                if not (ev.is_set() and ev.woke_at < now):
                    continue
            src._busy = src._step(now)
            busy = busy or src._busy
        return busy or any(s.active_event.is_set() for s in self.sources)


class EgressSink(AxiStreamSink):
    """AxiStreamSink that only drives tready (with its pause generator as back-pressure).
    Frames are captured by TB's monitor, which reads each beat once rather than once per
    byte lane; this sink keeps no queue."""

    # What this sink last drove on tready ("0"/"1", as raw_reader returns it; None before
    # its first write). Only the sink drives tready, so at a clock edge the bus carries
    # what it wrote before that edge: the monitor takes it from here instead of reading
    # the bus back. The sink writes after the monitor's step at the same edge (it is woken
    # by its pause generator's edge coroutine), as it did when the monitor read the bus.
    driven = None

    async def _run(self):
        while True:
            v = 0 if self.pause else 1
            self.bus.tready.value = v
            self.driven = "01"[v]
            self.wake_event.clear()
            await self.wake_event.wait()

    # AxiStreamMonitor wakes the sink's loop at every rising edge of tvalid and tready;
    # this sink only needs waking when its pause changes (_pause_update does that).
    async def _run_tvalid_monitor(self):
        return

    async def _run_tready_monitor(self):
        return


# ------------------------------------------------------------------- helpers

def _kept(data: bytes, keep: int, full: int) -> bytes:
    if keep == full:
        return data
    return bytes(b for i, b in enumerate(data) if (keep >> i) & 1)


def describe_frame(b: bytes) -> str:
    b = bytes(b)
    try:
        p = F.parse_frame(b)
    except ValueError:
        return f"<{len(b)} bytes: {b.hex()}>"
    h = p.hdr
    return (f"{len(b)}B op={h.op} dtype={h.dtype} job={h.job} slot={h.slot} "
            f"worker={h.worker:#x} flags={h.flags:#04x} seq={h.seq} count={h.count} "
            f"scale={h.scale} ts={p.timestamp} dst={F.mac_str(p.dst_mac)}/"
            f"{F.ip_str(p.dst_ip)}:{p.dst_port}")


def describe_diff(exp: bytes, got: bytes, max_elems: int = 8) -> str:
    """Readable field-by-field difference of two frames (both parsed with parse_frame)."""
    exp, got = bytes(exp), bytes(got)
    lines = [f"    expected {describe_frame(exp)}", f"    got      {describe_frame(got)}"]
    try:
        pe, pg = F.parse_frame(exp), F.parse_frame(got)
    except ValueError:
        return "\n".join(lines)
    for name in ("dst_mac", "src_mac", "ethertype", "ip_version", "ip_ihl", "ip_tos",
                 "ip_total_length", "ip_id", "ip_flags_frag", "ip_ttl", "ip_proto",
                 "ip_checksum", "checksum_ok", "src_ip", "dst_ip", "src_port", "dst_port",
                 "udp_length", "udp_checksum", "timestamp", "length"):
        a, b = getattr(pe, name), getattr(pg, name)
        if a != b:
            lines.append(f"    {name}: expected {a!r}, got {b!r}")
    for name in ("ver", "op", "dtype", "job", "slot", "worker", "flags", "seq", "count",
                 "scale", "reserved"):
        a, b = getattr(pe.hdr, name), getattr(pg.hdr, name)
        if a != b:
            lines.append(f"    agg.{name}: expected {a!r}, got {b!r}")
    if pe.payload != pg.payload:
        if pe.hdr.dtype == F.INT32 and len(pe.payload) % 4 == 0 and len(pg.payload) % 4 == 0:
            ve, vg = F.int32_from_payload(pe.payload), F.int32_from_payload(pg.payload)
            n = min(len(ve), len(vg))
            bad = [i for i in range(n) if ve[i] != vg[i]]
            lines.append(f"    payload: {len(bad)} of {n} int32 elements differ"
                         + (f", lengths {len(ve)} vs {len(vg)}" if len(ve) != len(vg) else ""))
            for i in bad[:max_elems]:
                lines.append(f"      [{i}] expected {ve[i]}, got {vg[i]}")
        else:
            n = min(len(pe.payload), len(pg.payload))
            bad = [i for i in range(n) if pe.payload[i] != pg.payload[i]]
            lines.append(f"    payload: {len(bad)} of {n} bytes differ, lengths "
                         f"{len(pe.payload)} vs {len(pg.payload)}")
            for i in bad[:max_elems]:
                lines.append(f"      [{i}] expected {pe.payload[i]:#04x}, got {pg.payload[i]:#04x}")
    return "\n".join(lines)


# ------------------------------------------------------------------------ TB

class TB:
    """Testbench of one `aggswitch` instance. See the module docstring."""

    def __init__(self, dut, name: str = "tb", params: Params | None = None, seed=None):
        self.dut = dut
        self.p = params or params_from_env()
        self.log = logging.getLogger(f"cocotb.tb.{name}")
        self.log.setLevel(logging.INFO)
        self.seed = run_seed() if seed is None else seed
        self.rng = random.Random(f"{self.seed}/{name}")
        self.latency = latency(self.p)
        self.supported_dtypes = supported_dtypes_from_env(params=self.p)
        self.beat_bytes = self.p.beat_bytes
        self._full_keep = (1 << self.beat_bytes) - 1
        P = self.ports = self.p.ports
        self._check_dut_shape()
        self.log.info("params %s (%s), latency %d, seed %d", self.p, self.p.name(),
                      self.latency, self.seed)

        self.clock_period_ns = CLK_PERIOD_NS
        self.clock = Clock(dut.clk, CLK_PERIOD_NS, unit="ns")
        self.clock.start()

        for p in range(P):
            for d in ("s", "m"):
                logging.getLogger(f"cocotb.{dut._name}.{d}{p}_axis").setLevel(logging.WARNING)
        self.ingress_driver = IngressDriver(dut.clk, external=True)
        self.sources = [IngressSource(AxiStreamBus.from_prefix(dut, f"s{p}_axis"), dut.clk,
                                      driver=self.ingress_driver)
                        for p in range(P)]
        self.sinks = [EgressSink(AxiStreamBus.from_prefix(dut, f"m{p}_axis"), dut.clk)
                      for p in range(P)]
        logging.getLogger(f"cocotb.{dut._name}.s_axil").setLevel(logging.WARNING)
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), dut.clk, dut.rst)
        self.bus = AxilBus(self.axil)
        try:
            from aggswitch.driver import AggSwitchDriver
            self.driver = AggSwitchDriver(self.bus, self.p)
        except ImportError:  # register map not available in this build
            self.driver = None
        dut.rst.value = 1

        # golden model and scoreboard state
        self.model = self._new_model()
        self.epochs: list[Epoch] = []
        self.epoch = self._new_epoch()
        self.errors: list[str] = []
        self._exact = [collections.deque() for _ in range(P)]
        self._subscribers = [[] for _ in range(P)]
        self._ingress_hooks = []  # callables(IngressRecord), after the golden model's verdict
        self._egress_hooks = []   # callables(EgressRecord)
        self.cycle = None  # counter value of the current cycle (None before the first reset)
        self.in_reset = False
        self._reset_cut = False
        self.check_stable = True
        self.trace = os.environ.get("AGGSWITCH_TRACE", "0") not in ("", "0")
        self.total_ingress = [0] * P
        self.total_egress = [0] * P
        self._in_beats = [[] for _ in range(P)]
        self._in_first = [0] * P
        self._in_stalls = [0] * P
        self._eg_stalls = [0] * P
        self._eg_beats = [[] for _ in range(P)]
        self._eg_first = [None] * P
        self._eg_pending = [None] * P  # beat presented but not taken: (tdata, tkeep, tlast)
        self._in_readers = {}

        self._monitor_task = cocotb.start_soon(self._monitor())
        self.capture = None
        if os.environ.get("AGGSWITCH_PCAP", "0") not in ("", "0"):
            from tb.pcap import AxisCapture
            out = Path(os.environ.get("AGGSWITCH_OUT_DIR", "."))
            self.capture = AxisCapture(self, out / f"{name}.pcapng")
            self.log.info("capturing every frame into %s", self.capture.writer.path)

    # -------------------------------------------------------------- set-up
    def _check_dut_shape(self):
        dut, p = self.dut, self.p
        width = len(dut.s0_axis_tdata)
        if width != p.data_width:
            raise RuntimeError(f"DUT tdata is {width} bits, params say {p.data_width} "
                               "(AGGSWITCH_* environment out of step with the build)")
        if not hasattr(dut, f"s{p.ports - 1}_axis_tdata") or hasattr(dut, f"s{p.ports}_axis_tdata"):
            raise RuntimeError(f"DUT does not have {p.ports} ports")

    def _new_model(self) -> SwitchModel:
        return SwitchModel(ports=self.p.ports, slots=self.p.slots,
                           slot_elems=self.p.slot_elems, jobs=self.p.jobs,
                           supported_dtypes=self.supported_dtypes)

    def _new_epoch(self) -> Epoch:
        return Epoch(expected=[[] for _ in range(self.p.ports)],
                     egress=[[] for _ in range(self.p.ports)])

    # --------------------------------------------------------------- knobs
    def set_idle_generator(self, generator=None):
        """`generator`: a callable returning a fresh pause generator (one per port), or None."""
        for src in self.sources:
            src.set_pause_generator(generator() if generator else None)
        if not generator:
            for src in self.sources:
                src.pause = False

    def set_backpressure_generator(self, generator=None):
        for snk in self.sinks:
            snk.set_pause_generator(generator() if generator else None)
        if not generator:
            for snk in self.sinks:
                snk.pause = False

    def random_idle(self, p: float = 0.3, bursty: bool = True):
        """Random ingress idle cycles (reproducible: one Random per port, seeded from rng)."""
        seeds = iter([self.rng.getrandbits(64) for _ in range(self.ports)])
        gen = bursty_pause if bursty else random_pause
        self.set_idle_generator(lambda: gen(random.Random(next(seeds)), p))

    def random_backpressure(self, p: float = 0.3, bursty: bool = True):
        seeds = iter([self.rng.getrandbits(64) for _ in range(self.ports)])
        gen = bursty_pause if bursty else random_pause
        self.set_backpressure_generator(lambda: gen(random.Random(next(seeds)), p))

    # ------------------------------------------------------------- helpers
    def worker_rank(self, port: int, job: int = 0) -> int:
        mask = self.model.job_mask(job)
        return bin(mask & ((1 << port) - 1)).count("1")

    def data(self, port: int, slot: int, values=None, *, seq: int = 0, bank: int = 0,
             job: int = 0, worker=None, scale: int = 0, dtype: int = F.INT32, count=None,
             retx: bool = False, payload: bytes | None = None, src=None) -> bytes:
        """A DATA frame from the worker on `port` (its worker index in `job` by default),
        addressed to the switch's current MAC, IPv4 address and AGG port (as the golden
        model holds them). `src`: (MAC, IPv4, UDP port) instead of worker_addr(port)."""
        mac, ip, udp = src or worker_addr(port)
        if payload is None:
            payload = F.int32_payload(values)
        if count is None:
            count = len(values)
        return F.data_frame(worker_mac=mac, worker_ip=ip, worker_port=udp, job=job,
                            slot=slot, worker=self.worker_rank(port, job) if worker is None
                            else worker, seq=seq, dtype=dtype, count=count, scale=scale,
                            payload=payload, bank=bank, retx=retx,
                            switch_mac=self.model.switch_mac, switch_ip=self.model.switch_ip,
                            agg_port=self.model.agg_port)

    def random_values(self, n: int, lo: int = INT32_MIN, hi: int = INT32_MAX) -> list:
        return [self.rng.randint(lo, hi) for _ in range(n)]

    # -------------------------------------------------------------- traffic
    def send(self, port: int, frame, exact: bool = False):
        """Queue a frame on ingress `port`. `exact=True`: the test guarantees the switch is
        otherwise idle when this frame's tlast is accepted, so its RESULTs must appear after
        exactly LATENCY cycles. `frame`: bytes or an AxiStreamFrame (custom tkeep)."""
        self._exact[port].append(exact)
        self.sources[port].send_nowait(frame)

    async def send_wait(self, port: int, frame, exact: bool = False,
                        timeout: int | None = None) -> IngressRecord:
        """send() and wait until the frame's last beat has been accepted; returns its
        IngressRecord (with the golden model's Outcome). Nothing else may be queued on
        `port`."""
        n = self.total_ingress[port]
        self.send(port, frame, exact)
        # Both the source (idle) and the monitor (record) react to the edge of the tlast
        # handshake, in no defined order: wait for both.
        await self.wait_until(lambda: self.sources[port].idle() and self.total_ingress[port] > n,
                              timeout, f"frame on port {port} accepted")
        return self.outcomes(port)[-1]

    async def send_isolated(self, port: int, frame, quiet: int | None = None,
                            timeout: int | None = None) -> IngressRecord:
        """Wait until the switch is idle (`settle(quiet=quiet)`), then send `frame` with the
        exact latency check."""
        await self.settle(quiet=quiet)
        return await self.send_wait(port, frame, exact=True, timeout=timeout)

    async def source_below(self, port: int, frames: int, timeout: int | None = None):
        """Wait until at most `frames` - 1 frames wait in `port`'s source queue (the frame
        being sent not counted). Wakes when the source takes a frame from its queue rather
        than polling every cycle; fails after `timeout` cycles (default_timeout())."""
        src = self.sources[port]
        if src.count() < frames:
            return
        timeout = self.default_timeout() if timeout is None else timeout

        async def drained():
            while src.count() >= frames:
                src.dequeue_event.clear()
                await src.dequeue_event.wait()
        try:
            await with_timeout(drained(), timeout * CLK_PERIOD_NS, "ns")
        except SimTimeoutError:
            raise AssertionError(f"timeout after {timeout} cycles waiting for port {port}'s "
                                 f"source queue; state: {self.state_summary()}") from None

    async def send_async(self, port: int, frame, exact: bool = False):
        """send(), waiting first while the port's source queue is full (its
        `queue_occupancy_limit_frames` / `_bytes`; unlimited by default)."""
        self._exact[port].append(exact)
        await self.sources[port].send(frame)

    def subscribe(self, port: int) -> Queue:
        """A queue that receives every EgressRecord of `port` from now on."""
        q = Queue()
        self._subscribers[port].append(q)
        return q

    def add_ingress_hook(self, fn):
        """Call fn(IngressRecord) for every ingress frame, in processing order, as soon as the
        golden model has processed it (its slot state then reflects exactly that frame)."""
        self._ingress_hooks.append(fn)

    def add_egress_hook(self, fn):
        """Call fn(EgressRecord) for every egress frame as soon as its last beat is taken."""
        self._egress_hooks.append(fn)

    def sim_cycle(self) -> int:
        """Rising clock edges since the start of the simulation (the clock starts at time 0
        and runs through resets, unlike the switch's counter ``self.cycle``)."""
        return int(get_sim_time("ns")) // CLK_PERIOD_NS

    # ---------------------------------------------------------------- waits
    async def cycles(self, n: int):
        edge = RisingEdge(self.dut.clk)
        for _ in range(n):
            await edge

    async def wait_until(self, cond, timeout: int | None = None, what: str = "condition"):
        """Wait (checking each cycle) until cond() is true; fail after `timeout` cycles."""
        timeout = self.default_timeout() if timeout is None else timeout
        edge = RisingEdge(self.dut.clk)
        for _ in range(timeout):
            if cond():
                return
            await edge
        if cond():
            return
        raise AssertionError(f"timeout after {timeout} cycles waiting for {what}; "
                             f"state: {self.state_summary()}")

    def default_timeout(self) -> int:
        # generous: every queued frame at a few cycles per beat, plus latency and reset
        queued = sum(src.queue_occupancy_bytes for src in self.sources)
        return 4 * self.p.slots + 20 * self.latency + 8 * queued // self.beat_bytes + 2000

    def quiet_cycles(self) -> int:
        """Cycles after which a switch with no input has certainly finished everything."""
        frame_beats = -(-self.p.max_frame_bytes // self.beat_bytes)
        return self.latency + (self.ports + 2) * (frame_beats + 4) + 16

    def busy(self) -> bool:
        ep = self.epoch
        return (any(not src.idle() for src in self.sources)
                or any(self._in_beats)
                or any(self._eg_beats)
                or any(t is not None for t in self._eg_first)
                or any(len(ep.egress[p]) < len(ep.expected[p]) for p in range(self.ports)))

    async def settle(self, timeout: int | None = None, quiet: int | None = None):
        """Wait until every queued frame has been sent, every due RESULT received, and
        `quiet` more cycles have passed with nothing in flight."""
        quiet = self.quiet_cycles() if quiet is None else quiet
        timeout = self.default_timeout() if timeout is None else timeout
        edge = RisingEdge(self.dut.clk)
        idle_for = 0
        for _ in range(timeout + quiet):
            if self.busy():
                idle_for = 0
            else:
                idle_for += 1
                if idle_for >= quiet:
                    return
            await edge
        raise AssertionError(f"switch did not settle within {timeout} cycles; "
                             f"state: {self.state_summary()}")

    def state_summary(self) -> str:
        ep = self.epoch
        parts = [f"cycle={self.cycle}"]
        for p in range(self.ports):
            parts.append(
                f"port{p}: src_queued={self.sources[p].count()} src_active="
                f"{self.sources[p].active} s_tready={getattr(self.dut, f's{p}_axis_tready').value} "
                f"in_beats={len(self._in_beats[p])} egress={len(ep.egress[p])}/"
                f"{len(ep.expected[p])} expected")
        return "; ".join(parts)

    # ---------------------------------------------------------------- reset
    async def reset(self, cycles: int = 4, allow_missing: bool = False, timeout: int | None = None):
        """Pulse rst for `cycles` cycles (closing the scoreboard epoch), then wait until the
        switch has initialised (every s*_axis_tready high). `allow_missing`: RESULTs that
        were due but not (fully) delivered when rst rose are not errors (reset cut them)."""
        self._reset_cut = allow_missing
        self.dut.rst.value = 1
        await self.cycles(cycles)
        self.dut.rst.value = 0
        budget = timeout if timeout is not None else 4 * self.p.slots + 500
        readies = [getattr(self.dut, f"s{p}_axis_tready") for p in range(self.ports)]

        def all_ready():
            try:
                return all(bool(r.value) for r in readies)
            except ValueError:
                return False
        await self.wait_until(all_ready, budget, "every s*_axis_tready high after reset")
        self.log.debug("reset done at cycle %s", self.cycle)

    def _close_epoch(self):
        ep = self.epoch
        ep.allow_missing = self._reset_cut
        ep.counters = self.model.counters
        if ep.ingress or any(ep.egress):
            self.epochs.append(ep)
        self.epoch = self._new_epoch()
        self.model = self._new_model()
        self._reset_cut = False
        # The exact-latency flags stay queued: a frame cut by reset still ends in one frame
        # (its tail), so the flags stay aligned with the frames still to come.

    # -------------------------------------------------------------- monitor
    async def _monitor(self):
        # One coroutine for every port; a raw read is the simulator's bit string
        # (raw_reader): "1" and "0", anything else is X/Z. Each cycle costs:
        # - the ingress sources' step (IngressDriver.step: the beats they drive next);
        # - one raw read of rst;
        # - ingress: no read of what the harness drives itself. tvalid and the beat come
        #   from the port's IngressSource (bus_at: what it drove for this cycle); tready is
        #   read when tvalid is high (ready_at: one read per edge shared with the source).
        #   On the tlast handshake of every frame the bus is read back once and must carry
        #   exactly the beat the source drove (_check_ingress_bus). A port whose source is
        #   not running (before its first edge) is read from the bus (_ingress_from_bus);
        # - egress: tvalid; tready (what the port's EgressSink drove, not read back) when
        #   tvalid is high; tdata/tkeep/tlast on a handshake
        #   and, for the stability check, while a beat is stalled (there the raw bit
        #   strings are compared, nothing is converted).
        dut, P, B = self.dut, self.ports, self.beat_bytes
        edge = RisingEdge(dut.clk)
        rd = raw_reader
        rst = rd(dut.rst)
        mv = [rd(getattr(dut, f"m{p}_axis_tvalid")) for p in range(P)]
        mr = [rd(getattr(dut, f"m{p}_axis_tready")) for p in range(P)]
        md = [rd(getattr(dut, f"m{p}_axis_tdata")) for p in range(P)]
        mk = [rd(getattr(dut, f"m{p}_axis_tkeep")) for p in range(P)]
        ml = [rd(getattr(dut, f"m{p}_axis_tlast")) for p in range(P)]
        ports = range(P)
        sources, sinks = self.sources, self.sinks
        in_beats, in_first, in_stalls = self._in_beats, self._in_first, self._in_stalls
        eg_beats, eg_first, eg_pending, eg_stalls = (self._eg_beats, self._eg_first,
                                                     self._eg_pending, self._eg_stalls)
        not_bit = self._not_bit
        drive = self.ingress_driver.step

        while True:
            await edge
            now = get_sim_time()
            drive(now)                    # the ingress sources' edge (IngressDriver.step)
            cyc = self.cycle
            r = rst()
            if r != "0":
                if r != "1":
                    not_bit(r, "rst")
                else:
                    if not self.in_reset:
                        self.in_reset = True
                        self._close_epoch()
                    for p in ports:
                        in_beats[p] = []
                        eg_beats[p] = []
                        eg_first[p] = None
                        eg_pending[p] = None
                        in_stalls[p] = 0
                        eg_stalls[p] = 0
                    self.cycle = 0
                    continue
            self.in_reset = False
            if cyc is None:
                continue

            for p in ports:
                # ---- ingress
                src = sources[p]
                bus = src.bus_at(now)
                if bus is None or (bus[0] and bus[1] is None):
                    self._ingress_from_bus(p, cyc)
                    continue
                if not bus[0]:
                    continue
                r = src.ready_at(now)
                if r != "1":
                    if r != "0":
                        not_bit(r, f"s{p}_axis_tready")
                    in_stalls[p] += 1
                    continue
                beat = bus[1]
                beats = in_beats[p]
                if not beats:
                    in_first[p] = cyc
                beats.append(beat)
                if beat[2]:
                    self._check_ingress_bus(p, beat)
                    in_beats[p] = []
                    self._ingress_frame(p, cyc, beats)

            check_stable = self.check_stable
            for p in ports:
                # ---- egress
                v = mv[p]()
                if v != "1":
                    if v != "0":
                        not_bit(v, f"m{p}_axis_tvalid")
                    if eg_pending[p] is not None:
                        self.error(f"cycle {cyc}: m{p}_axis_tvalid fell before its beat "
                                   "was accepted (AXI4-Stream violation)")
                        eg_pending[p] = None
                    continue
                pend = eg_pending[p]
                if eg_first[p] is None:
                    eg_first[p] = cyc
                r = sinks[p].driven
                if r is None:
                    r = mr[p]()
                if r == "1":
                    raw = (md[p](), mk[p](), ml[p]())
                    if pend is not None and check_stable and pend != raw:
                        self.error(f"cycle {cyc}: m{p}_axis beat changed while stalled "
                                   "(AXI4-Stream violation)")
                    eg_pending[p] = None
                    try:
                        data = int(raw[0], 2).to_bytes(B, "little")
                        keep = int(raw[1], 2)
                        last = int(raw[2], 2) == 1
                    except ValueError:
                        self.error(f"cycle {cyc}: X/Z on m{p}_axis tdata/tkeep/tlast during a "
                                   "handshake")
                        data, keep, last = bytes(B), 0, False
                    eg_beats[p].append((data, keep))
                    if last:
                        beats = eg_beats[p]
                        eg_beats[p] = []
                        self._egress_frame(p, eg_first[p], cyc, beats)
                        eg_first[p] = None
                    continue
                if r != "0":
                    not_bit(r, f"m{p}_axis_tready")
                eg_stalls[p] += 1
                if check_stable:
                    cur = (md[p](), mk[p](), ml[p]())
                    if pend is not None and pend != cur:
                        self.error(f"cycle {cyc}: m{p}_axis beat changed while stalled "
                                   "(AXI4-Stream violation)")
                    eg_pending[p] = cur
                elif pend is None:
                    eg_pending[p] = True

            self.cycle = (cyc + 1) & COUNTER_MASK

    def _not_bit(self, v, what):
        self.error(f"cycle {self.cycle}: {what} is {v} (not 0/1)")

    def _ingress_readers(self, port: int):
        """Raw readers of s<port>_axis (tvalid, tready, tdata, tkeep, tlast), made once."""
        rds = self._in_readers.get(port)
        if rds is None:
            rds = self._in_readers[port] = tuple(
                raw_reader(getattr(self.dut, f"s{port}_axis_{n}"))
                for n in ("tvalid", "tready", "tdata", "tkeep", "tlast"))
        return rds

    def _check_ingress_bus(self, port: int, beat):
        """At the tlast handshake of an ingress frame (the monitor took its beats from the
        source): the bus must carry exactly that beat, tvalid and tlast high, no X/Z."""
        sv, _, sd, sk, sl = self._ingress_readers(port)
        v, d, k, lst = sv(), sd(), sk(), sl()
        try:
            data, keep = int(d, 2), int(k, 2)
        except ValueError:
            self.error(f"cycle {self.cycle}: X/Z on s{port}_axis tdata/tkeep during a handshake")
            return
        if v != "1" or lst != "1" or data != beat[0] or keep != beat[1]:
            self.error(f"cycle {self.cycle}: s{port}_axis carries tvalid={v} tlast={lst} "
                       f"tkeep={keep:#x} tdata={data:#x} at a tlast handshake, not the beat "
                       f"its source drove (tkeep={beat[1]:#x} tdata={beat[0]:#x})")

    def _ingress_from_bus(self, port: int, cyc: int):
        """The monitor's ingress side for one port and cycle, read from the bus (when the
        port's source is not running and cannot say what it drove)."""
        sv, sr, sd, sk, sl = self._ingress_readers(port)
        v = sv()
        if v != "1":
            if v != "0":
                self._not_bit(v, f"s{port}_axis_tvalid")
            return
        r = sr()
        if r != "1":
            if r != "0":
                self._not_bit(r, f"s{port}_axis_tready")
            self._in_stalls[port] += 1
            return
        try:
            data, keep = int(sd(), 2), int(sk(), 2)
        except ValueError:
            self.error(f"cycle {cyc}: X/Z on s{port}_axis tdata/tkeep during a handshake")
            data, keep = 0, 0
        beats = self._in_beats[port]
        if not beats:
            self._in_first[port] = cyc
        last = sl()
        if last not in ("0", "1"):
            self._not_bit(last, f"s{port}_axis_tlast")
        beats.append((data, keep, int(last == "1")))
        if last == "1":
            self._in_beats[port] = []
            self._ingress_frame(port, cyc, beats)

    def _ingress_frame(self, port: int, t_last: int, beats):
        """`beats`: the frame's beats as (tdata int, tkeep int, ...) tuples."""
        full, B = self._full_keep, self.beat_bytes
        keeps = [b[1] for b in beats]
        ok = tkeep_valid(keeps, self.p.data_width)
        data = b"".join(_kept(b[0].to_bytes(B, "little"), b[1], full) for b in beats)
        exact = self._exact[port].popleft() if self._exact[port] else False
        rec = IngressRecord(port, t_last, data, ok, exact, t_first=self._in_first[port],
                            stalls=self._in_stalls[port])
        self._in_stalls[port] = 0
        self.total_ingress[port] += 1
        try:
            rec.outcome = self.model.process(port, data, t_last, tkeep_ok=ok)
        except Exception as e:  # a model crash is a finding, not a reason to hang
            self.error(f"golden model raised {type(e).__name__}: {e} on port {port} frame "
                       f"{describe_frame(data)}")
            rec.outcome = None
        self.epoch.ingress.append(rec)
        if self.trace:
            o = rec.outcome
            self.log.info("in  port %d cycles %d..%d: %s -> %s%s", port, rec.t_first, t_last,
                          describe_frame(data), "?" if o is None else (o.drop_name or o.action),
                          " (completes)" if o is not None and o.completed else "")
        if rec.outcome is not None:
            for q, frm in rec.outcome.results:
                self.epoch.expected[q].append(Expected(q, frm, t_last, exact, rec))
        for hook in self._ingress_hooks:
            hook(rec)

    def _egress_frame(self, port: int, t_first: int, t_last: int, beats):
        full = self._full_keep
        keeps = [k for _, k in beats]
        ok = tkeep_valid(keeps, self.p.data_width)
        if not ok:
            self.error(f"cycle {t_last}: m{port}_axis frame with invalid tkeep "
                       f"{[hex(k) for k in keeps]} (SPEC §2)")
        data = b"".join(_kept(d, k, full) for d, k in beats)
        rec = EgressRecord(port, t_first, t_last, data, ok, stalls=self._eg_stalls[port])
        self._eg_stalls[port] = 0
        self.epoch.egress[port].append(rec)
        self.total_egress[port] += 1
        if self.trace:
            self.log.info("out port %d cycles %d..%d: %s", port, t_first, t_last,
                          describe_frame(data))
        for q in self._subscribers[port]:
            q.put_nowait(rec)
        for hook in self._egress_hooks:
            hook(rec)

    # ------------------------------------------------------- control plane
    async def configure_job(self, job: int, *, port_mask: int, slot_base: int,
                            slot_count: int, enable: bool = True):
        """Write a job-table entry through AXI4-Lite while the switch is idle, and make the
        golden model's table agree (SPEC §10.7: writes apply to frames admitted after)."""
        from tb.model.switch import Job
        await self.settle(quiet=8)
        await self.driver.configure_job(job, port_mask=port_mask, slot_base=slot_base,
                                        slot_count=slot_count, enable=enable)
        self.model.job_table[job] = Job(enable, port_mask, slot_base, slot_count)

    async def set_job_enable(self, job: int, enable: bool):
        await self.settle(quiet=8)
        await self.driver.write(f"JOB{job}_CTRL", int(enable))
        self.model.job_table[job].enable = enable

    async def set_switch_address(self, mac: int, ip: int, agg_port: int):
        await self.settle(quiet=8)
        await self.driver.set_switch_address(mac, ip, agg_port)
        self.model.switch_mac, self.model.switch_ip, self.model.agg_port = mac, ip, agg_port

    async def check_counters(self) -> list[str]:
        """Read every counter (SPEC §8, §10.7) and compare with the golden model's for this
        epoch (both are cleared by reset). Call once the switch has settled. Returns and
        records the differences.

        The golden model is untimed, so it cannot know which RESULTs the pause watchdog
        drops (docs/SPEC.md §10.10): for the RESULTs reconcile_egress_drops took out, the
        switch must count each under DROP_EGRESS_STALL and not under TX (nor, for a
        resend, under RESENT)."""
        if self.driver is None:
            return []
        got = await self.driver.counters()
        c = self.model.counters
        errs = []
        for n in range(self.ports):
            dropped = self.epoch.egress_dropped.get(n, [])
            lost = len(dropped)
            lost_resends = sum(1 for e in dropped
                               if F.parse_frame(e.frame).hdr.flags & F.FLAG_UNICAST)
            exp = {"rx": c.rx[n], "accepted": c.accepted[n], "tx": c.tx[n] - lost,
                   "resent": c.resent[n] - lost_resends, "drop_egress_stall": lost}
            for code, reason in enumerate(F.DROP_REASONS):
                exp[f"drop_{reason}"] = c.drops[code][n]
            for name, want in exp.items():
                have = got["ports"][n].get(name)
                if have != (want & COUNTER_MASK):
                    errs.append(f"counter P{n}_{name.upper()}: switch {have}, model {want}")
        for name in ("results", "overflows", "nans"):
            want = getattr(c, name)
            if got.get(name) != (want & COUNTER_MASK):
                errs.append(f"counter {name.upper()}: switch {got.get(name)}, model {want}")
        for e in errs:
            self.error(e)
        return errs

    # ------------------------------------------------------------ scoreboard
    def error(self, msg: str):
        self.log.error("%s", msg)
        self.errors.append(msg)

    def latencies(self, epochs=None):
        """(expected, egress record, latency) of every matched RESULT so far."""
        out = []
        for ep in (epochs or self.epochs + [self.epoch]):
            for p in range(self.ports):
                for e, g in zip(ep.expected[p], ep.egress[p]):
                    out.append((e, g, (g.t_first - e.t_trigger) & COUNTER_MASK))
        return out

    def reconcile_egress_drops(self, port: int) -> int:
        """After the pause watchdog dropped RESULTs on `port` (docs/SPEC.md §10.10), which
        the untimed golden model cannot predict: take out of the epoch's expectations the
        RESULTs the port never sent. What it did send must be, in order, exactly the
        expected RESULTs minus some (none altered, none reordered); otherwise nothing is
        taken out and the scoreboard reports the difference. Returns how many were
        dropped; check_counters expects them under DROP_EGRESS_STALL."""
        expected, got = self.epoch.expected[port], self.epoch.egress[port]
        kept, j = [], 0
        for e in expected:
            if j < len(got) and got[j].data == e.frame:
                kept.append(e)
                j += 1
        if j != len(got):
            self.error(f"port {port}: its RESULTs are not the golden model's minus some dropped: "
                       f"RESULT #{j} of {len(got)} ({describe_frame(got[j].data)}) is not among "
                       f"the {len(expected)} expected after #{len(kept)} "
                       f"({describe_frame(kept[-1].frame) if kept else 'none'})"
                       + "".join(["\n  nearest expected:\n" + describe_diff(e.frame, got[j].data)
                                  for e in expected[len(kept):]
                                  if e.frame[42:54] == got[j].data[42:54]][:1]))
            return 0
        self.epoch.expected[port] = kept
        dropped = [e for e in expected if not any(e is k for k in kept)]
        self.epoch.egress_dropped.setdefault(port, []).extend(dropped)
        return len(dropped)

    def result_error(self, p: int, i: int, e: Expected, g: EgressRecord, label: str = "",
                     exact: bool | None = None) -> str | None:
        """The scoreboard's check of one RESULT: egress frame `g`, the `i`-th on port `p`,
        against the golden model's `e` (bytes, then latency: exactly LATENCY when `exact`,
        default `e.exact`, else at least LATENCY). Returns the error, or None."""
        L = self.latency
        exact = e.exact if exact is None else exact
        if e.frame != g.data:
            return (f"{label}port {p} RESULT #{i} (caused by the frame on port "
                    f"{e.cause.port} accepted at cycle {e.t_trigger}) differs:\n"
                    + describe_diff(e.frame, g.data))
        lat = (g.t_first - e.t_trigger) & COUNTER_MASK
        if exact and lat != L:
            return (f"{label}port {p} RESULT #{i} ({describe_frame(g.data)}): "
                    f"latency {lat} cycles, expected exactly {L} (idle switch: DATA "
                    f"tlast at cycle {e.t_trigger}, first tvalid at {g.t_first})")
        if lat < L:
            return (f"{label}port {p} RESULT #{i} ({describe_frame(g.data)}): "
                    f"latency {lat} cycles, below the documented {L}")
        return None

    def compare_epoch(self, ep: Epoch, label: str = "") -> list[str]:
        errs = []
        for p in range(self.ports):
            exp, got = ep.expected[p], ep.egress[p]
            for i, (e, g) in enumerate(zip(exp, got)):
                err = self.result_error(p, i, e, g, label)
                if err:
                    errs.append(err)
            if len(got) > len(exp):
                for g in got[len(exp):][:4]:
                    errs.append(f"{label}port {p}: unexpected frame at cycle {g.t_first}: "
                                f"{describe_frame(g.data)}")
                if len(got) - len(exp) > 4:
                    errs.append(f"{label}port {p}: ... {len(got) - len(exp)} unexpected in all")
            elif len(exp) > len(got) and not ep.allow_missing:
                for e in exp[len(got):][:4]:
                    errs.append(f"{label}port {p}: missing RESULT (due at cycle "
                                f"{e.t_trigger + self.latency}): {describe_frame(e.frame)}")
                if len(exp) - len(got) > 4:
                    errs.append(f"{label}port {p}: ... {len(exp) - len(got)} missing in all")
        return errs

    def check(self, raise_on_error: bool = True) -> list[str]:
        """Final scoreboard check of every epoch; raises AssertionError listing all errors."""
        errs = list(self.errors)
        all_eps = self.epochs + [self.epoch]
        for i, ep in enumerate(all_eps):
            label = f"[epoch {i}] " if len(all_eps) > 1 else ""
            errs += self.compare_epoch(ep, label)
        n_exp = sum(len(x) for ep in all_eps for x in ep.expected)
        n_got = sum(len(x) for ep in all_eps for x in ep.egress)
        n_in = sum(len(ep.ingress) for ep in all_eps)
        self.log.info("scoreboard: %d ingress frames, %d RESULTs expected, %d received, "
                      "%d errors", n_in, n_exp, n_got, len(errs))
        if errs and raise_on_error:
            shown = errs[:20]
            more = f"\n... and {len(errs) - 20} more" if len(errs) > 20 else ""
            raise AssertionError(f"{len(errs)} scoreboard error(s):\n" + "\n".join(shown) + more)
        return errs

    # --------------------------------------------------------- conveniences
    def outcomes(self, port=None):
        """Ingress records of the current epoch (optionally of one port)."""
        return [r for r in self.epoch.ingress if port is None or r.port == port]

    def last_outcome(self, port: int):
        recs = self.outcomes(port)
        return recs[-1].outcome if recs else None

    def results_for(self, port: int):
        """DUT egress frames of `port` in the current epoch."""
        return [g.data for g in self.epoch.egress[port]]


async def start(dut, name: str, **kw) -> TB:
    """Create the TB for test `name` and reset the DUT."""
    tb = TB(dut, name, **kw)
    await tb.reset()
    return tb
