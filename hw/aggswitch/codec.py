"""Decode (payload beat -> exact fixed-point lanes) and encode (accumulators -> payload
bytes), for every dtype of SPEC §4, one whole payload beat per cycle in every dtype.

A beat of `data_width` bits carries `lanes` = data_width/32 INT32 or FP32 elements,
2 x lanes BF16 elements or `beat_lanes` = 4 x lanes MX elements. The decoder and the
encoder have `beat_lanes` lanes in *beat order*: lane i holds element i of the beat, so a
dtype with fewer elements per beat uses the low lanes only. Elements are big-endian on
the wire; byte 0 of a beat is tdata[7:0]. The arithmetic is in `numerics.py`; this file
does the wiring of elements and beats.
"""

from amaranth import *
from amaranth.lib import wiring, data
from amaranth.lib.wiring import In, Out

from .params import (Params, encoder_latency, DTYPE_INT32, DTYPE_FP32, DTYPE_BF16,
                     DTYPE_MXINT8, DTYPE_MXFP8_E4M3, DTYPE_MXFP8_E5M2, MX_BLOCK)
from .numerics import (ElementToFixed, FixedToFloatAny, MxBlockMagnitude, MxBlockScale,
                       MxLineEncoder, MX_BLOCK_INFO, sat_abs)

__all__ = ["bswap32", "is_mx", "elem_shift", "elems_shift", "beat_count", "block_parts", "BeatDecoder",
           "BeatEncoder"]


def bswap32(word):
    return Cat(word[24:32], word[16:24], word[8:16], word[0:8])


def is_mx(dtype):
    return (dtype == DTYPE_MXINT8) | (dtype == DTYPE_MXFP8_E4M3) | (dtype == DTYPE_MXFP8_E5M2)


def elem_shift(dtype):
    """log2 of a beat's elements in `dtype` over `lanes`: 0 for 32-bit elements, 1 for
    BF16, 2 for the 8-bit MX elements."""
    return Mux(is_mx(dtype), 2, Mux(dtype == DTYPE_BF16, 1, 0))


def mx_fmt(dtype):
    """MX element format select of numerics.MxBlockScale / MxLineEncoder."""
    return Mux(dtype == DTYPE_MXFP8_E4M3, 1, Mux(dtype == DTYPE_MXFP8_E5M2, 2, 0))


def elems_shift(p: Params, dtype):
    """log2 of the elements a beat carries in `dtype`: lanes, 2 x lanes or 4 x lanes."""
    return (p.lanes - 1).bit_length() + elem_shift(dtype)


def beat_count(p: Params, dtype, count):
    """Payload beats of `count` elements in `dtype` (the MX scale line not counted): one
    pass cycle each."""
    lanes = (p.lanes - 1).bit_length()
    return Mux(is_mx(dtype), (count + (4 * p.lanes - 1)) >> (lanes + 2),
               Mux(dtype == DTYPE_BF16, (count + (2 * p.lanes - 1)) >> (lanes + 1),
                   (count + (p.lanes - 1)) >> lanes))


def block_parts(p: Params):
    """(MX blocks or block parts per beat, lanes of each): at data_width >= 256 a beat
    holds beat_lanes/32 whole blocks; at 128 it holds half of one."""
    n = min(MX_BLOCK, p.beat_lanes)
    return p.beat_lanes // n, n


class BeatDecoder(wiring.Component):
    """One payload beat -> the `beat_lanes` exact contributions of its elements in beat
    order, `LATENCY` cycles later (each lane is a pipelined ElementToFixed: the element
    fields are registered before the shifter). Lanes past the dtype's elements per beat
    carry no meaning. `block_scale[j]` is the E8M0 scale of the MX block (or part of one)
    in lanes [j * n, (j + 1) * n), n = block_parts(p)[1].

    Lanes below `lanes` serve every dtype, those below 2 x lanes BF16 and MX, the others
    MX only: each lane's converter sees only the formats that can reach it."""

    LATENCY = 1

    def __init__(self, p: Params):
        self.p = p
        super().__init__({
            "beat": In(p.data_width),
            "dtype": In(3),
            "block_scale": In(8).array(block_parts(p)[0]),
            "scale": In(signed(8)),
            "q": Out(signed(32)).array(p.beat_lanes),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.p
        L = p.lanes
        beat = self.beat
        mx = is_mx(self.dtype)
        bf16 = self.dtype == DTYPE_BF16
        _, per_part = block_parts(p)
        for i in range(p.beat_lanes):
            byte = beat.word_select(i, 8)
            if i < L:
                hw = beat.word_select(i, 16)
                bits = Mux(mx, byte, Mux(bf16, Cat(hw[8:16], hw[0:8]), bswap32(beat.word_select(i, 32))))
            elif i < 2 * L:
                hw = beat.word_select(i, 16)
                bits = Mux(mx, byte, Cat(hw[8:16], hw[0:8]))
            else:
                bits = byte
            conv = ElementToFixed(pipelined=True)
            assert conv.latency == self.LATENCY
            m.submodules[f"lane{i}"] = conv
            m.d.comb += [conv.dtype.eq(self.dtype), conv.bits.eq(bits),
                         conv.block_scale.eq(self.block_scale[i // per_part]), conv.scale.eq(self.scale),
                         self.q[i].eq(conv.q)]
        return m


def encoder_stage(p: Params):
    return data.StructLayout({
        "valid": 1,
        "acc": data.ArrayLayout(signed(p.acc_width), p.beat_lanes),
        "dtype": 3,
        "scale": signed(8),
        "beat": range(p.slot_lines),
        "valid_lanes": p.beat_lanes,
    })


class BeatEncoder(wiring.Component):
    """A beat of accumulators in beat order -> the beat's payload bytes in the round's
    dtype, `encoder_latency(p)` cycles after it goes in, one beat per cycle, the same delay
    for every dtype.

    `bytes` is the payload beat: 4 bytes per element for INT32 and FP32, 2 for BF16, 1 for
    MX. `overflow`: a valid lane saturated to int32 (or an MX block's OVERFLOW, on the
    block's first beat). On the first beat of an MX block (or blocks) `scale_valid[j]` is
    high for each block part j that holds elements, with its E8M0 `scale_byte[j]`.

    MX needs the whole block before its first element can be encoded (the shared exponent
    is over the block). At data_width >= 256 a beat holds whole blocks; at 128 a block
    spans `block_beats` = 2 beats, which wait in a window: the block's magnitude OR
    (numerics.MxBlockMagnitude) is reduced one beat per cycle as the beats enter the
    window, and when the block's first beat reaches the end of the window its last beat
    has completed the OR. The block exponent is computed from it and registered, and each
    of the block's beats is encoded with it as it leaves."""

    def __init__(self, p: Params):
        self.p = p
        parts, _ = block_parts(p)
        super().__init__({
            "valid": In(1),
            "acc": In(signed(p.acc_width)).array(p.beat_lanes),
            "dtype": In(3),
            "scale": In(signed(8)),
            "beat": In(range(p.slot_lines)),      # beat index within the round
            "valid_lanes": In(p.beat_lanes),      # lanes holding one of the `count` elements
            "bytes": Out(p.data_width),
            "overflow": Out(1),
            "scale_valid": Out(parts),
            "scale_byte": Out(8).array(parts),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.p
        L = p.lanes
        D = p.block_beats
        parts, n = block_parts(p)
        stage = encoder_stage(p)
        window = [Signal(stage, name=f"window{j}") for j in range(D)]   # window[D-1] oldest
        enc = Signal(stage)                                               # being encoded
        m.d.sync += window[0].eq(Cat(self.valid, Cat(*self.acc), self.dtype, self.scale,
                                     self.beat, self.valid_lanes))
        for j in range(1, D):
            m.d.sync += window[j].eq(window[j - 1])
        m.d.sync += enc.eq(window[D - 1])

        out_bytes = Signal(p.data_width)
        out_overflow = Signal()
        out_scale_valid = Signal(parts)
        out_scale_byte = [Signal(8, name=f"out_scale{j}") for j in range(parts)]

        # INT32 and FP32 in the low `lanes` lanes, BF16 in the low 2 x `lanes`.
        e = enc
        int32_bytes, fp32_bytes, bf16_bytes, sat_lanes = [], [], [], []
        for i in range(2 * L):
            neg, mag, over = sat_abs(m, e.acc[i], f"sat{i}")
            flt = FixedToFloatAny(p.acc_width)
            m.submodules[f"float{i}"] = flt
            m.d.comb += [flt.acc.eq(e.acc[i]), flt.scale.eq(e.scale),
                         flt.bf16.eq(e.dtype == DTYPE_BF16)]
            if i < L:
                int32_bytes.append(bswap32(Mux(neg, -mag, mag)[:32]))
                fp32_bytes.append(bswap32(flt.bits))
            bf16_bytes.append(Cat(flt.bits[8:16], flt.bits[0:8]))
            sat_lanes.append(over & e.valid_lanes[i])
        lane_overflow = Cat(*sat_lanes).any()
        word_bytes = Mux(e.dtype == DTYPE_FP32, Cat(*fp32_bytes), Cat(*int32_bytes))
        plain_bytes = Mux(e.dtype == DTYPE_BF16, Cat(*bf16_bytes), word_bytes)

        if p.mx_ok:
            last = window[D - 1]
            first_beat = C(1, 1) if D == 1 else (last.beat & (D - 1)) == 0
            elems, firsts, overflows = [], [], []
            for j in range(parts):
                lanes = range(j * n, (j + 1) * n)
                # The block's magnitude OR, one beat per cycle as its beats enter the window.
                mag = MxBlockMagnitude(p.acc_width, n)
                m.submodules[f"mx_mag{j}"] = mag
                for k, i in enumerate(lanes):
                    m.d.comb += mag.acc[k].eq(window[0].acc[i])
                blk_or = Signal(32, name=f"blk_or{j}")
                blk_sat = Signal(name=f"blk_sat{j}")
                if D > 1:
                    run_or = Signal(32, name=f"run_or{j}")     # earlier beats of the block
                    run_sat = Signal(name=f"run_sat{j}")
                    starts = (window[0].beat & (D - 1)) == 0
                    m.d.comb += [blk_or.eq(Mux(starts, 0, run_or) | mag.mag_or),
                                 blk_sat.eq(Mux(starts, 0, run_sat) | mag.saturated)]
                    m.d.sync += [run_or.eq(blk_or), run_sat.eq(blk_sat)]
                else:
                    m.d.comb += [blk_or.eq(mag.mag_or), blk_sat.eq(mag.saturated)]
                bx = MxBlockScale()
                m.submodules[f"mx_exp{j}"] = bx
                m.d.comb += [bx.mag_or.eq(blk_or), bx.saturated.eq(blk_sat),
                             bx.scale.eq(last.scale), bx.fmt.eq(mx_fmt(last.dtype))]
                info = Signal(MX_BLOCK_INFO, name=f"info{j}")
                blk_first = Signal(name=f"blk_first{j}")   # enc holds the block's first beat
                blk_scale = Signal(8, name=f"blk_scale{j}")
                blk_overflow = Signal(name=f"blk_overflow{j}")
                # A block past the round's count is neither encoded into the scale line nor
                # checked for OVERFLOW.
                take = (last.valid & is_mx(last.dtype) & first_beat
                        & last.valid_lanes[j * n:(j + 1) * n].any())
                m.d.sync += blk_first.eq(take)
                with m.If(take):
                    m.d.sync += [info.eq(bx.info), blk_scale.eq(bx.scale_byte),
                                 blk_overflow.eq(bx.overflow)]
                lx = MxLineEncoder(p.acc_width, n)
                m.submodules[f"mx_enc{j}"] = lx
                for k, i in enumerate(lanes):
                    m.d.comb += lx.acc[k].eq(e.acc[i])
                m.d.comb += [lx.scale.eq(e.scale), lx.fmt.eq(mx_fmt(e.dtype)), lx.info.eq(info)]
                elems.append(lx.elems)
                firsts.append(blk_first)
                overflows.append(blk_first & blk_overflow)
                m.d.sync += out_scale_byte[j].eq(blk_scale)
            mx = is_mx(e.dtype)
            m.d.sync += [
                out_bytes.eq(Mux(mx, Cat(*elems), plain_bytes)),
                out_overflow.eq(Mux(mx, Cat(*overflows).any(), lane_overflow)),
                out_scale_valid.eq(Mux(mx, Cat(*firsts), 0)),
            ]
        else:
            m.d.sync += [out_bytes.eq(plain_bytes), out_overflow.eq(lane_overflow)]
        m.d.comb += [self.bytes.eq(out_bytes), self.overflow.eq(out_overflow),
                     self.scale_valid.eq(out_scale_valid)]
        for j in range(parts):
            m.d.comb += self.scale_byte[j].eq(out_scale_byte[j])
        assert encoder_latency(p) == D + 2
        return m
