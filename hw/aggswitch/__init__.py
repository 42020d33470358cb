"""aggswitch: an in-network aggregation switch pipeline in Amaranth HDL."""

from .params import Params, latency

__all__ = ["Params", "latency"]
