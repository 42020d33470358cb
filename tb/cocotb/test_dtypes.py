"""The compression datapath (SPEC §4): every dtype through real frames, bit for bit.

Each RESULT is checked twice: by the harness scoreboard against the golden model
(tb/model/switch.py, which every test does), and here independently of the switch model:
its payload must be the encoding of the exact sum of the decoded contributions
(tb/model/numerics.py: decode, add, encode), its NAN flag set exactly when a contribution
held a NaN, and OVERFLOW as the encoding reports it.

Payloads are typical values of their dtype (the encoding of random fixed-point values) with
a share of raw random element bytes: NaN, Inf, subnormals, the format's extremes and, for
MX, raw block scales (0xFF is a NaN block).
"""

from __future__ import annotations

import random

import numpy as np

import cocotb
from cocotb.triggers import with_timeout

from tb.cocotb.harness import TB, start
from tb.cocotb.test_switch import TIMEOUT_US, expect, finish
from tb.model import frames as F
from tb.model import numerics as NUM

ELEM_BYTES = {F.INT32: 4, F.FP32: 4, F.BF16: 2}


def random_count(rng: random.Random, dtype: int, slot_elems: int) -> int:
    if F.is_mx(dtype):
        return F.MX_BLOCK * rng.randint(1, min(slot_elems, 2048) // F.MX_BLOCK)
    return rng.choice((1, slot_elems, rng.randint(1, slot_elems)))


def random_payload(rng: random.Random, dtype: int, count: int, scale: int,
                   special: float = 0.0) -> bytes:
    """A payload of `count` elements: the encoding of random fixed-point values at `scale`,
    then each element (and MX block scale) replaced by raw random bits with probability
    `special`."""
    nprng = np.random.default_rng(rng.getrandbits(64))
    bits = rng.choice((4, 12, 20, 28, 31))
    acc = nprng.integers(-(1 << bits), 1 << bits, size=count)
    payload = bytearray(NUM.encode(dtype, acc, count, scale)[0])
    size = ELEM_BYTES.get(dtype, 1)
    base = F.MX_SCALE_LINE if F.is_mx(dtype) else 0
    for i in range(count):
        if rng.random() < special:
            payload[base + i * size:base + (i + 1) * size] = rng.randbytes(size)
    if F.is_mx(dtype):
        for b in range(count // F.MX_BLOCK):
            if rng.random() < special:
                payload[b] = rng.choice((0xFF, 0x00, 0xFE, 0x7F, rng.randrange(256)))
    return bytes(payload)


def expected_result(dtype: int, payloads, count: int, scale: int):
    """(payload, NAN, OVERFLOW) of the RESULT for these contributions (SPEC §4)."""
    acc = 0
    nan = False
    for pl in payloads:
        q, n = NUM.decode(dtype, pl, count, scale)
        acc = acc + q
        nan = nan or n
    payload, overflow = NUM.encode(dtype, acc, count, scale)
    return payload, nan, overflow


def check_dtype_result(frame: bytes, *, dtype: int, count: int, scale: int, payloads,
                       what: str):
    p = F.parse_frame(frame)
    h = p.hdr
    payload, nan, overflow = expected_result(dtype, payloads, count, scale)
    errs = []
    if (h.dtype, h.count, h.scale) != (dtype, count, scale):
        errs.append(f"dtype/count/scale {(h.dtype, h.count, h.scale)}, "
                    f"expected {(dtype, count, scale)}")
    if bool(h.flags & F.FLAG_NAN) != nan:
        errs.append(f"NAN flag {bool(h.flags & F.FLAG_NAN)}, expected {nan}")
    if bool(h.flags & F.FLAG_OVERFLOW) != overflow:
        errs.append(f"OVERFLOW flag {bool(h.flags & F.FLAG_OVERFLOW)}, expected {overflow}")
    if bytes(p.payload) != payload:
        diff = [i for i in range(min(len(payload), len(p.payload))) if p.payload[i] != payload[i]]
        errs.append(f"payload: {len(p.payload)} bytes (expected {len(payload)}), "
                    f"{len(diff)} differ, first at {diff[:4]}")
    if errs:
        raise AssertionError(f"{what}: " + "; ".join(errs))


@cocotb.test(timeout_time=TIMEOUT_US, timeout_unit="us")
async def test_every_dtype(dut):
    """Per dtype: a full slot from every worker (latency exact), then rounds with random
    counts, scales and special values (NaN, Inf, subnormals, saturation, NaN blocks)."""
    tb = await start(dut, "test_every_dtype")
    P, se = tb.ports, tb.p.slot_elems
    rng = tb.rng
    n = 0               # rounds so far: slot n % slots, banks alternating per pass
    for dtype in tb.supported_dtypes:
        name = F.DTYPE_NAMES[dtype]
        rounds = [(se, 0, 0.0), (se, rng.randint(-8, 30), 0.0)]
        rounds += [(random_count(rng, dtype, se), rng.randint(-40, 60), special)
                   for special in (0.02, 0.2, 1.0)]
        for r, (count, scale, special) in enumerate(rounds):
            payloads = [random_payload(rng, dtype, count, scale, special) for _ in range(P)]
            slot, bank = n % tb.p.slots, (n // tb.p.slots) % 2
            frames = [tb.data(w, slot, payload=payloads[w], count=count, scale=scale,
                              dtype=dtype, seq=r, bank=bank) for w in range(P)]
            for w in range(P - 1):
                tb.send(w, frames[w])
            # the completing frame alone in the switch: latency exact (scoreboard)
            rec = await tb.send_isolated(P - 1, frames[P - 1])
            expect(rec, completed=True, what=f"{name} round {r}")
            # every RESULT in; the next round's isolated send waits out the quiet period
            await tb.settle(quiet=1)
            for port in range(P):
                check_dtype_result(tb.epoch.egress[port][-1].data, dtype=dtype, count=count,
                                   scale=scale, payloads=payloads,
                                   what=f"{name} round {r} (count {count}, scale {scale}, "
                                        f"special {special}) port {port}")
            n += 1
    await finish(tb)


@cocotb.test(timeout_time=TIMEOUT_US, timeout_unit="us")
async def test_dtype_mix(dut):
    """Two jobs, every slot's rounds in a random dtype, count and scale: SwitchML-style
    workers (window of slots, bank alternation), retransmissions and duplicates, random
    ingress idles and egress back-pressure. Every chunk's RESULT checked on every worker."""
    tb = await start(dut, "test_dtype_mix")
    P, se, S = tb.ports, tb.p.slot_elems, tb.p.slots
    rng = tb.rng
    half = max(1, S // 2)
    jobs = {0: ((1 << P) - 1, 0, half)}
    if S >= 2:
        jobs[1] = (0b11, half, S - half)
    for j, (mask, base, count) in jobs.items():
        await tb.configure_job(j, port_mask=mask, slot_base=base, slot_count=count)
    members = {j: [p for p in range(P) if mask >> p & 1] for j, (mask, _, _) in jobs.items()}
    dtypes = list(tb.supported_dtypes)

    plan = {}
    for j, (_, _, nslots_job) in jobs.items():
        nslots = min(4, nslots_job)
        chunks = []
        for i in range(3 * nslots):
            dtype = rng.choice(dtypes)
            count = random_count(rng, dtype, se)
            scale = rng.randint(-16, 40)
            special = rng.choice((0.0, 0.0, 0.05))
            payloads = [random_payload(rng, dtype, count, scale, special) for _ in members[j]]
            chunks.append(dict(slot=i % nslots, bank=(i // nslots) % 2, seq=(j << 16) | i,
                               dtype=dtype, count=count, scale=scale, payloads=payloads))
        plan[j] = (nslots, chunks)

    tb.random_idle(0.2)
    tb.random_backpressure(0.3)
    got = [dict() for _ in range(P)]      # (job, slot, bank, seq) -> first RESULT

    async def receive(port):
        q = tb.subscribe(port)
        while True:
            rec = await q.get()
            h = F.parse_frame(rec.data).hdr
            got[port].setdefault((h.job, h.slot, h.flags & 1, h.seq), rec.data)

    def frame(j, rank, c, retx=False):
        port = members[j][rank]
        return tb.data(port, c["slot"], payload=c["payloads"][rank], count=c["count"],
                       scale=c["scale"], dtype=c["dtype"], seq=c["seq"], bank=c["bank"],
                       job=j, retx=retx)

    async def worker(j, rank):
        port = members[j][rank]
        r = random.Random(rng.getrandbits(64))
        nslots, chunks = plan[j]
        for i, c in enumerate(chunks):
            if i >= nslots:
                prev = chunks[i - nslots]
                key = (j, prev["slot"], prev["bank"], prev["seq"])
                await tb.wait_until(lambda: key in got[port], None, f"job {j} chunk {i - nslots}")
                if r.random() < 0.1:      # retransmission of a round already answered
                    tb.send(port, frame(j, rank, prev, retx=True))
            tb.send(port, frame(j, rank, c))
            if r.random() < 0.05:         # duplicate (or resend, if the round completes first)
                tb.send(port, frame(j, rank, c, retx=True))
            await tb.source_below(port, 2)
        for c in chunks[-nslots:]:
            key = (j, c["slot"], c["bank"], c["seq"])
            await tb.wait_until(lambda: key in got[port], None, f"job {j} last chunks")

    receivers = [cocotb.start_soon(receive(p)) for p in range(P)]
    tasks = [cocotb.start_soon(worker(j, k)) for j in jobs for k in range(len(members[j]))]
    for t in tasks:
        await with_timeout(t, TIMEOUT_US - 1000, "us")
    tb.set_idle_generator(None)
    tb.set_backpressure_generator(None)
    await tb.settle()
    for rcv in receivers:
        rcv.cancel()
    for j, (_, chunks) in plan.items():
        for c in chunks:
            for port in members[j]:
                check_dtype_result(got[port][(j, c["slot"], c["bank"], c["seq"])],
                                   dtype=c["dtype"], count=c["count"], scale=c["scale"],
                                   payloads=c["payloads"],
                                   what=f"job {j} seq {c['seq'] & 0xFFFF} dtype {c['dtype']} "
                                        f"port {port}")
    await finish(tb)
