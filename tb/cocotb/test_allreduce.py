"""The `make sim` scenario (run by sim/allreduce.py): every port's worker all-reduces a
random tensor through the switch, the way a SwitchML-style worker does.

Worker w splits its tensor into chunks of `slot_elems` elements; chunk i goes to slot
i % nslots and bank (i // nslots) % 2 with seq i, and a worker sends chunk i only once it
has received the RESULT of chunk i - nslots (same slot, other bank). Ingress runs at full
rate (no idle cycles) and every egress port is always ready.

Checks: every element of every worker's result against the NumPy sum (saturated to int32
as SPEC §4 prescribes), and the harness scoreboard (every RESULT frame against the golden
model, latency bounds). Writes a summary to $AGGSWITCH_OUT_DIR/allreduce_summary.json.

Environment: AGGSWITCH_ELEMS (default 65536), AGGSWITCH_DTYPE (int32), AGGSWITCH_SLOTS_USED
(window; default all slots of job 0).
"""

import json
import os
from pathlib import Path

import numpy as np

import cocotb
from cocotb.triggers import with_timeout

from tb.cocotb.harness import INT32_MAX, INT32_MIN, start
from tb.model import frames as F

DTYPES = {"int32": F.INT32}


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

    # Inputs: values whose sums across P workers stay in int32 (gradients quantised to
    # fixed point with headroom); the check saturates anyway, as the switch would.
    nprng = np.random.default_rng(tb.rng.getrandbits(64))
    lim = (1 << 31) // P
    tensors = [nprng.integers(-lim, lim, size=elems, dtype=np.int64) for _ in range(P)]
    expected = np.clip(np.sum(tensors, axis=0), INT32_MIN, INT32_MAX)
    results = [np.zeros(elems, dtype=np.int64) for _ in range(P)]
    filled = [np.zeros(elems, dtype=bool) for _ in range(P)]

    nchunks = -(-elems // se)
    chunk = [(i * se, min(elems, (i + 1) * se)) for i in range(nchunks)]
    queues = [tb.subscribe(p) for p in range(P)]
    got = [set() for _ in range(P)]
    wrong_header = []

    def frame(w, i):
        a, b = chunk[i]
        return tb.data(w, i % nslots, payload=tensors[w][a:b].astype(">i4").tobytes(),
                       count=b - a, seq=i, bank=(i // nslots) % 2)

    async def take(w):
        rec = await with_timeout(queues[w].get(), 1000, "us")
        pf = F.parse_frame(rec.data)
        h = pf.hdr
        i = h.seq
        if not (0 <= i < nchunks) or h.slot != i % nslots or (h.flags & 1) != (i // nslots) % 2:
            wrong_header.append((w, h))
            return
        a, b = chunk[i]
        vals = F.int32_from_payload(pf.payload)
        if len(vals) == b - a:
            results[w][a:b] = vals
            filled[w][a:b] = True
        got[w].add(i)

    async def worker(w):
        src = tb.sources[w]
        for i in range(nchunks):
            if i >= nslots:
                while i - nslots not in got[w]:
                    await take(w)
            # keep the port busy: queue the frame now; the source sends back to back
            tb.send(w, frame(w, i))
            # don't let the source queue run ahead unboundedly (memory), but keep it fed
            if src.count() > 4:
                await tb.wait_until(lambda: src.count() <= 2, None, f"port {w} queue")
        while len(got[w]) < nchunks:
            await take(w)

    tasks = [cocotb.start_soon(worker(w)) for w in range(P)]
    for t in tasks:
        await with_timeout(t, 90, "ms")
    await tb.settle()

    # ---- checks
    mismatches = 0
    for w in range(P):
        bad = (~filled[w]) | (results[w] != expected)
        n_bad = int(bad.sum())
        mismatches += n_bad
        if n_bad:
            idx = np.flatnonzero(bad)[:5]
            tb.log.error("worker %d: %d elements differ from the NumPy sum, e.g. %s", w, n_bad,
                         ", ".join(f"[{i}] got {results[w][i]} exp {expected[i]}" for i in idx))
    sb_errors = tb.check(raise_on_error=False)

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
        "latency_documented": tb.latency,
        "latency_min": min(lats) if lats else None,
        "latency_max": max(lats) if lats else None,
        "mismatches": mismatches,
        "wrong_headers": len(wrong_header),
        "scoreboard_errors": len(sb_errors),
        "scoreboard_first_errors": sb_errors[:5],
    }
    summary["passed"] = (mismatches == 0 and not sb_errors and not wrong_header)
    out = Path(os.environ.get("AGGSWITCH_OUT_DIR", "."))
    out.mkdir(parents=True, exist_ok=True)
    (out / "allreduce_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    tb.log.info("summary: %s", json.dumps(summary))
    assert summary["passed"], (f"{mismatches} element mismatches, {len(wrong_header)} RESULTs "
                               f"with wrong headers, {len(sb_errors)} scoreboard errors:\n"
                               + "\n".join(sb_errors[:10]))
