"""Decode (payload beat -> exact fixed-point lanes) and encode (accumulators -> payload
bytes), for every dtype of SPEC §4.

The engine works on accumulator *lines* of `lanes` = data_width/32 elements, one line per
cycle whatever the dtype. A payload beat holds one line of INT32 or FP32 elements, two of
BF16 and four of MX elements, so `sub` picks the line within the beat. Elements are
big-endian on the wire; byte 0 of a beat is tdata[7:0]. The arithmetic is in
`numerics.py`; this file does the wiring of lines and beats.
"""

from amaranth import *
from amaranth.lib import wiring, data
from amaranth.lib.wiring import In, Out

from .params import (Params, encoder_latency, DTYPE_INT32, DTYPE_FP32, DTYPE_BF16,
                     DTYPE_MXINT8, DTYPE_MXFP8_E4M3, DTYPE_MXFP8_E5M2)
from .numerics import (ElementToFixed, FixedToFloatAny, MxBlockMagnitude, MxBlockScale,
                       MxLineEncoder, MX_BLOCK_INFO, sat_abs)

__all__ = ["bswap32", "is_mx", "elem_shift", "LineDecoder", "LineEncoder"]


def bswap32(word):
    return Cat(word[24:32], word[16:24], word[8:16], word[0:8])


def is_mx(dtype):
    return (dtype == DTYPE_MXINT8) | (dtype == DTYPE_MXFP8_E4M3) | (dtype == DTYPE_MXFP8_E5M2)


def elem_shift(dtype):
    """log2 of the accumulator lines per payload beat: 0 for 32-bit elements, 1 for BF16,
    2 for the 8-bit MX elements."""
    return Mux(is_mx(dtype), 2, Mux(dtype == DTYPE_BF16, 1, 0))


def mx_fmt(dtype):
    """MX element format select of numerics.MxBlockScale / MxLineEncoder."""
    return Mux(dtype == DTYPE_MXFP8_E4M3, 1, Mux(dtype == DTYPE_MXFP8_E5M2, 2, 0))


class LineDecoder(wiring.Component):
    """One payload beat -> the `lanes` exact contributions of line `sub` of that beat,
    `LATENCY` cycles later (each lane is a pipelined ElementToFixed: the element fields
    are registered before the shifter). `block_scale` is the E8M0 scale of the line's MX
    block (a line never spans two blocks)."""

    LATENCY = 1

    def __init__(self, p: Params):
        self.p = p
        super().__init__({
            "beat": In(p.data_width),
            "dtype": In(3),
            "sub": In(2),
            "block_scale": In(8),
            "scale": In(signed(8)),
            "q": Out(signed(32)).array(p.lanes),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.p
        L = p.lanes
        beat = self.beat
        half = Mux(self.sub[0], beat[p.data_width // 2:], beat[:p.data_width // 2])
        quarter = Array(beat.word_select(k, p.data_width // 4) for k in range(4))[self.sub]
        for i in range(L):
            word = bswap32(beat.word_select(i, 32))
            hw = half.word_select(i, 16)
            bf16 = Cat(hw[8:16], hw[0:8])
            byte = quarter.word_select(i, 8)
            bits = Mux(is_mx(self.dtype), byte, Mux(self.dtype == DTYPE_BF16, bf16, word))
            conv = ElementToFixed(pipelined=True)
            assert conv.latency == self.LATENCY
            m.submodules[f"lane{i}"] = conv
            m.d.comb += [conv.dtype.eq(self.dtype), conv.bits.eq(bits),
                         conv.block_scale.eq(self.block_scale), conv.scale.eq(self.scale),
                         self.q[i].eq(conv.q)]
        return m


def encoder_stage(p: Params):
    return data.StructLayout({
        "valid": 1,
        "acc": data.ArrayLayout(signed(p.acc_width), p.lanes),
        "dtype": 3,
        "scale": signed(8),
        "line": range(p.slot_lines),
        "valid_lanes": p.lanes,
    })


class LineEncoder(wiring.Component):
    """Accumulator lines -> payload bytes in the round's dtype, `encoder_latency(p)`
    cycles after the line goes in, one line per cycle, the same delay for every dtype.

    Output `bytes` holds the line's encoded elements from byte 0: 4 bytes per lane for
    INT32 and FP32, 2 for BF16, 1 for MX. `overflow`: a valid lane saturated to int32
    (or, on an MX block's first line, the block's OVERFLOW). On the first line of an MX
    block `scale_valid` is high with the block's E8M0 `scale_byte`.

    MX needs the whole block before its first element can be encoded (the shared
    exponent is over the block): lines wait in a window of `block_lines` stages. The
    block's magnitude OR (numerics.MxBlockMagnitude) is reduced one line per cycle as the
    lines enter the window; when the block's first line reaches the end of the window its
    last line completes the OR, the block exponent is computed from it and registered,
    and each of the block's lines is then encoded with it as it leaves."""

    def __init__(self, p: Params):
        self.p = p
        super().__init__({
            "valid": In(1),
            "acc": In(signed(p.acc_width)).array(p.lanes),
            "dtype": In(3),
            "scale": In(signed(8)),
            "line": In(range(p.slot_lines)),     # line index within the round
            "valid_lanes": In(p.lanes),          # lanes holding one of the `count` elements
            "bytes": Out(p.data_width),
            "overflow": Out(1),
            "scale_valid": Out(1),
            "scale_byte": Out(8),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.p
        L = p.lanes
        D = p.block_lines
        stage = encoder_stage(p)
        window = [Signal(stage, name=f"window{j}") for j in range(D)]   # window[D-1] oldest
        enc = Signal(stage)                                               # being encoded
        m.d.sync += window[0].eq(Cat(self.valid, Cat(*self.acc), self.dtype, self.scale,
                                     self.line, self.valid_lanes))
        for j in range(1, D):
            m.d.sync += window[j].eq(window[j - 1])
        m.d.sync += enc.eq(window[D - 1])

        out_bytes = Signal(p.data_width)
        out_overflow = Signal()
        out_scale_valid = Signal()
        out_scale_byte = Signal(8)

        # INT32, FP32, BF16: lane by lane.
        e = enc
        int32_bytes, fp32_bytes, bf16_bytes, sat_lanes = [], [], [], []
        for i in range(L):
            neg, mag, over = sat_abs(m, e.acc[i], f"sat{i}")
            int32_bytes.append(bswap32(Mux(neg, -mag, mag)[:32]))
            flt = FixedToFloatAny(p.acc_width)
            m.submodules[f"float{i}"] = flt
            m.d.comb += [flt.acc.eq(e.acc[i]), flt.scale.eq(e.scale),
                         flt.bf16.eq(e.dtype == DTYPE_BF16)]
            fp32_bytes.append(bswap32(flt.bits))
            bf16_bytes.append(Cat(flt.bits[8:16], flt.bits[0:8]))
            sat_lanes.append(over & e.valid_lanes[i])
        lane_overflow = Cat(*sat_lanes).any()
        word_bytes = Mux(e.dtype == DTYPE_FP32, Cat(*fp32_bytes), Cat(*int32_bytes))

        if p.mx_ok:
            # Shared exponent of the block whose first line is at the end of the window.
            # The block's magnitude OR builds up a line per cycle as its lines enter the
            # window (the pass sends a round's lines on consecutive cycles): when the first
            # line reaches the end, the last one is at the start and completes it.
            m.submodules.mx_mag = line_mag = MxBlockMagnitude(p.acc_width, L)
            for i in range(L):
                m.d.comb += line_mag.acc[i].eq(window[0].acc[i])
            blk_or = Signal(32)
            blk_sat = Signal()
            if D > 1:
                run_or = Signal(32)            # lines of the block before the one in window[0]
                run_sat = Signal()
                starts = (window[0].line & (D - 1)) == 0
                m.d.comb += [blk_or.eq(Mux(starts, 0, run_or) | line_mag.mag_or),
                             blk_sat.eq(Mux(starts, 0, run_sat) | line_mag.saturated)]
                m.d.sync += [run_or.eq(blk_or), run_sat.eq(blk_sat)]
            else:
                m.d.comb += [blk_or.eq(line_mag.mag_or), blk_sat.eq(line_mag.saturated)]
            m.submodules.mx_exp = bx = MxBlockScale()
            last = window[D - 1]
            m.d.comb += [bx.mag_or.eq(blk_or), bx.saturated.eq(blk_sat),
                         bx.scale.eq(last.scale), bx.fmt.eq(mx_fmt(last.dtype))]
            info = Signal(MX_BLOCK_INFO)
            blk_first = Signal()           # enc holds the first line of a block
            blk_scale = Signal(8)
            blk_overflow = Signal()
            first_line = (last.line & (D - 1)) == 0 if D > 1 else C(1, 1)
            take = last.valid & is_mx(last.dtype) & first_line
            m.d.sync += blk_first.eq(take)
            with m.If(take):
                m.d.sync += [info.eq(bx.info), blk_scale.eq(bx.scale_byte),
                             blk_overflow.eq(bx.overflow)]
            m.submodules.mx_line = lx = MxLineEncoder(p.acc_width, L)
            for i in range(L):
                m.d.comb += lx.acc[i].eq(e.acc[i])
            m.d.comb += [lx.scale.eq(e.scale), lx.fmt.eq(mx_fmt(e.dtype)), lx.info.eq(info)]
            mx = is_mx(e.dtype)
            m.d.sync += [
                out_bytes.eq(Mux(mx, lx.elems, Mux(e.dtype == DTYPE_BF16, Cat(*bf16_bytes),
                                                    word_bytes))),
                out_overflow.eq(Mux(mx, blk_first & blk_overflow, lane_overflow)),
                out_scale_valid.eq(mx & blk_first),
                out_scale_byte.eq(blk_scale),
            ]
        else:
            m.d.sync += [
                out_bytes.eq(Mux(e.dtype == DTYPE_BF16, Cat(*bf16_bytes), word_bytes)),
                out_overflow.eq(lane_overflow),
            ]
        m.d.comb += [self.bytes.eq(out_bytes), self.overflow.eq(out_overflow),
                     self.scale_valid.eq(out_scale_valid), self.scale_byte.eq(out_scale_byte)]
        assert encoder_latency(p) == D + 2
        return m
