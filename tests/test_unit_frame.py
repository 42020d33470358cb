"""Amaranth-simulator unit test of the small logic helpers in frame.py."""

import pytest
from amaranth import Module, Signal
from amaranth.sim import Simulator

from aggswitch.frame import thermometer


@pytest.mark.parametrize("width,n", [(7, 64), (16, 64), (6, 32), (3, 5), (5, 16), (2, 4), (4, 1)])
def test_thermometer(width, n):
    """Bit i is (value > i), for every value of a narrow input and a sweep of a wide one,
    including the values that saturate the mask (at or above n) through the high bits."""
    value, mask = Signal(width), Signal(n)
    m = Module()
    m.d.comb += mask.eq(thermometer(value, n))
    values = range(1 << width) if width <= 8 else [*range(2 * n + 2), 255, 256, 1000, (1 << width) - 1]
    sim = Simulator(m)

    async def bench(ctx):
        for v in values:
            ctx.set(value, v)
            expected = sum(1 << i for i in range(n) if v > i)
            assert ctx.get(mask) == expected, f"value {v}"

    sim.add_testbench(bench)
    sim.run()
