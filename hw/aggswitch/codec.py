"""Decode (payload beat -> exact fixed-point lanes) and encode (accumulators -> payload beat).

SPEC §4: INT32 is taken as is and sent back saturated to int32 (OVERFLOW when it
saturates). Elements are big-endian on the wire; byte 0 of a beat is tdata[7:0].
"""

from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .params import Params

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1


def bswap32(word):
    return Cat(word[24:32], word[16:24], word[8:16], word[0:8])


class PayloadDecoder(wiring.Component):
    """One payload beat -> `lanes` signed contributions, exact (combinational)."""

    def __init__(self, p: Params):
        self.p = p
        super().__init__({
            "beat": In(p.data_width),
            "lanes": Out(signed(p.acc_width)).array(p.lanes),
            "nan": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        for i in range(self.p.lanes):
            m.d.comb += self.lanes[i].eq(bswap32(self.beat.word_select(i, 32)).as_signed())
        m.d.comb += self.nan.eq(0)   # INT32 has no NaN
        return m


class PayloadEncoder(wiring.Component):
    """`lanes` accumulators -> one payload beat; `overflow` if a valid lane saturated."""

    def __init__(self, p: Params):
        self.p = p
        super().__init__({
            "lanes": In(signed(p.acc_width)).array(p.lanes),
            "valid_lanes": In(p.lanes),     # lanes that hold one of the `count` elements
            "beat": Out(p.data_width),
            "overflow": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        sat = []
        for i in range(self.p.lanes):
            a = self.lanes[i]
            hi = a > INT32_MAX
            lo = a < INT32_MIN
            value = Mux(hi, INT32_MAX, Mux(lo, INT32_MIN, a))[:32]
            m.d.comb += self.beat.word_select(i, 32).eq(bswap32(value))
            sat.append((hi | lo) & self.valid_lanes[i])
        m.d.comb += self.overflow.eq(Cat(*sat).any())
        return m
