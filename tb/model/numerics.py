"""Bit-exact numeric semantics of aggswitch (SPEC section 4).

Two entry points, keyed by dtype code:

* :func:`decode` -- ingress: payload bytes -> int32-range fixed-point
  contributions ``q`` (int64) and a NaN flag;
* :func:`encode` -- egress: exact accumulators -> payload bytes and an
  OVERFLOW flag.

Everything is exact integer arithmetic (no float rounding shortcuts): a
finite value is handled as ``M * 2**E`` with an integer significand ``M`` and
rounding is an explicit round-half-to-even (RNE) on integers.

Choices where SPEC section 4 leaves a detail open (documented in the
docstrings below and in the project report):

* FP32/BF16 egress follows IEEE 754 RNE: a value beyond the format's range
  becomes +-Inf; this does not set OVERFLOW (OVERFLOW reports the int32
  saturation of the accumulator, and for MX a NaN block). In practice
  ``|a * 2**-scale|`` overflows only for large ``a`` with ``scale`` near -128.
* MX egress: saturating an element to the largest normal of its type is
  part of MX quantisation and does not set OVERFLOW. A NaN block (shared
  exponent above 127) has scale byte 0xFF and all its element bytes 0x00.
* A negative value that rounds to zero keeps its sign bit in the float
  element types (FP32/BF16/E4M3/E5M2 "-0"), as the IEEE/OCP conversion of a
  negative real does; an accumulator of exactly 0 encodes as +0. MXINT8 has
  no signed zero.
* MXINT8 ingress accepts the element byte 0x80 as -128 * 2**-6 = -2 (two's
  complement); egress never produces it (saturation to +-127 * 2**-6).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .frames import (BF16, FP32, INT32, MX_BLOCK, MX_SCALE_LINE, MXFP8_E4M3,
                     MXFP8_E5M2, MXINT8, payload_len)

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1

_LSHIFT_CAP = 31   # a significand < 2**32 shifted by >= 31 already saturates int32
_RSHIFT_CAP = 40   # a significand < 2**32 shifted right by >= 33 rounds to 0


# --------------------------------------------------------------------------
# exact round-half-to-even scaling
# --------------------------------------------------------------------------
def rne_shift(m, k) -> np.ndarray:
    """RNE(m * 2**k) for integer arrays m >= 0 (m < 2**32) and k.

    Exact for every result below 2**31; results that would be >= 2**31
    (only reachable through k >= 0) are returned as some value >= 2**31,
    which callers saturate. Vectorised, int64 throughout."""
    m = np.asarray(m, dtype=np.int64)
    k = np.asarray(k, dtype=np.int64)
    m, k = np.broadcast_arrays(m, k)
    left = np.left_shift(m, np.clip(k, 0, _LSHIFT_CAP))
    r = np.clip(-k, 1, _RSHIFT_CAP)          # right-shift amount (>= 1 for safety)
    q = np.right_shift(m, r)
    rem = m & ((np.int64(1) << r) - 1)
    half = np.int64(1) << (r - 1)
    up = (rem > half) | ((rem == half) & ((q & 1) == 1))
    right = q + up.astype(np.int64)
    return np.where(k >= 0, left, right)


def bit_length(a) -> np.ndarray:
    """Bit length of non-negative int64 values below 2**53 (0 -> 0)."""
    a = np.asarray(a, dtype=np.int64)
    _, e = np.frexp(a.astype(np.float64))   # exact: a < 2**53
    return np.where(a == 0, 0, e).astype(np.int64)


def saturate_signed(sign, mag) -> np.ndarray:
    """Apply sign (0/1) to magnitude and saturate to the int32 range."""
    mag = np.asarray(mag, dtype=np.int64)
    pos = np.minimum(mag, INT32_MAX)
    neg = -np.minimum(mag, -INT32_MIN)
    return np.where(np.asarray(sign) != 0, neg, pos).astype(np.int64)


# --------------------------------------------------------------------------
# float formats
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class FloatFormat:
    """A binary floating-point element format.

    kind 'ieee': the all-ones exponent is Inf (mantissa 0) or NaN.
    kind 'e4m3': OCP E4M3, no Inf, only S.1111.111 is NaN; all other
    encodings with the top exponent are normal numbers."""

    name: str
    ebits: int
    mbits: int
    bias: int
    kind: str

    @property
    def width(self) -> int:
        return 1 + self.ebits + self.mbits

    @property
    def emask(self) -> int:
        return (1 << self.ebits) - 1

    @property
    def emin(self) -> int:
        return 1 - self.bias

    @property
    def max_field(self) -> int:
        """Largest finite magnitude encoding (bits without sign)."""
        if self.kind == "ieee":
            return ((self.emask - 1) << self.mbits) | ((1 << self.mbits) - 1)
        return (self.emask << self.mbits) | ((1 << self.mbits) - 2)

    @property
    def inf_field(self) -> int:
        return self.emask << self.mbits

    @property
    def emax(self) -> int:
        """Exponent of the largest normal (floor(log2(max normal)))."""
        return (self.max_field >> self.mbits) - self.bias

    def decode_parts(self, bits):
        """bits (uint) -> (sign, M, E, nan, inf) with value (-1)**sign * M * 2**E."""
        bits = np.asarray(bits, dtype=np.int64)
        sign = (bits >> (self.ebits + self.mbits)) & 1
        expf = (bits >> self.mbits) & self.emask
        mant = bits & ((1 << self.mbits) - 1)
        if self.kind == "ieee":
            special = expf == self.emask
            nan = special & (mant != 0)
            inf = special & (mant == 0)
        else:
            nan = (expf == self.emask) & (mant == (1 << self.mbits) - 1)
            inf = np.zeros_like(nan)
        normal = expf != 0
        m = np.where(normal, mant | (1 << self.mbits), mant)
        e = np.where(normal, expf, 1) - self.bias - self.mbits
        m = np.where(nan | inf, 0, m)
        return sign, m, e, nan, inf

    def encode_mag(self, a, e, saturate: bool):
        """Encode the magnitudes a * 2**e (a: int64 >= 0, < 2**32; e: int)
        with RNE, subnormals kept. Overflow gives the largest normal if
        `saturate`, else Inf (IEEE). Returns the unsigned bit field."""
        a = np.asarray(a, dtype=np.int64)
        e = np.asarray(e, dtype=np.int64)
        a, e = np.broadcast_arrays(a, e)
        n = bit_length(a) - 1                     # floor(log2 a) for a > 0
        big_e = n + e                             # exponent of the value
        qexp = np.maximum(big_e, self.emin) - self.mbits   # exponent of one ulp
        m = rne_shift(a, e - qexp)
        carry = m >> (self.mbits + 1) != 0        # rounded up to the next binade
        m = np.where(carry, m >> 1, m)
        qexp = qexp + carry.astype(np.int64)
        is_normal = m >= (1 << self.mbits)
        expf = np.where(is_normal, qexp + self.mbits + self.bias, 0)
        mant = np.where(is_normal, m - (1 << self.mbits), m)
        # exponents beyond the field cannot be packed: clip before packing
        too_big = expf > self.emask
        field = (np.minimum(expf, self.emask) << self.mbits) | mant
        over = too_big | (field > self.max_field)
        repl = self.max_field if saturate else self.inf_field
        field = np.where(over, repl, field)
        field = np.where(a == 0, 0, field)
        return field.astype(np.int64)


F32 = FloatFormat("fp32", 8, 23, 127, "ieee")
F_BF16 = FloatFormat("bf16", 8, 7, 127, "ieee")
F_E4M3 = FloatFormat("e4m3", 4, 3, 7, "e4m3")
F_E5M2 = FloatFormat("e5m2", 5, 2, 15, "ieee")

# MX element types: (float format or None for INT8, emax used by the shared
# exponent rule, largest element magnitude description)
MX_EMAX = {MXINT8: 0, MXFP8_E4M3: 8, MXFP8_E5M2: 15}
MX_ELEM = {MXINT8: None, MXFP8_E4M3: F_E4M3, MXFP8_E5M2: F_E5M2}
MXINT8_FRAC = 6            # implicit 2**-6
MXINT8_MAX = 127
E8M0_BIAS = 127
E8M0_NAN = 0xFF


# --------------------------------------------------------------------------
# ingress
# --------------------------------------------------------------------------
def _to_fixed(sign, m, e, nan, inf, shift):
    """q = RNE((-1)**sign * m * 2**(e + shift)) saturated to int32;
    NaN -> 0, Inf -> saturated."""
    mag = rne_shift(m, e + shift)
    mag = np.where(inf, np.int64(1) << 32, mag)
    mag = np.where(nan, 0, mag)
    return saturate_signed(sign, mag)


def _check_len(dtype, payload, count):
    want = payload_len(dtype, count)
    if len(payload) != want:
        raise ValueError(f"payload is {len(payload)} bytes, dtype {dtype} "
                         f"count {count} needs {want}")


def decode(dtype: int, payload: bytes, count: int, scale: int):
    """Ingress conversion (SPEC 4). Returns (q, nan): q an int64 array of
    `count` int32-range contributions, nan True if any element (or MX
    block) was NaN."""
    payload = bytes(payload)
    _check_len(dtype, payload, count)
    if dtype == INT32:
        q = np.frombuffer(payload, dtype=">i4").astype(np.int64)
        return q, False
    if dtype in (FP32, BF16):
        fmt = F32 if dtype == FP32 else F_BF16
        raw = np.frombuffer(payload, dtype=">u4" if dtype == FP32 else ">u2")
        sign, m, e, nan, inf = fmt.decode_parts(raw.astype(np.int64))
        q = _to_fixed(sign, m, e, nan, inf, scale)
        return q, bool(nan.any())
    if dtype in MX_ELEM:
        nblk = count // MX_BLOCK
        sbytes = np.frombuffer(payload[:nblk], dtype=np.uint8).astype(np.int64)
        elems = np.frombuffer(payload[MX_SCALE_LINE:], dtype=np.uint8).astype(np.int64)
        sb = np.repeat(sbytes, MX_BLOCK)
        block_nan = sb == E8M0_NAN
        fmt = MX_ELEM[dtype]
        if fmt is None:
            v = np.where(elems >= 128, elems - 256, elems)
            sign = (v < 0).astype(np.int64)
            m = np.abs(v)
            e = np.full_like(m, -MXINT8_FRAC)
            nan = np.zeros(count, dtype=bool)
            inf = np.zeros(count, dtype=bool)
        else:
            sign, m, e, nan, inf = fmt.decode_parts(elems)
        nan = nan | block_nan
        inf = inf & ~nan
        q = _to_fixed(sign, m, e, nan, inf, (sb - E8M0_BIAS) + scale)
        return q, bool(nan.any())
    raise ValueError(f"unknown dtype {dtype}")


# --------------------------------------------------------------------------
# egress
# --------------------------------------------------------------------------
def saturate_acc(acc):
    """Saturate exact accumulators (any integer array, incl. dtype=object)
    to int32. Returns (int64 array, overflow)."""
    if isinstance(acc, np.ndarray) and acc.dtype == np.int64:
        flat = acc.reshape(-1)
        sat = np.clip(flat, INT32_MIN, INT32_MAX)
        return sat, bool((sat != flat).any())
    vals = [int(x) for x in np.asarray(acc, dtype=object).reshape(-1)]
    sat = [min(max(x, INT32_MIN), INT32_MAX) for x in vals]
    overflow = any(s != x for s, x in zip(sat, vals))
    return np.array(sat, dtype=np.int64), overflow


def mx_shared_exponent(dtype: int, a, scale: int):
    """Shared exponent X of each 32-element block of v = a * 2**-scale
    (a: saturated int32 accumulators). Returns (X, nan_block) arrays per
    block, X already clamped below at -127 (meaningless where nan_block)."""
    a = np.asarray(a, dtype=np.int64).reshape(-1, MX_BLOCK)
    amax = np.abs(a).max(axis=1)
    # floor(log2(max|v|)) = floor(log2(amax)) - scale; all-zero block: -126
    fl = np.where(amax == 0, -126, bit_length(amax) - 1 - scale)
    x = fl - MX_EMAX[dtype]
    x = np.maximum(x, -127)
    return x, x > 127


def encode(dtype: int, acc, count: int, scale: int):
    """Egress conversion (SPEC 4). Returns (payload bytes, overflow)."""
    sat, overflow = saturate_acc(acc)
    if sat.size != count:
        raise ValueError(f"{sat.size} accumulators for count {count}")
    if dtype == INT32:
        return sat.astype(">i4").tobytes(), overflow
    sign = (sat < 0).astype(np.int64)
    mag = np.abs(sat)  # <= 2**31
    if dtype in (FP32, BF16):
        fmt = F32 if dtype == FP32 else F_BF16
        field = fmt.encode_mag(mag, -scale, saturate=False)
        bits = field | (sign << (fmt.width - 1))
        out = bits.astype(">u4" if dtype == FP32 else ">u2").tobytes()
        return out, overflow
    if dtype in MX_ELEM:
        if count % MX_BLOCK:
            raise ValueError("MX count must be a multiple of 32")
        x, nan_blk = mx_shared_exponent(dtype, sat, scale)
        xe = np.repeat(x, MX_BLOCK)
        e = -scale - xe                       # element value u = mag * 2**e
        fmt = MX_ELEM[dtype]
        if fmt is None:
            q = np.minimum(rne_shift(mag, e + MXINT8_FRAC), MXINT8_MAX)
            elems = np.where(sign != 0, -q, q) & 0xFF
        else:
            field = fmt.encode_mag(mag, e, saturate=True)
            elems = field | (sign << (fmt.width - 1))
        elems = np.where(np.repeat(nan_blk, MX_BLOCK), 0, elems)
        sbytes = np.where(nan_blk, E8M0_NAN, x + E8M0_BIAS)
        line = sbytes.astype(np.uint8).tobytes()
        line = line + bytes(MX_SCALE_LINE - len(line))
        overflow = overflow or bool(nan_blk.any())
        return line + elems.astype(np.uint8).tobytes(), overflow
    raise ValueError(f"unknown dtype {dtype}")
