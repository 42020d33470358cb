"""Numeric conversion blocks of the non-INT32 dtypes (SPEC §4), all combinational.

Ingress: :class:`FloatToFixed` (FP32, BF16) and :class:`MxElementToFixed` (MXINT8,
MXFP8 E4M3/E5M2) turn one element into its int32-range fixed-point contribution
q = RNE(v * 2**scale). Egress: :class:`FixedToFloat` (FP32, BF16) and
:class:`MxBlockEncoder` (one 32-element MX block) turn exact accumulators back.
These are one block per format.

The pipeline uses the run-time format select blocks instead, which share one datapath
per lane across formats: :class:`ElementToFixed` (ingress, every dtype),
:class:`FixedToFloatAny` (FP32/BF16 egress) and, for MX egress, :class:`MxBlockExponent`
(one block -> scale byte and MX_BLOCK_INFO; in the pipeline as its two parts,
:class:`MxBlockMagnitude` per line and :class:`MxBlockScale` per block) with
:class:`MxLineEncoder` (a line of `lanes` elements of that block per use). Each is bit-exact with its per-format
counterparts; `scripts/area.py` compares their size. They are combinational
(LATENCY = 0) and deep: see each class for where a pipeline register would go.

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

from .params import (DTYPE_BF16, DTYPE_FP32, DTYPE_MXFP8_E4M3, DTYPE_MXFP8_E5M2,
                     DTYPE_MXINT8)

__all__ = ["FloatFormat", "FLOAT_FORMATS", "MX_FORMATS", "DTYPE_FORMAT",
           "lzc", "thermometer", "rne_shr", "rne_shr_parts", "sat_abs",
           "FloatToFixed", "MxElementToFixed", "FixedToFloat", "MxBlockEncoder",
           "ElementToFixed", "FixedToFloatAny", "MX_BLOCK_INFO", "MX_FMT_INT8", "MX_FMT_E4M3",
           "MX_FMT_E5M2", "MxBlockMagnitude", "MxBlockScale", "MxBlockExponent",
           "MxLineEncoder"]

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
    a power of two, which leaves the count of a non-zero x unchanged. The tree nodes
    are shared expression objects (the netlist emits each once)."""
    x = as_signal(m, x, f"{name}_in")
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
            return [C(0, 1)]
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


def shr_window(m, x, amount, width, name="win", gran=8):
    """(x >> amount)[:width] with its guard and sticky bits, as Signals (q, guard, sticky),
    for a narrow quotient of a wide x: the area-lean counterpart of `rne_shr_parts`.

    `amount` unsigned in 0..len(x)+1. The shift is split at `gran` (a power of two): the
    coarse part selects a window of gran + width + 1 bits, the fine part shifts within it.
    The sticky bits below the window are the prefix OR of whole granules (picked by the
    coarse amount), those inside it a `gran`-bit mask; no shifter output is spent on them."""
    fb = (gran - 1).bit_length()
    assert gran == 1 << fb and len(amount) > fb
    x = as_signal(m, x, f"{name}_in")
    amount = as_signal(m, amount, f"{name}_amount")
    xe = Cat(Const(0, 1), x)                          # xe[j] = x[j-1]: the guard of amount j
    ncoarse = min(len(xe) // gran + 1, 1 << (len(amount) - fb))
    span = gran + width + 1
    pad = Cat(xe, Const(0, ncoarse * gran + span - len(xe)))
    coarse, fine = amount[fb:], amount[:fb]
    window = Signal(span, name=f"{name}_window")
    below = Signal(name=f"{name}_below")             # sticky under the window
    granule_or = [pad[gran * i:gran * (i + 1)].any() for i in range(ncoarse)]
    prefix = [Const(0, 1)]
    for g in granule_or[:-1]:
        prefix.append(prefix[-1] | g)
    # a coarse amount beyond the last window only occurs for amounts past len(x) + 1
    m.d.comb += [
        window.eq(Array(pad[gran * i:gran * i + span] for i in range(ncoarse))[coarse]),
        below.eq(Array(prefix)[coarse]),
    ]
    q = Signal(width, name=f"{name}_q")
    guard = Signal(name=f"{name}_guard")
    sticky = Signal(name=f"{name}_sticky")
    m.d.comb += [
        q.eq((window >> (fine + 1))[:width]),
        guard.eq(window.bit_select(fine, 1)),
        sticky.eq(below | (window[:gran] & thermometer(fine, gran)).any()),
    ]
    return q, guard, sticky


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


# --------------------------------------------------------------------------
# run-time format select: one lane of logic for every dtype
# --------------------------------------------------------------------------
# The blocks above are one per format. The pipeline converts every dtype in the same lanes,
# so the blocks below take the format as an input and share the expensive parts (shifter,
# rounding, sign adder) across formats; only the field extraction is per format.

def _fixed_any(m, sig, sign, dist, kmax, nan, inf, prefix, passthrough=None):
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
    amt = Signal(6, name=f"{prefix}_amt")
    m.d.comb += amt.eq(Mux(dist[6:].any(), 63, dist[:6]))
    y = Signal(32, name=f"{prefix}_y")
    m.d.comb += y.eq((Cat(Const(0, kmax + 1), sig) >> amt)[:32])
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
    later (`latency` 1); the pipeline uses this form."""

    LATENCY = 0     # combinational (pipelined=False): outputs follow inputs in the same cycle

    def __init__(self, pipelined=False):
        self.pipelined = pipelined
        self.latency = int(pipelined)
        super().__init__({
            "dtype": In(3),
            "bits": In(32),
            "block_scale": In(8),
            "scale": In(signed(8)),
            "q": Out(signed(32)),
            "nan": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        b, d = self.bits, self.dtype
        fp32 = Signal()
        bf16 = Signal()
        int8 = Signal()
        e4m3 = Signal()
        e5m2 = Signal()
        mx = Signal()
        m.d.comb += [
            fp32.eq(d == DTYPE_FP32),
            bf16.eq(d == DTYPE_BF16),
            int8.eq(d == DTYPE_MXINT8),
            e4m3.eq(d == DTYPE_MXFP8_E4M3),
            e5m2.eq(d == DTYPE_MXFP8_E5M2),
            mx.eq(int8 | e4m3 | e5m2),
        ]
        conv = fp32 | bf16 | mx

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
        # wants dist = kmax - k. Subnormals (and INT8) use exponent field 1: offset =
        # -(bias + mbits + the zero bits under the significand) for the floats,
        # -(FRAC + 16 + 1) for INT8 so that its field of 1 cancels; MX adds block_scale -
        # 127. Everything but the exponent field is common to the lanes of a line (dtype,
        # scale, block scale): one adder per lane remains.
        # kmax: a non-zero significand has its leading one at bit 16 or above (INT8 1,
        # BF16 / FP8 subnormals), except FP32 subnormals, which only occur with
        # k <= 1 + 127 - 150. So k > 14 saturates every non-zero input.
        kmax = 15

        def off(f, pad):
            return -(f.bias + f.mbits + pad)

        offset = Signal(signed(9))
        m.d.comb += offset.eq(Mux(fp32, off(f32, 0),
                                  Mux(bf16, off(fb16, 16),
                                      Mux(e4m3, off(f43, 20) - E8M0_BIAS,
                                          Mux(e5m2, off(f52, 21) - E8M0_BIAS,
                                              -(MXINT8_FRAC + 16 + 1 + E8M0_BIAS))))))
        base = Signal(signed(10))                   # kmax - (k - exponent field)
        m.d.comb += base.eq(kmax - offset - self.scale - Mux(mx, self.block_scale, 0))
        dist = Signal(signed(10))
        m.d.comb += dist.eq(base - Mux(normal, expf, 1))
        if self.pipelined:
            # Register the fields: the shifter, rounding and sign adder get a cycle.
            regs = []
            for name, v in (("sig", sig), ("sign", sign), ("dist", dist), ("nan", nan),
                            ("inf", inf), ("conv", conv), ("bits", b)):
                r = Signal(Value.cast(v).shape(), name=f"{name}_r")
                m.d.sync += r.eq(v)
                regs.append(r)
            sig, sign, dist, nan, inf, conv, b = regs
        q = _fixed_any(m, sig, sign, dist, kmax, nan, inf, "e2x",
                       passthrough=(~conv, b.as_signed()))
        m.d.comb += [
            self.q.eq(q),
            self.nan.eq(conv & nan),
        ]
        return m


class FixedToFloatAny(wiring.Component):
    """One lane of FP32/BF16 egress encode: accumulator -> bits of RNE(sat32(acc) *
    2**-scale) in FP32 (`bf16` = 0) or BF16 (`bf16` = 1, result in bits[0:16], bits[16:32]
    zero). Exactly :class:`FixedToFloat` of the selected format: beyond the format's
    range the result is +-Inf without `overflow`, which reports the int32 saturation of
    `acc` only.

    Both formats have the same exponent (bias 127), so saturation, leading-zero count,
    normalisation, the exponent and the subnormal shift are shared, and BF16 is FP32's
    significand cut 16 bits shorter. BF16 rounds once, from the exact value: its guard is
    FP32's significand bit 15 and its sticky the OR of FP32's bits 0..14 with FP32's own
    guard and sticky (the bits FP32 already drops) -- never FP32's rounded result. Both
    roundings then share the one increment of the packed encoding (at bit 0 or 16).

    Timing (ECP5, registered inputs and outputs): about 20 ns, ~50 MHz. Path: negation,
    leading-zero count, normalising shift, rounding, packed adder. A register after the
    leading-zero count (|a|, lz, zero, sign, overflow: ~40 bits) gives ~80 MHz; a second
    one after the normalising shift is needed for 100 MHz."""

    LATENCY = 0     # combinational: outputs follow inputs in the same cycle

    def __init__(self, acc_width):
        if acc_width < 32:
            raise ValueError("acc_width must be at least 32")
        self.acc_width = acc_width
        super().__init__({
            "acc": In(signed(acc_width)),
            "scale": In(signed(8)),
            "bf16": In(1),
            "bits": Out(32),
            "overflow": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        f = FLOAT_FORMATS["fp32"]
        assert FLOAT_FORMATS["bf16"].bias == f.bias and FLOAT_FORMATS["bf16"].ebits == f.ebits
        cut = f.mbits - FLOAT_FORMATS["bf16"].mbits            # 16 significand bits fewer
        sign, mag, over = sat_abs(m, self.acc)

        # Normalise: the leading one of |a| (at most 2**31) moves to bit 31.
        lz, zero = lzc(m, mag, "lz")
        norm = Signal(32)
        m.d.comb += norm.eq((mag << lz)[:32])
        # Biased exponent of the leading one: floor(log2|a|) - scale + bias.
        exp_pre = Signal(signed(11))
        m.d.comb += exp_pre.eq(31 - lz - self.scale + f.bias)
        # Subnormal: one more bit to the right, never more (|a| >= 1, scale <= 127 give
        # exp_pre >= 31 - 31 - 127 + 127 = 0), and only for exp_pre = 0: |a| = 1 at scale
        # 127. Tested as such, not after the exponent adder.
        extra = Signal()
        m.d.comb += extra.eq((self.scale == 127) & ~mag[1:].any())

        # FP32 significand (24 bits, leading one at bit 23 unless subnormal), guard, sticky.
        q = Signal(f.mbits + 1)
        guard = Signal()
        sticky = Signal()
        fixed = 31 - f.mbits                                   # 8 bits under the significand
        m.d.comb += [
            q.eq(Mux(extra, norm[fixed + 1:], norm[fixed:])),
            guard.eq(Mux(extra, norm[fixed], norm[fixed - 1])),
            sticky.eq(Mux(extra, norm[:fixed].any(), norm[:fixed - 1].any())),
        ]
        up32 = guard & (sticky | q[0])
        up16 = q[cut - 1] & (q[:cut - 1].any() | guard | sticky | q[cut])

        normal = q[f.mbits]             # leading one kept: not shifted into a subnormal
        packed = Signal(f.width - 1)
        m.d.comb += packed.eq(Cat(q[:f.mbits], Mux(normal, exp_pre[:f.ebits], 0))
                              + Mux(self.bf16, up16 << cut, up32))
        # exp_pre >= 255, as bit tests of the signed(11) exp_pre (no comparator)
        assert f.emask == 255 and len(exp_pre) == 11
        inf = ~zero & ~exp_pre[-1] & (exp_pre[8:10].any() | exp_pre[:8].all())
        body = Mux(inf, f.inf_field, packed)
        m.d.comb += [
            self.bits.eq(Mux(self.bf16, Cat(body[cut:], sign), Cat(body, sign))),
            self.overflow.eq(over),
        ]
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


def _mx_scale_ports():
    """Ports of MxBlockExponent and MxBlockScale besides the block's values."""
    return {"scale": In(signed(8)), "fmt": In(2), "info": Out(MX_BLOCK_INFO),
            "scale_byte": Out(8), "overflow": Out(1)}


class MxBlockMagnitude(wiring.Component):
    """The part of an MX block's shared exponent that depends on its elements: `mag_or`,
    the OR of the int32-saturated magnitudes of `n` accumulators, and `saturated`, any of
    them outside int32. Both are ORs, so a block's values are the OR of its lines' values:
    the pipeline reduces one line of `lanes` accumulators per cycle as the block's lines
    arrive (codec.LineEncoder) instead of the whole block at once."""

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
        m.d.comb += [self.mag_or.eq(or_tree(mags)), self.saturated.eq(Cat(*overs).any())]
        return m


class MxBlockExponent(wiring.Component):
    """Shared exponent of one MX block of `block` accumulators, as :class:`MxBlockEncoder`:
    `scale_byte` is the block's E8M0 scale of v = sat32(acc) * 2**-scale, `overflow` is
    any accumulator saturated to int32 or a NaN block, and `info` (MX_BLOCK_INFO) is what
    :class:`MxLineEncoder` needs to encode the block's elements.

    It is :class:`MxBlockMagnitude` over the block followed by :class:`MxBlockScale`; the
    pipeline uses the two parts separately.

    Timing (ECP5, registered inputs and outputs): about 22 ns, ~45 MHz. Path: negation,
    OR tree over 32 lanes (long routes), leading-zero count, scale-byte adder. The
    cheapest cut is after the OR tree (32 bits plus the any-saturated flag): ~80 MHz; a
    second one after the leading-zero count is needed for 100 MHz."""

    LATENCY = 0     # combinational: outputs follow inputs in the same cycle

    def __init__(self, acc_width, block=32):
        if acc_width < 32:
            raise ValueError("acc_width must be at least 32")
        self.acc_width = acc_width
        self.block = block
        super().__init__({"acc": In(signed(acc_width)).array(block), **_mx_scale_ports()})

    def elaborate(self, platform):
        m = Module()
        m.submodules.mag = mag = MxBlockMagnitude(self.acc_width, self.block)
        m.submodules.scale = sc = MxBlockScale()
        for i in range(self.block):
            m.d.comb += mag.acc[i].eq(self.acc[i])
        m.d.comb += [sc.mag_or.eq(mag.mag_or), sc.saturated.eq(mag.saturated),
                     sc.scale.eq(self.scale), sc.fmt.eq(self.fmt),
                     self.info.eq(sc.info), self.scale_byte.eq(sc.scale_byte),
                     self.overflow.eq(sc.overflow)]
        return m


class MxBlockScale(wiring.Component):
    """Scale byte, OVERFLOW and MX_BLOCK_INFO of an MX block from its
    :class:`MxBlockMagnitude` outputs.

    floor(log2(max|v|)) needs only the bit length of the block maximum, which is the bit
    length of the OR of all magnitudes: one leading-zero count, no comparator tree. The
    format only changes the constant emax subtracted after it."""

    LATENCY = 0     # combinational

    def __init__(self):
        super().__init__({"mag_or": In(32), "saturated": In(1), **_mx_scale_ports()})

    def elaborate(self, platform):
        m = Module()
        lz, zero = lzc(m, self.mag_or, "lzblk")

        int8 = Signal()
        e4m3 = Signal()
        m.d.comb += [int8.eq(self.fmt == MX_FMT_INT8), e4m3.eq(self.fmt == MX_FMT_E4M3)]
        emax = {n: MX_FORMATS[n][1] for n in MX_FORMATS}
        # The scale byte X + 127 = (31 - lz) - scale - emax + 127: the scale part is ready
        # before the block reduction, so one subtraction follows the LZC, and the clamp
        # (X < -127: byte < 0) and NaN (X > 127: byte > 254) tests are bit tests of it.
        sb_base = Signal(signed(10))
        sb_raw = Signal(signed(10))         # 158 - 127 - 15 - 31 .. 158 + 128: -15 .. 286
        m.d.comb += [
            sb_base.eq((31 + E8M0_BIAS) - self.scale
                       - Mux(int8, emax["mxint8"], Mux(e4m3, emax["e4m3"], emax["e5m2"]))),
            sb_raw.eq(sb_base - lz),
        ]
        clamp = Signal()
        nan = Signal()
        # all-zero block: m = 2**-126, X = max(-126 - emax, -127)
        sb_zero = Mux(int8, max(-126 - emax["mxint8"], -127) + E8M0_BIAS, 0)
        assert max(-126 - emax["e4m3"], -127) == max(-126 - emax["e5m2"], -127) == -127
        m.d.comb += [
            clamp.eq(~zero & sb_raw[-1]),
            nan.eq(~zero & ~sb_raw[-1] & (sb_raw[8] | sb_raw[:8].all())),
            self.scale_byte.eq(Mux(zero, sb_zero, Mux(nan, E8M0_NAN,
                                                     Mux(sb_raw[-1], 0, sb_raw[:8])))),
            self.overflow.eq(self.saturated | nan),
            self.info.nan.eq(nan),
        ]
        # Element grid, for MxLineEncoder. Unclamped, e_blk = -scale - X = emax - 31 + lz
        # (the scale cancels): the smallest-normal position emin - e_blk and the exponent
        # field base bias + e_blk need only the LZC. Clamped (X = -127), e_blk = 127 -
        # scale; lo is 0 there anyway.
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
            self.info.eb.eq(Mux(clamp,
                                Mux(e4m3, E8M0_BIAS + f43.bias, E8M0_BIAS + f52.bias) - self.scale,
                                lz + Mux(e4m3, emax["e4m3"] - 31 + f43.bias,
                                         emax["e5m2"] - 31 + f52.bias))[:6]),
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
    FP8 the element's own leading one, floored at the block's smallest-normal position
    lo (ulp 2**(r-mbits)). Both are r = floor(log2(|a| | 2**lo)), with lo the block's top
    bit for INT8, so one leading-zero count gives r (no comparator), and one right shift
    of |a| << 6 by r gives a 7-bit window (plus guard and sticky) that holds the INT8
    quotient and, in its top 4 / 3 bits, the E4M3 / E5M2 significand; the FP8 guard and
    sticky are the window bits under the significand. The rounding increment (and the
    INT8 negation) is one 8-bit adder on the packed byte; the FP8 exponent field is
    r + info.eb. Only this packing differs between the formats.

    Timing (ECP5, registered inputs and outputs): about 20 ns, ~50 MHz. Path: negation,
    leading-zero count, window shift, rounding, packing adder, saturation mux. A register
    after the leading-zero count (r, |a|, sign: 38 bits per lane) gives ~90 MHz."""

    LATENCY = 0     # combinational: outputs follow inputs in the same cycle

    def __init__(self, acc_width, lanes):
        if acc_width < 32:
            raise ValueError("acc_width must be at least 32")
        self.acc_width = acc_width
        self.lanes = lanes
        super().__init__({
            "acc": In(signed(acc_width)).array(lanes),
            "scale": In(signed(8)),
            "fmt": In(2),
            "info": In(MX_BLOCK_INFO),
            "elems": Out(8 * lanes),
        })

    def elaborate(self, platform):
        m = Module()
        f43, f52 = FLOAT_FORMATS["e4m3"], FLOAT_FORMATS["e5m2"]
        int8 = Signal()
        e4m3 = Signal()
        m.d.comb += [int8.eq(self.fmt == MX_FMT_INT8), e4m3.eq(self.fmt == MX_FMT_E4M3)]
        fbits = MXINT8_FRAC
        width = fbits + 1                   # the window: INT8 quotient < 2**7
        assert f43.mbits < fbits and f52.mbits < fbits

        lo_bit = Signal(32)
        maxf = Signal(8)                    # largest finite FP8 magnitude field
        m.d.comb += [
            lo_bit.eq(1 << self.info.lo),
            maxf.eq(Mux(e4m3, f43.max_field, f52.max_field)),
        ]

        for i in range(self.lanes):
            sign, mag, _ = sat_abs(m, self.acc[i], f"sat{i}")
            lz_i, _ = lzc(m, mag | lo_bit, f"lz{i}")
            r = Signal(5, name=f"r{i}")
            m.d.comb += r.eq(31 - lz_i)
            q, g, st = shr_window(m, Cat(Const(0, fbits), mag), r, width, f"win{i}")

            # FP8: significand = the window's top mbits + 1 bits, guard and sticky below it
            def fp8(f):
                cut = fbits - f.mbits
                return q[cut:], q[cut - 1], q[:cut - 1].any() | g | st
            s43, g43, st43 = fp8(f43)
            s52, g52, st52 = fp8(f52)
            gd = Signal(name=f"g{i}")
            sk = Signal(name=f"st{i}")
            lsb = Signal(name=f"lsb{i}")
            m.d.comb += [
                gd.eq(Mux(int8, g, Mux(e4m3, g43, g52))),
                sk.eq(Mux(int8, st, Mux(e4m3, st43, st52))),
                lsb.eq(Mux(int8, q[0], Mux(e4m3, s43[0], s52[0]))),
            ]
            up = gd & (sk | lsb)
            expf = Signal(6, name=f"expf{i}")
            m.d.comb += expf.eq(r + self.info.eb)

            # One adder. INT8: -(q + up) = ~q + (1 - up), with q = 127 rounding up
            # saturated first (the only way past 127). FP8: the packed magnitude, rounded
            # by an increment that carries from the mantissa into the exponent field
            # (subnormal -> normal, 1.11..1 -> next binade).
            def packed(f, s):
                return Cat(s[:f.mbits], Mux(s[f.mbits], expf[:f.ebits + 1], 0))
            p43 = as_signal(m, packed(f43, s43), f"p43_{i}")
            p52 = as_signal(m, packed(f52, s52), f"p52_{i}")
            opnd = Signal(8, name=f"opnd{i}")
            cin = Signal(name=f"cin{i}")
            total = Signal(8, name=f"sum{i}")
            m.d.comb += [
                opnd.eq(Mux(int8, Cat(q, 0) ^ sign.replicate(8), Mux(e4m3, p43, p52))),
                cin.eq(Mux(int8, (up & ~q.all()) ^ sign, up)),
                total.eq(opnd + cin),
            ]
            # FP8 saturation to the largest normal, decided from the operand (in parallel
            # with the adder): opnd + up > max_field.
            def over_max(f, p):
                return _gt_const(p, f.max_field) | ((p == f.max_field) & up)
            sat = Signal(name=f"fpsat{i}")
            m.d.comb += sat.eq(Mux(e4m3, over_max(f43, p43), over_max(f52, p52)))
            fp_byte = Cat(Mux(sat, maxf, total)[:7], sign)
            byte = Mux(int8, total, fp_byte)
            m.d.comb += self.elems.word_select(i, 8).eq(Mux(self.info.nan, 0, byte))
        return m
