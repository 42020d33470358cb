"""Result emitter: the sums of a completing (or resent) round, one payload beat per cycle
from one port's passes, encoded in the round's dtype for the destination ports' egress
FIFOs.

Every port has one. The decision stage never lets two emitting passes that share a
destination overlap, so each egress FIFO takes beats from at most one emitter per cycle
(the engine ORs them). A round's beats arrive on consecutive cycles, which the MX block
window of the encoder relies on (data_width 128).
"""

from amaranth import *
from amaranth.lib import wiring, data
from amaranth.lib.wiring import In, Out

from .params import Params, encoder_latency, DTYPE_BF16
from .codec import BeatEncoder, block_parts, is_mx
from .numerics import thermometer
from .passes import emit_beat

__all__ = ["ResultEmitter"]


def _beat_ctl(p: Params):
    """What travels with a beat through the result encoder."""
    return data.StructLayout({
        "valid": 1,
        "beat": range(p.slot_lines),
        "last": 1,
        "result": 1,
        "nan": 1,
        "dest": p.ports,
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
            "eg_data": Out(p.data_width), "eg_data_en": Out(p.ports),
            "eg_done_en": Out(p.ports), "eg_done_overflow": Out(1),
            "eg_done_scales": Out(8 * p.mx_blocks),
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
                     ctl.result.eq(emitting.result), ctl.nan.eq(emitting.nan), ctl.dest.eq(emitting.dest)]
        for j in range(encoder_latency(p)):
            nxt = Signal(_beat_ctl(p), name=f"ctl{j}")
            m.d.sync += nxt.eq(ctl)
            ctl = nxt

        overflow = Signal()            # OVERFLOW over the round's earlier beats
        job_overflow = overflow | enc.overflow
        with m.If(ctl.valid):
            m.d.sync += overflow.eq(Mux(ctl.last, 0, job_overflow))
        # The MX scale line: each block's scale byte as its first beat is encoded. The done
        # record takes the line with the round's last beat's scales in.
        finishing = ctl.valid & ctl.last
        scales = Signal(8 * p.mx_blocks)
        if p.mx_ok:
            parts, _ = block_parts(p)
            words = Signal(8 * -(-p.mx_blocks // parts) * parts)   # whole beats of scales
            with_beat = Signal.like(words)
            m.d.comb += with_beat.eq(words)
            per_block = (p.block_beats - 1).bit_length()
            at = ctl.beat if parts > 1 else ctl.beat >> per_block
            with m.If(ctl.valid & enc.scale_valid.any()):
                m.d.comb += with_beat.word_select(at, 8 * parts).eq(
                    Cat(*(Mux(enc.scale_valid[j], enc.scale_byte[j], 0) for j in range(parts))))
            # the scale line ends in zero bytes (SPEC §3): start each round from zero
            m.d.sync += words.eq(Mux(finishing, 0, with_beat))
            m.d.comb += scales.eq(with_beat)
        m.d.sync += [
            self.eg_data.eq(enc.bytes),
            self.eg_data_en.eq(Mux(ctl.valid, ctl.dest, 0)),
            self.eg_done_en.eq(Mux(finishing, ctl.dest, 0)),
            self.eg_done_overflow.eq(job_overflow),
            self.ev_result.eq(finishing & ctl.result),
            self.ev_overflow.eq(finishing & ctl.result & job_overflow),
            self.ev_nan.eq(finishing & ctl.result & ctl.nan),
        ]
        m.d.sync += self.eg_done_scales.eq(scales)
        return m
