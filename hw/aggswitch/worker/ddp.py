"""A PyTorch DDP communication hook that all-reduces every gradient bucket through aggswitch.

    from aggswitch.worker import Worker
    from aggswitch.worker.ddp import SwitchHookState, switch_allreduce_hook
    worker = Worker(("127.0.0.1", 16711 + rank), rank, slot_elems=..., window=...)
    model = DistributedDataParallel(net)      # process group: gloo, for set-up only
    model.register_comm_hook(SwitchHookState(worker, "int32", scale=16), switch_allreduce_hook)

The hook hands the bucket's flat gradient to :meth:`Worker.allreduce` (job scale `scale`,
`dtype` any SPEC §4 name), divides the sum by the world size as DDP's default all-reduce
does, and returns an already completed future. Every rank must register the same hook
with the same dtype and scale (DDP calls it for the same buckets in the same order).

``check=True`` verifies every bucket against the process group (gloo), costing two
collectives per bucket, and records the outcome in ``state.checks``:

* ``exact``: the switch's sum equals, bit for bit, the answer of docs/SPEC.md §4 for the
  ranks' gradients (all-gathered): each chunk's contributions summed exactly and
  converted (aggswitch.worker.convert.reduce_reference); for INT32 this is the sum of the
  quantised gradients that gloo computes on int64, compared as well;
* ``max_err`` / ``tol``: the largest difference from gloo's float all-reduce, and the
  bound set by the dtype's rounding (each contribution rounded to the 2^-scale grid, the
  result's rounding in the dtype, and float32 rounding in gloo's own sum).

:func:`quantized_gloo_hook` is the same arithmetic without the switch, for comparison
(run 2 of `make train`): each rank's bucket is quantised exactly as the worker library
sends it (aggswitch.worker.convert.contribution), gloo sums the fixed-point values exactly
on int64, and the sum is rounded as the switch rounds its result
(aggswitch.worker.convert.result_of_sum: int32 saturation, then the dtype). Its averaged
gradients, and so the parameters after the optimiser step, must equal the switch hook's
bit for bit in every dtype, lost frames or not.

Only torch and NumPy are needed (Debian's python3-torch works with its python3-numpy).
"""

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist

from . import convert
from .client import Worker
from . import wire as F

# Largest rounding error of a result element, relative to the element (FP32, BF16) or to
# the largest element of the bucket (MX: an element's error is bounded by its block's scale).
RESULT_REL_ERROR = {F.INT32: 0.0, F.FP32: 2.0 ** -24, F.BF16: 2.0 ** -8,
                    F.MXINT8: 2.0 ** -7, F.MXFP8_E4M3: 2.0 ** -4, F.MXFP8_E5M2: 2.0 ** -3}


@dataclass
class SwitchHookState:
    worker: Worker
    dtype: object = "int32"
    scale: int = 16
    check: bool = False
    checks: list = field(default_factory=list)
    buckets: int = 0
    # the switch's cycle counter when the last round of the latest bucket completed
    # (a RESULT's timestamp, docs/SPEC.md §10.4)
    last_timestamp: int | None = None

    def __post_init__(self):
        self.code = convert.dtype_code(self.dtype)


@dataclass
class QuantizedGlooState:
    """State of :func:`quantized_gloo_hook`: the same dtype, scale and slot_elems as the
    switch hook it stands in for."""
    dtype: object = "int32"
    scale: int = 16
    slot_elems: int = 256
    buckets: int = 0

    def __post_init__(self):
        self.code = convert.dtype_code(self.dtype)


def _averaged(buf: torch.Tensor, total: np.ndarray, world: int) -> torch.futures.Future[torch.Tensor]:
    """Write the sum `total` (float64) divided by the world size into the bucket and
    return it as a completed future (the one conversion both hooks share)."""
    buf.copy_(torch.from_numpy((total / world).astype(np.float32)).view_as(buf))
    fut = torch.futures.Future()
    fut.set_result(buf)
    return fut


def switch_allreduce_hook(state: SwitchHookState,
                          bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    # (DDP checks this return annotation: no `from __future__ import annotations` here)
    """DDP communication hook: the bucket's gradients averaged over the ranks through the
    switch (see the module docstring)."""
    buf = bucket.buffer()
    x = buf.detach().cpu().numpy().astype(np.float32, copy=False).reshape(-1)
    total = state.worker.allreduce(x, state.code, state.scale)
    state.last_timestamp = state.worker.last.last_timestamp
    world = dist.get_world_size()
    if state.check:
        state.checks.append(_check(state, x, total, world))
    state.buckets += 1
    return _averaged(buf, total, world)


def quantized_gloo_hook(state: QuantizedGlooState,
                        bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """DDP communication hook: the switch hook's arithmetic with gloo summing exactly on
    int64 instead of the switch (see the module docstring)."""
    buf = bucket.buffer()
    x = buf.detach().cpu().numpy().astype(np.float32, copy=False).reshape(-1)
    q = torch.from_numpy(convert.contribution(state.code, x, state.scale))
    dist.all_reduce(q)                                   # gloo, exactly, on int64
    total = convert.to_values(
        convert.result_of_sum(state.code, q.numpy(), state.scale, state.slot_elems), state.scale)
    state.buckets += 1
    return _averaged(buf, total, dist.get_world_size())


def _check(state: SwitchHookState, x: np.ndarray, total: np.ndarray, world: int) -> dict:
    code, s = state.code, state.scale
    t = torch.from_numpy(x.copy())
    parts = [torch.empty_like(t) for _ in range(world)]
    dist.all_gather(parts, t)
    gathered = [p.numpy() for p in parts]
    ref = convert.to_values(convert.reduce_reference(code, gathered, s, state.worker.slot_elems), s)
    exact = bool(np.array_equal(ref, total))
    if code == F.INT32:
        q = torch.from_numpy(convert.quantize(x, s))
        dist.all_reduce(q)                               # gloo, exactly, on int64
        exact = exact and bool(np.array_equal(convert.to_values(q.numpy(), s), total))
    dist.all_reduce(t)                                   # gloo's float all-reduce
    g = t.numpy().astype(np.float64)
    mag = np.abs(g) if not F.is_mx(code) else np.full_like(g, np.abs(g).max(initial=0.0))
    abs_sum = np.sum(np.abs(np.array(gathered, dtype=np.float64)), axis=0)
    tol = world * 2.0 ** -(s + 1) + RESULT_REL_ERROR[code] * mag + 2.0 ** -23 * abs_sum
    err = np.abs(total - g)
    return {"bucket": state.buckets, "elements": int(x.size), "exact": exact,
            "max_err": float(err.max(initial=0.0)), "within_tol": bool((err <= tol).all()),
            "tol": float(tol.max(initial=0.0))}
