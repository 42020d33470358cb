"""Amaranth-simulator unit test of the RESULT deparser (egress.py): RESULTs handed over as
the engine and the result buffer do (descriptor, payload beats against the FIFO's credits,
the done record with the first beat or, for MX, the last) must leave as the frames the
golden model's frame builder makes of the same fields, byte for byte, with tkeep exact on
the last beat and zero bytes past the frame's end.

At data_width 1024 the 64-byte header is half a beat: a non-MX payload leaves shifted by
half a beat (wire beat 0 = header + lower half of payload beat 0, and one wire beat more
than payload beats when the last one has bytes in its upper half), an MX RESULT's scale
line fills the upper half of beat 0. With tready always high every frame must leave at one
beat per cycle from its first beat to its last (line rate: the realignment never waits).
"""

import random

import pytest
from amaranth.sim import Simulator

from aggswitch.params import Params
from aggswitch.egress import ResultDeparser, RESULT_DESC_DEPTH
from tb.model import frames as F

CONFIGS = [Params(ports=2, data_width=1024, slots=4, slot_elems=64, jobs=2),
           Params(ports=2, data_width=512, slots=4, slot_elems=64, jobs=2)]
DTYPES = (F.INT32, F.FP32, F.BF16, F.MXINT8, F.MXFP8_E4M3, F.MXFP8_E5M2)
SWITCH_MAC, SWITCH_IP = 0x02_41_47_00_00_09, 0x0A_00_00_09


def results(p, rng):
    """RESULTs as (descriptor fields, overflow, block scales, element bytes): every dtype,
    counts whose payload ends in the lower and the upper half of a beat and at its end."""
    out = []
    counts = {F.INT32: [1, 15, 16, 17, 31, 32, 33, 48, p.slot_elems], F.BF16: [1, 32, 33, 63, p.slot_elems]}
    counts[F.FP32] = counts[F.INT32]
    for dtype in DTYPES:
        mx = F.is_mx(dtype)
        cs = [32 * (i + 1) for i in range(p.slot_elems // 32)] if mx else counts[dtype]
        cs = cs + [32 * rng.randint(1, p.slot_elems // 32) if mx else rng.randint(1, p.slot_elems)]
        for count in cs:
            size = 1 if mx else (2 if dtype == F.BF16 else 4)
            d = dict(job=rng.randrange(p.jobs), slot=rng.getrandbits(16), dtype=dtype, mx=int(mx),
                     flags=rng.choice([0, F.FLAG_BANK, 0x10, 0x11, F.FLAG_NAN]), count=count,
                     scale=rng.getrandbits(8), seq=rng.getrandbits(32), dst_mac=rng.getrandbits(48),
                     dst_ip=rng.getrandbits(32), dst_port=rng.getrandbits(16), tstamp=rng.getrandbits(32),
                     t_ref=0, payload_bytes=(64 if mx else 0) + size * count)
            scales = bytes(rng.getrandbits(8) for _ in range(count // 32)) if mx else b""
            elems = bytes(rng.getrandbits(8) for _ in range(size * count))
            out.append((d, rng.getrandbits(1), scales, elems))
    rng.shuffle(out)
    return out


def expected_frame(p, d, overflow, scales, elems):
    scale = d["scale"] - 256 if d["scale"] & 0x80 else d["scale"]
    hdr = F.AggHeader(op=F.OP_RESULT, dtype=d["dtype"], job=d["job"], slot=d["slot"], worker=0xFF,
                      flags=d["flags"] | (F.FLAG_OVERFLOW if overflow else 0), seq=d["seq"],
                      count=d["count"], scale=scale, reserved=d["tstamp"].to_bytes(4, "big") + bytes(3))
    payload = (scales.ljust(64, b"\0") if d["mx"] else b"") + elems
    return F.build_frame(src_mac=SWITCH_MAC, dst_mac=d["dst_mac"], src_ip=SWITCH_IP, dst_ip=d["dst_ip"],
                         src_port=F.DEFAULT_AGG_PORT, dst_port=d["dst_port"], hdr=hdr, payload=payload)


@pytest.mark.parametrize("stall", [False, True], ids=["line_rate", "tready_random"])
@pytest.mark.parametrize("p", CONFIGS, ids=lambda p: p.name())
def test_results_match_model(p, stall):
    rng = random.Random(77)
    res = results(p, rng)
    B = p.beat_bytes
    dut = ResultDeparser(p)
    sent = []           # frames: list of (data, keep, last, cycle)
    state = {"pops": 0, "fed": 0}

    async def feed(ctx):
        ctx.set(dut.cycles, 1 << 20)          # every RESULT is due at once
        ctx.set(dut.switch_mac, SWITCH_MAC)
        ctx.set(dut.switch_ip, SWITCH_IP)
        ctx.set(dut.agg_port, F.DEFAULT_AGG_PORT)
        for i, (d, ovf, scales, elems) in enumerate(res):
            while i - len(sent) >= RESULT_DESC_DEPTH - 2:
                await ctx.tick()
            ctx.set(dut.desc_in, d)
            ctx.set(dut.desc_en, 1)
            await ctx.tick()
            ctx.set(dut.desc_en, 0)
            # the buffer's beats: the elements (after the scale line for MX), with garbage
            # past the payload's end that must never reach the wire
            n = -(-len(elems) // B)
            body = elems + bytes(rng.getrandbits(8) | 1 for _ in range(n * B - len(elems)))
            for k in range(n):
                while state["fed"] - state["pops"] >= p.egress_beats:
                    await ctx.tick()
                ctx.set(dut.data_in, int.from_bytes(body[k * B:(k + 1) * B], "little"))
                ctx.set(dut.data_en, 1)
                done = k == (n - 1 if d["mx"] else 0)
                ctx.set(dut.done_en, done)
                ctx.set(dut.done_overflow, ovf)
                ctx.set(dut.done_scales, int.from_bytes(scales, "little"))
                state["fed"] += 1
                await ctx.tick()
                ctx.set(dut.data_en, 0)
                ctx.set(dut.done_en, 0)

    async def count_pops(ctx):
        async for _, _, pop in ctx.tick().sample(dut.pop):
            state["pops"] += pop

    async def sink(ctx):
        frame = []
        cycle = 0
        while len(sent) < len(res):
            ready = rng.random() < 0.6 if stall else True
            ctx.set(dut.tready, ready)
            _, _, valid, data, keep, last = await ctx.tick().sample(dut.tvalid, dut.tdata, dut.tkeep, dut.tlast)
            cycle += 1
            assert cycle < 200 * len(res), "hang"
            if valid and ready:
                frame.append((data, keep, last, cycle))
                if last:
                    sent.append(frame)
                    frame = []

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(feed, background=True)
    sim.add_testbench(count_pops, background=True)
    sim.add_testbench(sink)
    sim.run()

    assert len(sent) == len(res)
    for i, (beats, (d, ovf, scales, elems)) in enumerate(zip(sent, res)):
        want = expected_frame(p, d, ovf, scales, elems)
        assert len(beats) == -(-len(want) // B), (i, d["dtype"], d["count"])
        got = b"".join(data.to_bytes(B, "little") for data, _, _, _ in beats)
        assert got[:len(want)] == want, (i, d["dtype"], d["count"])
        assert not any(got[len(want):]), "bytes past the frame's end must be zero"
        keeps = [keep for _, keep, _, _ in beats]
        assert keeps[:-1] == [(1 << B) - 1] * (len(beats) - 1)
        assert keeps[-1] == (1 << (len(want) - (len(beats) - 1) * B)) - 1
        if not stall:
            cycles = [c for _, _, _, c in beats]
            assert cycles == list(range(cycles[0], cycles[0] + len(beats))), \
                f"RESULT {i} ({d['dtype']}, count {d['count']}) not at one beat per cycle"
