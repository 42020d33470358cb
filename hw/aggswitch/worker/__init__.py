"""Host side of aggswitch: a worker library that all-reduces tensors through the switch
over UDP (:class:`Worker`), the dtype conversions it uses (:mod:`.convert`) and the UDP
side of a switch port (:mod:`.bridge`). Needs only NumPy: the protocol (:mod:`.wire`)
and the payload conversions (:mod:`.payload`) are its own, written from docs/SPEC.md."""

from .client import AllReduceError, CallInfo, Worker
from .convert import dtype_code

__all__ = ["AllReduceError", "CallInfo", "Worker", "dtype_code"]
