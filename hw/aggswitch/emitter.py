"""Result emitter: the sums of a completing (or resent) round, one payload beat per cycle
from one port's passes, encoded in the round's dtype into the RESULT's entry of the
result buffer (resbuf.ResultBuffer).

Every port has one, and it never waits: its beats follow the port's pass, so in every
cycle it is at a different bank of the result buffer than every other port's emitter. A
round's beats arrive on consecutive cycles, which the MX block window of the encoder
relies on (data_width 128). A RESULT with no destination left (every one dropped by the
pause watchdog) is encoded but not written.
"""

from amaranth import *
from amaranth.lib import wiring, data
from amaranth.lib.wiring import In, Out

from .params import Params, encoder_latency, DTYPE_BF16
from .codec import BeatEncoder, block_parts, is_mx
from .numerics import thermometer
from .passes import emit_beat
from .resbuf import result_write, result_entries

__all__ = ["ResultEmitter"]


def _beat_ctl(p: Params):
    """What travels with a beat through the result encoder."""
    return data.StructLayout({
        "valid": 1,
        "beat": range(p.slot_lines),
        "last": 1,
        "result": 1,
        "nan": 1,
        "dest": 1,                    # it has a destination (it is written)
        "entry": range(result_entries(p)),
    })


def lane_mask(m, p: Params, dtype, count, beat):
    """The lanes of beat `beat` of a round of `count` elements in `dtype` that hold one of
    its elements: element i of beat k is k * per_beat + i, with per_beat = lanes << s
    elements per beat (s = 0 for 32-bit elements, 1 for BF16, 2 for MX). The mask of each
    s is formed side by side, where per_beat is a constant (the elements before the beat
    are wiring, one subtraction leaves this beat's elements and the rest's), and the dtype
    picks one: no shifter and no comparator around the subtraction, on the path from the
    pass's registers to the result encoder's input register."""
    masks = {}
    for s in ((0, 1, 2) if p.mx_ok else (0, 1)):
        per_beat = p.lanes << s
        before = Cat(Const(0, (per_beat - 1).bit_length()), beat)  # the elements before it
        left = Signal(signed(max(len(count), len(before)) + 1), name=f"left{s}")
        m.d.comb += left.eq(count - before)
        masks[s] = Mux(left[-1], 0, thermometer(left[:-1], per_beat))
    mask = Signal(p.beat_lanes, name="valid_lanes")
    m.d.comb += mask.eq(Mux(dtype == DTYPE_BF16, masks[1], masks[0]))
    if p.mx_ok:
        with m.If(is_mx(dtype)):
            m.d.comb += mask.eq(masks[2])
    return mask


class ResultEmitter(wiring.Component):
    def __init__(self, p: Params):
        self.p = p
        super().__init__({
            "beat_in": In(emit_beat(p)),
            "wr": Out(result_write(p)),
            "ev_result": Out(1), "ev_overflow": Out(1), "ev_nan": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.p
        emitting = self.beat_in

        m.submodules.encoder = enc = BeatEncoder(p)
        valid_lanes = lane_mask(m, p, emitting.dtype, emitting.count, emitting.beat)
        m.d.comb += [enc.valid.eq(emitting.valid), enc.dtype.eq(emitting.dtype), enc.scale.eq(emitting.scale),
                     enc.beat.eq(emitting.beat), enc.valid_lanes.eq(valid_lanes)]
        for i in range(p.beat_lanes):
            m.d.comb += enc.acc[i].eq(emitting.sums[i])
        ctl = Signal(_beat_ctl(p))
        m.d.comb += [ctl.valid.eq(emitting.valid), ctl.beat.eq(emitting.beat), ctl.last.eq(emitting.last),
                     ctl.result.eq(emitting.result), ctl.nan.eq(emitting.nan), ctl.dest.eq(emitting.dest.any()),
                     ctl.entry.eq(emitting.entry)]
        for j in range(encoder_latency(p)):
            nxt = Signal(_beat_ctl(p), name=f"ctl{j}")
            m.d.sync += nxt.eq(ctl)
            ctl = nxt

        overflow = Signal()            # OVERFLOW over the round's earlier beats
        job_overflow = overflow | enc.overflow
        with m.If(ctl.valid):
            m.d.sync += overflow.eq(Mux(ctl.last, 0, job_overflow))
        # MX: each block's scale byte as its first beat is encoded goes with that beat (side
        # bits of the result buffer's word); the reader puts the scale line together.
        finishing = ctl.valid & ctl.last
        if p.mx_ok:
            parts, _ = block_parts(p)
            m.d.sync += self.wr.side.eq(Cat(*(Mux(ctl.valid & enc.scale_valid[j], enc.scale_byte[j], 0)
                                              for j in range(parts))))
        w = self.wr
        m.d.sync += [
            w.data.eq(enc.bytes),
            w.valid.eq(ctl.valid & ctl.dest), w.entry.eq(ctl.entry), w.beat.eq(ctl.beat),
            w.last.eq(finishing), w.overflow.eq(job_overflow),
            self.ev_result.eq(finishing & ctl.result),
            self.ev_overflow.eq(finishing & ctl.result & job_overflow),
            self.ev_nan.eq(finishing & ctl.result & ctl.nan),
        ]
        # The entry is complete once the last beat, registered above, is written: say so
        # a cycle ahead (its readers start two cycles after the flag at the earliest).
        m.d.comb += [w.finish.eq(finishing & ctl.dest), w.finish_entry.eq(ctl.entry)]
        return m
