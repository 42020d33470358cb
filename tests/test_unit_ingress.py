"""Amaranth-simulator unit test of the ingress parser: every admission verdict (rules 1-10
of docs/SPEC.md §10.2) is checked against the golden model's `admit`, and every admitted
frame's descriptor and buffered payload against the frame itself, so a rewind after a drop
that left stale beats behind would show."""

import random
import struct

import pytest
from amaranth.sim import Simulator

from aggswitch.params import Params
from aggswitch.ingress import IngressParser, supported_dtypes, parseable_dtypes
from aggswitch.frame import slot_bits
from tb.model import frames as F
from tb.model.switch import SwitchModel
from tb.model.numerics import decode

PORT = 1
CONFIGS = [Params(), Params(ports=2, data_width=128, slots=8, slot_elems=32, jobs=2),
           # 128-bit beats with more MX blocks than one beat of the scale line holds (17):
           # the scales are captured from two of its four beats
           Params(ports=2, data_width=128, slots=2, slot_elems=544, jobs=1),
           # 1024-bit beats: the header is half a beat, a non-MX payload is realigned by
           # half a beat into the buffer, frames of one beat (up to 64 payload bytes)
           Params(ports=2, data_width=1024, slots=8, slot_elems=64, jobs=2)]


# frames of the back-to-back block at the end of crafted_frames at data_width 1024
HALF_BURST = 44


def valid_frame(p, rng, **kw):
    count = kw.pop("count", rng.randint(1, p.slot_elems))
    args = dict(worker_mac=0x020000000100 + PORT, worker_ip=0x0A000100 + PORT, worker_port=5000 + PORT,
                job=0, slot=rng.randrange(p.slots), worker=PORT, seq=rng.getrandbits(32),
                dtype=F.INT32, count=count, scale=0,
                payload=F.int32_payload([rng.randint(-2**31, 2**31 - 1) for _ in range(count)]),
                bank=rng.getrandbits(1))
    args.update(kw)
    return F.data_frame(**args)


def patch(frame, off, data, fix_csum=True):
    f = bytearray(frame)
    f[off:off + len(data)] = data
    if fix_csum and off < 34:
        f[24:26] = b"\0\0"
        f[24:26] = F.ipv4_checksum(bytes(f[14:34])).to_bytes(2, "big")
    return bytes(f)


def payload_for(p, rng, dtype, count, nan=False):
    """A random payload of `dtype` with `count` elements; `nan` plants one NaN (or, for MX,
    a NaN block scale) among them."""
    if dtype == F.INT32:
        return F.int32_payload([rng.randint(-2**31, 2**31 - 1) for _ in range(count)])
    if dtype == F.FP32:
        elems = [rng.getrandbits(32) & 0xBFFFFFFF for _ in range(count)]   # exp never all ones
        if nan:
            elems[rng.randrange(count)] = 0x7FC00001
        return b"".join(e.to_bytes(4, "big") for e in elems)
    if dtype == F.BF16:
        elems = [rng.getrandbits(16) & 0xBFFF for _ in range(count)]
        if nan:
            elems[rng.randrange(count)] = 0xFF81
        return b"".join(e.to_bytes(2, "big") for e in elems)
    scales = bytearray(rng.randrange(0, 255) for _ in range(count // 32)) + bytes(64 - count // 32)
    elems = bytearray(rng.getrandbits(8) & 0x77 for _ in range(count))        # never NaN
    if nan and rng.getrandbits(1):
        scales[rng.randrange(count // 32)] = 0xFF
    elif nan:
        elems[rng.randrange(count)] = {F.MXINT8: 0x80, F.MXFP8_E4M3: 0x7F, F.MXFP8_E5M2: 0xFD}[dtype]
    return bytes(scales) + bytes(elems)


def crafted_frames(p, rng):
    """(frame, tkeep list or None) pairs: valid frames interleaved with one of each fault."""
    v = lambda **kw: valid_frame(p, rng, **kw)
    B = p.beat_bytes
    faults = [
        v()[:10], v()[:13], v()[:14],                                   # runts
        patch(v(), 12, b"\x86\xdd"),                                     # IPv6 EtherType
        patch(v(), 12, b"\x08\x06")[:60],                                # ARP-sized
        v()[:30], patch(v(), 14, b"\x46"), patch(v(), 14, b"\x55"),      # IPv4 short / IHL / version
        patch(v(), 24, b"\x12\x34", fix_csum=False),                     # bad checksum
        patch(v(), 23, b"\x06"),                                         # TCP
        v()[:40], patch(v(), 36, b"\x12\x34"),                           # short UDP / other port
        v()[:63], v()[:64], v()[:-1], v() + b"\0", v() + bytes(4 * B),   # truncated / oversized
        v() + bytes(p.max_frame_bytes + 3 * B),                          # far past any buffer
        patch(v(), 16, b"\x00\x30"), patch(v(), 38, b"\x00\x30"),        # IPv4 / UDP length
        patch(v(), 42, b"\x20"), patch(v(), 42, b"\x11"),                # ver 2, op RESULT
        patch(v(), 43, b"\x01"), patch(v(), 43, b"\x03"), patch(v(), 43, b"\x07"),  # dtypes
        v(count=0, payload=b""), v(count=p.slot_elems + 1, payload=bytes(4 * (p.slot_elems + 1))),
        v(job=1), v(job=p.jobs), v(job=0xFFFF),                           # disabled / no such job
        v(slot=p.slots), v(slot=0xFFFF),                                  # slot range
        v(worker=PORT + 1), v(worker=0),                                  # worker mismatch
        v(count=1, payload=F.int32_payload([7])),
        v(count=p.slot_elems),
        # each length rule at its threshold, where the next rule would say NOT_AGG
        patch(v(), 12, b"\x86\xdd")[:13], patch(v(), 12, b"\x86\xdd")[:14],
        patch(v(), 23, b"\x06")[:33], patch(v(), 23, b"\x06")[:34],
        patch(v(), 36, b"\x12\x34")[:41], patch(v(), 36, b"\x12\x34")[:42],
        v()[:33], v()[:34], v()[:41], v()[:42], v()[:65],
    ]
    out = []
    for f in faults:
        out.append((v(), None))
        out.append((f, None))
    # tkeep violations: a hole in a middle beat, a non-contiguous last beat
    f = v(count=p.slot_elems)
    nb = -(-len(f) // B)
    keeps = [(1 << B) - 1] * (nb - 1) + [(1 << (len(f) - (nb - 1) * B)) - 1]
    keeps[1] = (1 << B) - 2
    out.append((f, keeps))
    f = v(count=p.slot_elems)
    nb = -(-len(f) // B)
    keeps = [(1 << B) - 1] * nb
    keeps[-1] = 0b101 if len(f) % B == 0 else keeps[-1]
    if len(f) % B == 0:
        out.append((f, keeps))
    out.append((v(), None))
    # every dtype this build supports, with and without NaN, and padding after `count`
    # that looks like NaN (it must not count)
    for dtype in parseable_dtypes(p):
        mx = dtype in (F.MXINT8, F.MXFP8_E4M3, F.MXFP8_E5M2)
        for nan in (False, True):
            count = 32 * rng.randint(1, p.slot_elems // 32) if mx else rng.randint(1, p.slot_elems)
            out.append((v(dtype=dtype, count=count, scale=rng.randint(-128, 127),
                          payload=payload_for(p, rng, dtype, count, nan)), None))
        if mx:   # scale-line padding after the last block is not a block scale
            pl = bytearray(payload_for(p, rng, dtype, 32))
            pl[1:64] = b"\xff" * 63
            out.append((v(dtype=dtype, count=32, payload=bytes(pl)), None))
            # a NaN block scale, then at once a short frame without NaN: the scale check
            # of the one must not flag the other
            pl = bytearray(payload_for(p, rng, dtype, 32))
            pl[0] = 0xFF
            out.append((v(dtype=dtype, count=32, payload=bytes(pl)), None))
            out.append((v(count=1, payload=F.int32_payload([7])), None))
            if p.mx_blocks > B:
                # a scale line over several beats: a NaN scale in its second beat (block B),
                # then the same byte just past the frame's blocks (padding, not a NaN)
                pl = bytearray(payload_for(p, rng, dtype, 32 * (B + 1)))
                pl[B] = 0xFF
                out.append((v(dtype=dtype, count=32 * (B + 1), payload=bytes(pl)), None))
                pl = bytearray(payload_for(p, rng, dtype, 32 * B))
                pl[B] = 0xFF
                out.append((v(dtype=dtype, count=32 * B, payload=bytes(pl)), None))
    # random header byte flips
    for _ in range(40):
        f = bytearray(v())
        f[rng.randrange(64)] ^= 1 << rng.randrange(8)
        out.append((bytes(f), None))
    if p.half_header:
        n = len(out)
        # data_width 1024, back to back: payloads ending in the lower half of a wire beat,
        # exactly at its middle, in its upper half and at its end (one extra buffer write
        # after tlast), in one-beat frames (header and payload in one beat) and longer ones
        for dtype, size in ((F.INT32, 4), (F.FP32, 4), (F.BF16, 2)):
            for nbytes in (4, 60, 64, 68, 124, 128, 132, 188, 192, 196, 252, 256):
                count = min(nbytes // size, p.slot_elems)
                out.append((v(dtype=dtype, count=count,
                              payload=payload_for(p, rng, dtype, count, nan=nbytes % 3 == 0)), None))
        # a one-beat frame right after a long MX one, and a dropped one-beat frame between
        # two admitted ones (its rewind meets the next frame's writes)
        mx_count = 32 * (p.slot_elems // 32)
        out.append((v(dtype=F.MXINT8, count=mx_count, payload=payload_for(p, rng, F.MXINT8, mx_count)), None))
        out.append((v(count=3, payload=F.int32_payload([1, 2, 3])), None))
        out.append((v(count=20), None))
        out.append((v(count=5, job=1), None))
        out.append((v(count=2, payload=F.int32_payload([4, 5])), None))
        out.append((v(count=17), None))
        out.append((v(count=16)[:-1], None))
        out.append((v(count=30), None))
        assert len(out) - n == HALF_BURST
    return out


def to_beats(p, frame, keeps=None):
    B = p.beat_bytes
    beats = []
    nb = max(1, -(-len(frame) // B))
    for i in range(nb):
        chunk = frame[i * B:(i + 1) * B]
        keep = keeps[i] if keeps else (1 << len(chunk)) - 1
        data = bytes(b if keep >> j & 1 else 0 for j, b in enumerate(chunk.ljust(B, b"\0")))
        beats.append((int.from_bytes(data, "little"), keep, i == nb - 1))
    return beats


@pytest.mark.parametrize("dtypes", ["build", "parseable"])
@pytest.mark.parametrize("p", CONFIGS, ids=lambda p: p.name())
def test_admission_matches_model(p, dtypes):
    """`build`: the dtypes this build admits; `parseable`: every dtype the parser can check
    and scan for NaN (what the compression datapath will admit)."""
    dtypes = supported_dtypes(p) if dtypes == "build" else parseable_dtypes(p)
    rng = random.Random(1234)
    cases = crafted_frames(p, rng)
    model = SwitchModel(ports=p.ports, slots=p.slots, slot_elems=p.slot_elems, jobs=p.jobs,
                        supported_dtypes=dtypes)
    expected = [model.admit(PORT, f, tkeep_ok=(k is None)) for f, k in cases]
    assert {F.NOT_AGG, F.MALFORMED, F.JOB_DISABLED, F.SLOT_RANGE, F.WORKER, None} <= set(expected)

    n_accepted = expected.count(None)
    # at data_width 1024 the last HALF_BURST frames go back to back, without gaps
    burst_from = len(cases) - HALF_BURST if p.half_header else len(cases)
    dut = IngressParser(p, PORT, dtypes)
    sb = slot_bits(p) + 1
    verdicts = []      # (dropped, reason) per frame, in order
    admitted = []      # (descriptor, payload bytes)
    done = {"sent": False}

    async def drive(ctx):
        ctx.set(dut.enable, 1)
        ctx.set(dut.agg_port, F.DEFAULT_AGG_PORT)
        ctx.set(dut.job_enable, 1)
        ctx.set(dut.job_mask, (1 << p.ports) - 1)
        ctx.set(dut.job_count, p.slots)
        for i, (f, keeps) in enumerate(cases):
            for data, keep, last in to_beats(p, f, keeps):
                ctx.set(dut.tdata, data)
                ctx.set(dut.tkeep, keep)
                ctx.set(dut.tlast, last)
                ctx.set(dut.tvalid, 1)
                while True:
                    ready = ctx.get(dut.tready)
                    await ctx.tick()
                    if ready:
                        break
            ctx.set(dut.tvalid, 0)
            if i % 3 == 0 and not (p.half_header and i >= burst_from):
                await ctx.tick().repeat(1 + rng.randrange(3))
        done["sent"] = True

    async def engine(ctx):
        # Pop descriptors one by one, read the payload back, release it; return after the
        # last one (a background testbench still waiting when the simulation ends is torn
        # down mid-await, which CPython 3.11 reports as an error after the tests).
        while len(admitted) < n_accepted:
            await ctx.tick().until(dut.desc_valid)
            d = ctx.get(dut.desc)
            ctx.set(dut.desc_ready, 1)
            await ctx.tick()
            ctx.set(dut.desc_ready, 0)
            payload = b""
            for k in range(d.beats):
                ctx.set(dut.rd_addr, (d.start + k) % p.buffer_beats)
                await ctx.tick()
                payload += ctx.get(dut.rd_data).to_bytes(p.beat_bytes, "little")
            admitted.append((d, payload))
            ctx.set(dut.release, 1)
            ctx.set(dut.release_beats, d.beats)
            await ctx.tick()
            ctx.set(dut.release, 0)

    async def monitor(ctx):
        cycles = 0
        async for _, _, rx, drop, reason in ctx.tick().sample(dut.rx, dut.drop, dut.drop_reason):
            cycles += 1
            if cycles > 100 * len(cases) * p.max_payload_beats:
                break           # a hang: the assertions below say what is missing
            if rx:
                verdicts.append(reason if drop else None)
            if done["sent"] and len(verdicts) == len(cases) and len(admitted) == n_accepted:
                break

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(drive, background=True)
    sim.add_testbench(engine, background=True)
    sim.add_testbench(monitor)
    sim.run()

    assert len(verdicts) == len(cases), "not every frame got a verdict"
    for i, ((f, keeps), want, got) in enumerate(zip(cases, expected, verdicts)):
        assert got == want, f"frame {i} ({len(f)} bytes): RTL verdict {got}, model {want}"

    accepted = [f for (f, _), want in zip(cases, expected) if want is None]
    assert len(admitted) == len(accepted)
    for i, (f, (d, payload)) in enumerate(zip(accepted, admitted)):
        pf = F.parse_frame(f)
        h = pf.hdr
        assert (d.job, d.slot, d.gslot, d.bank) == (h.job, h.slot, h.slot, h.flags & 1)
        assert (d.dtype, d.count, d.seq) == (h.dtype, h.count, h.seq)
        assert (d.src_mac, d.src_ip, d.src_port) == (pf.src_mac, pf.src_ip, pf.src_port)
        mx = h.dtype in (F.MXINT8, F.MXFP8_E4M3, F.MXFP8_E5M2)
        # the buffered payload: at data_width 1024 an MX scale line is not buffered (it
        # shares the header beat and is captured, below); no beat more than it needs
        want = pf.payload[64:] if mx and p.half_header else pf.payload
        assert d.beats == -(-len(want) // p.beat_bytes), i
        assert payload[:len(want)] == want, i
        assert d.nan == decode(h.dtype, pf.payload, h.count, h.scale)[1]
        if h.dtype in (F.MXINT8, F.MXFP8_E4M3, F.MXFP8_E5M2):
            # the block scales the decoder will apply: the scale line's first mx_blocks bytes
            assert d.scales == int.from_bytes(pf.payload[:p.mx_blocks], "little"), i
