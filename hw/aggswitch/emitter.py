"""Result emitter: the sums of a completing (or resent) round, one accumulator line per
cycle from one port's passes, encoded in the round's dtype and packed into payload beats
for the destination ports' egress FIFOs.

Every port has one. The decision stage never lets two emitting passes that share a
destination overlap, so each egress FIFO takes beats from at most one emitter per cycle
(the engine ORs them). A round's lines arrive on consecutive cycles, which the MX block
window of the encoder relies on.
"""

from amaranth import *
from amaranth.lib import wiring, data
from amaranth.lib.wiring import In, Out

from .params import Params, encoder_latency
from .codec import LineEncoder, elem_shift
from .numerics import thermometer
from .passes import emit_line

__all__ = ["ResultEmitter"]


def _line_ctl(p: Params):
    """What travels with a line through the result encoder."""
    return data.StructLayout({
        "valid": 1,
        "line": range(p.slot_lines),
        "last": 1,
        "dtype": 3,
        "result": 1,
        "nan": 1,
        "dest": p.ports,
    })


class ResultEmitter(wiring.Component):
    def __init__(self, p: Params):
        self.p = p
        super().__init__({
            "line_in": In(emit_line(p)),
            "eg_data": Out(p.data_width), "eg_data_en": Out(p.ports),
            "eg_done_en": Out(p.ports), "eg_done_overflow": Out(1),
            "eg_done_scales": Out(8 * p.mx_blocks),
            "ev_result": Out(1), "ev_overflow": Out(1), "ev_nan": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.p

        emitting = self.line_in

        m.submodules.encoder = enc = LineEncoder(p)
        # Lanes below `count`: line k is full below the count's line, partial on it.
        lane_bits = (p.lanes - 1).bit_length()
        count_line, count_lane = emitting.count[lane_bits:], emitting.count[:lane_bits]
        valid_lanes = Mux(count_line > emitting.line, (1 << p.lanes) - 1,
                          Mux(count_line == emitting.line, thermometer(count_lane, p.lanes), 0))
        m.d.comb += [enc.valid.eq(emitting.valid), enc.dtype.eq(emitting.dtype), enc.scale.eq(emitting.scale),
                     enc.line.eq(emitting.line), enc.valid_lanes.eq(valid_lanes)]
        for i in range(p.lanes):
            m.d.comb += enc.acc[i].eq(emitting.sums[i])
        ctl = Signal(_line_ctl(p))
        m.d.comb += [ctl.valid.eq(emitting.valid), ctl.line.eq(emitting.line), ctl.last.eq(emitting.last),
                     ctl.dtype.eq(emitting.dtype), ctl.result.eq(emitting.result), ctl.nan.eq(emitting.nan),
                     ctl.dest.eq(emitting.dest)]
        for j in range(encoder_latency(p)):
            nxt = Signal(_line_ctl(p), name=f"ctl{j}")
            m.d.sync += nxt.eq(ctl)
            ctl = nxt

        # Pack: a beat holds 1 << elem_shift lines; it goes to the egress FIFOs when full
        # or at the round's last line. Bytes past the frame's end are zeroed by the egress.
        sh = elem_shift(ctl.dtype)
        pos = ctl.line & ((1 << sh) - 1)
        packing = Signal(p.data_width)
        quarter = p.data_width // 4
        merged = []
        for qn in range(4):
            mine = Mux(sh == 2, pos == qn, Mux(sh == 1, pos == qn // 2, 1))
            src_q = Mux(sh == 2, 0, Mux(sh == 1, qn % 2, qn))
            merged.append(Mux(mine, enc.bytes.word_select(src_q, quarter),
                              packing.word_select(qn, quarter)))
        beat = Cat(*merged)
        flush = ctl.valid & ((pos == (1 << sh) - 1) | ctl.last)
        with m.If(ctl.valid):
            m.d.sync += packing.eq(beat)

        overflow = Signal()            # OVERFLOW over the round's earlier lines
        job_overflow = overflow | enc.overflow
        with m.If(ctl.valid):
            m.d.sync += overflow.eq(Mux(ctl.last, 0, job_overflow))
        scales = Signal(8 * p.mx_blocks)
        if p.mx_ok:
            blk_shift = (p.block_lines - 1).bit_length()
            with m.If(ctl.valid & enc.scale_valid):
                m.d.sync += scales.word_select(ctl.line >> blk_shift, 8).eq(enc.scale_byte)
        finishing = ctl.valid & ctl.last
        m.d.sync += [
            self.eg_data.eq(beat),
            self.eg_data_en.eq(Mux(flush, ctl.dest, 0)),
            self.eg_done_en.eq(Mux(finishing, ctl.dest, 0)),
            self.eg_done_overflow.eq(job_overflow),
            self.ev_result.eq(finishing & ctl.result),
            self.ev_overflow.eq(finishing & ctl.result & job_overflow),
            self.ev_nan.eq(finishing & ctl.result & ctl.nan),
        ]
        with m.If(finishing):
            m.d.sync += scales.eq(0)        # the scale line ends in zero bytes (SPEC §3)
        # A block has at least two lines, so the last scale is in before the last line.
        assert not p.mx_ok or p.block_lines >= 2
        m.d.sync += self.eg_done_scales.eq(scales)
        return m
