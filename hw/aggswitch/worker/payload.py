"""Payload conversions of docs/SPEC.md §4, as the worker library needs them, in NumPy.

* :func:`decode`: the switch's ingress conversion, payload -> fixed-point contributions
  ``q = RNE(v · 2^scale)`` saturated to int32 (NaN contributes 0 and is reported, ±Inf
  saturates). A worker uses it to read a RESULT.
* :func:`encode`: the switch's egress conversion, exact sums -> payload (saturation to
  int32, then the dtype: RNE to FP32/BF16, OCP MX v1.0 recompression of each 32-element
  block). A worker uses it to put values of the job's fixed-point grid into BF16 and MX
  DATA frames, and to predict a result.

Written from the specification, independently of the golden model (tb/model/numerics.py,
integer arithmetic throughout): values here are float64, which holds every ``q · 2^k``
exactly (|q| < 2^32 and |k| < 300), so scaling is `ldexp` and round half to even is
`rint`, both exact. tests/test_worker_wire.py checks every bit against the golden model.
"""

from __future__ import annotations

import numpy as np

from .wire import (BF16, FP32, INT32, MX_BLOCK, MX_SCALE_LINE, MXFP8_E4M3, MXFP8_E5M2,
                   MXINT8, is_mx, payload_len)

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1
E8M0_NAN = 0xFF


class _Float:
    """A binary float element format: `ebits` exponent and `mbits` mantissa bits, `bias`;
    `ieee`: the all-ones exponent is Inf/NaN (else, as OCP E4M3, only S.1111.111 is NaN)."""

    def __init__(self, ebits: int, mbits: int, bias: int, ieee: bool):
        self.ebits, self.mbits, self.bias, self.ieee = ebits, mbits, bias, ieee
        self.emask = (1 << ebits) - 1
        top = self.emask - 1 if ieee else self.emask
        self.max_field = top << mbits | ((1 << mbits) - 1 if ieee else (1 << mbits) - 2)
        self.inf_field = self.emask << mbits
        self.emax = (self.max_field >> mbits) - bias      # exponent of the largest normal
        if 1 + ebits + mbits <= 8:                         # the value of every code
            self.table = self._values(np.arange(256, dtype=np.int64))

    def _values(self, bits: np.ndarray) -> np.ndarray:
        """Real value (float64; NaN, ±Inf) of each code."""
        sign = np.where(bits >> (self.ebits + self.mbits) & 1, -1.0, 1.0)
        e = bits >> self.mbits & self.emask
        m = bits & ((1 << self.mbits) - 1)
        mag = np.where(e == 0, np.ldexp(m.astype(np.float64), 1 - self.bias - self.mbits),
                       np.ldexp((m | 1 << self.mbits).astype(np.float64), e - self.bias - self.mbits))
        if self.ieee:
            mag = np.where(e == self.emask, np.where(m == 0, np.inf, np.nan), mag)
        else:
            mag = np.where((e == self.emask) & (m == (1 << self.mbits) - 1), np.nan, mag)
        return sign * mag

    def encode(self, v: np.ndarray, saturate: bool) -> np.ndarray:
        """Codes of the reals `v` (float64, finite), rounded half to even, subnormals kept,
        a negative value rounding to zero keeping its sign; too large: the largest normal
        if `saturate`, else Inf."""
        mag = np.abs(v)
        _, e = np.frexp(mag)
        e = np.maximum(e.astype(np.int64) - 1, 1 - self.bias)      # binade, subnormals at emin
        m = np.rint(np.ldexp(mag, self.mbits - e)).astype(np.int64)  # significand in ulps
        carry = m >> (self.mbits + 1) != 0                          # rounded up a binade
        e, m = e + carry, np.where(carry, m >> 1, m)
        normal = m >> self.mbits != 0
        efield = np.where(normal, e + self.bias, 0)
        code = np.minimum(efield, self.emask) << self.mbits | np.where(normal, m - (1 << self.mbits), m)
        over = (efield > self.emask) | (code > self.max_field)
        code = np.where(over, self.max_field if saturate else self.inf_field, code)
        code = np.where(mag == 0, 0, code)
        return code | np.signbit(v).astype(np.int64) << (self.ebits + self.mbits)


_FP32 = _Float(8, 23, 127, True)
_BF16 = _Float(8, 7, 127, True)
_E4M3 = _Float(4, 3, 7, False)
_E5M2 = _Float(5, 2, 15, True)
_MX_ELEM = {MXFP8_E4M3: _E4M3, MXFP8_E5M2: _E5M2}
_MX_EMAX = {MXINT8: 0, MXFP8_E4M3: _E4M3.emax, MXFP8_E5M2: _E5M2.emax}   # 0, 8, 15
_MXINT8_FRAC = 6
_MXINT8_VALUES = np.ldexp(np.arange(256, dtype=np.int64).astype(np.int8).astype(np.float64),
                          -_MXINT8_FRAC)


def _fixed(v: np.ndarray, shift) -> tuple[np.ndarray, bool]:
    """(RNE(v · 2^shift) saturated to int32 as int64, whether any v was NaN); NaN -> 0."""
    nan = np.isnan(v)
    q = np.rint(np.ldexp(np.where(nan, 0.0, v), shift))
    return np.clip(q, INT32_MIN, INT32_MAX).astype(np.int64), bool(nan.any())


def _check(dtype: int, payload: bytes, count: int):
    if len(payload) != payload_len(dtype, count):
        raise ValueError(f"payload of {len(payload)} bytes for dtype {dtype} and count {count} "
                         f"(expected {payload_len(dtype, count)})")


def decode(dtype: int, payload: bytes, count: int, scale: int) -> tuple[np.ndarray, bool]:
    """Ingress conversion (§4): (fixed-point contributions q, int64; NaN seen)."""
    with np.errstate(invalid="ignore", over="ignore"):   # NaN and Inf payloads are data
        return _decode(dtype, bytes(payload), count, scale)


def _decode(dtype: int, payload: bytes, count: int, scale: int) -> tuple[np.ndarray, bool]:
    _check(dtype, payload, count)
    if dtype == INT32:
        return np.frombuffer(payload, dtype=">i4").astype(np.int64), False
    if dtype == FP32:
        return _fixed(np.frombuffer(payload, dtype=">f4").astype(np.float64), scale)
    if dtype == BF16:
        hi = np.frombuffer(payload, dtype=">u2").astype(np.uint32) << 16
        return _fixed(hi.view(np.float32).astype(np.float64), scale)
    if is_mx(dtype):
        blocks = count // MX_BLOCK
        sbyte = np.repeat(np.frombuffer(payload[:blocks], dtype=np.uint8).astype(np.int64), MX_BLOCK)
        codes = np.frombuffer(payload[MX_SCALE_LINE:], dtype=np.uint8)
        v = _MXINT8_VALUES[codes] if dtype == MXINT8 else _MX_ELEM[dtype].table[codes]
        v = np.where(sbyte == E8M0_NAN, np.nan, v)
        return _fixed(v, sbyte - 127 + scale)
    raise ValueError(f"unknown dtype {dtype}")


def saturate(acc) -> tuple[np.ndarray, bool]:
    """Exact sums (any integers) saturated to int32, as int64, and whether any was."""
    a = np.asarray(acc).reshape(-1)
    if a.dtype.kind != "i":                      # Python ints of any size, unsigned, ...
        exact = [int(x) for x in a]
        sat = np.array([min(max(x, INT32_MIN), INT32_MAX) for x in exact], dtype=np.int64)
        return sat, any(int(s) != x for s, x in zip(sat, exact))
    sat = np.clip(a.astype(np.int64), INT32_MIN, INT32_MAX)
    return sat, bool((sat != a).any())


def encode(dtype: int, acc, count: int, scale: int) -> tuple[bytes, bool]:
    """Egress conversion (§4) of `count` exact sums: (payload, OVERFLOW)."""
    a, overflow = saturate(acc)
    if a.size != count:
        raise ValueError(f"{a.size} sums for count {count}")
    if dtype == INT32:
        return a.astype(">i4").tobytes(), overflow
    v = np.ldexp(a.astype(np.float64), -scale)                    # exact
    if dtype == FP32:
        return _FP32.encode(v, saturate=False).astype(">u4").tobytes(), overflow
    if dtype == BF16:
        return _BF16.encode(v, saturate=False).astype(">u2").tobytes(), overflow
    if is_mx(dtype):
        if count % MX_BLOCK:
            raise ValueError(f"MX count {count} is not a multiple of {MX_BLOCK}")
        blocks = v.reshape(-1, MX_BLOCK)
        amax = np.abs(blocks).max(axis=1)
        _, e = np.frexp(amax)
        x = np.where(amax == 0, -126, e.astype(np.int64) - 1) - _MX_EMAX[dtype]   # shared exponent
        x = np.maximum(x, -127)
        nan = x > 127
        u = np.ldexp(blocks, -x[:, None]).reshape(-1)            # elements before rounding
        if dtype == MXINT8:
            q = np.clip(np.rint(np.ldexp(u, _MXINT8_FRAC)), -127, 127).astype(np.int64)
            codes = q & 0xFF
        else:
            codes = _MX_ELEM[dtype].encode(u, saturate=True)
        codes = np.where(np.repeat(nan, MX_BLOCK), 0, codes)
        line = np.where(nan, E8M0_NAN, x + 127).astype(np.uint8).tobytes()
        line += bytes(MX_SCALE_LINE - len(line))
        return line + codes.astype(np.uint8).tobytes(), overflow or bool(nan.any())
    raise ValueError(f"unknown dtype {dtype}")
