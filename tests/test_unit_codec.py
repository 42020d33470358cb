"""Amaranth-simulator unit tests of the beat decoder and the result encoder
(hw/aggswitch/codec.py BeatDecoder, BeatEncoder). The decoder: every lane (the lanes of
every dtype, the BF16+MX and the MX-only ones) of beats in every dtype of the build against
the model's `decode`. The encoder
against the golden model tb/model/numerics.py: a stream of beats in every dtype the build
has, back to back and with gaps, each beat's bytes, OVERFLOW and MX scale bytes compared
with the model's `encode` of the same accumulators exactly `encoder_latency(p)` cycles
after the beat went in. The expected values come from the model only; the delay from
params.py, the documented formula.

Parameter sets: 128-bit beats (an MX block over two beats, fed back to back as the
emitter does: its scale byte and OVERFLOW with its first beat), 256-bit beats (one MX block
per beat) and 512-bit beats (two block parts per beat, one of them past `count` at times).
The emitter's mask of the lanes below `count`, which the encoder takes with each beat, is
checked exhaustively. Between valid beats the encoder holds its accumulator inputs.
"""

import random

import numpy as np
import pytest
from amaranth import Module, Signal
from amaranth.sim import Simulator

from aggswitch.codec import BeatDecoder, BeatEncoder, block_parts
from aggswitch.emitter import lane_mask
from aggswitch.frame import count_bits
from aggswitch.params import (DTYPE_BF16, DTYPE_FP32, DTYPE_INT32, DTYPE_MXFP8_E4M3,
                              DTYPE_MXFP8_E5M2, DTYPE_MXINT8, MX_BLOCK, Params,
                              encoder_latency)
from tb.model import numerics as N
from tb.model.frames import MX_SCALE_LINE

PLAIN = (DTYPE_INT32, DTYPE_FP32, DTYPE_BF16)
MX = (DTYPE_MXINT8, DTYPE_MXFP8_E4M3, DTYPE_MXFP8_E5M2)
ELEM_BYTES = {DTYPE_INT32: 4, DTYPE_FP32: 4, DTYPE_BF16: 2,
              DTYPE_MXINT8: 1, DTYPE_MXFP8_E4M3: 1, DTYPE_MXFP8_E5M2: 1}

PARAMS = {
    "w128": Params(ports=2, data_width=128, slots=4, slot_elems=32, jobs=1),
    "w256": Params(ports=3, data_width=256, slots=4, slot_elems=64, jobs=1),
    "w512": Params(ports=32, data_width=512, slots=4, slot_elems=64, jobs=1),
}


def dtypes(p):
    return PLAIN + (MX if p.mx_ok else ())


def per_beat(p, dtype):
    return p.beat_lanes // ELEM_BYTES[dtype]


KEEP = {DTYPE_INT32: (24,), DTYPE_FP32: (24,), DTYPE_BF16: (8,),
        DTYPE_MXINT8: (7,), DTYPE_MXFP8_E4M3: (4, 7), DTYPE_MXFP8_E5M2: (3, 7)}


def random_acc(rng, acc_width, top, keeps=(24,)):
    """One accumulator: a random bit length up to `top` (int32 range and beyond), some
    edge values (0, +-1, the int32 limits and just past them, the accumulator's ends)."""
    lim = 1 << (acc_width - 1)
    if rng.random() < 0.1:
        return rng.choice([0, 1, -1, N.INT32_MAX, N.INT32_MIN, N.INT32_MAX + 1,
                           N.INT32_MIN - 1, lim - 1, -lim, 1 << 24, (1 << 24) + 1])
    bits = rng.randint(0, top)
    a = rng.randint(0, (1 << bits) - 1) if bits else 0
    if rng.random() < 0.3:
        # a rounding tie of the dtype (`keeps`: significand bits kept), or one off it: the
        # bits under the significand are exactly half an ulp (+-1)
        keep = rng.choice(keeps)
        if bits > keep + 1:
            ulp = 1 << (bits - keep)
            a = (a & -ulp) | (ulp >> 1)
            a += rng.choice([0, 0, 1, -1]) if ulp > 2 else 0
    return max(-lim, min(lim - 1, -a if rng.getrandbits(1) else a))


def random_beat(rng, p, dtype):
    """(accumulators of every lane, scale, count of valid elements in the beat). An MX
    block over `block_beats` beats (data_width 128) comes whole: the accumulators of its
    beats side by side."""
    n = per_beat(p, dtype)
    if dtype in MX:
        count = MX_BLOCK * rng.randint(1, max(1, n // MX_BLOCK))       # whole blocks
        # a block's values share a magnitude, with a spread below it; at times small blocks
        # at a large scale, whose shared exponent clamps at -127
        tiny = rng.random() < 0.2
        accs = []
        for _ in range(max(1, p.beat_lanes // MX_BLOCK)):
            top = rng.randint(0, 6) if tiny else rng.randint(0, p.acc_width - 1)
            spread = rng.choice([0, 3, 8, 40])
            accs += [random_acc(rng, p.acc_width, max(0, top - rng.randint(0, spread)), KEEP[dtype])
                     for _ in range(MX_BLOCK)]
        scale = (rng.randint(120, 127) if tiny else
                 rng.choice([rng.randint(-128, 127), rng.randint(-20, 20), -128, -113]))
    else:
        count = rng.randint(1, n) if rng.random() < 0.3 else n
        top = rng.randint(0, p.acc_width - 1)
        accs = [random_acc(rng, p.acc_width, top, KEEP[dtype]) for _ in range(p.beat_lanes)]
        scale = rng.choice([rng.randint(-128, 127), rng.randint(-10, 30), 127, -128, -104, -97])
    return accs, scale, count


def expected(p, dtype, accs, scale, count):
    """The model's (element bytes, OVERFLOW, {block part: scale byte}) of a beat."""
    payload, ovf = N.encode(dtype, np.array(accs[:count], dtype=object), count, scale)
    scales = {}
    if dtype in MX:
        scales = {j: payload[j] for j in range(count // MX_BLOCK)}
        payload = payload[MX_SCALE_LINE:]
    return payload, bool(ovf), scales


def block_beats(p, dtype, accs, scale, count, k):
    """The beats of one input: (dtype, accs, scale, count, beat index, part). An MX block
    over D = block_beats beats (data_width 128) is D beats in a row, part h holding
    accumulators [h * beat_lanes, (h + 1) * beat_lanes) of the block; the block starts at
    a beat index that is a multiple of D, as in a round."""
    D = p.block_beats if dtype in MX else 1
    k0 = k - k % D
    return [(dtype, accs, scale, count, k0 + h, h) for h in range(D)]


def run(p, beats):
    """Feed `beats` (None: an idle cycle with random inputs, else (dtype, accs, scale,
    count, beat index, part)) one per cycle; return the outputs sampled in every cycle
    after."""
    dut = BeatEncoder(p)
    rng = random.Random(99)
    lat = encoder_latency(p)
    parts, _ = block_parts(p)
    samples = []

    async def bench(ctx):
        for b in beats + [None] * (lat + 1):
            if b is None:
                ctx.set(dut.valid, 0)
                ctx.set(dut.dtype, rng.randrange(8))
                ctx.set(dut.valid_lanes, rng.getrandbits(p.beat_lanes))
                for i in range(p.beat_lanes):
                    ctx.set(dut.acc[i], random_acc(rng, p.acc_width, p.acc_width - 1))
            else:
                dtype, accs, scale, count, k, h = b
                B = p.beat_lanes
                ctx.set(dut.valid, 1)
                ctx.set(dut.dtype, dtype)
                ctx.set(dut.scale, scale)
                ctx.set(dut.beat, k)
                ctx.set(dut.valid_lanes, (1 << min(count - h * B, B)) - 1)
                for i in range(B):
                    ctx.set(dut.acc[i], accs[h * B + i])
            await ctx.tick()
            samples.append((ctx.get(dut.bytes), ctx.get(dut.overflow), ctx.get(dut.scale_valid),
                            [ctx.get(dut.scale_byte[j]) for j in range(parts)]))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return samples


def check_beat(p, b, sample):
    """Mismatch description of one beat's output sample, or None."""
    dtype, accs, scale, count, k, h = b
    want, want_ovf, want_scales = expected(p, dtype, accs, scale, count)
    if h:           # a later beat of an MX block: its bytes; scale and OVERFLOW went before
        want, want_ovf, want_scales = want[h * p.beat_lanes:(h + 1) * p.beat_lanes], False, {}
    data, ovf, scale_valid, scale_bytes = sample
    want = want[:p.beat_lanes]
    got = data.to_bytes(p.data_width // 8, "little")[:len(want)]
    errs = []
    if got != want:
        errs.append(f"bytes {got.hex()} != {want.hex()}")
    if bool(ovf) != want_ovf:
        errs.append(f"overflow {ovf} != {want_ovf}")
    if dtype in MX:
        got_scales = {j: scale_bytes[j] for j in range(block_parts(p)[0]) if scale_valid >> j & 1}
        if got_scales != want_scales:
            errs.append(f"scales {got_scales} != {want_scales}")
    elif scale_valid:
        errs.append(f"scale_valid {scale_valid} on a {dtype} beat")
    return f"dtype {dtype} scale {scale} count {count}: " + ", ".join(errs) if errs else None


def edge_beats(p):
    """Beats whose every lane holds the same edge of the float encodings, so that each lane
    (the FP32/BF16 lanes and the BF16-only ones alike) meets it: the subnormal 2**-127 (|a|
    = 1 at scale 127), +-Inf (beyond the format at scale -128), the largest finite FP32
    value (BF16 rounds it to Inf), roundings that carry into the next binade, and the int32
    saturation (OVERFLOW)."""
    out = []
    for dtype in (DTYPE_FP32, DTYPE_BF16, DTYPE_INT32):
        n = per_beat(p, dtype)
        for accs, scale in (([1, -1] * p.beat_lanes, 127),
                            ([N.INT32_MAX, N.INT32_MIN] * p.beat_lanes, -128),
                            ([(1 << 31) - (1 << 7), -(1 << 31) + (1 << 8)] * p.beat_lanes, -97),
                            ([(1 << 31) - (1 << 8), (1 << 31) - (1 << 6)] * p.beat_lanes, -96),
                            ([N.INT32_MAX + 5, N.INT32_MIN - 5] * p.beat_lanes, 0)):
            out.append((dtype, accs[:p.beat_lanes], scale, n, 0, 0))
    return out


@pytest.mark.parametrize("name,n_beats", [("w128", 600), ("w256", 300), ("w512", 150)])
def test_beat_encoder_stream(name, n_beats):
    """Every dtype of the build, mixed beat by beat (back to back and with idle cycles):
    every beat bit-exact with the model, `encoder_latency(p)` cycles after it went in."""
    p = PARAMS[name]
    rng = random.Random(name)
    beats = []
    for _ in range(n_beats):
        if rng.random() < 0.15:
            beats.append(None)
            continue
        dtype = rng.choice(dtypes(p))
        accs, scale, count = random_beat(rng, p, dtype)
        beats += block_beats(p, dtype, accs, scale, count, rng.randrange(p.slot_lines))
    beats += edge_beats(p)
    samples = run(p, beats)
    lat = encoder_latency(p)
    bad = [e for t, b in enumerate(beats) if b is not None
           for e in [check_beat(p, b, samples[t + lat - 1])] if e]
    assert not bad, f"{len(bad)} beats wrong:\n" + "\n".join(bad[:6])
    # the stream reaches OVERFLOW, the MX scale bytes of NaN blocks and the -127 clamp
    exp = [expected(p, *b[:4]) for b in beats if b is not None and b[5] == 0]
    assert any(o for _, o, _ in exp)
    if p.mx_ok:
        sbytes = [s for _, _, sc in exp for s in sc.values()]
        assert 0xFF in sbytes and 0 in sbytes


@pytest.mark.parametrize("name", list(PARAMS))
def test_beat_encoder_delay_every_dtype(name):
    """One beat in each dtype, alone between beats of zeros: its bytes leave the encoder
    exactly encoder_latency(p) cycles later in every dtype (the fixed latency of SPEC
    §10.4 relies on it), measured, not assumed: the cycle in which the output first
    differs from the zero beats' output."""
    p = PARAMS[name]
    rng = random.Random(3)
    lat = encoder_latency(p)
    zero = (DTYPE_INT32, [0] * p.beat_lanes, 0, per_beat(p, DTYPE_INT32), 0, 0)
    beats, at = [], {}
    for dtype in dtypes(p):
        # every element non-zero and of either sign, so no lane encodes to all-zero bytes
        D = p.block_beats if dtype in MX else 1
        accs = [rng.choice([1, -1]) * rng.randint(1 << 20, 1 << 30) for _ in range(D * p.beat_lanes)]
        beats += [zero] * (lat + 3)
        at[dtype] = len(beats)
        beats += block_beats(p, dtype, accs, 0, D * per_beat(p, dtype), 0)
    samples = run(p, beats + [zero] * (lat + 3))
    delays = {}
    for dtype, t in at.items():
        changed = [c for c in range(t, len(samples)) if samples[c][0] != 0]
        assert changed, f"dtype {dtype}: the beat never reached the output"
        delays[dtype] = changed[0] + 1 - t          # clock edges from the beat's cycle
        assert check_beat(p, beats[t], samples[changed[0]]) is None
        D = p.block_beats if dtype in MX else 1
        for h in range(1, D):                       # an MX block's later beats follow
            assert check_beat(p, beats[t + h], samples[changed[0] + h]) is None
        assert all(samples[c][0] == 0 for c in range(changed[0] + D, changed[0] + lat + 2))
    assert set(delays.values()) == {lat}, delays


def test_beat_encoder_holds_while_idle():
    """Without a valid beat the encoder does not take its accumulator inputs (their
    registers have an enable): however those inputs change between beats, the lanes and
    the output hold still once the last beat is through, so an idle or non-emitting port's
    encoder gives an event-driven simulator nothing to evaluate."""
    p = PARAMS["w256"]
    dut = BeatEncoder(p)
    rng = random.Random(5)
    lat = encoder_latency(p)
    outs = []

    async def bench(ctx):
        ctx.set(dut.dtype, DTYPE_FP32)
        ctx.set(dut.valid_lanes, (1 << p.beat_lanes) - 1)
        for cycle in range(lat + 12):
            ctx.set(dut.valid, int(cycle == 0))
            for i in range(p.beat_lanes):
                ctx.set(dut.acc[i], random_acc(rng, p.acc_width, p.acc_width - 1))
            await ctx.tick()
            outs.append(ctx.get(dut.bytes))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert outs[lat - 1] != 0 and len(set(outs[lat - 1:])) == 1, \
        [hex(o)[:20] for o in outs[lat - 1:]]


@pytest.mark.parametrize("p", [PARAMS["w128"], Params()], ids=["w128", "default"])
def test_emitter_lane_mask(p):
    """The emitter's mask of the lanes that hold one of a round's `count` elements, for
    every dtype, count and beat of the parameter set (at the defaults the elements before
    the last beats, up to 960, outnumber any count): lanes [0, n) with n = min(max(count
    - beat * per_beat, 0), per_beat)."""
    m = Module()
    dtype = Signal(3)
    count = Signal(count_bits(p))
    beat = Signal(range(p.slot_lines))
    mask = lane_mask(m, p, dtype, count, beat)
    cases = [(d, c, k) for d in dtypes(p) for c in range(1, p.slot_elems + 1)
             for k in range(p.slot_lines)]
    bad = []

    async def bench(ctx):
        for d, c, k in cases:
            ctx.set(dtype, d)
            ctx.set(count, c)
            ctx.set(beat, k)
            n = min(max(c - k * per_beat(p, d), 0), per_beat(p, d))
            if ctx.get(mask) != (1 << n) - 1:
                bad.append((d, c, k, hex(ctx.get(mask)), n))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    assert not bad, f"{len(bad)} wrong (dtype, count, beat, mask, lanes): {bad[:5]}"


# --------------------------------------------------------------------------
# the beat decoder: every lane form (every dtype, BF16+MX, MX only) against the model
# --------------------------------------------------------------------------
BF16_EDGES = [0x0000, 0x8000, 0x0001, 0x8001, 0x007F, 0x807F, 0x0080, 0x3F80, 0xBF80,
              0x3F81, 0x4EFF, 0xCF00, 0x4F00, 0x7F7F, 0xFF7F, 0x7F80, 0xFF80, 0x7FC0,
              0xFF81, 0x7F81, 0x3F00, 0x3EC0, 0x3FC0, 0x4040, 0x40A0]
FP32_EDGES = [0x00000000, 0x80000000, 0x00000001, 0x3F800000, 0xBF800000, 0x3F000000,
              0x3FC00000, 0x4EFFFFFF, 0xCF000000, 0x4F000000, 0x7F800000, 0xFF800000,
              0x7FC00000, 0x7F800001, 0x007FFFFF]
DEC_SCALES = [-128, -20, -7, 0, 6, 20, 127]
BLOCK_SCALES = [0, 1, 100, 120, 127, 134, 150, 254, 255]


def decoder_beats(p, rng):
    """(dtype, element codes, block scales per part, scale) beats: every MX code in every
    lane position over the block scales (0, the NaN 0xFF, around the bias) and scales
    (both ends); BF16 / FP32 edges (zeros, subnormals, int32 boundary, ties, +-Inf, NaN)
    in every lane; random elements."""
    parts, n = block_parts(p)
    beats = []
    for dtype in dtypes(p):
        k = per_beat(p, dtype)
        bits = 8 * ELEM_BYTES[dtype]
        if dtype in MX:
            pool = list(range(256))
            for bs_i, sc in enumerate(DEC_SCALES):
                rot = rng.randrange(256)
                codes = pool[rot:] + pool[:rot]
                for b0 in range(0, 256, k):
                    bss = [BLOCK_SCALES[(bs_i + j + b0) % len(BLOCK_SCALES)] for j in range(parts)]
                    beats.append((dtype, codes[b0:b0 + k], bss, sc))
            continue
        edges = {DTYPE_BF16: BF16_EDGES, DTYPE_FP32: FP32_EDGES,
                 DTYPE_INT32: [0, 1, 0xFFFFFFFF, 0x7FFFFFFF, 0x80000000]}[dtype]
        for sc in DEC_SCALES:
            for off in range(0, len(edges), k):
                vals = (edges[off:] + edges)[:k]
                rng.shuffle(vals)
                beats.append((dtype, vals, [rng.getrandbits(8) for _ in range(parts)], sc))
        for _ in range(10):
            vals = [rng.getrandbits(bits) for _ in range(k)]
            beats.append((dtype, vals, [rng.getrandbits(8) for _ in range(parts)],
                          rng.randint(-128, 127)))
    rng.shuffle(beats)
    return beats


def decoder_expected(p, beat):
    """The model's q of each of the beat's elements (MX: each block part decoded as a
    block of its own with its scale byte)."""
    dtype, vals, bss, scale = beat
    eb = ELEM_BYTES[dtype]
    if dtype not in MX:
        payload = b"".join(v.to_bytes(eb, "big") for v in vals)
        return [int(q) for q in N.decode(dtype, payload, len(vals), scale)[0]]
    _, n = block_parts(p)
    out = []
    for j, bs in enumerate(bss):
        codes = vals[j * n:(j + 1) * n]
        payload = bytes([bs]) + bytes(MX_SCALE_LINE - 1) + bytes(codes) + bytes(MX_BLOCK - n)
        out += [int(q) for q in N.decode(dtype, payload, MX_BLOCK, scale)[0][:n]]
    return out


@pytest.mark.parametrize("name", ["w128", "w256", "w512"])
def test_beat_decoder(name):
    """Each lane of a beat, in every dtype of the build, bit-exact with the model's
    `decode`, BeatDecoder.LATENCY cycles after the beat goes in, beats back to back with
    the dtype changing from one to the next."""
    p = PARAMS[name]
    beats = decoder_beats(p, random.Random(7))
    dut = BeatDecoder(p)
    parts, _ = block_parts(p)
    assert BeatDecoder.LATENCY == 1
    got = []
    # the lanes' exponent bases, as the pass forms them (there: registered with the beat)
    top = Module()
    top.submodules.dut = dut
    base_any, base_small = BeatDecoder.bases(p, dut.dtype, dut.scale,
                                             [dut.block_scale[j] for j in range(parts)])
    for j in range(parts):
        top.d.comb += [dut.base_any[j].eq(base_any[j]), dut.base_small[j].eq(base_small[j])]

    async def bench(ctx):
        for dtype, vals, bss, scale in beats:
            eb = ELEM_BYTES[dtype]
            wire = b"".join(v.to_bytes(eb, "big") for v in vals)
            ctx.set(dut.beat, int.from_bytes(wire, "little"))
            ctx.set(dut.dtype, dtype)
            ctx.set(dut.mx, dtype in MX)
            ctx.set(dut.bf16, dtype == DTYPE_BF16)
            ctx.set(dut.scale, scale)
            for j in range(parts):
                ctx.set(dut.block_scale[j], bss[j])
            await ctx.tick()
            got.append([ctx.get(dut.q[i]) for i in range(len(vals))])

    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    bad = []
    for beat, q in zip(beats, got):
        want = decoder_expected(p, beat)
        for i, (g, w) in enumerate(zip(q, want)):
            if g != w:
                bad.append(f"dtype {beat[0]} scale {beat[3]} lane {i} elem {beat[1][i]:#x}: "
                           f"rtl {g} model {w}")
    assert not bad, f"{len(bad)} mismatches:\n" + "\n".join(bad[:10])
