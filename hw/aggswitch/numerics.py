"""Numeric conversion blocks of the non-INT32 dtypes (SPEC §4), all combinational.

Ingress: :class:`FloatToFixed` (FP32, BF16) and :class:`MxElementToFixed` (MXINT8,
MXFP8 E4M3/E5M2) turn one element into its int32-range fixed-point contribution
q = RNE(v * 2**scale). Egress: :class:`FixedToFloat` (FP32, BF16) and
:class:`MxBlockEncoder` (one 32-element MX block) turn exact accumulators back.

Every block is bit-exact with the golden model tb/model/numerics.py, including its
documented choices: NaN contributes 0 and raises `nan`; +-Inf saturates; an MX block
scale of 0xFF is NaN; FP32/BF16 egress rounds to +-Inf beyond the format's range
without OVERFLOW; MX elements saturate to the largest normal without OVERFLOW; a
negative value that rounds to zero keeps its sign in the float types (-0), an
accumulator of 0 is +0; a NaN block (shared exponent above 127) is scale byte 0xFF
with element bytes 0x00 and raises OVERFLOW; the MXINT8 byte 0x80 decodes as
-128 * 2**-6 = -2 (times the block scale) and is never produced.

Everything is integer logic: a finite value is a significand M times 2**E, and
rounding is round-half-to-even on the bits shifted out (guard + sticky).
"""

from dataclasses import dataclass

from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .params import (DTYPE_BF16, DTYPE_FP32, DTYPE_MXFP8_E4M3, DTYPE_MXFP8_E5M2,
                     DTYPE_MXINT8)

__all__ = ["FloatFormat", "FLOAT_FORMATS", "MX_FORMATS", "DTYPE_FORMAT",
           "lzc", "rne_shr", "rne_shr_parts", "sat_abs",
           "FloatToFixed", "MxElementToFixed", "FixedToFloat", "MxBlockEncoder"]

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1
E8M0_BIAS = 127
E8M0_NAN = 0xFF


# --------------------------------------------------------------------------
# formats (elaboration-time descriptions; same definitions as the model's)
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class FloatFormat:
    """Binary floating-point element format. kind "ieee": the all-ones exponent is
    Inf (mantissa 0) or NaN. kind "e4m3" (OCP): no Inf, only S.1111.111 is NaN."""
    name: str
    ebits: int
    mbits: int
    bias: int
    kind: str

    @property
    def width(self):
        return 1 + self.ebits + self.mbits

    @property
    def emask(self):
        return (1 << self.ebits) - 1

    @property
    def emin(self):
        """Exponent of the smallest normal (subnormals share it)."""
        return 1 - self.bias

    @property
    def max_field(self):
        """Largest finite magnitude encoding (bits without the sign)."""
        if self.kind == "ieee":
            return ((self.emask - 1) << self.mbits) | ((1 << self.mbits) - 1)
        return (self.emask << self.mbits) | ((1 << self.mbits) - 2)

    @property
    def inf_field(self):
        return self.emask << self.mbits

    @property
    def emax(self):
        """Exponent of the largest normal, floor(log2(max normal))."""
        return (self.max_field >> self.mbits) - self.bias


FLOAT_FORMATS = {
    "fp32": FloatFormat("fp32", 8, 23, 127, "ieee"),
    "bf16": FloatFormat("bf16", 8, 7, 127, "ieee"),
    "e4m3": FloatFormat("e4m3", 4, 3, 7, "e4m3"),
    "e5m2": FloatFormat("e5m2", 5, 2, 15, "ieee"),
}

# MX element types: element format (None: MXINT8, two's complement with an implicit
# 2**-6) and the emax of the shared-exponent rule X = floor(log2(max|v|)) - emax.
MX_FORMATS = {
    "mxint8": (None, 0),
    "e4m3": (FLOAT_FORMATS["e4m3"], 8),
    "e5m2": (FLOAT_FORMATS["e5m2"], 15),
}
MXINT8_FRAC = 6     # implicit 2**-6
MXINT8_MAX = 127    # egress saturates to +-127 * 2**-6 (0x80 is never produced)

DTYPE_FORMAT = {DTYPE_FP32: "fp32", DTYPE_BF16: "bf16", DTYPE_MXINT8: "mxint8",
                DTYPE_MXFP8_E4M3: "e4m3", DTYPE_MXFP8_E5M2: "e5m2"}


# --------------------------------------------------------------------------
# helpers: build logic into module `m`, return the Signals (or expressions) made
# --------------------------------------------------------------------------
def or_tree(values):
    """OR of many values as a balanced tree (a Python fold would build a chain)."""
    values = list(values)
    while len(values) > 1:
        values = [values[i] | values[i + 1] if i + 1 < len(values) else values[i]
                  for i in range(0, len(values), 2)]
    return values[0]


def lzc(m, x, name="lzc"):
    """Leading-zero count of unsigned `x` as a log2-depth tree.

    Returns Signals (count, zero): `count` has ceil(log2(len(x))) bits and is
    meaningful only when `zero` (x == 0) is low. The input is padded at the LSB side to
    a power of two, which leaves the count of a non-zero x unchanged. The tree nodes
    are shared expression objects (the netlist emits each once)."""
    width = len(x)
    size = 1 << max(0, (width - 1).bit_length())
    v = Cat(Const(0, size - width), x)

    def tree(v):
        if len(v) == 1:
            return Const(0, 0), ~v[0]
        half = len(v) // 2
        c_lo, z_lo = tree(v[:half])
        c_hi, z_hi = tree(v[half:])
        # top half empty: count its width plus the low half's zeros
        return Mux(z_hi, Cat(c_lo, Const(1, 1)), Cat(c_hi, Const(0, 1))), z_hi & z_lo

    c, z = tree(v)
    count = Signal(len(c), name=f"{name}_count")
    zero = Signal(name=f"{name}_zero")
    m.d.comb += [count.eq(c), zero.eq(z)]
    return count, zero


def rne_shr_parts(m, x, amount, name="rne", width=None):
    """x >> amount and its round-half-to-even increment `up` (0/1), as Signals.

    `x` unsigned, `amount` unsigned in 0..len(x)+1 (callers clamp: beyond that the
    result is 0 anyway). Guard is the last bit shifted out, sticky the OR of the rest;
    the sticky mask is decoded from `amount` alone, in parallel with the shift.
    `width`: bits of the quotient to keep, when the caller knows it is that narrow
    (e.g. a significand); only those leave the shifter and reach the incrementer."""
    xw = len(x)
    q = Signal(xw if width is None else width, name=f"{name}_q")
    up = Signal(name=f"{name}_up")
    xe = Cat(Const(0, 1), x, Const(0, 1))           # xe[j] = x[j-1]: in range for every amount
    guard = xe.bit_select(amount, 1)                 # x[amount-1], 0 when amount == 0
    ones = Const((1 << (xw + 2)) - 1, xw + 2)
    below = ~(ones << amount)[:xw + 2]               # xe bits under the guard
    sticky = (xe & below).any()
    m.d.comb += [
        q.eq((x >> amount)[:len(q)]),
        up.eq(guard & (sticky | q[0])),
    ]
    return q, up


def rne_shr(m, x, amount, name="rne", width=None):
    """RNE(x / 2**amount), one bit wider than the quotient kept (rounding may carry)."""
    q, up = rne_shr_parts(m, x, amount, name, width)
    return q + up


def sat_abs(m, acc, name="sat"):
    """int32 saturation of a signed accumulator as Signals: sign, magnitude (32 bits,
    <= 2**31) and overflow. acc is outside int32 exactly when its bits 31 and up are not
    all equal (a few-input test, not two wide compares); in range, |acc| needs only the
    low 32 bits negated."""
    neg = acc[-1]
    top = acc[31:]
    over = Signal(name=f"{name}_over")
    mag = Signal(32, name=f"{name}_mag")
    low = acc[:32]
    m.d.comb += [
        over.eq(top.any() & ~top.all()),
        mag.eq(Mux(over, Mux(neg, 1 << 31, INT32_MAX), Mux(neg, -low, low)[:32])),
    ]
    return neg, mag, over


def _clamp(value, lo, hi, width):
    """Clamp a signed expression to lo..hi (elaboration-time ints), as `width` bits."""
    return Mux(value < lo, lo, Mux(value > hi, hi, value))[:width]


def _decode_float(fmt, bits):
    """Float bits -> (sign, significand M, biased exponent with subnormals at 1, nan,
    inf): the value is (-1)**sign * M * 2**(exp - bias - mbits). M is 0 for NaN/Inf."""
    sign = bits[fmt.width - 1]
    expf = bits[fmt.mbits:fmt.mbits + fmt.ebits]
    mant = bits[:fmt.mbits]
    if fmt.kind == "ieee":
        special = expf == fmt.emask
        nan = special & mant.any()
        inf = special & ~mant.any()
    else:
        nan = (expf == fmt.emask) & mant.all()
        inf = Const(0, 1)
    normal = expf.any()
    sig = Mux(nan | inf, 0, Cat(mant, normal))
    exp = Mux(normal, expf, 1)
    return sign, sig, exp, nan, inf


def _fixed_from_parts(m, sig, sign, k, nan, inf, prefix):
    """q = RNE((-1)**sign * sig * 2**k) saturated to int32; NaN -> 0, Inf -> saturated.

    `sig` unsigned, `k` signed. k >= 0 is an exact left shift; a result of 2**31 or
    more saturates, so the shift caps at 31 (a non-zero sig shifted by 31 already
    does). k < 0 rounds on the bits shifted out and can never saturate (sig < 2**31)."""
    width = len(sig)
    assert width <= 31
    sig_s = Signal(width, name=f"{prefix}_sig")
    m.d.comb += sig_s.eq(sig)
    sig = sig_s
    right = Signal(name=f"{prefix}_right")
    lsh = Signal(5, name=f"{prefix}_lsh")
    rsh = Signal(range(width + 2), name=f"{prefix}_rsh")
    m.d.comb += [
        right.eq(k < 0),
        lsh.eq(_clamp(k, 0, 31, 5)),
        rsh.eq(_clamp(-k, 0, width + 1, len(rsh))),
    ]
    wide = sig << lsh
    sat_l = wide[31:].any()
    q_r, up = rne_shr_parts(m, sig, rsh, f"{prefix}_rne")

    mag = Signal(31, name=f"{prefix}_mag")
    inc = Signal(name=f"{prefix}_inc")
    sat = Signal(name=f"{prefix}_sat")
    m.d.comb += [
        mag.eq(Mux(right, q_r, wide[:31])),
        inc.eq(right & up),
        sat.eq(inf | (~right & sat_l)),
    ]
    # Sign and rounding in one adder: -(mag + inc) = ~mag + (1 - inc).
    smask = sign.replicate(32)
    val = ((mag ^ smask) + (inc ^ sign))[:32]
    return Mux(nan, 0, Mux(sat, Mux(sign, INT32_MIN, INT32_MAX), val.as_signed()))


# --------------------------------------------------------------------------
# ingress
# --------------------------------------------------------------------------
class FloatToFixed(wiring.Component):
    """One FP32/BF16 element -> q = RNE(v * 2**scale) saturated to int32 (NaN: 0 and
    `nan`; +-Inf: saturated)."""

    def __init__(self, fmt):
        if fmt not in ("fp32", "bf16"):
            raise ValueError(f"FloatToFixed format must be fp32 or bf16, not {fmt!r}")
        self.fmt = FLOAT_FORMATS[fmt]
        super().__init__({
            "bits": In(self.fmt.width),
            "scale": In(signed(8)),
            "q": Out(signed(32)),
            "nan": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        f = self.fmt
        sign, sig, exp, nan, inf = _decode_float(f, self.bits)
        k = Signal(signed(11))          # exp + scale - bias - mbits: -277..232 for FP32
        m.d.comb += k.eq(exp + self.scale - (f.bias + f.mbits))
        m.d.comb += [
            self.q.eq(_fixed_from_parts(m, sig, sign, k, nan, inf, "f2x")),
            self.nan.eq(nan),
        ]
        return m


class MxElementToFixed(wiring.Component):
    """One MX element with its block's E8M0 scale -> q = RNE(v * 2**scale) saturated
    to int32, v = element * 2**(block_scale - 127). `nan`: a NaN element, or the whole
    block is NaN (block_scale 0xFF)."""

    def __init__(self, fmt):
        if fmt not in MX_FORMATS:
            raise ValueError(f"MX element format must be one of {sorted(MX_FORMATS)}, not {fmt!r}")
        self.fmt_name = fmt
        self.fmt = MX_FORMATS[fmt][0]
        super().__init__({
            "bits": In(8),
            "block_scale": In(8),
            "scale": In(signed(8)),
            "q": Out(signed(32)),
            "nan": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        f = self.fmt
        if f is None:
            # MXINT8: two's complement, |-128| = 128 fits 8 unsigned bits; 0x80 is -2.
            v = self.bits.as_signed()
            sign = self.bits[7]
            sig = Mux(sign, -v, v)[:8]
            exp_term = -MXINT8_FRAC
            exp = Const(0, 1)
            nan = Const(0, 1)
            inf = Const(0, 1)
        else:
            sign, sig, exp, nan, inf = _decode_float(f, self.bits)
            exp_term = -(f.bias + f.mbits)
        block_nan = self.block_scale == E8M0_NAN
        nan_all = Signal()
        k = Signal(signed(11))          # exponent of sig's LSB + block scale + scale
        m.d.comb += [
            nan_all.eq(nan | block_nan),
            k.eq(exp + self.block_scale + self.scale + (exp_term - E8M0_BIAS)),
        ]
        q = _fixed_from_parts(m, sig, sign, k, nan_all, inf & ~nan_all, "mx2x")
        m.d.comb += [self.q.eq(q), self.nan.eq(nan_all)]
        return m


# --------------------------------------------------------------------------
# egress
# --------------------------------------------------------------------------
class FixedToFloat(wiring.Component):
    """Accumulator -> FP32/BF16 bits of RNE(sat32(acc) * 2**-scale). Beyond the format's
    range the result is +-Inf (IEEE), which does not set `overflow`: that reports only
    the int32 saturation of `acc`."""

    def __init__(self, fmt, acc_width):
        if fmt not in ("fp32", "bf16"):
            raise ValueError(f"FixedToFloat format must be fp32 or bf16, not {fmt!r}")
        if acc_width < 32:
            raise ValueError("acc_width must be at least 32")
        self.fmt = FLOAT_FORMATS[fmt]
        self.acc_width = acc_width
        super().__init__({
            "acc": In(signed(acc_width)),
            "scale": In(signed(8)),
            "bits": Out(self.fmt.width),
            "overflow": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        f = self.fmt
        sign, mag, over = sat_abs(m, self.acc)

        # Normalise: the leading one of |a| (at most 2**31) moves to bit 31.
        lz, zero = lzc(m, mag, "lz")
        norm = Signal(32)
        m.d.comb += norm.eq((mag << lz)[:32])

        # Biased exponent of the leading one: floor(log2|a|) - scale + bias.
        exp_pre = Signal(signed(11))
        m.d.comb += exp_pre.eq(31 - lz - self.scale + f.bias)

        # Below the normal range (biased exponent <= 0) the significand shifts right
        # by 1 - exp_pre more. |a| >= 1 and scale <= 127 bound that shift at elaboration
        # time (1 for FP32/BF16), so the variable part of the shifter stays tiny.
        dmax = min(max(0, 1 - (f.bias - 127)), f.mbits + 2)
        extra = Signal(range(dmax + 1))
        m.d.comb += extra.eq(_clamp(1 - exp_pre, 0, dmax, len(extra)))

        # The fixed part of the shift (31 - mbits) is wiring: keep the guard bit, fold the
        # bits below it into one sticky bit, then shift by 2 + extra with RNE.
        fixed = 31 - f.mbits
        head = Cat(norm[:fixed - 1].any(), norm[fixed - 1:])
        q, up = rne_shr_parts(m, head, extra + 2, "rnd", width=f.mbits + 1)

        # Round in the packed encoding: the increment carries from the mantissa into the
        # exponent field (subnormal -> smallest normal, 1.1..1 -> next binade, largest
        # finite -> Inf), so one adder does the rounding and the exponent adjustment.
        normal = q[f.mbits]             # leading one kept: not shifted into a subnormal
        packed = Signal(f.width - 1)
        m.d.comb += packed.eq(Cat(q[:f.mbits], Mux(normal, exp_pre[:f.ebits], 0)) + up)
        inf = ~zero & (exp_pre >= f.emask)
        m.d.comb += [
            self.bits.eq(Cat(Mux(inf, f.inf_field, packed), sign)),
            self.overflow.eq(over),
        ]
        return m


class MxBlockEncoder(wiring.Component):
    """One block of `block` accumulators -> OCP MX v1.0 block (E8M0 scale byte +
    element bytes) of v = sat32(acc) * 2**-scale, as tb/model/numerics.encode.

    Structure (why it is shallow): floor(log2(max|v|)) needs only the bit length of the
    block maximum, which is the bit length of the OR of all magnitudes -- an OR tree
    and one leading-zero count for the whole block, no comparator tree. The block then
    yields one shared shift bound; per element there is one right shift with RNE (plus,
    for the FP8 types, the element's own leading-one detection, which runs in parallel
    with the block reduction and so stays off the critical path)."""

    def __init__(self, fmt, acc_width, block=32):
        if fmt not in MX_FORMATS:
            raise ValueError(f"MX element format must be one of {sorted(MX_FORMATS)}, not {fmt!r}")
        if acc_width < 32:
            raise ValueError("acc_width must be at least 32")
        self.fmt_name = fmt
        self.fmt, self.emax = MX_FORMATS[fmt]
        self.acc_width = acc_width
        self.block = block
        super().__init__({
            "acc": In(signed(acc_width)).array(block),
            "scale": In(signed(8)),
            "elems": Out(8 * block),
            "scale_byte": Out(8),
            "overflow": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        f, emax = self.fmt, self.emax
        # An element's value u = |a| * 2**e_blk is quantised with its ulp at 2**(r - fbits)
        # times 2**e_blk, r = bit index in |a|. MXINT8 is the fixed-point case: ulp 2**-6
        # everywhere ("one binade", emin 0); the floats use their own binade, floored at emin.
        fbits = MXINT8_FRAC if f is None else f.mbits
        emin = 0 if f is None else f.emin

        signs, mags, overs = [], [], []
        for i in range(self.block):
            neg, mag, over = sat_abs(m, self.acc[i], f"sat{i}")
            signs.append(neg)
            mags.append(mag)
            overs.append(over)

        # --- shared exponent ----------------------------------------------------
        orv = Signal(32)
        m.d.comb += orv.eq(or_tree(mags))
        lz_blk, zero_blk = lzc(m, orv, "lzblk")
        # X = floor(log2 max|v|) - emax = (31 - lz) - scale - emax: the scale part is
        # ready before the block reduction, so only one subtraction follows the LZC.
        x_base = Signal(signed(10))
        x_raw = Signal(signed(11))
        m.d.comb += [
            x_base.eq(31 - emax - self.scale),
            x_raw.eq(x_base - lz_blk),
        ]
        clamp_lo = Signal()
        nan_blk = Signal()
        x = Signal(signed(9))
        x_zero = max(-126 - emax, -127)    # all-zero block: m = 2**-126
        m.d.comb += [
            clamp_lo.eq(~zero_blk & (x_raw < -127)),
            nan_blk.eq(~zero_blk & (x_raw > 127)),
            x.eq(Mux(zero_blk, x_zero, Mux(clamp_lo, -127, x_raw))),
            self.scale_byte.eq(Mux(nan_blk, E8M0_NAN, x + E8M0_BIAS)),
            self.overflow.eq(Cat(*overs).any() | nan_blk),
        ]

        # Elements are u = |a| * 2**e_blk, e_blk = -scale - X. Unclamped the scale cancels
        # (e_blk = emax - 31 + lz): the element grid depends on the block's leading one only.
        # The lowest rounding position the block allows, as a bit of |a| << fbits, is
        # lo = emin - e_blk = emin - emax + 31 - lz, floored at 0 (every element's own
        # r >= n_i >= 0 takes over there). The X = -127 clamp needs no term of its own: it
        # only happens for nmax < emax - 127 + scale <= emax, where lo < emin <= 0 already
        # (and clamped, emin - e_blk = emin - 127 + scale <= 0 as well); the all-zero block
        # (count 31) lands at <= 0 too. So lo needs nothing but the LZC.
        assert emin <= 0
        lo_blk = Signal(5)
        m.d.comb += lo_blk.eq(_clamp((emin - emax + 31) - lz_blk, 0, 31, 5))
        if f is not None:
            # Biased exponent of an element whose leading one is bit r of |a|:
            # r + e_blk + bias, with both branches of e_blk formed before the mux.
            eb = Signal(signed(11))
            m.d.comb += eb.eq(Mux(clamp_lo, (E8M0_BIAS + f.bias) - self.scale,
                                  lz_blk + (emax - 31 + f.bias)))

        # --- per element ----------------------------------------------------------
        for i in range(self.block):
            mag, sign = mags[i], signs[i]
            ext = Cat(Const(0, fbits), mag)        # |a| << fbits: the shift is always right
            if f is None:
                q = Signal(8, name=f"q{i}")
                m.d.comb += q.eq(rne_shr(m, ext, lo_blk, f"rnd{i}", width=7))
                qs = Mux(q > MXINT8_MAX, MXINT8_MAX, q)[:8]
                byte = Mux(sign, -qs, qs)[:8]
            else:
                lz_i, _ = lzc(m, mag, f"lz{i}")
                n_i = Signal(5, name=f"n{i}")      # floor(log2|a_i|) (0 when a_i = 0)
                r = Signal(5, name=f"r{i}")        # rounding position: own binade, >= emin
                expf = Signal(signed(11), name=f"expf{i}")
                m.d.comb += [
                    n_i.eq(31 - lz_i),
                    r.eq(Mux(n_i > lo_blk, n_i, lo_blk)),
                    expf.eq(r + eb),
                ]
                # q < 2**(mbits+1), leading one at bit mbits unless subnormal. Rounding is
                # one increment of the packed encoding (mantissa carries into the exponent),
                # one bit wider than the field so that rounding past the top is visible.
                q, up = rne_shr_parts(m, ext, r, f"rnd{i}", width=f.mbits + 1)
                packed = Signal(f.width, name=f"packed{i}")
                m.d.comb += packed.eq(
                    Cat(q[:f.mbits], Mux(q[f.mbits], expf[:f.ebits + 1], 0)) + up)
                field = Mux(packed > f.max_field, f.max_field, packed)[:f.width - 1]
                byte = Cat(field, sign)
            m.d.comb += self.elems.word_select(i, 8).eq(Mux(nan_blk, 0, byte))
        return m
