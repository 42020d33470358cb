"""Conversions between a worker's tensor and the payload of every dtype (docs/SPEC.md §4).

The switch adds fixed-point contributions ``q = RNE(v · 2^scale)`` exactly, `scale` being
the job scale carried in every AGG header. A worker holding real values `x`:

* INT32 sends ``q = RNE(x · 2^scale)``, saturated to int32; an integer tensor is taken as
  already fixed point (its elements must fit int32).
* FP32 sends ``float32(x)``; the switch rounds it to the fixed-point grid itself.
* BF16 and the MX dtypes send the encoding of ``q`` (the switch's egress conversion,
  `payload.encode`), so the values sent lie on the job's fixed-point grid; MX chunks are
  padded with zeros to whole 32-element blocks.

A RESULT payload converts back with the ingress conversion (`payload.decode`) to the
fixed-point sum and from there to reals, ``q · 2^-scale``. For INT32, FP32 and BF16 that
is exactly the value on the wire; an MX element finer than ``2^-scale`` is rounded to the
grid.
"""

from __future__ import annotations

import numpy as np

from . import payload as pl
from . import wire as F

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1


def dtype_code(dtype) -> int:
    """A dtype code (0..5) from a code or a SPEC §4 name (`"int32"`, `"mxfp8_e4m3"`, ...)."""
    if isinstance(dtype, str):
        name = dtype.lower()
        if name not in F.DTYPE_NAMES:
            raise ValueError(f"unknown dtype {dtype!r} (expected one of {', '.join(F.DTYPE_NAMES)})")
        return F.DTYPE_NAMES.index(name)
    code = int(dtype)
    if code not in F.DTYPES:
        raise ValueError(f"unknown dtype code {code}")
    return code


def chunk_elems(dtype: int, slot_elems: int) -> int:
    """Elements per DATA frame: `slot_elems`, whole MX blocks (at most 2048) for MX."""
    if F.is_mx(dtype):
        n = min(slot_elems, F.MX_MAX_COUNT) // F.MX_BLOCK * F.MX_BLOCK
        if n == 0:
            raise ValueError(f"slot_elems {slot_elems} cannot hold one MX block")
        return n
    return slot_elems


def padded(dtype: int, n: int) -> int:
    """`count` of a chunk of `n` elements (whole blocks for MX)."""
    return -(-n // F.MX_BLOCK) * F.MX_BLOCK if F.is_mx(dtype) else n


def is_fixed_input(x: np.ndarray) -> bool:
    return x.dtype.kind in "iub"


def quantize(x, scale: int) -> np.ndarray:
    """``RNE(x · 2^scale)`` saturated to int32, as int64. NaN has no fixed-point value."""
    x = np.asarray(x)
    if is_fixed_input(x):
        q = x.astype(np.int64)
        if q.size and (q.min() < INT32_MIN or q.max() > INT32_MAX):
            raise ValueError("integer tensor out of int32 range")
        return q
    x = x.astype(np.float64)
    if np.isnan(x).any():
        raise ValueError("NaN in the tensor: only FP32 carries NaN to the switch")
    q = np.rint(np.ldexp(x, scale))            # exact scaling, then round half to even
    return np.clip(q, INT32_MIN, INT32_MAX).astype(np.int64)


def encode(dtype: int, x, count: int, scale: int) -> bytes:
    """Payload of `count` elements of `dtype` for the chunk `x` (zero-padded to `count`)."""
    x = np.asarray(x).reshape(-1)
    if x.size > count:
        raise ValueError(f"{x.size} elements for count {count}")
    if dtype == F.FP32 and not is_fixed_input(x):
        v = np.zeros(count, dtype=">f4")
        v[:x.size] = x
        return v.tobytes()
    q = np.zeros(count, dtype=np.int64)
    q[:x.size] = quantize(x, scale)
    if dtype == F.INT32:
        return q.astype(">i4").tobytes()
    return pl.encode(dtype, q, count, scale)[0]


def decode(dtype: int, payload: bytes, count: int, scale: int) -> tuple[np.ndarray, bool]:
    """(fixed-point values ``q`` as int64, NaN flag) of a payload (the switch's ingress
    conversion)."""
    return pl.decode(dtype, payload, count, scale)


def contribution(dtype: int, x, scale: int) -> np.ndarray:
    """What the switch adds for this worker's tensor `x` sent as `dtype`: the fixed-point
    values of its payload (int64)."""
    x = np.asarray(x).reshape(-1)
    # An element's contribution depends only on itself (MX: on its 32-element block), so
    # any cut into whole blocks gives the same; a payload holds at most MX_MAX_COUNT.
    step = chunk_elems(dtype, F.MX_MAX_COUNT)
    out = np.zeros(x.size, dtype=np.int64)
    for a in range(0, x.size, step):
        b = min(x.size, a + step)
        count = padded(dtype, b - a)
        out[a:b] = decode(dtype, encode(dtype, x[a:b], count, scale), count, scale)[0][:b - a]
    return out


def result_of_sum(dtype: int, acc, scale: int, slot_elems: int) -> np.ndarray:
    """The fixed-point result a correct switch returns for the exact sums `acc` of the
    workers' contributions (any integer array): per chunk, saturated to int32, encoded as
    `dtype` and decoded again (int64). For INT32 only the saturation."""
    acc = np.asarray(acc).reshape(-1)
    n = acc.size
    step = chunk_elems(dtype, slot_elems)
    out = np.zeros(n, dtype=np.int64)
    for a in range(0, n, step):
        b = min(n, a + step)
        count = padded(dtype, b - a)
        chunk = np.zeros(count, dtype=object)
        chunk[:b - a] = [int(v) for v in acc[a:b]]
        payload, _ = pl.encode(dtype, chunk, count, scale)
        out[a:b] = decode(dtype, payload, count, scale)[0][:b - a]
    return out


def reduce_reference(dtype: int, tensors, scale: int, slot_elems: int) -> np.ndarray:
    """The fixed-point result a correct switch returns for these workers' tensors: the
    contributions summed exactly, then :func:`result_of_sum` (int64)."""
    acc = sum(contribution(dtype, t, scale).astype(object) for t in tensors)
    return result_of_sum(dtype, acc, scale, slot_elems)


def to_values(q: np.ndarray, scale: int) -> np.ndarray:
    """Reals ``q · 2^-scale`` (float64, exact) of fixed-point values."""
    return np.ldexp(np.asarray(q, dtype=np.float64), -scale)
