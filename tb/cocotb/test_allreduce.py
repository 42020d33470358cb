"""The `make sim` scenario (run by sim/allreduce.py): every port's worker all-reduces a
random tensor through the switch, the way a SwitchML-style worker does.

Worker w splits its tensor into chunks of `slot_elems` elements; chunk i goes to slot
i % nslots and bank (i // nslots) % 2 with seq i, and a worker sends chunk i only once it
has received the RESULT of chunk i - nslots (same slot, other bank). Ingress runs at full
rate (no idle cycles) and every egress port is always ready.

Checks: every element of every worker's result against the NumPy sum (saturated to int32
as SPEC §4 prescribes), and the harness scoreboard (every RESULT frame against the golden
model, latency bounds). Writes a summary to $AGGSWITCH_OUT_DIR/allreduce_summary.json.

Other dtypes: the workers hold float64 gradients (normal, sigma 1) and compress them the
way a worker library would, at the job's fixed-point scale SCALE: FP32 as float32, BF16
and MX by quantising x * 2**SCALE with the OCP rules of SPEC §4 (tb/model/numerics.encode).
Each chunk's RESULT payload must equal the encoding of the exact sum of the workers'
decoded contributions (computed here chunk by chunk from the payloads sent), and the
summary reports the compression ratio on the wire against FP32 and the error of the
aggregated result against the float64 sum of the original data.

Environment: AGGSWITCH_ELEMS (default 65536), AGGSWITCH_DTYPE (int32), AGGSWITCH_SLOTS_USED
(window; default all slots of job 0).
"""

import json
import os
import time
from pathlib import Path

import numpy as np

import cocotb
from cocotb.triggers import Event, First, Timer

from tb.cocotb.harness import INT32_MAX, INT32_MIN, start
from tb.model import frames as F
from tb.model import numerics as NUM

DTYPES = {"int32": F.INT32, "fp32": F.FP32, "bf16": F.BF16, "mxint8": F.MXINT8,
          "mxfp8_e4m3": F.MXFP8_E4M3, "mxfp8_e5m2": F.MXFP8_E5M2}
STALL_US = 1000     # the test fails when no RESULT arrives for this long (simulated)
SCALE = 24          # job scale for the float dtypes: |sum| < 2**7 fits int32 at 2**-24


def compress(dtype: int, x: np.ndarray) -> bytes:
    """A worker's payload for float64 data x (len a multiple of 32 for MX)."""
    if dtype == F.FP32:
        return x.astype(">f4").tobytes()
    fixed = np.rint(x * 2.0 ** SCALE).astype(np.int64)
    return NUM.encode(dtype, fixed, len(x), SCALE)[0]


@cocotb.test(timeout_time=100, timeout_unit="ms")
async def test_allreduce(dut):
    tb = await start(dut, "test_allreduce")
    P, se = tb.ports, tb.p.slot_elems
    dtype_name = os.environ.get("AGGSWITCH_DTYPE", "int32").lower()
    elems = int(os.environ.get("AGGSWITCH_ELEMS", "65536"))
    nslots = int(os.environ.get("AGGSWITCH_SLOTS_USED", tb.p.slots))
    if dtype_name not in DTYPES:
        raise ValueError(f"dtype {dtype_name} is not supported by this scenario yet "
                         f"(supported: {', '.join(DTYPES)})")
    if elems < 1 or not 1 <= nslots <= tb.p.slots:
        raise ValueError(f"bad elems ({elems}) or window ({nslots} of {tb.p.slots} slots)")

    dtype = DTYPES[dtype_name]
    if dtype not in tb.supported_dtypes:
        raise ValueError(f"dtype {dtype_name} is not admitted by this build "
                         f"(data_width {tb.p.data_width})")
    if F.is_mx(dtype):
        elems = -(-elems // F.MX_BLOCK) * F.MX_BLOCK       # whole MX blocks
    nchunks = -(-elems // se)
    chunk = [(i * se, min(elems, (i + 1) * se)) for i in range(nchunks)]
    nprng = np.random.default_rng(tb.rng.getrandbits(64))
    scale = 0 if dtype == F.INT32 else SCALE
    if dtype == F.INT32:
        # Values whose sums across P workers stay in int32 (gradients quantised to fixed
        # point with headroom); the check saturates anyway, as the switch would.
        lim = (1 << 31) // P
        tensors = [nprng.integers(-lim, lim, size=elems, dtype=np.int64) for _ in range(P)]
        payloads = [[tensors[w][a:b].astype(">i4").tobytes() for a, b in chunk] for w in range(P)]
        total = np.clip(np.sum(tensors, axis=0), INT32_MIN, INT32_MAX).astype(">i4")
        expected = [total[a:b].tobytes() for a, b in chunk]
    else:
        tensors = [nprng.standard_normal(elems) for _ in range(P)]
        payloads = [[compress(dtype, tensors[w][a:b]) for a, b in chunk] for w in range(P)]
        # The RESULT of a chunk: the exact sum of the decoded contributions, re-encoded.
        expected = []
        for i, (a, b) in enumerate(chunk):
            acc = sum(NUM.decode(dtype, payloads[w][i], b - a, scale)[0] for w in range(P))
            expected.append(NUM.encode(dtype, acc, b - a, scale)[0])
    results = [[None] * nchunks for _ in range(P)]

    queues = [tb.subscribe(p) for p in range(P)]
    got = [set() for _ in range(P)]
    wrong_header = []

    def frame(w, i):
        a, b = chunk[i]
        return tb.data(w, i % nslots, payload=payloads[w][i], count=b - a, seq=i,
                       bank=(i // nslots) % 2, dtype=dtype, scale=scale)

    # Every worker's frames are built before the traffic starts (nothing in them depends
    # on the switch's answers), so the speed measured below is the simulation's.
    frames = [[frame(w, i) for i in range(nchunks)] for w in range(P)]

    async def take(w):
        # no timeout per RESULT (a with_timeout per frame costs two tasks and a timer): the
        # watchdog below fails the test when no RESULT arrives for STALL_US
        rec = await queues[w].get()
        # the AGG header and the payload are all a worker looks at (the scoreboard checks
        # every other byte of the frame against the golden model)
        h = F.AggHeader.unpack(rec.data[F.AGG_OFF:F.HDR_LEN])
        i = h.seq
        if not (0 <= i < nchunks) or h.slot != i % nslots or (h.flags & 1) != (i // nslots) % 2:
            wrong_header.append((w, h))
            return
        results[w][i] = bytes(rec.data[F.HDR_LEN:])
        got[w].add(i)

    finished, done = [], Event()

    async def worker(w):
        src = tb.sources[w]
        for i in range(nchunks):
            if i >= nslots:
                while i - nslots not in got[w]:
                    await take(w)
            # keep the port busy: queue the frame now; the source sends back to back
            tb.send(w, frames[w][i])
            # don't let the source queue run ahead unboundedly (memory), but keep it fed
            if src.count() > 16:
                await tb.source_below(w, 4)
        while len(got[w]) < nchunks:
            await take(w)
        finished.append(w)
        if len(finished) == P:
            done.set()

    # Simulation speed: simulated cycles per second of wall time while the traffic runs
    # (the model, the drivers, the monitor and the scoreboard; not the build or the set-up).
    # Also in CPU seconds of this process (the simulator runs in it too), which a shared
    # machine disturbs less than the wall clock.
    speed_c0, speed_t0, speed_cpu0 = tb.sim_cycle(), time.perf_counter(), time.process_time()
    tasks = [cocotb.start_soon(worker(w)) for w in range(P)]
    seen = -1
    while not done.is_set():
        await First(done.wait(), Timer(STALL_US, "us"))
        failed = [t for t in tasks if t.done() and t.exception() is not None]
        if failed:
            raise failed[0].exception()
        n = sum(len(g) for g in got) + len(wrong_header)
        if not done.is_set() and n == seen:
            raise AssertionError(f"no RESULT for {STALL_US} us ({n} of {P * nchunks} received); "
                                 f"state: {tb.state_summary()}")
        seen = n
    for t in tasks:
        await t
    await tb.settle()
    speed_cycles, speed_s = tb.sim_cycle() - speed_c0, time.perf_counter() - speed_t0
    speed_cpu = time.process_time() - speed_cpu0

    # ---- checks
    mismatches = 0
    for w in range(P):
        bad = [i for i in range(nchunks) if results[w][i] != expected[i]]
        n_bad = sum(chunk[i][1] - chunk[i][0] for i in bad)
        mismatches += n_bad
        if bad:
            tb.log.error("worker %d: %d chunks differ from the expected sum, first %d",
                         w, len(bad), bad[0])
    sb_errors = tb.check(raise_on_error=False)

    # Accuracy of the aggregate (worker 0's copy) against the float64 sum of the originals.
    exact = np.sum(tensors, axis=0).astype(np.float64)
    got0 = np.zeros(elems, dtype=np.float64)
    for i, (a, b) in enumerate(chunk):
        if results[0][i] is not None and len(results[0][i]) == len(expected[i]):
            got0[a:b] = NUM.decode(dtype, results[0][i], b - a, scale)[0] / 2.0 ** scale
    err = got0 - exact
    rms = float(np.sqrt(np.mean(exact ** 2))) or 1.0
    frame_bytes = sum(F.payload_len(dtype, b - a) + 64 for a, b in chunk)
    fp32_bytes = sum(F.payload_len(F.FP32, b - a) + 64 for a, b in chunk)

    # ---- metrics
    ing = [r for ep in tb.epochs + [tb.epoch] for r in ep.ingress]
    egr = [g for ep in tb.epochs + [tb.epoch] for port in ep.egress for g in port]
    accepted = [r for r in ing if r.outcome is not None and r.outcome.drop is None]
    acc_bytes = sum(len(r.data) for r in accepted)
    t0 = min(r.t_first for r in ing)
    t_in_end = max(r.t_last for r in ing)
    t_end = max(g.t_last for g in egr)
    line = P * tb.beat_bytes
    lats = [lat for _, _, lat in tb.latencies()]
    summary = {
        "sim": os.environ.get("AGGSWITCH_SIM", "?"),
        "params": tb.p.name(),
        "ports": P, "data_width": tb.p.data_width, "slots": tb.p.slots,
        "slot_elems": se, "jobs": tb.p.jobs, "window_slots": nslots,
        "dtype": dtype_name, "seed": tb.seed,
        "elements": elems, "workers": P, "chunks_per_worker": nchunks,
        "frames_in": len(ing), "frames_accepted": len(accepted), "frames_out": len(egr),
        "accepted_ingress_bytes": acc_bytes,
        "cycles": t_end - t0 + 1,
        "ingress_cycles": t_in_end - t0 + 1,
        "throughput": acc_bytes / ((t_end - t0 + 1) * line),
        "throughput_ingress": acc_bytes / ((t_in_end - t0 + 1) * line),
        "elements_per_cycle": elems / (t_end - t0 + 1),
        "latency_documented": tb.latency,
        "latency_min": min(lats) if lats else None,
        "latency_max": max(lats) if lats else None,
        "mismatches": mismatches,
        "scale": scale,
        "wire_bytes_per_worker": frame_bytes,
        "compression_vs_fp32": fp32_bytes / frame_bytes,
        "max_abs_error": float(np.max(np.abs(err))),
        "rms_error_relative": float(np.sqrt(np.mean(err ** 2))) / rms,
        "wrong_headers": len(wrong_header),
        "scoreboard_errors": len(sb_errors),
        "scoreboard_first_errors": sb_errors[:5],
        "sim_speed_cycles": speed_cycles,
        "sim_speed_seconds": speed_s,
        "cycles_per_second": speed_cycles / speed_s if speed_s > 0 else None,
        "sim_speed_cpu_seconds": speed_cpu,
        "cycles_per_cpu_second": speed_cycles / speed_cpu if speed_cpu > 0 else None,
    }
    summary["passed"] = (mismatches == 0 and not sb_errors and not wrong_header)
    out = Path(os.environ.get("AGGSWITCH_OUT_DIR", "."))
    out.mkdir(parents=True, exist_ok=True)
    (out / "allreduce_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    tb.log.info("summary: %s", json.dumps(summary))
    assert summary["passed"], (f"{mismatches} element mismatches, {len(wrong_header)} RESULTs "
                               f"with wrong headers, {len(sb_errors)} scoreboard errors:\n"
                               + "\n".join(sb_errors[:10]))
