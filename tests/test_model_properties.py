"""Property-based tests (hypothesis) of the golden model's numerics,
tb/model/numerics.py, against docs/SPEC.md.

Every expected value here is computed from the SPEC text with exact rational
arithmetic (``fractions.Fraction``) and a hand-written round-half-to-even; no
expected value is taken from the model, and no float rounding by numpy is
used. The two exceptions are metamorphic: "saturation first" and "order
independence" compare the model with itself under a relation the SPEC states.
Reference values of FP32/BF16 codes come from Python's own IEEE binary32
unpacking (``struct``), of FP8/INT8 element codes from a small decoder written
from the OCP MX v1.0 definitions quoted in SPEC section 4.

What is checked (SPEC clause in brackets):

* ingress, FP32/BF16 [4 "Ingress conversion"]: q = RNE(v * 2^scale) saturated
  to int32; +-Inf saturates; NaN gives 0 and the NaN flag;
* ingress, MX [4]: element value times 2^(scale byte - 127), then as above;
  a block with scale byte 0xFF is NaN as a whole;
* egress, FP32/BF16 [4 "Egress conversion", 10.8]: the encoded value is within
  half an ulp of a * 2^-scale (so relative error <= 2^-24 / 2^-8 in the
  normal range: 24- and 8-bit significands), ties to even, beyond the range
  +-Inf without OVERFLOW, an accumulator of 0 is +0, negatives keep their sign;
* egress, MX [4, 10.8, 10.9]: the shared exponent / scale byte rule (with the
  2^-126 all-zero rule, the -127 clamp and the NaN block above 127), elements
  within half a unit of the element type at 2^X, saturated to the largest
  normal, -0 for negatives rounding to zero, zero scale-line padding, and
  OVERFLOW exactly for NaN blocks; decoding the result gives back RNE of the
  element values;
* saturation first [4]: accumulators beyond int32 set OVERFLOW and encode as
  their int32-saturated value, for every dtype;
* order independence [4 "Accumulation is exact", 5]: the RESULT frames of the
  switch model are bit-identical whatever order the workers' DATA frames
  arrive in, and equal the egress conversion of the exact sum;
* identities: INT32 is taken and sent as is [4]; FP32/BF16 values that are
  exactly representable in both the float format and int32 fixed point
  round-trip exactly (a -0 input comes back as +0, 10.8).

Runs are deterministic (``derandomize=True``, no example database), as the
project requires the same seed to give the same result.
"""

import math
import struct
from fractions import Fraction

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from tb.model import numerics as N
from tb.model.frames import (BF16, DTYPES, FLAG_NAN, FLAG_OVERFLOW, FP32, INT32,
                             MX_DTYPES, MXFP8_E4M3, MXFP8_E5M2, MXINT8, data_frame,
                             parse_frame)
from tb.model.switch import SwitchModel

MAX = 2**31 - 1
MIN = -2**31
HALF = Fraction(1, 2)
TWO = Fraction(2)


def props(n):
    """Deterministic settings: same examples on every run, no saved database
    (which would replay old failures and make runs differ)."""
    return settings(max_examples=n, deadline=None, derandomize=True, database=None)


# ---------------------------------------------------------------------------
# exact reference arithmetic
# ---------------------------------------------------------------------------
def rne(x: Fraction) -> int:
    """Round half to even, on exact rationals."""
    fl = x.numerator // x.denominator          # floor, also for negatives
    rem = x - fl
    if rem > HALF or (rem == HALF and fl % 2 == 1):
        return fl + 1
    return fl


def sat32(n: int) -> int:
    return min(max(n, MIN), MAX)


def floor_log2(x: Fraction) -> int:
    """floor(log2(x)) for x > 0, exactly."""
    n = x.numerator.bit_length() - x.denominator.bit_length()
    if TWO ** n > x:
        n -= 1
    elif TWO ** (n + 1) <= x:
        n += 1
    assert TWO ** n <= x < TWO ** (n + 1)
    return n


# IEEE binary32 / bfloat16: 8 exponent bits, bias 127; BF16 is the top half of
# a binary32 (SPEC 4 "bfloat16"), so both are read with Python's binary32.
IEEE = {FP32: dict(width=32, mbits=23), BF16: dict(width=16, mbits=7)}
EMIN = -126          # exponent of the smallest normal, FP32 and BF16
EMAX = 127           # exponent of the largest normal


def ieee_value(dtype, code):
    """Python float (exact binary32 value, or inf/nan) of an FP32/BF16 code."""
    bits32 = code if dtype == FP32 else code << 16
    return struct.unpack(">f", bits32.to_bytes(4, "big"))[0]


def ieee_code(dtype, x: float):
    """Code of an exactly representable finite float, or None."""
    try:
        bits32 = int.from_bytes(struct.pack(">f", x), "big")
    except OverflowError:
        return None
    if ieee_value(FP32, bits32) != x:
        return None                           # not exact in binary32
    if dtype == BF16:
        if bits32 & 0xFFFF:
            return None                       # not exact in bfloat16
        return bits32 >> 16
    return bits32


# MX element types (SPEC 4, OCP MX v1.0): emax for the shared exponent,
# element quantisation parameters and the largest normal.
#   INT8: two's complement k * 2^-6;  E4M3: bias 7, no Inf, only S.1111.111 is
#   NaN;  E5M2: bias 15, IEEE-like (Inf, NaN at exponent 31).
MX = {
    MXINT8: dict(emax=0, maxnorm=Fraction(127, 64)),
    MXFP8_E4M3: dict(emax=8, maxnorm=Fraction(448), ebits=4, mbits=3, bias=7, ieee=False),
    MXFP8_E5M2: dict(emax=15, maxnorm=Fraction(57344), ebits=5, mbits=2, bias=15, ieee=True),
}


def mx_elem(dtype, code):
    """(kind, negative, |value|) of an MX element byte; kind num/inf/nan."""
    if dtype == MXINT8:
        k = code - 256 if code >= 128 else code
        return "num", k < 0, Fraction(abs(k), 64)
    p = MX[dtype]
    eb, mb, bias = p["ebits"], p["mbits"], p["bias"]
    neg = bool(code >> 7)
    e = (code >> mb) & ((1 << eb) - 1)
    m = code & ((1 << mb) - 1)
    top = (1 << eb) - 1
    if p["ieee"] and e == top:
        return ("nan" if m else "inf"), neg, None
    if not p["ieee"] and e == top and m == (1 << mb) - 1:
        return "nan", neg, None
    if e == 0:                                # subnormal
        mag = Fraction(m, 1 << mb) * TWO ** (1 - bias)
    else:
        mag = Fraction((1 << mb) + m, 1 << mb) * TWO ** (e - bias)
    return "num", neg, mag


def mx_half_unit(dtype, t: Fraction) -> Fraction:
    """Half the spacing of the element type's values around |t| (its
    quantum in t's binade, subnormals included)."""
    if dtype == MXINT8:
        return Fraction(1, 128)
    p = MX[dtype]
    emin = 1 - p["bias"]
    k = emin if t == 0 else max(floor_log2(abs(t)), emin)
    return TWO ** (k - p["mbits"] - 1)


def to_fixed(value, negative, scale, kind="num"):
    """SPEC 4 ingress of one element of real value +-value."""
    if kind == "nan":
        return 0
    if kind == "inf":
        return MIN if negative else MAX
    v = -value if negative else value
    return sat32(rne(v * TWO ** scale))


# ---------------------------------------------------------------------------
# strategies
# ---------------------------------------------------------------------------
scales = st.integers(-128, 127)
int32s = st.integers(MIN, MAX)


@st.composite
def ieee_codes(draw, dtype, scale):
    """FP32/BF16 codes, biased towards values whose v * 2^scale is near the
    int32 range, exact rounding ties, and the specials."""
    w, mb = IEEE[dtype]["width"], IEEE[dtype]["mbits"]
    sign = draw(st.integers(0, 1)) << (w - 1)
    kind = draw(st.sampled_from(["any", "near", "near", "tie", "special"]))
    if kind == "near":
        # biased exponent so that |v * 2^scale| is in [2^-3, 2^33)
        e = draw(st.integers(max(0, 124 - scale), min(254, 160 - scale)))
        return sign | (e << mb) | draw(st.integers(0, (1 << mb) - 1))
    if kind == "tie":
        # v * 2^scale = k + 1/2 exactly: a rounding tie (representable when
        # 2k+1 fits the significand and the exponent is in range)
        k = draw(st.integers(0, (1 << mb) - 1))
        code = ieee_code(dtype, math.ldexp(2 * k + 1, -scale - 1))
        if code is not None:
            return sign | code                # (else: any code, below)
    if kind == "special":
        mant = draw(st.sampled_from([0, 0, 1, 1 << (mb - 1), (1 << mb) - 1]))
        return sign | (0xFF << mb) | mant     # +-Inf or a NaN
    if dtype == FP32:
        # hypothesis' own binary32 floats (subnormals, extremes, Inf, NaN)
        x = draw(st.floats(width=32, allow_nan=True, allow_infinity=True,
                           allow_subnormal=True))
        return sign | int.from_bytes(struct.pack(">f", x), "big")
    return sign | draw(st.integers(0, (1 << (w - 1)) - 1))     # any BF16 code


@st.composite
def acc_block(draw):
    """32 int32 accumulators with a random dynamic range: all zero, or
    elements of up to w bits, optionally with one outlier."""
    if draw(st.integers(0, 7)) == 0:
        return [0] * 32
    w = draw(st.integers(0, 31))
    blk = draw(st.lists(st.integers(-(1 << w), (1 << w) - 1), min_size=32, max_size=32))
    if draw(st.booleans()):
        blk[draw(st.integers(0, 31))] = draw(int32s)
    return blk


# ---------------------------------------------------------------------------
# ingress (SPEC 4: q = RNE(v * 2^scale), saturated; Inf saturates; NaN -> 0)
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [FP32, BF16], ids=["fp32", "bf16"])
@props(300)
@given(data=st.data(), scale=scales)
def test_float_decode_is_rne_of_exact_value(dtype, data, scale):
    codes = data.draw(st.lists(ieee_codes(dtype, scale), min_size=1, max_size=8))
    width = IEEE[dtype]["width"] // 8
    payload = b"".join(c.to_bytes(width, "big") for c in codes)
    q, nan = N.decode(dtype, payload, len(codes), scale)

    want, want_nan = [], False
    for c in codes:
        x = ieee_value(dtype, c)
        if math.isnan(x):
            want.append(0)
            want_nan = True
        elif math.isinf(x):
            want.append(MAX if x > 0 else MIN)
        else:
            want.append(sat32(rne(Fraction(x) * TWO ** scale)))
    assert q.tolist() == want
    assert nan is want_nan


@pytest.mark.parametrize("dtype", MX_DTYPES, ids=["mxint8", "e4m3", "e5m2"])
@props(150)
@given(data=st.data(), scale=scales)
def test_mx_decode_is_rne_of_exact_value(dtype, data, scale):
    nblk = data.draw(st.integers(1, 3))
    # scale bytes: anything, with the NaN byte 0xFF and the extremes favoured
    sbytes = data.draw(st.lists(st.one_of(st.integers(0, 255),
                                          st.sampled_from([0, 127, 254, 255])),
                                min_size=nblk, max_size=nblk))
    elems = data.draw(st.binary(min_size=32 * nblk, max_size=32 * nblk))
    payload = bytes(sbytes) + bytes(64 - nblk) + elems
    q, nan = N.decode(dtype, payload, 32 * nblk, scale)

    want, want_nan = [], False
    for i, code in enumerate(elems):
        sb = sbytes[i // 32]
        kind, neg, mag = mx_elem(dtype, code)
        if sb == 0xFF:
            kind = "nan"                      # NaN block, whatever the element
        want_nan |= kind == "nan"
        if kind == "num":
            mag = mag * TWO ** (sb - 127)     # element value * 2^(scale byte - 127)
        want.append(to_fixed(mag, neg, scale, kind))
    assert q.tolist() == want
    assert nan is want_nan


# ---------------------------------------------------------------------------
# egress, FP32/BF16 (SPEC 4: RNE(a * 2^-scale) in the format; 10.8)
# ---------------------------------------------------------------------------
@st.composite
def rounding_ties(draw, mbits):
    """Accumulators exactly halfway between two values of a format with
    `mbits` mantissa bits: an odd significand of mbits + 2 bits (any shift)."""
    m = draw(st.integers(1 << (mbits + 1), (1 << (mbits + 2)) - 1)) | 1
    a = m << draw(st.integers(0, 30 - m.bit_length() + 1))
    return -a if draw(st.booleans()) else a


@pytest.mark.parametrize("dtype", [FP32, BF16], ids=["fp32", "bf16"])
@props(300)
@given(acc=st.lists(st.one_of(int32s, st.integers(-2**12, 2**12), st.integers(-4, 4),
                              rounding_ties(IEEE[FP32]["mbits"]),
                              rounding_ties(IEEE[BF16]["mbits"])),
                    min_size=1, max_size=8),
       # the edges: Inf above 2^128 (scale near -128), subnormals (near 127)
       scale=st.one_of(scales, st.sampled_from([-128, -104, -103, -97, -96, 125, 126, 127])))
@example(acc=[1, -1, 2, 3, -3], scale=127)   # +-2^-127: the only int32 subnormals
def test_float_encode_is_correctly_rounded(dtype, acc, scale):
    w, mb = IEEE[dtype]["width"], IEEE[dtype]["mbits"]
    out, ovf = N.encode(dtype, acc, len(acc), scale)
    assert len(out) == len(acc) * w // 8
    assert ovf is False                       # nothing saturates in int32 here
    # |w| at or above max + half an ulp rounds to Inf (IEEE RNE, 10.8)
    inf_at = Fraction((1 << (mb + 2)) - 1) * TWO ** (EMAX - mb - 1)
    for i, a in enumerate(acc):
        code = int.from_bytes(out[i * w // 8:(i + 1) * w // 8], "big")
        if a == 0:
            assert code == 0                  # exactly 0 encodes as +0
            continue
        assert code >> (w - 1) == (a < 0)     # sign kept, also for -0
        exact = abs(Fraction(a) * TWO ** -scale)
        y = abs(ieee_value(dtype, code))
        if exact >= inf_at:
            assert math.isinf(y)
            continue
        assert math.isfinite(y)
        half_ulp = TWO ** (max(floor_log2(exact), EMIN) - mb - 1)
        err = abs(Fraction(y) - exact)
        assert err <= half_ulp                # nearest ...
        if err == half_ulp:
            assert code & 1 == 0              # ... ties to even
        if exact >= TWO ** EMIN:
            # the usual relative bound in the normal range: 2^-24 / 2^-8
            assert err <= exact * TWO ** -(mb + 1)


# ---------------------------------------------------------------------------
# egress, MX (SPEC 4 shared exponent and elements; 10.8; 10.9 scale line)
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", MX_DTYPES, ids=["mxint8", "e4m3", "e5m2"])
@props(120)
@given(data=st.data(), blocks=st.lists(acc_block(), min_size=1, max_size=3))
def test_mx_encode_then_decode(dtype, data, blocks):
    nblk = len(blocks)
    acc = [a for b in blocks for a in b]
    emax, maxnorm = MX[dtype]["emax"], MX[dtype]["maxnorm"]
    # any scale, or one that puts the first block's shared exponent at an
    # edge: the -127 clamp, just below / above 127 (NaN block)
    scale = data.draw(scales)
    amax = max(abs(a) for a in blocks[0])
    if amax and data.draw(st.booleans()):
        target = data.draw(st.sampled_from([-135, -128, -127, -126, 126, 127, 128, 135]))
        scale = min(max(amax.bit_length() - 1 - emax - target, -128), 127)
    out, ovf = N.encode(dtype, acc, 32 * nblk, scale)
    assert len(out) == 64 + 32 * nblk
    assert out[nblk:64] == bytes(64 - nblk)   # scale line zero after the last block

    want_q, any_nan_block = [], False
    for b, blk in enumerate(blocks):
        v = [Fraction(a) * TWO ** -scale for a in blk]
        m = max(abs(x) for x in v) or TWO ** -126       # all-zero block: 2^-126
        x = max(floor_log2(m) - emax, -127)
        sb, codes = out[b], out[64 + 32 * b:64 + 32 * (b + 1)]
        if x > 127:                                      # NaN block
            assert sb == 0xFF and codes == bytes(32)
            any_nan_block = True
            want_q += [0] * 32
            continue
        assert sb == x + 127
        for vi, code in zip(v, codes):
            kind, neg, u = mx_elem(dtype, code)
            assert kind == "num"              # never NaN/Inf: saturation
            t = vi / TWO ** x                 # exact element value before rounding
            if vi == 0:
                assert code == 0              # exactly 0 is +0
            elif dtype == MXINT8:
                assert neg == (vi < 0 and u != 0)   # two's complement: no -0
            else:
                assert neg == (vi < 0)        # negatives keep the sign, even as -0
            if abs(t) >= maxnorm:
                assert u == maxnorm           # saturated to the largest normal
            else:
                err = abs(u - abs(t))
                half = mx_half_unit(dtype, t)
                assert err <= half            # RNE: within half a unit ...
                if err == half:               # ... ties to the even code
                    assert code % 2 == 0      # (INT8: even k <=> even byte)
            want_q.append(to_fixed(u * TWO ** x, neg, scale))
    assert ovf is any_nan_block               # no int32 saturation here (10.9)

    # decoding the RESULT payload is RNE of the element values (SPEC 4 ingress)
    q, nan = N.decode(dtype, out, 32 * nblk, scale)
    assert q.tolist() == want_q
    assert nan is any_nan_block


# ---------------------------------------------------------------------------
# saturation first (SPEC 4: saturate to int32, setting OVERFLOW, then convert)
# ---------------------------------------------------------------------------
wide = st.one_of(int32s, st.integers(-2**40, 2**40),
                 st.sampled_from([MAX + 1, MIN - 1, 2**63, -2**63 - 1, 2**100, -2**100]))


@pytest.mark.parametrize("dtype", DTYPES)
@props(60)
@given(data=st.data(), scale=scales)
def test_encode_saturates_accumulators_first(dtype, data, scale):
    count = data.draw(st.sampled_from([32, 64]) if dtype in MX_DTYPES else st.integers(1, 8))
    acc = data.draw(st.lists(wide, min_size=count, max_size=count))
    clamped = [sat32(a) for a in acc]
    out, ovf = N.encode(dtype, acc, count, scale)
    out_c, ovf_c = N.encode(dtype, clamped, count, scale)
    assert out == out_c
    assert ovf is (clamped != acc or ovf_c)
    if dtype not in MX_DTYPES:
        assert ovf_c is False                 # only saturation (or NaN blocks) set it
    if dtype == INT32:
        assert out == b"".join(struct.pack(">i", a) for a in clamped)


# ---------------------------------------------------------------------------
# order independence (SPEC 4 "identical whatever order"; 5) through the model
# ---------------------------------------------------------------------------
@st.composite
def worker_payloads(draw, dtype, count, scale):
    """A worker's payload: random bytes (NaN/Inf/anything), or the encoding of
    random int32 fixed-point values, which keeps the values near the int32
    range where partial sums can leave it."""
    if dtype != INT32 and draw(st.booleans()):
        width = {FP32: 4, BF16: 2}.get(dtype)
        n = width * count if width else 64 + count
        raw = bytearray(draw(st.binary(min_size=n, max_size=n)))
        if width is None:
            raw[count // 32:64] = bytes(64 - count // 32)   # scale-line padding
        return bytes(raw)
    vals = draw(st.lists(st.one_of(int32s, st.sampled_from([MAX, MIN, MAX - 1, MIN + 1])),
                         min_size=count, max_size=count))
    return N.encode(dtype, vals, count, scale)[0]


def run_round(dtype, count, scale, payloads, order):
    """Feed worker k's DATA frame on port k, in `order`; return the RESULT
    frames of the completing frame."""
    n = len(payloads)
    sw = SwitchModel(ports=n, slots=1, supported_dtypes=DTYPES)
    for i, k in enumerate(order):
        f = data_frame(worker_mac=0x020000000100 + k, worker_ip=0x0A000100 + k,
                       worker_port=5000 + k, job=0, slot=0, worker=k, seq=7,
                       dtype=dtype, count=count, scale=scale, payload=payloads[k])
        o = sw.process(k, f, t_last=1000)
        assert o.drop is None
        assert o.completed is (i == n - 1)
    return o.results


@props(80)
@given(data=st.data(), dtype=st.sampled_from(DTYPES), n=st.integers(2, 8), scale=scales)
def test_result_is_order_independent(data, dtype, n, scale):
    count = 32 if dtype in MX_DTYPES else data.draw(st.integers(1, 8))
    payloads = [data.draw(worker_payloads(dtype, count, scale)) for _ in range(n)]
    order = data.draw(st.permutations(range(n)))

    ref = run_round(dtype, count, scale, payloads, list(range(n)))
    assert run_round(dtype, count, scale, payloads, order) == ref

    # and the RESULT is the egress conversion of the exact sum (4), with NAN
    # from any contribution and OVERFLOW from the encoding (10.9)
    dec = [N.decode(dtype, p, count, scale) for p in payloads]
    exact = [sum(int(q[i]) for q, _ in dec) for i in range(count)]
    payload, ovf = N.encode(dtype, exact, count, scale)
    r = parse_frame(ref[0][1])
    assert r.payload == payload
    assert bool(r.hdr.flags & FLAG_OVERFLOW) is ovf
    assert bool(r.hdr.flags & FLAG_NAN) is any(nan for _, nan in dec)


# ---------------------------------------------------------------------------
# identities
# ---------------------------------------------------------------------------
@props(100)
@given(vals=st.lists(int32s, min_size=1, max_size=16), scale=scales)
def test_int32_identity(vals, scale):
    payload = b"".join(struct.pack(">i", v) for v in vals)
    q, nan = N.decode(INT32, payload, len(vals), scale)     # scale is ignored
    assert q.tolist() == vals and nan is False
    assert N.encode(INT32, q, len(vals), scale) == (payload, False)


@pytest.mark.parametrize("dtype", [FP32, BF16], ids=["fp32", "bf16"])
@props(200)
@given(data=st.data(), scale=scales, neg_zero=st.booleans())
def test_float_representable_round_trip(dtype, data, scale, neg_zero):
    """q = +-(odd m < 2^p) * 2^k in int32, with q * 2^-scale inside the
    format's range, is exact both in the format and in int32 fixed point, so
    encode and decode invert each other. A trailing -0 element (neg_zero)
    decodes to 0 and is sent back as +0 (10.8)."""
    w, mb = IEEE[dtype]["width"], IEEE[dtype]["mbits"]
    qs = []
    for _ in range(data.draw(st.integers(1, 8))):
        m = 2 * data.draw(st.integers(0, (1 << mb) - 1)) + 1
        k = data.draw(st.integers(0, 31 - m.bit_length()))
        q = -(m << k) if data.draw(st.booleans()) else m << k
        # lowest set bit at or above the smallest subnormal, value below 2^128
        assume(k - scale >= EMIN - mb and q.bit_length() - 1 - scale <= EMAX)
        qs.append(q)
    codes = [ieee_code(dtype, float(Fraction(q) * TWO ** -scale)) for q in qs]
    assert None not in codes                  # the construction is representable
    nbytes = w // 8
    payload = b"".join(c.to_bytes(nbytes, "big") for c in codes)
    count = len(qs) + neg_zero
    plus_zero, minus_zero = bytes(nbytes), (1 << (w - 1)).to_bytes(nbytes, "big")

    # fixed point -> format: exact
    sent = payload + (plus_zero if neg_zero else b"")
    assert N.encode(dtype, qs + [0] * neg_zero, count, scale) == (sent, False)
    # format -> fixed point: exact, and back to the same bytes (-0 -> +0)
    q, nan = N.decode(dtype, payload + (minus_zero if neg_zero else b""), count, scale)
    assert q.tolist() == qs + [0] * neg_zero and nan is False
    assert N.encode(dtype, q, count, scale)[0] == sent
