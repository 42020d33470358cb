"""aggswitch: an in-network aggregation switch pipeline in Amaranth HDL."""

from .params import Params

__all__ = ["Params"]
