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
from .numerics import (ElementToFixed, MxBlockScale, lane_base, MX_BLOCK_INFO, MX_SCALE_BOUNDS, NORM_KEEP,
                       bf16_round, block_magnitude, enc_front, enc_normalise, float_exponent,
                       float_round, norm_sticky, norm_top,
                       mx_element_round, mx_element_shift, mx_element_window, mx_scale_bounds,
                       sat32)

__all__ = ["bswap32", "is_mx", "elem_shift", "beat_count", "block_parts", "BeatDecoder",
           "BeatEncoder"]


def bswap32(word):
    return Cat(word[24:32], word[16:24], word[8:16], word[0:8])


def is_mx(dtype):
    return (dtype == DTYPE_MXINT8) | (dtype == DTYPE_MXFP8_E4M3) | (dtype == DTYPE_MXFP8_E5M2)


def elem_shift(dtype):
    """log2 of a beat's elements in `dtype` over `lanes`: 0 for 32-bit elements, 1 for
    BF16, 2 for the 8-bit MX elements."""
    return Mux(is_mx(dtype), 2, Mux(dtype == DTYPE_BF16, 1, 0))


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

    `mx` and `bf16` say what `dtype` does (an MX dtype; BF16), from registers of their own
    (PortPass registers them with the dtype): they select each lane's bytes of the beat,
    and decoded from `dtype` they would be a LUT level more in front of the lanes' field
    registers. `base_any[j]` and `base_small[j]` are the exponent bases of the two lane
    forms for block part j (:meth:`bases`, from the dtype, the AGG scale and the block
    scale), registered by the caller too: every lane adds only its element's exponent
    field (numerics.lane_base), and the offsets' muxes and adders exist once per part, not
    once per lane. `scale` is then unused by the lanes.

    Lanes below `lanes` serve every dtype, those below 2 x lanes BF16 and MX, the others
    MX only: each lane's converter is built for only the formats that can reach it
    (ElementToFixed's `formats`), and its outputs in any other dtype carry no meaning. The
    BF16+MX and MX-only lanes convert an 8-bit significand in a datapath of their own
    (under half of the universal lane's LUTs). A build without MX dtypes would have no
    MX-only lanes: their `q` is 0."""

    LATENCY = 1

    def __init__(self, p: Params):
        self.p = p
        super().__init__({
            "beat": In(p.data_width),
            "dtype": In(3),
            "mx": In(1),
            "bf16": In(1),
            "block_scale": In(8).array(block_parts(p)[0]),
            "scale": In(signed(8)),
            "base_any": In(signed(10)).array(block_parts(p)[0]),
            "base_small": In(signed(10)).array(block_parts(p)[0]),
            "q": Out(signed(32)).array(p.beat_lanes),
        })

    @staticmethod
    def formats(p: Params):
        """The dtype codes of a build (no MX below a 256-bit beat, SPEC §10.2)."""
        return ElementToFixed.ALL_FORMATS if p.mx_ok else \
            ElementToFixed.ALL_FORMATS - ElementToFixed.MX_FORMATS

    @staticmethod
    def bases(p: Params, dtype, scale, block_scales):
        """(base_any, base_small): the values of those inputs for a beat in `dtype` with
        AGG `scale` (its 8 bits, two's complement, whatever the value's shape) and the
        block scales of its parts, as lists of values."""
        scale = Value.cast(scale)[:8].as_signed()
        fmts = BeatDecoder.formats(p)
        small = fmts & ({DTYPE_BF16} | ElementToFixed.MX_FORMATS)
        return ([lane_base(dtype, scale, bs, small=False, formats=fmts) for bs in block_scales],
                [lane_base(dtype, scale, bs, small=True, formats=small) for bs in block_scales])

    def elaborate(self, platform):
        m = Module()
        p = self.p
        L = p.lanes
        beat = self.beat
        mx = self.mx if p.mx_ok else Const(0, 1)
        bf16 = self.bf16
        _, per_part = block_parts(p)
        built = self.formats(p)
        for i in range(p.beat_lanes):
            byte = beat.word_select(i, 8)
            if i < L:
                hw = beat.word_select(i, 16)
                bits = Mux(mx, byte, Mux(bf16, Cat(hw[8:16], hw[0:8]), bswap32(beat.word_select(i, 32))))
                formats = built
            elif i < 2 * L:
                hw = beat.word_select(i, 16)
                bits = Mux(mx, byte, Cat(hw[8:16], hw[0:8]))
                formats = built & ({DTYPE_BF16} | ElementToFixed.MX_FORMATS)
            else:
                bits = byte
                formats = built & ElementToFixed.MX_FORMATS
            if not formats:
                continue                 # an MX-only lane in a build without MX: q stays 0
            conv = ElementToFixed(pipelined=True, formats=formats, shared_base=True)
            assert conv.latency == self.LATENCY
            m.submodules[f"lane{i}"] = conv
            part = i // per_part
            m.d.comb += [conv.dtype.eq(self.dtype), conv.bits.eq(bits),
                         conv.block_scale.eq(self.block_scale[part]), conv.scale.eq(self.scale),
                         conv.base.eq(self.base_small[part] if conv.small else self.base_any[part]),
                         self.q[i].eq(conv.q)]
        return m


class BeatEncoder(wiring.Component):
    """A beat of accumulators in beat order -> the beat's payload bytes in the round's
    dtype, `encoder_latency(p)` cycles after it goes in, one beat per cycle, the same delay
    for every dtype.

    `bytes` is the payload beat: 4 bytes per element for INT32 and FP32, 2 for BF16, 1 for
    MX. `overflow`: a valid lane saturated to int32 (or an MX block's OVERFLOW, on the
    block's first beat). On the first beat of an MX block (or blocks) `scale_valid[j]` is
    high for each block part j that holds elements, with its E8M0 `scale_byte[j]`.

    A pipeline of registers, at most 8 LUT levels between two of them (`make timing`).
    Every lane has the same front end (numerics.py, "result encoder stages"):

        input register   the beat, taken only when valid (the emitter's lane mask logic
                         fills this cycle)
        stage 1          int32 saturation, leading-zero count; INT32 done;
                         MX: the OR of the block's magnitudes (a line per cycle)
        window           block_beats - 1 more cycles (1 at data_width 128, 0 above)
        stage 2          normalisation, FP exponent; MX: the block's shared exponent
                         (numerics.MxBlockScale), registered as the block's `info`
        stage 3          FP32/BF16 rounding and the INT32/FP32/BF16 bytes; MX: the shift
                         to the block's grid
        stage 4          MX rounding (only in a build with MX dtypes)
        output register  the dtype's bytes

    so `encoder_latency(p)` is block_beats + 3 without MX, block_beats + 4 with it. A dtype
    that is done before the last stage waits in registers, so every dtype has the same
    delay. Datapath registers have no reset.

    Each lane is built for the dtypes that can reach it, as the decoder's: lanes [0, L)
    (L = `lanes`) encode every dtype; lanes [L, 2L) BF16 and MX, so their normaliser keeps
    only BF16's 9 bits and one sticky bit, and their rounding is BF16's (no FP32 rounding,
    no int32 result); lanes [2L, 4L) MX only: no normaliser at all (stage 2 only
    registers |a|; stage 3 shifts it right to the block's grid in one shifter,
    numerics.mx_element_window), no FP exponent or rounding. A build without MX has no MX
    logic and no lanes past 2L.

    MX needs the whole block before its first element can be encoded (the shared exponent
    is over the block). At data_width >= 256 a beat holds whole blocks; a block over
    `block_beats` beats (data_width 128: a block is two beats, fed back to back by the
    emitter, the first at an even beat index) waits in the window while its magnitude OR is reduced one beat per cycle: when the
    block's first beat leaves the window its last beat has completed the OR. The block's
    `info` is registered from it, and each of the block's beats is shifted and rounded with
    it as it passes."""

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
        mx_ok = p.mx_ok
        parts, n = block_parts(p)
        lat = encoder_latency(p)
        n_lanes = p.beat_lanes if mx_ok else 2 * L     # lanes any dtype of this build uses
        assert lat == D + (4 if mx_ok else 3)

        def reg(shape, name):
            return Signal(shape, name=name, reset_less=True)

        # --- control: one record per cycle, the beat's dtype decoded once ------------------
        # cycle 0 is the input register, cycle lat - 2 the last stage before the output.
        ctl_layout = data.StructLayout({
            "fp32": 1, "bf16": 1, "mx": 1, "int8": 1, "e4m3": 1,
            "scale": signed(8), "beat": range(p.slot_lines), "parts": parts,
            "lane_ovf": 1,               # a valid INT32/FP32/BF16 lane saturated (stage 1 on)
        })
        valid = [Signal(name=f"valid{k}") for k in range(lat - 1)]
        ctl = [reg(ctl_layout, f"ctl{k}") for k in range(lat - 1)]
        acc = [reg(signed(p.acc_width), f"acc{i}") for i in range(n_lanes)]
        lanes_in = reg(p.beat_lanes, "valid_lanes")
        dt = self.dtype
        mxd = is_mx(dt)
        m.d.sync += [
            valid[0].eq(self.valid),
            ctl[0].fp32.eq(dt == DTYPE_FP32), ctl[0].bf16.eq(dt == DTYPE_BF16), ctl[0].mx.eq(mxd),
            ctl[0].int8.eq(dt == DTYPE_MXINT8), ctl[0].e4m3.eq(dt == DTYPE_MXFP8_E4M3),
            ctl[0].scale.eq(self.scale), ctl[0].beat.eq(self.beat),
            lanes_in.eq(self.valid_lanes),
        ]
        # The accumulators are taken only with a valid beat: between a round's beats (and
        # while the port's passes add without emitting) the lanes hold still, which an
        # event-driven simulator does not have to evaluate (flip-flop enables are free).
        with m.If(self.valid):
            m.d.sync += [acc[i].eq(self.acc[i]) for i in range(n_lanes)]
        for k in range(1, lat - 1):
            m.d.sync += [valid[k].eq(valid[k - 1]), ctl[k].eq(ctl[k - 1])]
        # the lane mask is needed in stage 1 only: as the OVERFLOW bit and the MX block parts
        sat = []                                  # per lane: (sign, mag, over, lz, zero)
        for i in range(n_lanes):
            sat.append(enc_front(m, acc[i], f"lane{i}"))
        over_any = Cat(*(sat[i][2] & lanes_in[i] for i in range(2 * L))).any()
        m.d.sync += [
            ctl[1].lane_ovf.eq(over_any),
            ctl[1].parts.eq(Cat(*(lanes_in[j * n:(j + 1) * n].any() for j in range(parts)))),
        ]

        # --- stage 1 registers: sign, |a|, leading zeros (every lane), the INT32 result -----
        s1_layout = data.StructLayout({"sign": 1, "mag": 32, "lz": 5, "zero": 1})
        s1 = [reg(s1_layout, f"s1_lane{i}") for i in range(n_lanes)]
        int_s = [reg(32, f"s1_int{i}") for i in range(L)]
        for i in range(n_lanes):
            sign, mag, over, lz, zero = sat[i]
            m.d.sync += [s1[i].sign.eq(sign), s1[i].mag.eq(mag), s1[i].lz.eq(lz), s1[i].zero.eq(zero)]
            if i < L:
                m.d.sync += int_s[i].eq(sat32(m, acc[i], over, f"lane{i}"))
        # the window: D - 1 more cycles of the lanes (MX builds only; none at data_width >= 256)
        for k in range(1, D):
            nxt = [reg(s1_layout, f"win{k}_lane{i}") for i in range(n_lanes)]
            m.d.sync += [b.eq(a) for a, b in zip(s1, nxt)]
            s1 = nxt
        # INT32 results wait for stage 3, where the plain dtypes' bytes are formed
        int_at = {1: int_s}
        for k in range(2, D + 2):
            nxt = [reg(32, f"int{k}_{i}") for i in range(L)]
            m.d.sync += [b.eq(a) for a, b in zip(int_at[k - 1], nxt)]
            int_at[k] = nxt
        c2 = ctl[D]                               # the beat in stage 2

        # --- stage 2: normalisation; FP exponent -------------------------------------------
        # Lanes [0, L) encode every dtype: the significand of FP32 (norm[7:32]) and the
        # FP32 and BF16 sticky bits. Lanes [L, 2L) encode BF16 and MX: norm[23:32] and one
        # sticky bit. Only the shifter outputs a lane keeps are built (numerics.norm_top,
        # norm_sticky). MX-only lanes have no normaliser: |a| waits for the block's grid.
        fp_layout = data.StructLayout({"top": 32 - NORM_KEEP, "s7": 1, "s23": 1, "exp": 8,
                                       "inf": 1, "tiny": 1, "sign": 1, "lz": 5})
        bf_layout = data.StructLayout({"top9": 9, "s23": 1, "exp": 8, "inf": 1, "tiny": 1,
                                       "sign": 1, "lz": 5})
        mx_layout = data.StructLayout({"mag": 32, "sign": 1, "lz": 5})
        s2 = []
        for i in range(n_lanes):
            mag, lz = s1[i].mag, s1[i].lz
            if i < 2 * L:
                if i < L:
                    r = reg(fp_layout, f"s2_lane{i}")
                    top, s7, s23 = enc_normalise(m, mag, lz, f"lane{i}")
                    m.d.sync += [r.top.eq(top), r.s7.eq(s7), r.s23.eq(s23)]
                else:
                    r = reg(bf_layout, f"s2_lane{i}")
                    m.d.sync += [r.top9.eq(norm_top(m, mag, lz, 9, f"lane{i}")),
                                 r.s23.eq(norm_sticky(m, mag, lz, 23, f"lane{i}"))]
                exp, inf, tiny = float_exponent(m, lz, s1[i].zero, c2.scale, f"lane{i}")
                m.d.sync += [r.exp.eq(exp), r.inf.eq(inf), r.tiny.eq(tiny)]
            else:                                 # MX only: shifted in stage 3 (below)
                r = reg(mx_layout, f"s2_lane{i}")
                m.d.sync += r.mag.eq(mag)
            m.d.sync += [r.sign.eq(s1[i].sign), r.lz.eq(lz)]
            s2.append(r)
        c3 = ctl[D + 1]                           # the beat in stage 3

        # --- stage 3: FP32/BF16 rounding; the beat's INT32/FP32/BF16 bytes ------------------
        fp_bits = []                              # lanes [0, L): 32 bits; [L, 2L): BF16's 16
        for i in range(2 * L):
            r = s2[i]
            if i < L:
                fp_bits.append(float_round(m, r.top, r.s7, r.s23, r.exp, r.inf, r.tiny, r.sign,
                                           c3.bf16, f"lane{i}"))
            else:
                fp_bits.append(bf16_round(m, r.top9, r.s23, r.exp, r.inf, r.tiny, r.sign,
                                          f"lane{i}"))

        def plain_bytes(c, ints, floats):
            """INT32, FP32 or BF16 payload bytes of the beat with control `c`."""
            int32_bytes = Cat(*(bswap32(v) for v in ints))
            fp32_bytes = Cat(*(bswap32(b) for b in floats[:L]))
            bf16_bytes = Cat(*(Cat(b[8:16], b[0:8]) for b in floats))
            return Mux(c.bf16, bf16_bytes, Mux(c.fp32, fp32_bytes, int32_bytes))

        out_bytes = Signal(p.data_width, reset_less=True)
        out_overflow = Signal(reset_less=True)
        out_scale_valid = Signal(parts)
        out_scale_byte = [reg(8, f"out_scale{j}") for j in range(parts)]

        if not mx_ok:
            m.d.sync += [out_bytes.eq(plain_bytes(c3, int_at[D + 1], fp_bits)),
                         out_overflow.eq(c3.lane_ovf)]
        else:
            # --- MX: the block's shared exponent, then stages 3 and 4 of its lanes ----------
            first_beat = C(1, 1) if D == 1 else (c2.beat & (D - 1)) == 0
            # what the shared exponent needs of the scale and format: formed in stage 1
            bounds = reg(MX_SCALE_BOUNDS, "bounds1")
            m.d.sync += bounds.eq(mx_scale_bounds(m, ctl[0].scale, ctl[0].int8, ctl[0].e4m3))
            for k in range(1, D):
                nxt = reg(MX_SCALE_BOUNDS, f"bounds{k + 1}")
                m.d.sync += nxt.eq(bounds)
                bounds = nxt
            info = [reg(MX_BLOCK_INFO, f"info{j}") for j in range(parts)]
            blk_first = [Signal(name=f"blk_first{j}") for j in range(parts)]   # stage 3 holds it
            blk_scale = [reg(8, f"blk_scale{j}") for j in range(parts)]
            blk_overflow = [reg(1, f"blk_overflow{j}") for j in range(parts)]
            for j in range(parts):
                lanes = range(j * n, (j + 1) * n)
                # stage 1: the block's magnitude OR, a beat per cycle as its beats come in
                line_or, line_sat = block_magnitude([sat[i][1] for i in lanes], [sat[i][2] for i in lanes])
                run_or = reg(32, f"run_or{j}")
                run_sat = reg(1, f"run_sat{j}")
                if D > 1:
                    starts = (ctl[0].beat & (D - 1)) == 0
                    m.d.sync += [run_or.eq(Mux(starts, 0, run_or) | line_or),
                                 run_sat.eq(Mux(starts, 0, run_sat) | line_sat)]
                else:
                    m.d.sync += [run_or.eq(line_or), run_sat.eq(line_sat)]
                # stage 2: the shared exponent of the block whose first beat is in stage 2
                bx = MxBlockScale()
                m.submodules[f"mx_exp{j}"] = bx
                m.d.comb += [bx.mag_or.eq(run_or), bx.saturated.eq(run_sat), bx.bounds.eq(bounds)]
                # A block past the round's count is neither encoded into the scale line nor
                # checked for OVERFLOW.
                take = valid[D] & c2.mx & first_beat & c2.parts[j]
                m.d.sync += blk_first[j].eq(take)
                with m.If(take):
                    m.d.sync += [info[j].eq(bx.info), blk_scale[j].eq(bx.scale_byte),
                                 blk_overflow[j].eq(bx.overflow)]
            # stage 3: each lane shifted to its block's grid
            s3_layout = data.StructLayout({"sh": 8, "sticky": 1, "expf": 6, "sign": 1})
            s3 = []
            for i in range(p.beat_lanes):
                r = s2[i]
                blk = info[i // n]
                if i < L:
                    sh, sticky, expf = mx_element_shift(m, r.top[23 - NORM_KEEP:], r.s23, r.lz,
                                                        blk.lo, blk.eb, f"lane{i}")
                elif i < 2 * L:
                    sh, sticky, expf = mx_element_shift(m, r.top9, r.s23, r.lz, blk.lo, blk.eb,
                                                        f"lane{i}")
                else:                             # one shift of |a| to the block's grid
                    sh, sticky, expf = mx_element_window(m, r.mag, r.lz, blk.lo, blk.eb, f"lane{i}")
                x = reg(s3_layout, f"s3_lane{i}")
                m.d.sync += [x.sh.eq(sh), x.sticky.eq(sticky), x.expf.eq(expf), x.sign.eq(r.sign)]
                s3.append(x)
            # the INT32/FP32/BF16 bytes, formed here as in a build without MX
            plain3 = reg(p.data_width, "s3_plain")
            m.d.sync += plain3.eq(plain_bytes(c3, int_at[D + 1], fp_bits))
            nan3 = [reg(1, f"s3_nan{j}") for j in range(parts)]
            first3 = [Signal(name=f"s3_first{j}") for j in range(parts)]
            scale3 = [reg(8, f"s3_scale{j}") for j in range(parts)]
            ovf3 = [reg(1, f"s3_overflow{j}") for j in range(parts)]
            for j in range(parts):
                m.d.sync += [nan3[j].eq(info[j].nan), first3[j].eq(blk_first[j]),
                             scale3[j].eq(blk_scale[j]), ovf3[j].eq(blk_first[j] & blk_overflow[j])]
            c4 = ctl[D + 2]                       # the beat in stage 4

            # --- stage 4: MX rounding; the dtype's bytes --------------------------------------
            elems = []
            for i in range(p.beat_lanes):
                x = s3[i]
                elems.append(mx_element_round(m, x.sh, x.sticky, x.expf, x.sign, nan3[i // n],
                                              c4.int8, c4.e4m3, f"lane{i}"))
            m.d.sync += [
                out_bytes.eq(Mux(c4.mx, Cat(*elems), plain3)),
                out_overflow.eq(Mux(c4.mx, Cat(*ovf3).any(), c4.lane_ovf)),
                out_scale_valid.eq(Mux(c4.mx, Cat(*first3), 0)),
            ]
            m.d.sync += [out_scale_byte[j].eq(scale3[j]) for j in range(parts)]
        m.d.comb += [self.bytes.eq(out_bytes), self.overflow.eq(out_overflow),
                     self.scale_valid.eq(out_scale_valid)]
        for j in range(parts):
            m.d.comb += self.scale_byte[j].eq(out_scale_byte[j])
        return m
