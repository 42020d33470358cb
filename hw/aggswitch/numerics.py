"""Numeric conversion blocks of the non-INT32 dtypes (SPEC §4), all combinational.

Ingress: :class:`FloatToFixed` (FP32, BF16) and :class:`MxElementToFixed` (MXINT8,
MXFP8 E4M3/E5M2) turn one element into its int32-range fixed-point contribution
q = RNE(v * 2**scale). Egress: :class:`FixedToFloat` (FP32, BF16) and
:class:`MxBlockEncoder` (one 32-element MX block) turn exact accumulators back.
These are one block per format.

The pipeline uses the run-time format select blocks instead, which share one datapath
per lane across formats: :class:`ElementToFixed` (ingress, every dtype, with a register
before its shifter) and, at egress, the result encoder stages (below): one front end per
lane (int32 saturation, leading-zero count, normalisation) that FP32/BF16
(:func:`float_round`) and MX (:func:`mx_element_shift`, :func:`mx_element_round`, with
the block's shared exponent from :class:`MxBlockScale`) share. codec.BeatEncoder
registers between the stages, at most 8 LUT levels each. :class:`FixedToFloatAny` (FP32/
BF16), :class:`MxBlockExponent` (one block -> scale byte and MX_BLOCK_INFO) and
:class:`MxLineEncoder` (a line of `lanes` elements of that block) chain the same stages
without registers, as single blocks to test and to size. Each is bit-exact with its
per-format counterparts; `scripts/area.py` compares their size.

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
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .params import (DTYPE_BF16, DTYPE_FP32, DTYPE_INT32, DTYPE_MXFP8_E4M3, DTYPE_MXFP8_E5M2,
                     DTYPE_MXINT8)

__all__ = ["FloatFormat", "FLOAT_FORMATS", "MX_FORMATS", "DTYPE_FORMAT",
           "lzc", "thermometer", "rne_shr", "rne_shr_parts", "sat_abs",
           "FloatToFixed", "MxElementToFixed", "FixedToFloat", "MxBlockEncoder",
           "ElementToFixed", "FixedToFloatAny", "MX_BLOCK_INFO", "MX_FMT_INT8", "MX_FMT_E4M3",
           "MX_FMT_E5M2", "MxBlockMagnitude", "MxBlockScale", "MxBlockExponent",
           "MxLineEncoder", "NORM_KEEP", "enc_front", "sat32", "enc_normalise", "norm_top",
           "norm_sticky", "bf16_round", "mx_element_window",
           "float_exponent", "float_round", "mx_element_shift", "mx_element_round",
           "block_magnitude", "MX_SCALE_BOUNDS", "mx_scale_bounds"]

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
def as_signal(m, x, name):
    """`x` as a Signal of its shape: `x` itself if it is one, else a new Signal driven by it.

    Helpers that slice their input bit by bit (a tree, a shifter) take it through this: a
    slice of an operator expression re-emits the operator for every slice in the netlist
    (the export grew by a copy of `a | b` per bit of a leading-zero count), a slice of a
    Signal costs nothing."""
    if isinstance(x, Signal):
        return x
    s = Signal(x.shape(), name=name)
    m.d.comb += s.eq(x)
    return s


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
    a power of two, which leaves the count of a non-zero x unchanged. Every tree node
    is a Signal, so the netlist emits each once (as shared expression objects they were
    emitted again for every use, and so were their operands)."""
    x = as_signal(m, x, f"{name}_in")
    width = len(x)
    size = 1 << max(0, (width - 1).bit_length())
    v = Cat(Const(0, size - width), x)

    nodes = []

    def node(value, width):
        # every tree node a Signal: an expression used twice (a count as the lower half of
        # its parent's mux, a zero flag as the mux select and in the AND) would be emitted
        # twice, and each copy again for its own uses, doubling per level
        s = Signal(width, name=f"{name}_n{len(nodes)}")
        nodes.append(s)
        m.d.comb += s.eq(value)
        return s

    def tree(v):
        if len(v) == 1:
            return Const(0, 0), ~v[0]
        half = len(v) // 2
        c_lo, z_lo = tree(v[:half])
        c_hi, z_hi = tree(v[half:])
        if len(v) == 2:       # leaves: count ~hi, zero ~(hi | lo)
            return v[1:2] == 0, v == 0
        # top half empty: count its width plus the low half's zeros
        z_hi = z_hi if isinstance(z_hi, Signal) else node(z_hi, 1)
        return (node(Mux(z_hi, Cat(c_lo, Const(1, 1)), Cat(c_hi, Const(0, 1))), len(c_lo) + 1),
                node(z_hi & z_lo, 1))

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
    x = as_signal(m, x, f"{name}_in")
    amount = as_signal(m, amount, f"{name}_amount")
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


def thermometer(value, n):
    """`n` bits, bit i = (value > i), for unsigned `value` (value >= n gives all ones): a
    mask of the lowest `value` bits or bytes. Built as a tree of AND/OR gates on value's
    bits, not as comparisons with constants: Yosys maps every $lt/$gt to an adder, which
    would make this one carry chain per bit."""
    value = Value.cast(value)
    k = max(n - 1, 1).bit_length()
    low, high = value[:k], value[k:]

    def below(v):            # 2**len(v) bits, bit i = (v > i)
        if len(v) == 0:
            return [Const(0, 1)]
        lower = below(v[:-1])
        return [v[-1] | b for b in lower] + [v[-1] & b for b in lower]

    bits = below(low)
    if len(high):
        bits = [high.any() | b for b in bits]
    return Cat(*bits[:n])


def _gt_const(v, c):
    """Unsigned v > constant c as plain logic (not a comparator, see `thermometer`):
    MSB-first, a balanced split into a high half that decides unless equal."""
    if c < 0:
        return Const(1, 1)
    if c >= (1 << len(v)) - 1:
        return Const(0, 1)
    if len(v) == 1:
        return v[0]                                  # here c == 0
    half = len(v) // 2
    c_lo, c_hi = c & ((1 << half) - 1), c >> half
    return _gt_const(v[half:], c_hi) | ((v[half:] == c_hi) & _gt_const(v[:half], c_lo))


def sat_abs(m, acc, name="sat"):
    """int32 saturation of a signed accumulator as Signals: sign, magnitude (32 bits,
    <= 2**31) and overflow. acc is outside int32 exactly when its bits 31 and up are not
    all equal (a few-input test, not two wide compares); in range, |acc| needs only the
    low 32 bits negated. One adder does the negation and the saturation: its operand is
    the low bits inverted for a negative acc, or the saturated magnitude; its carry-in is
    1 for an in-range negative acc (a mux in front of one adder, not two muxes after it,
    which the LUT mapper would copy into every bit for depth)."""
    neg = acc[-1]
    top = acc[31:]
    over = Signal(name=f"{name}_over")
    opnd = Signal(32, name=f"{name}_opnd")
    mag = Signal(32, name=f"{name}_mag")
    low = acc[:32]
    m.d.comb += [
        over.eq(top.any() & ~top.all()),
        opnd.eq(Mux(over, Mux(neg, 1 << 31, INT32_MAX), low ^ neg.replicate(32))),
        mag.eq(opnd + (neg & ~over)),
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


# --------------------------------------------------------------------------
# run-time format select: one lane of logic for every dtype
# --------------------------------------------------------------------------
# The blocks above are one per format. The pipeline converts every dtype in the same lanes,
# so the blocks below take the format as an input and share the expensive parts (shifter,
# rounding, sign adder) across formats; only the field extraction is per format.

def fine_power(dist):
    """2**(15 - dist mod 16) for 0 <= dist < 64, else 0 (`dist` signed(10)): the factor of
    :func:`_fixed_any`'s product step, 16 bits."""
    return Mux(dist[6:].any(), 0, (Const(1, 1) << ~dist[:4])[:16])


def _fixed_any(m, sig, sign, dist, kmax, nan, inf, prefix, passthrough=None, power=None):
    """q = RNE((-1)**sign * sig * 2**k) saturated to int32, k = kmax - `dist`; NaN -> 0,
    Inf -> saturated. `passthrough` (enable, value): q = value instead, for INT32.

    The area-lean form of `_fixed_from_parts`, for one converter serving every format:
    a single right shifter places sig's bits for every k (a left shift by k is a right
    shift of sig << kmax by dist = kmax - k), with one output bit more, below the integer
    part, for the guard. The sticky bits (under the guard, k < 0) and the saturating bits
    (at 2**31 and up, k >= 0) are complementary masks of one thermometer of
    (-1 - k) mod 32 = (31 - k) mod 32 over sig, so neither needs shifter outputs. Every
    condition on k is a few-bit test of `dist`: no comparator after the exponent adder.

    `sig` unsigned, 24 bits; `dist` signed(10), exact for -2**9 <= k < 2**9 - 16.
    `kmax` (15): the caller guarantees that a non-zero sig presented with k >= 0 has its
    leading one at bit 16 (= kmax + 1) or above. Then every k > kmax saturates, the
    shifter spans k in -25 .. kmax only, and the saturation test needs sig[16:] only."""
    width = len(sig)
    assert width == 24 and len(dist) == 10 and dist.shape().signed and kmax == 15
    sig_s = Signal(width, name=f"{prefix}_sig")
    m.d.comb += sig_s.eq(sig)
    sig = sig_s
    neg_d = dist[9]
    right = Signal(name=f"{prefix}_right")          # k < 0: rounding, never saturating
    big = Signal(name=f"{prefix}_big")              # k > 31: any non-zero sig saturates
    # k < 0 <=> dist >= 16; k > 31 <=> dist < -16: tests of bits 4 and up of dist
    hi = dist[4:9]
    m.d.comb += [
        right.eq(~neg_d & hi.any()),
        big.eq(neg_d & ~hi.all()),
    ]
    # y[1 + n] = sig[n - k], y[0] = sig[-1 - k] (the guard): y = Cat(0 * (kmax + 1), sig)
    # >> dist. dist >= 64 or < 0 (k < kmax - 63, or k > kmax) gives 63, which flushes
    # (the former rounds to 0, the latter saturates or has sig = 0).
    # The shift by dist mod 16 is a product: (sig << 16) >> b = sig * 2**(15 - b) << 1.
    # Each 12-bit half of sig times the 16-bit power of two is one multiplier block of an
    # FPGA (12 x 16 bits), and the two products have no bit in common (a power of two only
    # moves them), so an OR joins them. The step by 16 * (dist >> 4 mod 4) is a 4-way mux.
    # `fine_power` is 0 for dist >= 64 or < 0, which flushes y (k < kmax - 63 rounds to
    # 0, k > kmax saturates or has sig = 0).
    pw = fine_power(dist) if power is None else power
    lo = Signal(28, name=f"{prefix}_lo")
    hi = Signal(28, name=f"{prefix}_hi")
    m.d.comb += [lo.eq(sig[:12] * pw), hi.eq(sig[12:] * pw)]
    fine = Signal(width + 16, name=f"{prefix}_fine")   # (sig << 16) >> (dist mod 16)
    m.d.comb += fine.eq(Cat(Const(0, 1), lo | (hi << 12)))
    y = Signal(32, name=f"{prefix}_y")
    m.d.comb += y.eq((fine >> Cat(Const(0, 4), dist[4:6]))[:32])
    # t = (-1 - k) mod 32 = (dist - kmax - 1) mod 32.
    # k < 0: sig bits below t are under the guard (t > width: all, and the guard is 0).
    # 0 <= k < 32: sig bits at t and up reach 2**31 (t >= width: none).
    therm = Signal(width, name=f"{prefix}_therm")
    m.d.comb += therm.eq(thermometer(Cat(dist[:4], ~dist[4]), width))
    sticky = Signal(name=f"{prefix}_sticky")
    sat = Signal(name=f"{prefix}_sat")
    mag = y[1:32]
    top = slice(kmax + 1, width)                    # where a k >= 0 sig has its leading one
    m.d.comb += [
        sticky.eq((sig & therm).any()),
        sat.eq(inf | (~right & (((sig[top] & ~therm[top]).any()) | (big & sig[top].any())))),
    ]
    inc = Signal(name=f"{prefix}_inc")
    m.d.comb += inc.eq(right & y[0] & (sticky | mag[0]))
    # Sign and rounding in one adder: -(mag + inc) = ~mag + (1 - inc).
    smask = sign.replicate(32)
    val = Signal(32, name=f"{prefix}_val")
    m.d.comb += val.eq((mag ^ smask) + (inc ^ sign))
    # The output mux is one LUT level after the adder: everything but `val` is known
    # before it (the adder is the last thing to settle).
    use_val = Signal(name=f"{prefix}_use_val")
    other = Signal(32, name=f"{prefix}_other")
    fixed = Mux(nan, 0, Mux(sign, INT32_MIN, INT32_MAX))
    if passthrough is None:
        m.d.comb += [use_val.eq(~nan & ~sat), other.eq(fixed)]
    else:
        en, value = passthrough
        m.d.comb += [use_val.eq(~en & ~nan & ~sat), other.eq(Mux(en, value, fixed))]
    return Mux(use_val, val, other).as_signed()


# The exponent offset of a lane's k: everything but the element's exponent field, common to
# every lane of a beat (dtype, AGG scale) or of an MX block (block scale). One lane form
# wants k = base + field, the other dist = base - field (below), and their significands
# sit differently, so each form has its base.
LANE_KMAX = 15      # the universal lane's kmax (`_fixed_any`)


def lane_base(dtype, scale, block_scale, small, formats=None):
    """The base of a lane for `dtype`, AGG `scale` and MX `block_scale` (E8M0):

    - `small` (BF16 and MX lanes, `ElementToFixed._elaborate_small`): k = base + field,
      k the exponent of the 8-bit significand's bit 0;
    - otherwise (the universal lane): dist = base - field = kmax - k, k the exponent of
      the 24-bit significand's bit 0.

    Subnormals (and INT8) take exponent field 1: the offsets count it. The offsets are
    -(bias + mbits + the zero bits under a significand) for the floats, INT8's such that
    its field of 1 cancels; MX adds block_scale - 127. `formats`: the dtype codes that
    matter (the others' bases are unspecified), so a lane that sees one format, or a
    build without MX, folds the others away. A value, signed(10)."""
    fmts = ElementToFixed.ALL_FORMATS if formats is None else frozenset(formats)

    def sel(code):
        if fmts == {code}:
            return Const(1, 1)
        return (dtype == code) if code in fmts else Const(0, 1)
    fp32, bf16, int8, e4m3, e5m2 = (sel(c) for c in (DTYPE_FP32, DTYPE_BF16, DTYPE_MXINT8,
                                                     DTYPE_MXFP8_E4M3, DTYPE_MXFP8_E5M2))
    mx = int8 | e4m3 | e5m2
    f32, fb16, f43, f52 = (FLOAT_FORMATS[n] for n in ("fp32", "bf16", "e4m3", "e5m2"))
    if small:
        def off(f):
            return -(f.bias + f.mbits)
        offset = Mux(bf16, off(fb16), Mux(e4m3, off(f43) - E8M0_BIAS,
                                         Mux(e5m2, off(f52) - E8M0_BIAS,
                                             -MXINT8_FRAC - E8M0_BIAS)))
        return (offset + scale + Mux(mx, block_scale, 0))[:10].as_signed()

    def off(f, pad):
        return -(f.bias + f.mbits + pad)
    offset = Mux(fp32, off(f32, 0),
                 Mux(bf16, off(fb16, 16),
                     Mux(e4m3, off(f43, 20) - E8M0_BIAS,
                         Mux(e5m2, off(f52, 21) - E8M0_BIAS,
                             -(MXINT8_FRAC + 16 + 1 + E8M0_BIAS)))))
    return (LANE_KMAX - offset - scale - Mux(mx, block_scale, 0))[:10].as_signed()


class ElementToFixed(wiring.Component):
    """One lane of ingress decode for every dtype: element -> q (int32-range fixed point).

    `dtype` is the SPEC §4 code. `bits` holds the element right-aligned: INT32 and FP32 the
    32-bit value (as an integer, already byte-swapped), BF16 bits[0:16], an MX element
    byte bits[0:8]; bits above the element are ignored. `block_scale` (E8M0) is used by the
    MX dtypes only, `scale` is the AGG header scale.

    INT32 (and the unassigned codes 6, 7): q = bits as a signed integer, `nan` 0. Every
    other dtype exactly as :class:`FloatToFixed` / :class:`MxElementToFixed`: q = RNE(v *
    2**scale) saturated to int32; NaN gives 0 and `nan`, +-Inf saturates, an MX block
    scale of 0xFF makes the element NaN.

    Every format is a significand of at most 24 bits times a power of two: FP32 has 24,
    BF16 8, E4M3 4, E5M2 3, INT8 8 (its magnitude, 128 for 0x80). Significands sit at the
    MSB end of one 24-bit field (BF16 is then FP32 with the low 16 mantissa bits zero), so
    the format only changes the field mux and the exponent offset, and one converter
    (:func:`_fixed_any`) serves them all. Top alignment also bounds the left shift: every
    non-zero significand that can meet a large exponent has its leading one at bit 16 or
    above, so the shifter spans 41 positions, not 57.

    Timing (ECP5, registered inputs and outputs): about 20 ns, ~50 MHz. Path: field mux,
    exponent adder (dist), shifter, rounding, sign adder, output mux. A register before
    the shifter (sig, sign, dist, nan, inf, the INT32 bits: ~70 bits) gives ~80 MHz; a
    second one before the sign adder is needed for 100 MHz.

    `pipelined=True` puts that first register in: outputs then follow inputs one cycle
    later (`latency` 1); the pipeline uses this form.

    `formats`: the dtype codes this lane must convert (default: every one). A beat's upper
    lanes only ever see the denser dtypes (BF16 and MX from `lanes` up, MX only from
    2 x `lanes` up), so the decoder builds them without the others. A lane whose formats
    are within BF16 and the MX dtypes has a significand of at most 8 bits: it is built as a
    datapath of its own (`_elaborate_small`: the sign applied to the short significand
    before the register, a 9-bit left shift into 32 bits (a multiplication by a power of
    two, for the FPGA's multiplier blocks), a 9-bit rounding right shift;
    no 24-bit shifter and no 32-bit adder), under half of the universal lane. For a
    dtype outside `formats` the outputs are unspecified.

    `shared_base=True`: the lane takes `base` (:func:`lane_base` of its form, from the
    dtype, scale and block scale) as an input, and `scale` is unused. The beat decoder
    forms the bases once per beat (per MX block) and registers them, so that a lane's
    first stage is the field mux and one adder, not three: the offsets' muxes and adders
    are out of every lane."""

    LATENCY = 0     # combinational (pipelined=False): outputs follow inputs in the same cycle
    ALL_FORMATS = frozenset({DTYPE_INT32, DTYPE_FP32, DTYPE_BF16, DTYPE_MXINT8,
                             DTYPE_MXFP8_E4M3, DTYPE_MXFP8_E5M2})
    MX_FORMATS = frozenset({DTYPE_MXINT8, DTYPE_MXFP8_E4M3, DTYPE_MXFP8_E5M2})

    @classmethod
    def _formats(cls, formats):
        formats = cls.ALL_FORMATS if formats is None else frozenset(formats)
        if not formats or not formats <= cls.ALL_FORMATS:
            raise ValueError(f"formats must be a non-empty subset of {sorted(cls.ALL_FORMATS)}")
        return formats

    def __new__(cls, pipelined=False, formats=None, shared_base=False, *, src_loc_at=0):
        # bad formats raise before the Elaboratable exists (no UnusedElaboratable warning)
        cls._formats(formats)
        return super().__new__(cls, src_loc_at=src_loc_at + 1)

    def __init__(self, pipelined=False, formats=None, shared_base=False):
        self.pipelined = pipelined
        self.latency = int(pipelined)
        self.formats = self._formats(formats)
        self.shared_base = shared_base
        members = {
            "dtype": In(3),
            "bits": In(32),
            "block_scale": In(8),
            "scale": In(signed(8)),
            "q": Out(signed(32)),
            "nan": Out(1),
        }
        if shared_base:
            members["base"] = In(signed(10))
        super().__init__(members)

    @property
    def small(self):
        """The lane form: BF16 and MX only (`_elaborate_small`), or universal."""
        return self.formats <= self.MX_FORMATS | {DTYPE_BF16}

    def _base(self):
        if self.shared_base:
            return self.base
        return lane_base(self.dtype, self.scale, self.block_scale, self.small, self.formats)

    def _elaborate_small(self, m):
        """The lane of a beat's upper elements (`formats` within BF16 and the MX dtypes):
        every element there is a significand of at most 8 bits (BF16 8, MXINT8 8 as the
        two's complement byte, E4M3 4, E5M2 3) times a power of two 2**k. The sign is
        applied to that short significand before the register (sv, 9-bit two's
        complement: -255 .. 255), so no 32-bit adder is needed after it:

        - k >= 0: q = sv << k, 9 bits into 32 (sign-extended): the product sv * 2**(k mod
          16), which Yosys maps to one MULT18X18D on the ECP5, and a 16-place step; the
          value is outside int32 when a bit of the magnitude reaches 2**31 (a suffix OR
          of the magnitude, formed before the register, selected by k's 3 low bits), or
          k >= 32 and sv != 0.
        - k < 0: q = RNE(sv / 2**-k) on the two's complement value, u = -k - 1 the
          guard's position: ((sv >> u) + 1) >> 1 with bit 0 cleared on a tie (the low
          u + 1 bits exactly 2**u), the same for both signs. sv >> u comes from the same
          multiplier: floor(sv * 2**(1 + k mod 8) / 2**8). The power of two of either
          case is formed from k before the register, so after it the multiplier, a 10-bit
          carry chain for the increment and the tie (from sv and u only, in parallel)
          stand in front of the output: no guard, sticky or round bit before the adder.
          u >= 8 rounds every value (|sv| <= 255) to 0.

        After the register the three results (left shift, right shift, saturation or 0)
        exclude each other, so q is an OR of the three gated values rather than a chain of
        muxes: the MX lanes' deepest path (make timing at 256-bit beats) is the
        multiplier, the increment's chain and one LUT.

        NaN (the element's or an E8M0 block scale of 0xFF, MX only) gives 0 and `nan`,
        Inf (E5M2, BF16) saturates: as the universal lane."""
        b, d = self.bits, self.dtype
        fmts = self.formats
        f16, f43, f52 = (FLOAT_FORMATS[n] for n in ("bf16", "e4m3", "e5m2"))
        has_mx = bool(fmts & self.MX_FORMATS)
        # Formats as constants where the lane sees one only; an MX code is "not BF16"
        # (INT8 when neither FP8 code), so the last choice needs no compare.
        bf16 = Signal()
        e4m3 = Signal()
        e5m2 = Signal()
        only_bf16 = fmts == {DTYPE_BF16}
        m.d.comb += [
            bf16.eq(1 if only_bf16 else (d == DTYPE_BF16) if DTYPE_BF16 in fmts else 0),
            e4m3.eq((d == DTYPE_MXFP8_E4M3) if DTYPE_MXFP8_E4M3 in fmts else 0),
            e5m2.eq((d == DTYPE_MXFP8_E5M2) if DTYPE_MXFP8_E5M2 in fmts else 0),
        ]
        int8 = ~bf16 & ~e4m3 & ~e5m2 if DTYPE_MXINT8 in fmts else Const(0, 1)
        mx = ~bf16 if has_mx else Const(0, 1)

        def field(f):
            return b[f.mbits:f.mbits + f.ebits], b[:f.mbits]

        e_16, m_16 = field(f16)
        e_43, m_43 = field(f43)
        e_52, m_52 = field(f52)
        expf = Signal(8)
        m.d.comb += expf.eq(Mux(bf16, e_16, Mux(e4m3, e_43, Mux(e5m2, e_52, 0))))
        normal = expf.any()
        top = Mux(bf16, e_16.all(), Mux(e4m3, e_43.all(), e_52.all()))
        mant_any = Mux(bf16, m_16.any(), m_52.any())
        elem_nan = ~int8 & Mux(e4m3, top & m_43.all(), top & mant_any)
        elem_inf = ~int8 & ~e4m3 & top & ~mant_any
        block_nan = mx & (self.block_scale == E8M0_NAN)
        nan = Signal()
        inf = Signal()
        sign = Signal()
        m.d.comb += [
            nan.eq(elem_nan | block_nan),
            inf.eq(elem_inf & ~block_nan),
            sign.eq(Mux(bf16, b[15], b[7])),
        ]
        # the float significand (0 for NaN/Inf), then the signed 9-bit value
        fsig = Signal(8)
        m.d.comb += fsig.eq(Mux(elem_nan | elem_inf, 0,
                                Mux(bf16, Cat(m_16, normal),
                                    Mux(e4m3, Cat(m_43, normal), Cat(m_52, normal)))))
        sv = Signal(signed(9))
        m.d.comb += sv.eq(Mux(int8, b[:8].as_signed(), Mux(sign, -fsig, fsig)))
        # k = exponent of the significand's bit 0 + (MX) block exponent + scale: base (the
        # offsets, scale and block scale, `lane_base`) + the exponent field; the float
        # formats' subnormals use exponent field 1.
        base = Signal(signed(10))
        m.d.comb += base.eq(self._base())
        k = Signal(signed(10))
        m.d.comb += k.eq(base + Mux(int8, 0, Mux(normal, expf, 1)))
        # For the saturation test after the register, from the fields (not through the
        # negation): lead[i] = the magnitude has a bit at i or above, so that shifted left
        # by 31 - i or more it reaches 2**31 (for a negative value exactly -2**31 is then
        # saturated, to the same -2**31). MXINT8 takes ~v for a negative v (|v| - 1, whose
        # test is the exact one). nz = the value is not 0.
        mag8 = Signal(8)
        lead = Signal(8)
        nz = Signal()
        m.d.comb += [
            mag8.eq(Mux(int8, b[:8] ^ b[7].replicate(8), fsig)),
            lead.eq(Cat(*[mag8[i:].any() for i in range(8)])),
            nz.eq(Mux(int8, b[:8].any(), fsig.any())),
        ]
        # One product serves both shifts (below): sv * 2**e, e = k mod 16 for k >= 0 and
        # 1 + (k mod 8) for k < 0. The power of two is formed here, from k, and registered.
        pw = Signal(16, name="e2x_pow")
        m.d.comb += pw.eq(Mux(k[9], Const(2, 2) << k[:3], Const(1, 1) << k[:4]))
        if self.pipelined:
            regs = []
            for name, v in (("sv", sv), ("sign", sign), ("k", k), ("nan", nan), ("inf", inf),
                            ("lead", lead), ("nz", nz), ("pow", pw)):
                # datapath: no reset (the pass's own valid bit says when they count)
                r = Signal(Value.cast(v).shape(), name=f"{name}_r", reset_less=True)
                m.d.sync += r.eq(v)
                regs.append(r)
            sv, sign, k, nan, inf, lead, nz, pw = regs
        right = k[9]                                  # k < 0
        # k >= 0
        k5 = k[:5]
        big = ~right & k[5:9].any()                   # k >= 32
        # sv << k5 as a product, sv * 2**(k5 mod 16) (9 x 16 bits: one multiplier block of
        # an FPGA, which a shift of 32 outputs would otherwise spend about 70 LUTs on), then
        # one 16-place step; for k < 0 the same product is the right shift (below). Bits
        # past 2**31 are the saturation test's (below).
        prod = Signal(signed(25), name="e2x_prod")    # |sv| <= 256, times <= 2**15
        m.d.comb += prod.eq(sv * pw)
        left = Signal(signed(32), name="e2x_left")
        m.d.comb += left.eq(Mux(k5[4], prod << 16, prod))
        # bit i of sv (i < 8) reaches 2**31 when i + k5 >= 31, k5 = 24 + t: lead[7 - t]
        over_big = Signal(name="e2x_over_big")        # k >= 32, sv != 0
        over_t = Signal(name="e2x_over_t")            # 24 <= k < 32, a bit at 2**31 or above
        m.d.comb += [
            over_big.eq(big & nz),
            over_t.eq(~right & k5[3] & k5[4] &
                      Cat(*[lead[7 - j] for j in range(8)]).bit_select(k5[:3], 1)),
        ]
        # k < 0: u = -k - 1 = ~k is the guard's position. |sv| <= 255 < 2**8, so u >= 8
        # (`far`) rounds to 0 (at most half an ulp, and exactly half only at the even 0);
        # u < 8 is its 3 low bits. RNE(sv / 2**(u + 1)) = ((sv >> u) + 1) >> 1 (the same
        # as (sv + 2**u) >> (u + 1): the bits shifted out first cannot carry), with bit 0
        # cleared on a tie (the low u + 1 bits exactly 2**u). The increment is the last
        # thing before the output: shifter, one carry chain, one LUT.
        nk = ~k
        u = nk[:3]
        far = nk[3:9].any()
        # sv >> u = floor(sv * 2**(1 + k mod 8) / 2**8): the product's bits 8 and up
        y = Signal(signed(9), name="e2x_y")
        m.d.comb += y.eq(prod[8:17].as_signed())
        inc = Signal(signed(10), name="e2x_inc")
        m.d.comb += inc.eq(y + 1)
        rs = inc[1:]
        tie = Signal(name="e2x_tie")
        m.d.comb += tie.eq(sv.as_unsigned().bit_select(u, 1) &
                           ~(sv.as_unsigned()[:7] & thermometer(u, 7)).any())
        small = Signal(signed(9), name="e2x_small")
        m.d.comb += small.eq(Cat(rs[0] & ~tie, rs[1:]))
        use_left = Signal(name="e2x_use_left")
        use_small = Signal(name="e2x_use_small")
        satc = Signal(name="e2x_satc")
        m.d.comb += [
            use_left.eq(~right & ~nan & ~inf & ~over_big & ~over_t),
            use_small.eq(right & ~far & ~nan & ~inf),
            satc.eq(~nan & (inf | over_big | over_t)),
        ]
        # the three cases exclude each other: an OR of the gated values, no mux chain
        small32 = Signal(32, name="e2x_small32")      # sign-extended
        sat = Signal(32, name="e2x_sat")
        m.d.comb += [small32.eq(small.as_signed()), sat.eq(Mux(sign, INT32_MIN, INT32_MAX))]
        m.d.comb += [
            self.q.eq((left.as_unsigned() & use_left.replicate(32)) |
                      (small32 & use_small.replicate(32)) | (sat & satc.replicate(32))),
            self.nan.eq(nan),
        ]
        return m

    def elaborate(self, platform):
        m = Module()
        if self.small:
            return self._elaborate_small(m)
        b, d = self.bits, self.dtype
        fp32 = Signal()
        bf16 = Signal()
        int8 = Signal()
        e4m3 = Signal()
        e5m2 = Signal()
        mx = Signal()
        fmts = self.formats

        def select(code):
            # a format this lane never sees: a constant 0, so its logic folds away
            return (d == code) if code in fmts else Const(0, 1)
        m.d.comb += [
            fp32.eq(select(DTYPE_FP32)),
            bf16.eq(select(DTYPE_BF16)),
            int8.eq(select(DTYPE_MXINT8)),
            e4m3.eq(select(DTYPE_MXFP8_E4M3)),
            e5m2.eq(select(DTYPE_MXFP8_E5M2)),
            # an MX-only lane takes every code as MX (the others are not its concern)
            mx.eq(1 if fmts <= self.MX_FORMATS else int8 | e4m3 | e5m2),
        ]
        # INT32 (and the unassigned codes) pass through, in a lane that sees INT32
        conv = (fp32 | bf16 | mx) if DTYPE_INT32 in fmts else Const(1, 1)

        # Fields of the float formats: exponent (zero-extended to 8 bits), mantissa.
        f32, fb16, f43, f52 = (FLOAT_FORMATS[n] for n in ("fp32", "bf16", "e4m3", "e5m2"))

        def field(f):
            return b[f.mbits:f.mbits + f.ebits], b[:f.mbits]

        e_32, m_32 = field(f32)
        e_16, m_16 = field(fb16)
        e_43, m_43 = field(f43)
        e_52, m_52 = field(f52)
        expf = Signal(8)
        m.d.comb += expf.eq(Mux(fp32, e_32, Mux(bf16, e_16, Mux(e4m3, e_43, Mux(e5m2, e_52, 0)))))
        normal = expf.any()
        top = Signal()                                  # the all-ones exponent of the format
        m.d.comb += top.eq(Mux(e4m3, e_43.all(), Mux(e5m2, e_52.all(), expf.all())))
        mant_any = Mux(fp32, m_32.any(), Mux(bf16, m_16.any(), m_52.any()))
        elem_nan = Mux(e4m3, top & m_43.all(), top & mant_any)
        elem_inf = ~e4m3 & top & ~mant_any
        block_nan = mx & (self.block_scale == E8M0_NAN)
        nan = Signal()
        inf = Signal()
        m.d.comb += [
            nan.eq(elem_nan | block_nan),
            inf.eq(elem_inf & ~block_nan),
        ]

        # Significand with its top bit at bit 23 of one 24-bit field: FP32 fills it, BF16 is
        # FP32 with the low 16 mantissa bits zero, E4M3 / E5M2 / INT8 (the magnitude; 0x80
        # is 128) take the top 4 / 3 / 8 bits. Only bits 16..22 need a format mux.
        v8 = b[:8].as_signed()
        mag8 = Mux(b[7], -v8, v8)[:8]
        sign = Signal()
        sig = Signal(24)
        m.d.comb += [
            sign.eq(Mux(fp32, b[31], Mux(bf16, b[15], b[7]))),
            sig.eq(Mux(fp32, Cat(m_32, normal),
                       Cat(Const(0, 16),
                           Mux(bf16, Cat(m_16, normal),
                               Mux(e4m3, Cat(Const(0, 4), m_43, normal),
                                   Mux(e5m2, Cat(Const(0, 5), m_52, normal), mag8)))))),
        ]
        # k = exponent of sig's bit 0 + (MX) block exponent + scale, and the converter
        # wants dist = kmax - k = base - the exponent field (`lane_base`: everything but
        # the field is common to the lanes of a line, so with `shared_base` one adder per
        # lane remains). Subnormals (and INT8) use exponent field 1.
        # kmax: a non-zero significand has its leading one at bit 16 or above (INT8 1,
        # BF16 / FP8 subnormals), except FP32 subnormals, which only occur with
        # k <= 1 + 127 - 150. So k > 14 saturates every non-zero input.
        kmax = LANE_KMAX
        base = Signal(signed(10))                   # kmax - (k - exponent field)
        m.d.comb += base.eq(self._base())
        dist = Signal(signed(10))
        m.d.comb += dist.eq(base - Mux(normal, expf, 1))
        dist_in = dist
        if self.pipelined:
            # Register the fields: the shifter, rounding and sign adder get a cycle.
            regs = []
            for name, v in (("sig", sig), ("sign", sign), ("dist", dist), ("nan", nan),
                            ("inf", inf), ("conv", conv), ("bits", b)):
                r = Signal(Value.cast(v).shape(), name=f"{name}_r", reset_less=True)  # datapath
                m.d.sync += r.eq(v)
                regs.append(r)
            sig, sign, dist, nan, inf, conv, b = regs
            # the product's factor too, formed from dist before the register: after it, the
            # multiplier is the shift's first level
            power = Signal(16, name="power_r", reset_less=True)
            m.d.sync += power.eq(fine_power(dist_in))
        else:
            power = None
        q = _fixed_any(m, sig, sign, dist, kmax, nan, inf, "e2x",
                       passthrough=(~conv, b.as_signed()), power=power)
        m.d.comb += [
            self.q.eq(q),
            self.nan.eq(conv & nan),
        ]
        return m


# --------------------------------------------------------------------------
# result encoder stages: the lanes of codec.BeatEncoder, one stage per pipeline cycle
# --------------------------------------------------------------------------
# Every lane of the result encoder goes through the same front end, whatever the dtype:
# int32 saturation and the leading-zero count of the magnitude (stage 1), then the
# magnitude normalised so that its leading one is bit 31 (stage 2). FP32/BF16 round the
# normalised significand (stage 3); MX shifts it right to the block's grid once the
# block's shared exponent is known (stage 3) and rounds it (stage 4). codec.BeatEncoder
# registers between the stages (docs/ARCHITECTURE.md, "Result encoder"); the blocks
# FixedToFloatAny and MxLineEncoder below chain the same helpers without registers, so
# their unit tests check the arithmetic the pipeline does. Each stage is at most 8 LUT
# levels on the ECP5 (`make timing`): one add or one decision with the muxes around it.

NORM_KEEP = 7       # normalised magnitude bits kept after stage 2: norm[7:32], below it ORs


def enc_front(m, acc, name):
    """Stage 1 of every result lane: int32 saturation and the leading-zero count of the
    magnitude. Returns Signals (sign, mag, over, lz, zero) as :func:`sat_abs` and
    :func:`lzc`; `lz` is 31 for a zero magnitude."""
    sign, mag, over = sat_abs(m, acc, name)
    lz, zero = lzc(m, mag, f"{name}_lz")
    return sign, mag, over, lz, zero


def sat32(m, acc, over, name):
    """The INT32 result of an accumulator: saturated to int32 (`over` from
    :func:`sat_abs`), as a Signal of 32 bits."""
    v = Signal(32, name=f"{name}_int32")
    m.d.comb += v.eq(Mux(over, Mux(acc[-1], INT32_MIN & 0xFFFFFFFF, INT32_MAX), acc[:32]))
    return v


def norm_sticky(m, mag, lz, k, name):
    """norm[0:k] != 0 for norm = |a| << lz (:func:`enc_normalise`), from |a| itself: the
    bits of |a| that the shift leaves under bit k are those below k - lz, a mask of lz
    alone, so no shifter output is needed for a sticky bit. A Signal."""
    mask = Signal(k, name=f"{name}_mask")
    st = Signal(name=f"{name}_s{k}")
    m.d.comb += [mask.eq(Const((1 << k) - 1, k) >> lz), st.eq((mag[:k] & mask).any())]
    return st


def _shift_columns(m, value, amount, keep, left, name):
    """`keep` bits of a shift of `value` by `amount` (unsigned): the top `keep` bits of
    (value << amount)[:len(value)] (`left`) or the low `keep` bits of value >> amount, as a
    Signal. Written as one mux column per bit of `amount`, the largest first, each only as
    wide as the later columns need to fill the `keep` outputs (32 bits to 8 by 5 bits: 23,
    15, 11, 9 and 8). Given a plain shift and a slice, the LUT mapper builds every output
    as its own 32-input mux, about twice the LUTs."""
    w = len(value)
    widths = {}
    width = keep
    for k in range(len(amount)):                # from the last column (by 1) back
        widths[k] = width
        width = min(w, width + (1 << k))
    cur = value                                 # left: bits [w - len(cur), w); right: [0, len(cur))
    for k in reversed(range(len(amount))):
        full = Cat(Const(0, w - len(cur)), cur) if left else cur
        col = Signal(widths[k], name=f"{name}_{'shl' if left else 'shr'}{1 << k}")
        if left:
            m.d.comb += col.eq(Mux(amount[k], (full << (1 << k))[w - widths[k]:w],
                                   full[w - widths[k]:w]))
        else:
            m.d.comb += col.eq(Mux(amount[k], (full >> (1 << k))[:widths[k]], full[:widths[k]]))
        cur = col
    return cur


def norm_top(m, mag, lz, keep, name):
    """The top `keep` bits of norm = |a| << lz (norm[32 - keep:32], the leading one at bit
    31), as a Signal: a shifter with only those outputs (:func:`_shift_columns`)."""
    assert len(mag) == 32 and len(lz) == 5 and 1 <= keep <= 32
    return _shift_columns(m, mag, lz, keep, True, f"{name}_norm")


def enc_normalise(m, mag, lz, name):
    """Stage 2 of a lane that encodes FP32: norm = |a| << lz, the leading one at bit 31.
    Returns Signals (top, s7, s23): top = norm[NORM_KEEP:32], s7 = norm[0:7] != 0 and s23 =
    norm[0:23] != 0, the sticky bits of the FP32 and BF16 (and MX) roundings
    (:func:`norm_sticky`: the shifter has only the outputs in `top`). A lane without FP32
    takes :func:`norm_top` of 9 bits and the sticky bit under them (BF16 and MX) instead,
    an MX-only lane no normaliser (:func:`mx_element_window`)."""
    top = norm_top(m, mag, lz, 32 - NORM_KEEP, name)
    s7 = norm_sticky(m, mag, lz, NORM_KEEP, name)
    s23 = norm_sticky(m, mag, lz, 23, name)
    return top, s7, s23


def float_exponent(m, lz, zero, scale, name):
    """Stage 2 of an FP32/BF16 lane, beside the normalisation: the biased exponent of the
    leading one, floor(log2|a|) - scale + 127 = 158 - scale - lz (FP32 and BF16 share it).
    Returns Signals (exp, inf, tiny): exp its low 8 bits, inf: a non-zero value beyond the
    format (exponent >= 255, +-Inf), tiny: the exponent is 0, which happens only for |a| =
    1 at scale 127 (|a| >= 1 and scale <= 127 keep it >= 0): the subnormal 2**-127, exact
    in both formats (significand 0x400000, BF16 0x40), the one value that leaves the
    normalised grid."""
    f = FLOAT_FORMATS["fp32"]
    exp_pre = Signal(signed(11), name=f"{name}_exp_pre")
    m.d.comb += exp_pre.eq((31 + f.bias) - scale - lz)
    exp = Signal(8, name=f"{name}_exp")
    inf = Signal(name=f"{name}_inf")
    tiny = Signal(name=f"{name}_tiny")
    assert f.emask == 255 and len(exp_pre) == 11
    m.d.comb += [
        exp.eq(exp_pre[:8]),
        # exp_pre >= 255, as bit tests of the signed(11) exp_pre (no comparator)
        inf.eq(~zero & ~exp_pre[-1] & (exp_pre[8:10].any() | exp_pre[:8].all())),
        tiny.eq(~zero & (scale == 127) & lz.all()),
    ]
    return exp, inf, tiny


def float_round(m, top, s7, s23, exp, inf, tiny, sign, bf16, name):
    """Stage 3 of an FP32/BF16 lane: the rounded, packed bits (BF16 in bits[0:16], bits[16:32]
    zero) from the stage-2 outputs. The significand is norm[8:32], FP32's guard norm[7] and
    sticky norm[0:7]; BF16 keeps norm[24:32], its guard is norm[23] and its sticky every
    bit below (s23): BF16 rounds once, from the exact value, never FP32's rounded result.
    The increment of the packed encoding (at bit 0 or 16) carries from the mantissa into
    the exponent field (1.1..1 -> next binade, largest finite -> Inf), so one adder does
    the rounding and the exponent adjustment. A lane that never encodes FP32 takes
    :func:`bf16_round` instead."""
    f = FLOAT_FORMATS["fp32"]
    cut = f.mbits - FLOAT_FORMATS["bf16"].mbits            # 16 significand bits fewer
    q = top[1:]                                            # norm[8:32]: 24 bits
    guard = top[0]
    up32 = guard & (s7 | q[0])
    up16 = q[cut - 1] & (s23 | q[cut])
    normal = q[f.mbits]                                    # 0 only for |a| = 0 (or tiny)
    packed = Signal(f.width - 1, name=f"{name}_packed")
    m.d.comb += packed.eq(Cat(q[:f.mbits], Mux(normal, exp, 0))
                          + Mux(bf16, up16 << cut, up32))
    body = Mux(inf, f.inf_field, Mux(tiny, 1 << (f.mbits - 1), packed))
    bits = Signal(32, name=f"{name}_bits")
    m.d.comb += bits.eq(Mux(bf16, Cat(body[cut:], sign), Cat(body, sign)))
    return bits


def bf16_round(m, top9, s23, exp, inf, tiny, sign, name):
    """:func:`float_round` of a lane that encodes BF16 only: from norm[23:32] (`top9`) and
    s23, the 16 bits of BF16 (one 15-bit adder, no FP32 rounding). A Signal of 16 bits."""
    f = FLOAT_FORMATS["bf16"]
    q = top9[1:]                                           # norm[24:32]: 8 bits
    up = top9[0] & (s23 | q[0])
    normal = q[f.mbits]
    packed = Signal(f.width - 1, name=f"{name}_packed")
    m.d.comb += packed.eq(Cat(q[:f.mbits], Mux(normal, exp, 0)) + up)
    # tiny: 2**-127, BF16 0x0040 (see float_exponent)
    body = Mux(inf, f.inf_field, Mux(tiny, 1 << (f.mbits - 1), packed))
    bits = Signal(16, name=f"{name}_bits")
    m.d.comb += bits.eq(Cat(body, sign))
    return bits


def mx_element_shift(m, top9, s23, lz, lo, eb, name):
    """Stage 3 of an MX lane, with the block's MX_BLOCK_INFO `lo` and `eb` (registered
    after stage 2). The element's rounding position is r = max(n, lo), n = 31 - lz the
    leading one of |a| (see :class:`MxLineEncoder`); on the normalised magnitude that is a
    right shift by d = r - n = max(0, lo - n), and every d >= 8 leaves nothing but sticky
    bits. `top9` = norm[23:32]. Returns Signals (sh, sticky, expf): sh = norm[24:32] >> d
    (the 7-bit quotient of |a| << 6 >> r over its guard), sticky the OR of every bit under
    the guard, expf = r + eb (mod 64, the FP8 exponent field of bit r)."""
    n8 = top9[1:]                                          # norm[24:32]
    st24 = top9[0] | s23                                   # norm[0:24] != 0
    t = Signal(signed(7), name=f"{name}_t")                # lo - n
    m.d.comb += t.eq(lo + lz - 31)
    below = t[-1]                                          # lo < n: r = n, d = 0
    big = ~below & t[3:6].any()                            # d >= 8
    d = t[:3]
    sh = Signal(8, name=f"{name}_sh")
    sticky = Signal(name=f"{name}_sticky")
    expf = Signal(6, name=f"{name}_expf")
    m.d.comb += [
        sh.eq(Mux(below, n8, Mux(big, 0, n8 >> d))),
        sticky.eq(st24 | (~below & Mux(big, n8.any(), (n8 & thermometer(d, 8)).any()))),
        expf.eq(Mux(below, (31 - lz) + eb, lo + eb)[:6]),
    ]
    return sh, sticky, expf


def mx_element_window(m, mag, lz, lo, eb, name):
    """Stage 3 of an MX-only lane: :func:`mx_element_shift`'s outputs (sh, sticky, expf),
    bit for bit, from |a| and its leading-zero count instead of the normalised magnitude,
    so that the lane needs no normaliser in stage 2. The rounding position r = max(n, lo)
    (n = 31 - lz) is formed first; the 8-bit window sh = (|a| << 7)[r:r + 8] is then one
    right shift of |a| by r (:func:`_shift_columns`), the sticky bit the OR of |a|'s bits
    under r - 7 (a mask of r alone), expf = r + eb."""
    n = Signal(5, name=f"{name}_n")
    r = Signal(5, name=f"{name}_r")
    m.d.comb += [n.eq(~lz), r.eq(Mux(n > lo, n, lo))]
    sh = _shift_columns(m, Cat(Const(0, 7), mag), r, 8, False, f"{name}_win")
    mask = Signal(24, name=f"{name}_mask")          # bit p: p < r - 7
    sticky = Signal(name=f"{name}_sticky")
    expf = Signal(6, name=f"{name}_expf")
    m.d.comb += [
        mask.eq(Const((1 << 24) - 1, 24) >> ~r),
        sticky.eq((mag[:24] & mask).any()),
        expf.eq((r + eb)[:6]),
    ]
    return sh, sticky, expf


def mx_element_round(m, sh, sticky, expf, sign, nan, int8, e4m3, name):
    """Stage 4 of an MX lane: the element byte from :func:`mx_element_shift`'s outputs, in
    MXINT8 (`int8`), E4M3 (`e4m3`) or E5M2 (neither); 0 in a NaN block (`nan`).

    The 7-bit quotient q = sh[1:8] is the INT8 magnitude and holds in its top 4 / 3 bits
    the E4M3 / E5M2 significand; the FP8 guard and sticky are the bits under the
    significand. The rounding increment (and the INT8 negation) is one 8-bit adder on the
    packed byte; the FP8 exponent field is expf. FP8 saturates to the largest normal (no
    OVERFLOW), decided from the operand in parallel with the adder."""
    f43, f52 = FLOAT_FORMATS["e4m3"], FLOAT_FORMATS["e5m2"]
    fbits = MXINT8_FRAC
    assert f43.mbits < fbits and f52.mbits < fbits
    q = sh[1:]
    g = sh[0]
    st = sticky

    def fp8(f):
        # significand = the window's top mbits + 1 bits, guard and sticky below it
        cut = fbits - f.mbits
        return q[cut:], q[cut - 1], q[:cut - 1].any() | g | st
    s43, g43, st43 = fp8(f43)
    s52, g52, st52 = fp8(f52)
    gd = Signal(name=f"{name}_g")
    sk = Signal(name=f"{name}_st")
    lsb = Signal(name=f"{name}_lsb")
    m.d.comb += [
        gd.eq(Mux(int8, g, Mux(e4m3, g43, g52))),
        sk.eq(Mux(int8, st, Mux(e4m3, st43, st52))),
        lsb.eq(Mux(int8, q[0], Mux(e4m3, s43[0], s52[0]))),
    ]
    up = gd & (sk | lsb)

    # One adder. INT8: -(q + up) = ~q + (1 - up), with q = 127 rounding up saturated
    # first (the only way past 127). FP8: the packed magnitude, rounded by an increment
    # that carries from the mantissa into the exponent field (subnormal -> normal,
    # 1.11..1 -> next binade).
    def packed(f, s):
        return Cat(s[:f.mbits], Mux(s[f.mbits], expf[:f.ebits + 1], 0))
    p43 = as_signal(m, packed(f43, s43), f"{name}_p43")
    p52 = as_signal(m, packed(f52, s52), f"{name}_p52")
    opnd = Signal(8, name=f"{name}_opnd")
    cin = Signal(name=f"{name}_cin")
    total = Signal(8, name=f"{name}_sum")
    m.d.comb += [
        opnd.eq(Mux(int8, Cat(q, 0) ^ sign.replicate(8), Mux(e4m3, p43, p52))),
        cin.eq(Mux(int8, (up & ~q.all()) ^ sign, up)),
        total.eq(opnd + cin),
    ]

    # FP8 saturation to the largest normal: opnd + up > max_field.
    def over_max(f, p):
        return _gt_const(p, f.max_field) | ((p == f.max_field) & up)
    sat = Signal(name=f"{name}_fpsat")
    m.d.comb += sat.eq(Mux(e4m3, over_max(f43, p43), over_max(f52, p52)))
    maxf = Mux(e4m3, f43.max_field, f52.max_field)
    fp_byte = Cat(Mux(sat, maxf, total)[:7], sign)
    byte = Signal(8, name=f"{name}_byte")
    m.d.comb += byte.eq(Mux(nan, 0, Mux(int8, total, fp_byte)))
    return byte


class FixedToFloatAny(wiring.Component):
    """One lane of FP32/BF16 egress encode: accumulator -> bits of RNE(sat32(acc) *
    2**-scale) in FP32 (`bf16` = 0) or BF16 (`bf16` = 1, result in bits[0:16], bits[16:32]
    zero). Exactly :class:`FixedToFloat` of the selected format: beyond the format's
    range the result is +-Inf without `overflow`, which reports the int32 saturation of
    `acc` only.

    Both formats have the same exponent (bias 127), so saturation, leading-zero count,
    normalisation and the exponent are shared, and BF16 is FP32's significand cut 16 bits
    shorter, rounded once from the exact value (:func:`float_round`).

    It is the result encoder's stages 1 to 3 (:func:`enc_front`, :func:`enc_normalise`
    with :func:`float_exponent`, :func:`float_round`) without the registers between them:
    codec.BeatEncoder registers after each stage, each at most 8 LUT levels.

    `bf16_only`: the lane of codec.BeatEncoder that encodes BF16 and never FP32 (lanes
    [lanes, 2 * lanes)): `bf16` is ignored and taken as 1; only the 9 normalised bits and
    the sticky bit BF16 rounds on are formed (:func:`norm_top`, :func:`norm_sticky`), and
    :func:`bf16_round` rounds them."""

    LATENCY = 0     # combinational: outputs follow inputs in the same cycle

    def __init__(self, acc_width, bf16_only=False):
        if acc_width < 32:
            raise ValueError("acc_width must be at least 32")
        self.acc_width = acc_width
        self.bf16_only = bf16_only
        super().__init__({
            "acc": In(signed(acc_width)),
            "scale": In(signed(8)),
            "bf16": In(1),
            "bits": Out(32),
            "overflow": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        sign, mag, over, lz, zero = enc_front(m, self.acc, "f")
        exp, inf, tiny = float_exponent(m, lz, zero, self.scale, "f")
        if self.bf16_only:
            top9, s23 = norm_top(m, mag, lz, 9, "f"), norm_sticky(m, mag, lz, 23, "f")
            bits = bf16_round(m, top9, s23, exp, inf, tiny, sign, "f")
        else:
            top, s7, s23 = enc_normalise(m, mag, lz, "f")
            bits = float_round(m, top, s7, s23, exp, inf, tiny, sign, self.bf16, "f")
        m.d.comb += [self.bits.eq(bits), self.overflow.eq(over)]
        return m


# MX egress split in two (the element encoders then work on one line of `lanes` elements
# per cycle, not on a whole block): MxBlockExponent reduces a block to MX_BLOCK_INFO and
# its scale byte; MxLineEncoder encodes any `lanes` consecutive elements of that block
# with it. MX format select `fmt` of both: 0 MXINT8, 1 E4M3, 2 E5M2 (3 is reserved and
# behaves as 2).
MX_FMT_INT8 = 0
MX_FMT_E4M3 = 1
MX_FMT_E5M2 = 2

MX_BLOCK_INFO = data.StructLayout({
    # lowest rounding position, a bit index of |a| (see MxLineEncoder): MXINT8 the
    # block's top bit floor(log2(max|a|)); FP8 the position of the smallest normal,
    # emin - emax + floor(log2(max|a|)), floored at 0 (the X = -127 clamp needs no term:
    # see MxBlockEncoder). Anything for an all-zero block, whose elements are all 0.
    "lo": 5,
    # FP8: the biased element exponent of bit 0 of |a|, -scale - X + bias, modulo 64: the
    # exponent field of an element rounded at bit r of |a| is the low ebits + 1 bits of
    # r + eb (the extra bit shows rounding past the top)
    "eb": 6,
    # NaN block (X > 127): scale byte 0xFF, every element byte 0x00
    "nan": 1,
})


def block_magnitude(mags, overs):
    """(OR of the magnitudes, any saturated) of an MX block's (or line's) lanes, from their
    :func:`sat_abs` outputs: what :class:`MxBlockScale` needs of the elements."""
    return or_tree(mags), Cat(*overs).any()


def _mx_scale_ports():
    """Output ports of MxBlockExponent and MxBlockScale."""
    return {"info": Out(MX_BLOCK_INFO), "scale_byte": Out(8), "overflow": Out(1)}


# What the block exponent needs of the scale and the MX format, formed before the block's
# magnitudes are known (mx_scale_bounds): the leading-zero count of the block is then the
# only late input of MxBlockScale.
MX_SCALE_BOUNDS = data.StructLayout({
    # the scale byte X + 127 = base - lz (lz: leading zeros of the block's magnitude OR)
    "base": signed(10),
    # base - 255: the block is NaN (X > 127) for lz <= nan
    "nan": signed(10),
    # MX_BLOCK_INFO.eb of a block clamped at X = -127: 127 + bias - scale (mod 64)
    "eb_clamp": 6,
    "int8": 1,
    "e4m3": 1,                       # (neither: E5M2)
})


def mx_scale_bounds(m, scale, int8, e4m3, name="bounds"):
    """The MX_SCALE_BOUNDS of a block at `scale` in the format (`int8`, `e4m3`, or E5M2
    for neither), as a Signal: two adders on the scale, which the pipeline forms (and
    registers) while it reduces the block's magnitudes."""
    emax = {n: MX_FORMATS[n][1] for n in MX_FORMATS}
    f43, f52 = FLOAT_FORMATS["e4m3"], FLOAT_FORMATS["e5m2"]
    b = Signal(MX_SCALE_BOUNDS, name=name)
    m.d.comb += [
        b.base.eq((31 + E8M0_BIAS) - scale
                  - Mux(int8, emax["mxint8"], Mux(e4m3, emax["e4m3"], emax["e5m2"]))),
        b.nan.eq((31 + E8M0_BIAS - E8M0_NAN) - scale
                 - Mux(int8, emax["mxint8"], Mux(e4m3, emax["e4m3"], emax["e5m2"]))),
        b.eb_clamp.eq((Mux(e4m3, E8M0_BIAS + f43.bias, E8M0_BIAS + f52.bias) - scale)[:6]),
        b.int8.eq(int8),
        b.e4m3.eq(e4m3),
    ]
    return b


class MxBlockMagnitude(wiring.Component):
    """The part of an MX block's shared exponent that depends on its elements: `mag_or`,
    the OR of the int32-saturated magnitudes of `n` accumulators, and `saturated`, any of
    them outside int32. Both are ORs, so a block's values are the OR of its lines' values:
    the pipeline reduces one line of `lanes` accumulators per cycle as the block's lines
    arrive (codec.BeatEncoder) instead of the whole block at once; there it takes the
    magnitudes of the lanes' shared stage 1 (:func:`block_magnitude`)."""

    LATENCY = 0     # combinational

    def __init__(self, acc_width, n):
        if acc_width < 32:
            raise ValueError("acc_width must be at least 32")
        self.acc_width = acc_width
        self.n = n
        super().__init__({
            "acc": In(signed(acc_width)).array(n),
            "mag_or": Out(32),
            "saturated": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        mags, overs = [], []
        for i in range(self.n):
            _, mag, over = sat_abs(m, self.acc[i], f"sat{i}")
            mags.append(mag)
            overs.append(over)
        mag_or, saturated = block_magnitude(mags, overs)
        m.d.comb += [self.mag_or.eq(mag_or), self.saturated.eq(saturated)]
        return m


class MxBlockExponent(wiring.Component):
    """Shared exponent of one MX block of `block` accumulators, as :class:`MxBlockEncoder`:
    `scale_byte` is the block's E8M0 scale of v = sat32(acc) * 2**-scale, `overflow` is
    any accumulator saturated to int32 or a NaN block, and `info` (MX_BLOCK_INFO) is what
    :class:`MxLineEncoder` needs to encode the block's elements.

    It is :class:`MxBlockMagnitude` over the block followed by :class:`MxBlockScale`; the
    pipeline uses the two parts separately, with a register between them: the negation
    and the OR tree over 32 lanes are stage 1 of the result encoder, the leading-zero
    count and the scale byte stage 2 (each at most 8 LUT levels)."""

    LATENCY = 0     # combinational: outputs follow inputs in the same cycle

    def __init__(self, acc_width, block=32):
        if acc_width < 32:
            raise ValueError("acc_width must be at least 32")
        self.acc_width = acc_width
        self.block = block
        super().__init__({"acc": In(signed(acc_width)).array(block), "scale": In(signed(8)),
                          "fmt": In(2), **_mx_scale_ports()})

    def elaborate(self, platform):
        m = Module()
        m.submodules.mag = mag = MxBlockMagnitude(self.acc_width, self.block)
        m.submodules.scale = sc = MxBlockScale()
        for i in range(self.block):
            m.d.comb += mag.acc[i].eq(self.acc[i])
        bounds = mx_scale_bounds(m, self.scale, self.fmt == MX_FMT_INT8, self.fmt == MX_FMT_E4M3)
        m.d.comb += [sc.mag_or.eq(mag.mag_or), sc.saturated.eq(mag.saturated),
                     sc.bounds.eq(bounds),
                     self.info.eq(sc.info), self.scale_byte.eq(sc.scale_byte),
                     self.overflow.eq(sc.overflow)]
        return m


class MxBlockScale(wiring.Component):
    """Scale byte, OVERFLOW and MX_BLOCK_INFO of an MX block from its
    :class:`MxBlockMagnitude` outputs and the MX_SCALE_BOUNDS of its scale and format
    (:func:`mx_scale_bounds`).

    floor(log2(max|v|)) needs only the bit length of the block maximum, which is the bit
    length of the OR of all magnitudes: one leading-zero count, no comparator tree. The
    format only changes the constants subtracted after it. After the count there is one
    carry chain (each output's own, side by side) and the output muxes: stage 2 of the
    result encoder, at most 8 LUT levels."""

    LATENCY = 0     # combinational

    def __init__(self):
        super().__init__({"mag_or": In(32), "saturated": In(1), "bounds": In(MX_SCALE_BOUNDS),
                          **_mx_scale_ports()})

    def elaborate(self, platform):
        m = Module()
        lz, zero = lzc(m, self.mag_or, "lzblk")
        b = self.bounds
        int8, e4m3 = b.int8, b.e4m3
        emax = {n: MX_FORMATS[n][1] for n in MX_FORMATS}
        # The scale byte X + 127 = (31 - lz) - scale - emax + 127 = base - lz. The clamp (X <
        # -127: byte < 0) and NaN (X > 127: byte > 254) tests compare lz with the bounds,
        # each a carry chain beside the subtraction, not a test of its result.
        sb_raw = Signal(signed(10))         # 158 - 127 - 15 - 31 .. 158 + 128: -15 .. 286
        m.d.comb += sb_raw.eq(b.base - lz)
        # (An all-zero block has lz = 31 and its own scale byte; its info is not used.)
        clamp = Signal()                    # X < -127, unless the block is zero
        over = Signal()                     # X > 127, unless the block is zero
        nan = Signal()
        # all-zero block: m = 2**-126, X = max(-126 - emax, -127)
        sb_zero = Mux(int8, max(-126 - emax["mxint8"], -127) + E8M0_BIAS, 0)
        assert max(-126 - emax["e4m3"], -127) == max(-126 - emax["e5m2"], -127) == -127
        m.d.comb += [
            clamp.eq(lz > b.base),                      # sb_raw < 0
            over.eq(lz <= b.nan),                       # sb_raw >= 255
            nan.eq(~zero & over),
            self.scale_byte.eq(Mux(zero, sb_zero, Mux(over, E8M0_NAN,
                                                     Mux(clamp, 0, sb_raw[:8])))),
            self.overflow.eq(self.saturated | nan),
            self.info.nan.eq(nan),
        ]
        # Element grid, for MxLineEncoder. Unclamped, e_blk = -scale - X = emax - 31 + lz
        # (the scale cancels): the smallest-normal position emin - e_blk and the exponent
        # field base bias + e_blk need only the LZC. Clamped (X = -127), e_blk = 127 -
        # scale (eb_clamp); lo is 0 there anyway.
        f43, f52 = FLOAT_FORMATS["e4m3"], FLOAT_FORMATS["e5m2"]
        assert f43.emin <= 0 and f52.emin <= 0

        def floor0(c):
            """c - lz floored at 0, for a constant c < 32: a sign test, no comparator."""
            v = Signal(signed(7))
            m.d.comb += v.eq(c - lz)
            return Mux(v[-1], 0, v[:5])

        m.d.comb += [
            self.info.lo.eq(Mux(int8, 31 - lz,
                                Mux(e4m3, floor0(f43.emin - emax["e4m3"] + 31),
                                    floor0(f52.emin - emax["e5m2"] + 31)))),
            self.info.eb.eq(Mux(clamp, b.eb_clamp,
                                (lz + Mux(e4m3, emax["e4m3"] - 31 + f43.bias,
                                          emax["e5m2"] - 31 + f52.bias))[:6])),
        ]
        return m


class MxLineEncoder(wiring.Component):
    """Element bytes of `lanes` consecutive accumulators of one MX block, given the block's
    MX_BLOCK_INFO from :class:`MxBlockExponent` (same `scale` and `fmt`). Element i is
    `elems` bits [8i, 8i+8). Over the chunks of a block this gives exactly
    :class:`MxBlockEncoder`'s elements.

    One element encoder per lane serves the three formats. Element values are
    u = |a| * 2**e_blk with e_blk = -scale - X. Let r be a bit position of |a|: for INT8
    the block's top bit (fixed point: the element's ulp is 2**(r-6) in units of |a|), for
    FP8 the element's own leading one n, floored at the block's smallest-normal position
    lo (ulp 2**(r-mbits)). Both are r = max(n, lo), with lo the block's top bit for INT8,
    and a right shift of |a| << 6 by r gives a 7-bit window (plus guard and sticky) that
    holds the INT8 quotient and, in its top 4 / 3 bits, the E4M3 / E5M2 significand; the
    FP8 guard and sticky are the window bits under the significand. The rounding
    increment (and the INT8 negation) is one 8-bit adder on the packed byte; the FP8
    exponent field is r + info.eb. Only this packing differs between the formats.

    The window is taken from the normalised magnitude (leading one at bit 31, the same
    front end as the FP32/BF16 lanes), where the shift is r - n = max(0, lo - n): 0 .. 8,
    a short shifter after the block is known. It is the result encoder's stages 1 to 4
    (:func:`enc_front`, :func:`norm_top` and :func:`norm_sticky`, :func:`mx_element_shift`,
    :func:`mx_element_round`) without the registers between them: codec.BeatEncoder
    registers after each stage (and `info` after :class:`MxBlockScale`).

    `window`: the form of codec.BeatEncoder's MX-only lanes instead, no normaliser: one
    right shift of |a| to the element's rounding position (:func:`mx_element_window`),
    the same bytes."""

    LATENCY = 0     # combinational: outputs follow inputs in the same cycle

    def __init__(self, acc_width, lanes, window=False):
        if acc_width < 32:
            raise ValueError("acc_width must be at least 32")
        self.acc_width = acc_width
        self.lanes = lanes
        self.window = window
        super().__init__({
            "acc": In(signed(acc_width)).array(lanes),
            "scale": In(signed(8)),
            "fmt": In(2),
            "info": In(MX_BLOCK_INFO),
            "elems": Out(8 * lanes),
        })

    def elaborate(self, platform):
        m = Module()
        int8 = Signal()
        e4m3 = Signal()
        m.d.comb += [int8.eq(self.fmt == MX_FMT_INT8), e4m3.eq(self.fmt == MX_FMT_E4M3)]
        for i in range(self.lanes):
            sign, mag, _, lz, _ = enc_front(m, self.acc[i], f"l{i}")
            if self.window:
                sh, sticky, expf = mx_element_window(m, mag, lz, self.info.lo, self.info.eb,
                                                     f"l{i}")
            else:
                # norm[23:32] and norm[0:23] != 0, as enc_normalise has them
                top9, s23 = norm_top(m, mag, lz, 9, f"l{i}"), norm_sticky(m, mag, lz, 23, f"l{i}")
                sh, sticky, expf = mx_element_shift(m, top9, s23, lz, self.info.lo,
                                                    self.info.eb, f"l{i}")
            byte = mx_element_round(m, sh, sticky, expf, sign, self.info.nan, int8, e4m3, f"l{i}")
            m.d.comb += self.elems.word_select(i, 8).eq(byte)
        return m
