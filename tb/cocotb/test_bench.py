"""The `make bench` scenarios (run by sim/bench.py): offered load and latency of the switch
under the traffic patterns of issue 11, in every dtype the build admits.

One worker host per port (per job) runs a SwitchML-style AllReduce of `frames` chunks of
`slot_elems` elements (full frames): chunk i goes to job-relative slot i % W and bank
(i // W) % 2 with seq i, W being the job's slot count (its window of outstanding slots);
a host sends chunk i only once it holds the RESULT of chunk i - W and otherwise sends back
to back; where frames can be lost (loss, stalled_port) it also retransmits a chunk (RETX
flag) whose RESULT has not come back `timeout` cycles after its last copy (doubling up to
8x). Patterns (PATTERNS):

* lockstep      every worker starts in the same cycle and walks the chunks in order;
* skew          workers start 0..16 cycles apart, then back to back;
* jitter        workers start 0..4 frames apart, 0..4 idle cycles before every frame;
* random_order  each worker walks each pass over its window in its own random order
                (the first chunk of its remaining order whose slot is free);
* loss          5 % of DATA frames are lost before the switch (the port stays idle for
                the frame's length) and 5 % of RESULTs after it (the host ignores them);
                hosts recover by timeout and RETX, the switch answering with a unicast
                resend when the round was complete;
* mixed_jobs    job 0 on the lower half of the ports and slots, job 1 on the upper half
                (configured over AXI4-Lite), both in lock-step;
* stalled_port  mixed_jobs with the last port's m_axis_tready held low for `stall` cycles
                from the start (long enough for the other job to finish many times over
                on a switch that isolates it), with the pause watchdog off
                (EGRESS_WATCHDOG = 0): it measures how the stalled port's job is held
                back and the other job is not; the watchdog's drops are tested in
                tb/cocotb/test_isolation.py.

Checks: every RESULT frame, byte for byte, against the golden model (the harness
scoreboard: header, payload, order, nothing missing, latency at least the documented
constant) and every counter against the model's; every RESULT a host takes must match one
of its chunks. Any error fails the test; the numbers are still written.

Measures, per (pattern, dtype), over the measurement window (first ingress beat to the
tlast of the last first-copy DATA frame; retransmissions after it are not offered load):
accepted ingress bytes per cycle over ports * data_width/8 (SPEC §9), per port and over
all ports; the share of presented beats the switch took without stalling them (the beats
of every frame it took, accepted or dropped by the rules of SPEC §5 such as a duplicate,
over those beats + cycles with tvalid high and tready low), with the stall cycles and the
beats per outcome (new, join, resend, RETX copies, drop reasons); the latency of every RESULT
(first tvalid minus the tlast cycle of the DATA frame that caused it, as the scoreboard
measures it). For stalled_port also the accepted fraction of the ports outside the
stalled port's job, over their own window, and the stalled port's counters at the end of
the stall. And the simulation speed: simulated cycles per second of wall time over the
whole run, testbench included.

Environment: AGGSWITCH_BENCH_PATTERNS, AGGSWITCH_BENCH_DTYPES (comma-separated names;
default all, dtypes the build refuses are skipped), AGGSWITCH_BENCH_FRAMES (chunks per
worker), AGGSWITCH_BENCH_STALL (stall cycles; defaults in sim/bench.py),
AGGSWITCH_BENCH_FLIP (test hook: flip one payload bit of the N-th RESULT, 1-based, as the
checker sees it). Writes $AGGSWITCH_OUT_DIR/bench_raw.json after every pattern.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import cocotb
from cocotb.triggers import ClockCycles, Event, First, SimTimeoutError, with_timeout

from sim.bench import DEFAULT_FRAMES, DEFAULT_STALL, PATTERNS
from tb.cocotb.harness import CLK_PERIOD_NS, INT32_MAX, start
from tb.model import frames as F
from tb.uvm.host import encode_values

NEVER = float("inf")
DTYPE_CODES = dict(zip(F.DTYPE_NAMES, F.DTYPES))
FLOAT_SCALE = 24       # job scale of the float dtypes: N(0, 1) gradients at 2^-24
LOSS = 0.05            # loss pattern: DATA and RESULT loss rates


def csv_env(name: str, default):
    v = os.environ.get(name, "")
    return tuple(x.strip() for x in v.split(",") if x.strip()) or tuple(default)


@dataclass
class _Pending:
    deadline: int
    timeout: int
    sends: int = 1
    first: int = 0         # cycle of the first copy


@dataclass
class Host:
    """The worker of `job` on switch port `port` (see the module docstring)."""
    port: int
    job: int
    rank: int
    window: int
    frames: list           # first-copy DATA frame of every chunk
    order: list            # chunk indices in the order this worker walks them
    start: int = 0         # cycles before its first frame
    gaps: list = None      # idle cycles before each frame (None: back to back)
    rng: random.Random = None
    data_loss: float = 0.0
    result_loss: float = 0.0
    timeout: int = 0       # retransmission timeout in cycles (0: never retransmit)
    results: set = field(default_factory=set)
    pending: dict = field(default_factory=dict)
    # blocked_cycles: cycles with first copies still to send and none eligible (the
    # window waits on a RESULT); recovered/recovery_cycles: chunks whose RESULT came only
    # after a retransmission, and the cycles from their first copy to that RESULT
    stats: dict = field(default_factory=lambda: dict.fromkeys(
        ("sent", "retransmissions", "data_lost", "results_lost", "stale_results",
         "blocked_cycles", "recovered", "recovery_cycles"), 0))
    errors: list = field(default_factory=list)
    event: Event = field(default_factory=Event)

    @property
    def done(self) -> bool:
        return len(self.results) == len(self.frames)

    def eligible(self, i: int) -> bool:
        return i < self.window or (i - self.window) in self.results

    def retx_frame(self, i: int) -> bytes:
        f = bytearray(self.frames[i])
        f[F.AGG_OFF + 7] |= F.FLAG_RETX     # AGG flags byte (no checksum covers it)
        return bytes(f)

    def on_result(self, data: bytes, cycle: int):
        h = F.AggHeader.unpack(data[F.AGG_OFF:F.HDR_LEN])
        i = h.seq
        if (h.op != F.OP_RESULT or h.job != self.job or not 0 <= i < len(self.frames)
                or h.slot != i % self.window or (h.flags & F.FLAG_BANK) != (i // self.window) % 2):
            self.errors.append(f"port {self.port}: RESULT it cannot match at cycle {cycle}: "
                               f"op {h.op} job {h.job} slot {h.slot} flags {h.flags:#x} seq {i}")
            return
        if self.result_loss and self.rng.random() < self.result_loss:
            self.stats["results_lost"] += 1
            return
        if i in self.results:
            self.stats["stale_results"] += 1
            return
        if i not in self.pending:
            self.errors.append(f"port {self.port}: RESULT of chunk {i} at cycle {cycle}, "
                               "which this worker has not sent")
            return
        self.results.add(i)
        p = self.pending.pop(i)
        if p.sends > 1:
            self.stats["recovered"] += 1
            self.stats["recovery_cycles"] += cycle - p.first
        self.event.set()


async def _queue_drained(src):
    while src.count():
        src.dequeue_event.clear()
        await src.dequeue_event.wait()


async def run_host(tb, h: Host, max_retries: int = 40):
    """Drive one worker until it holds every RESULT (or gives up)."""
    src = tb.sources[h.port]
    clk = tb.dut.clk
    if h.start:
        await tb.cycles(h.start)
    todo = list(h.order)
    n_sent = 0
    while not h.done:
        now = tb.cycle
        due = [i for i, p in h.pending.items() if p.deadline <= now]
        retx = bool(due)
        if retx:
            i = min(due, key=lambda k: h.pending[k].deadline)
        else:
            i = next((k for k in todo[:h.window] if h.eligible(k)), None)
        if i is None:
            h.event.clear()
            nxt = min((p.deadline for p in h.pending.values()), default=NEVER)
            await First(h.event.wait(), ClockCycles(clk, int(max(1, min(nxt - now, 1000)))))
            if todo:
                h.stats["blocked_cycles"] += tb.cycle - now
            continue
        gap = h.gaps[n_sent % len(h.gaps)] if h.gaps else 0
        if gap:
            await src.wait()                 # the previous frame has left
            await tb.cycles(gap - 1)         # (the source adds one idle cycle itself)
        else:
            await _queue_drained(src)        # keep the next frame queued: back to back
        if retx and i not in h.pending:
            continue                         # its RESULT came while waiting
        n_sent += 1
        if retx:
            p = h.pending[i]
            if p.sends > max_retries:
                h.errors.append(f"port {h.port}: gave up on chunk {i} after {p.sends} copies")
                return
            p.sends += 1
            p.timeout = min(2 * p.timeout, 8 * h.timeout)
            h.stats["retransmissions"] += 1
            frame = h.retx_frame(i)
        else:
            todo.remove(i)
            h.stats["sent"] += 1
            frame = h.frames[i]
            p = h.pending[i] = _Pending(0, h.timeout, first=tb.cycle)
        p.deadline = tb.cycle + p.timeout if p.timeout else NEVER
        if h.data_loss and h.rng.random() < h.data_loss:
            # Lost on the way to the switch: the port sees no frame for its length.
            h.stats["data_lost"] += 1
            await src.wait()
            await tb.cycles(-(-len(frame) // tb.beat_bytes))
            continue
        tb.send(h.port, frame)


# --------------------------------------------------------------------- traffic set-up

def _payload(dtype: int, rng: np.random.Generator, count: int, workers: int) -> bytes:
    if dtype == F.INT32:
        lim = INT32_MAX // workers
        return rng.integers(-lim, lim, size=count, dtype=np.int64).astype(">i4").tobytes()
    vals = np.rint(rng.standard_normal(count) * 2.0 ** FLOAT_SCALE).astype(np.int64)
    return encode_values(dtype, vals.tolist(), count, FLOAT_SCALE)


def job_layout(tb, pattern: str):
    """[(job, ports, slot_base, slot_count)] of the pattern."""
    P, S = tb.ports, tb.p.slots
    if pattern in ("mixed_jobs", "stalled_port"):
        lo = list(range(P // 2))
        return [(0, lo, 0, S // 2), (1, list(range(P // 2, P)), S // 2, S - S // 2)]
    return [(0, list(range(P)), 0, S)]


def make_hosts(tb, pattern: str, dtype: int, frames: int, key: str, jobs) -> list:
    se = tb.p.slot_elems
    scale = 0 if dtype == F.INT32 else FLOAT_SCALE
    beats = -(-(F.HDR_LEN + F.payload_len(dtype, se)) // tb.beat_bytes)
    # Retransmission timeout, where frames can be lost (loss) or dropped (a stalled egress
    # past a pause watchdog): a few times the worst queueing a frame sees when the engine
    # applies one frame per pass (every port's frames ahead of it), plus latency. Elsewhere
    # nothing is lost and hosts wait for their RESULTs however long they take.
    timeout = 4 * (tb.latency + tb.ports * (tb.p.slot_lines + beats + 4))
    hosts = []
    for job, ports, _, slot_count in jobs:
        for port in ports:
            # The same schedule (skews, gaps, orders, losses) in every dtype of a pattern.
            r = random.Random(f"{key}/{port}")
            nprng = np.random.default_rng(
                random.Random(f"{key}/{F.DTYPE_NAMES[dtype]}/{port}").getrandbits(64))
            rank = tb.worker_rank(port, job)
            fr = [tb.data(port, i % slot_count, payload=_payload(dtype, nprng, se, len(ports)),
                          count=se, seq=i, bank=(i // slot_count) % 2, job=job, dtype=dtype,
                          scale=scale)
                  for i in range(frames)]
            order = list(range(frames))
            h = Host(port=port, job=job, rank=rank, window=slot_count, frames=fr, order=order,
                     rng=r, timeout=timeout if pattern in ("loss", "stalled_port") else 0)
            if pattern == "skew":
                h.start = r.randint(0, 16)
            elif pattern == "jitter":
                h.start = r.randint(0, 4) * beats
                h.gaps = [r.randint(0, 4) for _ in range(frames)]
            elif pattern == "random_order":
                h.order = []
                for a in range(0, frames, slot_count):
                    part = list(range(a, min(frames, a + slot_count)))
                    r.shuffle(part)
                    h.order += part
            elif pattern == "loss":
                h.data_loss = h.result_loss = LOSS
            hosts.append(h)
    return hosts


# ----------------------------------------------------------------------------- metrics

def _hdr(data: bytes) -> F.AggHeader:
    return F.AggHeader.unpack(data[F.AGG_OFF:F.HDR_LEN])


def window_metrics(recs, ports, beat_bytes: int) -> dict:
    """Accepted fraction (SPEC §9) over the window of `recs` (IngressRecords of `ports`):
    first beat to the tlast of the last first-copy frame."""
    recs = [r for r in recs if r.port in ports]
    first = [r for r in recs if not (_hdr(r.data).flags & F.FLAG_RETX)]
    if not first:
        return {"window_cycles": 0, "accepted": 0.0, "per_port": {}, "presented": 0.0,
                "stall_cycles": 0, "accepted_of_presented": 0.0, "dropped_beats": 0,
                "by_outcome": {}}
    t0 = min(r.t_first for r in recs)
    t1 = max(r.t_last for r in first)
    cyc = t1 - t0 + 1
    inwin = [r for r in recs if r.t_last <= t1]
    acc = [r for r in inwin if r.outcome is not None and r.outcome.drop is None]
    per_port = {p: sum(len(r.data) for r in acc if r.port == p) / (cyc * beat_bytes)
                for p in ports}
    acc_beats = sum(-(-len(r.data) // beat_bytes) for r in acc)
    # Where the presented cycles went, per outcome of the frame (the golden model's: new,
    # join, resend, with _retx for a RETX copy, or the drop reason): its beats and the
    # cycles it waited on tready.
    kinds: dict = {}
    for r in inwin:
        o = r.outcome
        kind = ("none" if o is None else o.drop_name.lower() if o.drop is not None
                else o.action + ("_retx" if _hdr(r.data).flags & F.FLAG_RETX else ""))
        k = kinds.setdefault(kind, {"frames": 0, "beats": 0, "stalls": 0})
        k["frames"] += 1
        k["beats"] += -(-len(r.data) // beat_bytes)
        k["stalls"] += r.stalls
    beats = sum(k["beats"] for k in kinds.values())
    stalls = sum(k["stalls"] for k in kinds.values())
    offered = beats + stalls
    return {
        "window_cycles": cyc,
        "accepted_bytes": sum(len(r.data) for r in acc),
        "accepted": sum(per_port.values()) / len(ports),
        "per_port": per_port,
        # the switch's share: every beat it took (a frame it then drops, a duplicate
        # say, took its beats too) over the cycles with tvalid high; 1.0 without
        # back-pressure
        "presented": beats / offered if offered else 0.0,
        "stall_cycles": stalls,
        # the beats of frames it accepted over those cycles (before issue 11's loss
        # analysis this was the "of presented" figure: it counts the hosts' duplicates
        # as if the switch had refused them)
        "accepted_of_presented": acc_beats / offered if offered else 0.0,
        "dropped_beats": beats - acc_beats,
        "by_outcome": kinds,
    }


def latency_stats(lats) -> dict:
    if not lats:
        return {"n": 0, "min": None, "median": None, "max": None}
    return {"n": len(lats), "min": min(lats), "median": statistics.median(lats),
            "max": max(lats)}


# -------------------------------------------------------------------------------- test

@cocotb.test(timeout_time=60, timeout_unit="sec")
async def test_bench(dut):
    tb = await start(dut, "test_bench")
    P = tb.ports
    patterns = csv_env("AGGSWITCH_BENCH_PATTERNS", PATTERNS)
    dtypes = csv_env("AGGSWITCH_BENCH_DTYPES", F.DTYPE_NAMES)
    frames = int(os.environ.get("AGGSWITCH_BENCH_FRAMES", DEFAULT_FRAMES))
    stall = int(os.environ.get("AGGSWITCH_BENCH_STALL", DEFAULT_STALL))
    flip_at = int(os.environ.get("AGGSWITCH_BENCH_FLIP", "0"))
    for x in patterns:
        assert x in PATTERNS, f"unknown pattern {x!r} (known: {', '.join(PATTERNS)})"
    for x in dtypes:
        assert x in DTYPE_CODES, f"unknown dtype {x!r} (known: {', '.join(F.DTYPE_NAMES)})"
    assert frames >= 1, "AGGSWITCH_BENCH_FRAMES must be at least 1"
    out_file = Path(os.environ.get("AGGSWITCH_OUT_DIR", ".")) / "bench_raw.json"
    raw = {"params": tb.p.name(), "ports": P, "data_width": tb.p.data_width,
           "slots": tb.p.slots, "slot_elems": tb.p.slot_elems, "jobs": tb.p.jobs,
           "seed": tb.seed, "frames": frames, "stall_cycles": stall,
           "latency_documented": tb.latency, "runs": [], "skipped": []}

    # Test hook: corrupt one RESULT on its way to the checker (scoreboard and hosts).
    seen = [0]

    def flip(rec):
        seen[0] += 1
        if seen[0] == flip_at:
            b = bytearray(rec.data)
            b[F.HDR_LEN] ^= 1
            rec.data = bytes(b)
            tb.log.warning("test hook: flipped bit 0 of payload byte 0 of RESULT #%d "
                           "(port %d, cycle %d)", flip_at, rec.port, rec.t_first)
    if flip_at:
        tb.add_egress_hook(flip)

    hosts_by_port: dict = {}

    def deliver(rec):
        h = hosts_by_port.get(rec.port)
        if h is not None:
            h.on_result(rec.data, rec.t_first)
    tb.add_egress_hook(deliver)

    failures = []
    for pattern in patterns:
        jobs = job_layout(tb, pattern)
        if len(jobs) > tb.p.jobs or any(not ports for _, ports, _, _ in jobs):
            raw["skipped"].append({"pattern": pattern, "reason": "needs 2 jobs and 2 ports"})
            continue
        for dname in dtypes:
            dtype = DTYPE_CODES[dname]
            if dtype not in tb.supported_dtypes:
                raw["skipped"].append({"pattern": pattern, "dtype": dname,
                                       "reason": "not supported by this build"})
                continue
            t_wall, c_sim = time.monotonic(), tb.sim_cycle()
            run = await run_pattern(tb, pattern, dtype, frames, stall, jobs, hosts_by_port)
            wall = time.monotonic() - t_wall
            # simulation speed: every cycle the run simulated (traffic, settle, counter
            # reads, reset) per second of wall time, testbench included
            run["sim_cycles"] = tb.sim_cycle() - c_sim
            run["wall_s"] = round(wall, 2)
            run["cycles_per_second"] = round(run["sim_cycles"] / wall) if wall > 0 else None
            raw["runs"].append(run)
            out_file.write_text(json.dumps(raw, indent=1) + "\n")
            tb.log.info("bench %s %s: accepted %.3f, presented %.3f, latency %s, %d errors",
                        pattern, dname, run["accepted"], run["presented"], run["latency"],
                        len(run["errors"]))
            if run["errors"]:
                failures.append(f"{pattern}/{dname}: " + run["errors"][0].splitlines()[0])
    assert not failures, (f"{len(failures)} pattern run(s) with errors:\n"
                          + "\n".join(failures[:20]))


async def run_pattern(tb, pattern: str, dtype: int, frames: int, stall: int, jobs,
                      hosts_by_port: dict) -> dict:
    P, key = tb.ports, f"{tb.seed}/{pattern}"
    n_err0 = len(tb.errors)
    errors = []
    if len(jobs) > 1:
        for job, ports, base, count in jobs:
            await tb.configure_job(job, port_mask=sum(1 << p for p in ports),
                                   slot_base=base, slot_count=count)
    hosts = make_hosts(tb, pattern, dtype, frames, key, jobs)
    hosts_by_port.clear()
    hosts_by_port.update({h.port: h for h in hosts})
    stalled = P - 1 if pattern == "stalled_port" else None
    others = list(jobs[0][1]) if stalled is not None else list(range(P))
    stalled_counters = None
    t_start = tb.cycle

    if stalled is not None:
        await tb.driver.write("EGRESS_WATCHDOG", 0)
        tb.sinks[stalled].pause = True
    tasks = [cocotb.start_soon(run_host(tb, h)) for h in hosts]

    async def all_done():
        for t in tasks:
            await t
    beats = max(-(-len(h.frames[0]) // tb.beat_bytes) for h in hosts)
    budget = (8 * P * frames * (tb.p.slot_lines + beats + 8) + 40 * hosts[0].timeout
              + (stall if stalled is not None else 0) + 20000)
    try:
        if stalled is not None:
            await tb.cycles(stall)
            stalled_counters = (await tb.driver.counters())["ports"][stalled]
            tb.sinks[stalled].pause = False
        await with_timeout(cocotb.start_soon(all_done()), budget * CLK_PERIOD_NS, "ns")
    except SimTimeoutError:
        errors.append(f"hosts not done within {budget} cycles: "
                      + "; ".join(f"port {h.port} {len(h.results)}/{len(h.frames)}"
                                  for h in hosts))
    finally:
        for t in tasks:
            if not t.done():
                t.cancel()
        if stalled is not None:
            tb.sinks[stalled].pause = False
    hosts_by_port.clear()
    t_hosts = tb.cycle
    if stalled is not None:
        # RESULTs the pause watchdog dropped (SPEC §7): the hosts recovered them by
        # retransmission; the scoreboard checks the rest and the counters the number.
        await tb.cycles(tb.quiet_cycles())
        tb.reconcile_egress_drops(stalled)
    try:
        await tb.settle(timeout=budget)
    except AssertionError as e:
        errors.append(str(e))
    await tb.check_counters()
    end_counters = await tb.driver.counters()
    await tb.reset()
    ep = tb.epochs.pop()
    check = tb.compare_epoch(ep)
    errors += tb.errors[n_err0:] + check
    for h in hosts:
        errors += h.errors
    mism = sum(1 for e in check if " differs:" in e)
    n_results = sum(len(x) for x in ep.egress)

    recs = ep.ingress
    m = window_metrics(recs, list(range(P)), tb.beat_bytes)
    run = {
        "pattern": pattern, "dtype": F.DTYPE_NAMES[dtype],
        "accepted": m["accepted"], "presented": m["presented"],
        "stall_cycles": m["stall_cycles"], "accepted_of_presented": m["accepted_of_presented"],
        "dropped_beats": m["dropped_beats"], "by_outcome": m["by_outcome"],
        "per_port": [m["per_port"][p] for p in range(P)],
        "window_cycles": m["window_cycles"], "accepted_bytes": m["accepted_bytes"],
        "cycles": t_hosts - t_start,
        "latency": latency_stats([lat for _, _, lat in tb.latencies(epochs=[ep])]),
        "frames_in": len(recs),
        "frames_accepted": sum(1 for r in recs if r.outcome and r.outcome.drop is None),
        "results_checked": n_results,
        "mismatches": mism,
        "errors": errors,
        "hosts": {k: sum(h.stats[k] for h in hosts) for k in hosts[0].stats},
    }
    if stalled is not None:
        o = window_metrics(recs, others, tb.beat_bytes)
        run["stall"] = {"port": stalled, "cycles": stall, "other_ports": others,
                        "others_accepted": o["accepted"],
                        "others_window_cycles": o["window_cycles"],
                        "counters_at_stall_end": stalled_counters,
                        "counters_at_end": end_counters["ports"][stalled]}
    return run
