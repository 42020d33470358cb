"""Ingress: per-port AXI4-Stream frame parser and payload buffer (docs/SPEC.md §10.2).

Frames are stored and forwarded: a frame may only touch slot state once it is known to be
whole and well-formed, so its payload beats go into a buffer as they arrive and are kept
(committed) or rewound once the frame has been checked. Header fields are checked while the
payload streams in, so the verdict costs no extra input cycle per frame.

    s_axis -> [s1: beat registered, header captured; payload beat written, length counted]
           -> [s2: verdict on the whole frame: commit or rewind, descriptor FIFO, counters]

The verdict sits one stage after the last beat so that the registered header checks always
include that beat, even for frames shorter than the header. The next frame's first beat is
a header beat, never written, so the rewind cannot race a payload write.

The engine reads committed payload beats through `rd_addr`/`rd_data` and frees them with
`release`/`release_beats`.
"""

from amaranth import *
from amaranth.lib import wiring, data
from amaranth.lib.wiring import In, Out
from amaranth.lib.memory import Memory
from amaranth.lib.fifo import SyncFIFOBuffered

from .params import (Params, HEADER_BYTES, DROP_NOT_AGG, DROP_MALFORMED, DROP_JOB_DISABLED,
                     DROP_SLOT_RANGE, DROP_WORKER, DTYPE_INT32, DTYPE_FP32, DTYPE_BF16,
                     DTYPE_MXINT8, DTYPE_MXFP8_E4M3, DTYPE_MXFP8_E5M2, MX_SCALE_BYTES)
from .frame import *



def parseable_dtypes(p: Params):
    """dtypes whose payload layout the parser checks and scans for NaN. An MX block
    (32 elements) must fit in one beat."""
    dtypes = (DTYPE_INT32, DTYPE_FP32, DTYPE_BF16)
    if p.mx_ok:
        dtypes += (DTYPE_MXINT8, DTYPE_MXFP8_E4M3, DTYPE_MXFP8_E5M2)
    return dtypes


def supported_dtypes(p: Params):
    """dtypes this build admits (docs/SPEC.md §10.2): every dtype of SPEC §4, except the
    MX ones when a beat is narrower than an MX block (data_width 128)."""
    return parseable_dtypes(p)


SUPPORTED_DTYPES = supported_dtypes(Params())

DESC_FIFO_DEPTH = 8


def is_mx(dtype):
    return (dtype == DTYPE_MXINT8) | (dtype == DTYPE_MXFP8_E4M3) | (dtype == DTYPE_MXFP8_E5M2)


def payload_bytes_expected(dtype, count):
    """Payload length for `dtype` and `count` (SPEC §3)."""
    return Mux((dtype == DTYPE_INT32) | (dtype == DTYPE_FP32), count << 2,
               Mux(dtype == DTYPE_BF16, count << 1, MX_SCALE_BYTES + count))


def beat_nan(p: Params, data, dtype, valid_bytes, scale_beat):
    """Does this payload beat carry a NaN among its valid bytes (SPEC §4)? Elements are
    big-endian; an MX scale-line beat is NaN where a block's scale byte is 0xFF."""
    B = p.beat_bytes
    byte = [data.word_select(i, 8) for i in range(B)]
    valid = [valid_bytes > i for i in range(B)]
    fp32 = []
    for i in range(0, B, 4):   # sign.exp8.mant23: exp all ones, mantissa non-zero
        exp = Cat(byte[i + 1][7], byte[i][:7])
        mant = Cat(byte[i + 3], byte[i + 2], byte[i + 1][:7])
        fp32.append(valid[i] & (exp == 0xFF) & (mant != 0))
    bf16 = []
    for i in range(0, B, 2):   # sign.exp8.mant7
        exp = Cat(byte[i + 1][7], byte[i][:7])
        bf16.append(valid[i] & (exp == 0xFF) & (byte[i + 1][:7] != 0))
    e4m3 = [valid[i] & (byte[i][:7] == 0x7F) for i in range(B)]
    e5m2 = [valid[i] & (byte[i][2:7] == 0x1F) & (byte[i][:2] != 0) for i in range(B)]
    block = [valid[i] & (byte[i] == 0xFF) for i in range(B)]
    return Mux(is_mx(dtype) & scale_beat, Cat(*block).any(),
           Mux(dtype == DTYPE_FP32, Cat(*fp32).any(),
           Mux(dtype == DTYPE_BF16, Cat(*bf16).any(),
           Mux(dtype == DTYPE_MXFP8_E4M3, Cat(*e4m3).any(),
           Mux(dtype == DTYPE_MXFP8_E5M2, Cat(*e5m2).any(), 0)))))


class IngressParser(wiring.Component):
    def __init__(self, p: Params, port: int, dtypes=None):
        self.p = p
        self.port = port
        self.dtypes = supported_dtypes(p) if dtypes is None else tuple(dtypes)
        assert set(self.dtypes) <= set(parseable_dtypes(p))
        self.depth = p.buffer_beats
        ptr_bits = (self.depth - 1).bit_length() + 1  # one extra bit tells full from empty
        self.ptr_bits = ptr_bits
        sb = slot_bits(p) + 1
        super().__init__({
            # AXI4-Stream slave
            "tdata": In(p.data_width), "tkeep": In(p.beat_bytes), "tvalid": In(1),
            "tready": Out(1), "tlast": In(1),
            # configuration and time
            "enable": In(1),            # low while the switch initialises
            "cycles": In(32),
            "agg_port": In(16),
            "job_enable": In(p.jobs), "job_mask": In(p.ports * p.jobs),
            "job_base": In(sb * p.jobs), "job_count": In(sb * p.jobs),
            # descriptors of admitted frames, to the engine
            "desc": Out(frame_descriptor(p)), "desc_valid": Out(1), "desc_ready": In(1),
            # arrival-order tags: `order` is the switch-wide tag of a frame committed in
            # this cycle (top.py); the engine sees those of the first two queued frames
            "order": In(p.order_bits), "commit": Out(1),
            "head_valid": Out(1), "head_order": Out(p.order_bits),
            "next_valid": Out(1), "next_order": Out(p.order_bits),
            # payload buffer read side (one cycle read latency)
            "rd_addr": In(ptr_bits - 1), "rd_data": Out(p.data_width),
            "release": In(1), "release_beats": In(beats_bits(p)),
            # events for the counters
            "rx": Out(1), "drop": Out(1), "drop_reason": Out(3),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.p
        B = p.beat_bytes
        H = p.header_beats
        dw = p.data_width
        sb = slot_bits(p) + 1

        # --- payload buffer ------------------------------------------------------
        m.submodules.buf = buf = Memory(shape=dw, depth=self.depth, init=[])
        wport = buf.write_port()
        rport = buf.read_port()
        m.d.comb += [rport.addr.eq(self.rd_addr), self.rd_data.eq(rport.data)]

        wp = Signal(self.ptr_bits)   # next write (uncommitted frame included)
        cwp = Signal(self.ptr_bits)  # end of the committed frames
        rp = Signal(self.ptr_bits)   # first beat still owned by the engine
        with m.If(self.release):
            m.d.sync += rp.eq(rp + self.release_beats)

        # --- descriptor FIFO -----------------------------------------------------
        desc_layout = frame_descriptor(p)
        d = Signal(desc_layout)          # the descriptor written at the verdict
        # Queued frames span fewer than half the tag space (Params.order_bits).
        assert 1 << (p.order_bits - 1) >= p.ports * DESC_FIFO_DEPTH
        m.submodules.desc_fifo = fifo = SyncFIFOBuffered(width=desc_layout.size, depth=DESC_FIFO_DEPTH)
        m.d.comb += [self.desc.eq(fifo.r_data), self.desc_valid.eq(fifo.r_rdy),
                     fifo.r_en.eq(self.desc_ready)]
        # A copy of the queued frames' arrival tags, indexed by push and pop counts: the
        # engine sees the first two frames in line whether or not the FIFO shows the head.
        pushes = Signal(range(DESC_FIFO_DEPTH))
        pops = Signal(range(DESC_FIFO_DEPTH))
        queued = Signal(range(DESC_FIFO_DEPTH + 1))
        t_ring = Array(Signal(p.order_bits, name=f"order_ring{i}") for i in range(DESC_FIFO_DEPTH))
        push = fifo.w_en
        pop = fifo.r_en & fifo.r_rdy
        with m.If(push):
            m.d.sync += [t_ring[pushes].eq(self.order), pushes.eq(pushes + 1)]
        with m.If(pop):
            m.d.sync += pops.eq(pops + 1)
        m.d.sync += queued.eq(queued + push - pop)
        m.d.comb += [self.head_valid.eq(queued >= 1), self.head_order.eq(t_ring[pops]),
                     self.next_valid.eq(queued >= 2),
                     self.next_order.eq(t_ring[(pops + 1)[:len(pops)]]),
                     self.commit.eq(push)]

        # --- stage 1: register the beat, capture the header -----------------------
        s1_valid = Signal()
        s1_data = Signal(dw)
        s1_keep = Signal(B)
        s1_last = Signal()
        s1_payload = Signal()        # beat index >= H
        beat_idx = Signal(range(H + 1))
        hdr = Signal(HEADER_BYTES * 8)

        handshake = self.tvalid & self.tready
        m.d.sync += [s1_valid.eq(handshake), s1_data.eq(self.tdata), s1_keep.eq(self.tkeep),
                     s1_last.eq(self.tlast), s1_payload.eq(beat_idx == H)]
        with m.If(handshake):
            for i in range(H):
                with m.If(beat_idx == i):
                    m.d.sync += hdr.word_select(i, min(dw, HEADER_BYTES * 8)).eq(
                        self.tdata[:min(dw, HEADER_BYTES * 8)])
            with m.If(self.tlast):
                m.d.sync += beat_idx.eq(0)
            with m.Elif(beat_idx != H):
                m.d.sync += beat_idx.eq(beat_idx + 1)
        s1_cycle = Signal(32)
        m.d.sync += s1_cycle.eq(self.cycles)

        # --- stage 2: payload write, frame length and tkeep rule ------------------
        frame_beats = Signal(beats_bits(p) + 1)   # payload beats written for this frame
        overflowing = Signal()                    # more payload than any valid frame
        len_bytes = Signal(16)                    # saturating frame length
        keep_bad = Signal()
        full_keep = (1 << B) - 1
        keep_count = Signal(range(B + 1))
        m.d.comb += keep_count.eq(sum(s1_keep[i] for i in range(B)))
        keep_contig = (s1_keep != 0) & ((s1_keep & (s1_keep + 1)) == 0)

        write = s1_valid & s1_payload & ~overflowing
        m.d.comb += [wport.addr.eq(wp[:-1]), wport.data.eq(s1_data), wport.en.eq(write)]

        max_len = (1 << 16) - 1
        beat_len = Mux(s1_last, keep_count, B)
        new_len = Signal(17)
        m.d.comb += new_len.eq(len_bytes + beat_len)
        cur_len = Signal(16)                       # length including this beat (saturated)
        m.d.comb += cur_len.eq(Mux(new_len > max_len, max_len, new_len))
        cur_keep_bad = keep_bad | Mux(s1_last, ~keep_contig, s1_keep != full_keep)

        dtype = Signal(8)        # header fields, registered below
        count = Signal(16)

        # NaN scan of the payload (the engine needs the flag when it decides the round).
        # Valid bytes of this payload beat: elements (or, for an MX scale-line beat, block
        # scales) below `count`.
        scale_beats = p.scale_beats
        mx = is_mx(dtype[:3])
        scale_beat = mx & (frame_beats < scale_beats)
        data_bytes = Signal(range(4 * p.slot_elems + 1))
        m.d.comb += data_bytes.eq(Mux(mx, Mux(scale_beat, count >> 5, count),
                                      payload_bytes_expected(dtype[:3], count)))
        offset = Signal(range(p.max_payload_beats * B + 1))
        m.d.comb += offset.eq(Mux(mx & ~scale_beat, frame_beats - scale_beats, frame_beats) * B)
        valid_bytes = Signal(range(B + 1))
        m.d.comb += valid_bytes.eq(Mux(data_bytes <= offset, 0,
                                       Mux(data_bytes - offset >= B, B, data_bytes - offset)))
        frame_nan = Signal()
        cur_nan = frame_nan | (write & beat_nan(p, s1_data, dtype[:3], valid_bytes, scale_beat))

        # MX block scales, captured from the scale line for the descriptor. They are read
        # at the verdict, before the next frame's first payload beat can overwrite them.
        frame_scales = Signal(8 * p.mx_blocks if p.mx_ok else 0)
        if p.mx_ok:
            for j in range(p.scale_beats):
                lo, hi = j * B, min(p.mx_blocks, (j + 1) * B)
                if lo >= hi:
                    break
                with m.If(write & scale_beat & (frame_beats == j)):
                    m.d.sync += frame_scales[8 * lo:8 * hi].eq(s1_data[:8 * (hi - lo)])

        with m.If(s1_valid):
            with m.If(s1_last):
                m.d.sync += [len_bytes.eq(0), keep_bad.eq(0), frame_beats.eq(0), overflowing.eq(0),
                             frame_nan.eq(0)]
            with m.Else():
                m.d.sync += [len_bytes.eq(cur_len), keep_bad.eq(cur_keep_bad), frame_nan.eq(cur_nan)]
                with m.If(write):
                    m.d.sync += frame_beats.eq(frame_beats + 1)
                    with m.If(frame_beats + 1 == p.max_payload_beats):
                        m.d.sync += overflowing.eq(1)
        with m.If(write):
            m.d.sync += wp.eq(wp + 1)

        # Header checks, registered from the captured header every cycle. They only look at
        # bytes the length guards of §10.2 vouch for, so a short frame's stale header bytes
        # never decide its verdict.
        h = hdr
        ethertype_ok = Signal()
        ip_ok = Signal()         # version 4, IHL 5, checksum valid
        proto_ok = Signal()
        udp_port_ok = Signal()
        ip_total = Signal(16)
        udp_len = Signal(16)
        ver_op_ok = Signal()
        job = Signal(16)
        slot = Signal(16)
        worker = Signal(8)
        flags = Signal(8)
        seq = Signal(32)
        scale = Signal(8)
        src_mac = Signal(48)
        src_ip = Signal(32)
        src_port = Signal(16)
        words = [get_be(h, OFF_IP + 2 * i, 2) for i in range(10)]
        csum = Signal(20)
        m.d.comb += csum.eq(sum(words))
        m.d.sync += [
            ethertype_ok.eq(get_be(h, OFF_ETHERTYPE, 2) == 0x0800),
            ip_ok.eq((header_byte(h, OFF_IP) == 0x45) & (ones_complement_fold(csum, 20) == 0xFFFF)),
            proto_ok.eq(header_byte(h, OFF_IP_PROTO) == 17),
            udp_port_ok.eq(get_be(h, OFF_UDP_DST, 2) == self.agg_port),
            ip_total.eq(get_be(h, OFF_IP_TOTAL_LEN, 2)),
            udp_len.eq(get_be(h, OFF_UDP_LEN, 2)),
            ver_op_ok.eq(header_byte(h, OFF_VER_OP) == 0x10),
            dtype.eq(header_byte(h, OFF_DTYPE)),
            count.eq(get_be(h, OFF_COUNT, 2)),
            job.eq(get_be(h, OFF_JOB, 2)),
            slot.eq(get_be(h, OFF_SLOT, 2)),
            worker.eq(header_byte(h, OFF_WORKER)),
            flags.eq(header_byte(h, OFF_FLAGS)),
            seq.eq(get_be(h, OFF_SEQ, 4)),
            scale.eq(header_byte(h, OFF_SCALE)),
            src_mac.eq(get_be(h, OFF_SRC_MAC, 6)),
            src_ip.eq(get_be(h, OFF_IP_SRC, 4)),
            src_port.eq(get_be(h, OFF_UDP_SRC, 2)),
        ]

        # --- stage 2: verdict on the whole frame ----------------------------------
        s2_valid = Signal()
        s2_len = Signal(16)
        s2_keep_bad = Signal()
        s2_beats = Signal(beats_bits(p) + 1)
        s2_t_last = Signal(32)
        s2_nan = Signal()
        m.d.sync += [s2_valid.eq(s1_valid & s1_last), s2_len.eq(cur_len),
                     s2_keep_bad.eq(cur_keep_bad), s2_beats.eq(frame_beats + write), s2_nan.eq(cur_nan),
                     s2_t_last.eq(s1_cycle)]
        L = s2_len
        dtype_ok = Cat(*[dtype == d for d in self.dtypes]).any()
        count_ok = (count != 0) & (count <= p.slot_elems) & (~is_mx(dtype[:3]) | (count[:5] == 0))
        expected_len = Signal(17)
        m.d.comb += expected_len.eq(HEADER_BYTES + payload_bytes_expected(dtype[:3], count))
        agg_ok = ((L >= HEADER_BYTES) & (ip_total == L - 14) & (udp_len == L - 34) & ver_op_ok
                  & dtype_ok & count_ok & (expected_len == L))

        job_in_range = job < p.jobs
        job_idx = job[:job_bits(p)]
        job_en = Signal()
        mask = Signal(p.ports)
        base = Signal(sb)
        slot_count = Signal(sb)
        with m.Switch(job_idx):
            for j in range(p.jobs):
                with m.Case(j):
                    m.d.comb += [job_en.eq(self.job_enable[j]),
                                 mask.eq(self.job_mask.word_select(j, p.ports)),
                                 base.eq(self.job_base.word_select(j, sb)),
                                 slot_count.eq(self.job_count.word_select(j, sb))]
        port_bit = mask[self.port]
        rank = sum(mask[i] for i in range(self.port)) if self.port else C(0)

        reason = Signal(3)
        drop = Signal()
        with m.If(s2_keep_bad | (L < 14)):
            m.d.comb += [drop.eq(1), reason.eq(DROP_MALFORMED)]
        with m.Elif(~ethertype_ok):
            m.d.comb += [drop.eq(1), reason.eq(DROP_NOT_AGG)]
        with m.Elif((L < 34) | ~ip_ok):
            m.d.comb += [drop.eq(1), reason.eq(DROP_MALFORMED)]
        with m.Elif(~proto_ok):
            m.d.comb += [drop.eq(1), reason.eq(DROP_NOT_AGG)]
        with m.Elif(L < 42):
            m.d.comb += [drop.eq(1), reason.eq(DROP_MALFORMED)]
        with m.Elif(~udp_port_ok):
            m.d.comb += [drop.eq(1), reason.eq(DROP_NOT_AGG)]
        with m.Elif(~agg_ok):
            m.d.comb += [drop.eq(1), reason.eq(DROP_MALFORMED)]
        with m.Elif(~job_in_range | ~job_en):
            m.d.comb += [drop.eq(1), reason.eq(DROP_JOB_DISABLED)]
        with m.Elif((slot >= slot_count) | (base + slot >= p.slots)):
            m.d.comb += [drop.eq(1), reason.eq(DROP_SLOT_RANGE)]
        with m.Elif(~port_bit | (worker != rank)):
            m.d.comb += [drop.eq(1), reason.eq(DROP_WORKER)]

        verdict = s2_valid
        m.d.comb += [
            d.job.eq(job_idx), d.gslot.eq(base + slot), d.slot.eq(slot), d.bank.eq(flags[0]),
            d.dtype.eq(dtype[:3]), d.count.eq(count), d.scale.eq(scale), d.seq.eq(seq),
            d.src_mac.eq(src_mac), d.src_ip.eq(src_ip), d.src_port.eq(src_port),
            d.start.eq(cwp[:-1]), d.beats.eq(s2_beats), d.nan.eq(s2_nan), d.t_last.eq(s2_t_last),
            d.scales.eq(frame_scales),
            fifo.w_data.eq(d), fifo.w_en.eq(verdict & ~drop),
        ]
        with m.If(verdict):
            with m.If(drop):
                m.d.sync += wp.eq(cwp)                  # rewind: the frame never happened
            with m.Else():
                m.d.sync += cwp.eq(wp)                  # commit
        m.d.sync += [self.rx.eq(verdict), self.drop.eq(verdict & drop), self.drop_reason.eq(reason)]

        # --- flow control ---------------------------------------------------------
        # Room for the beat in stage 1 and the one offered now; the descriptor FIFO keeps
        # room for the frames whose last beats may be in flight.
        used = Signal(self.ptr_bits)
        m.d.comb += used.eq(wp - rp)
        room = (used + 2 <= self.depth) | overflowing
        m.d.comb += self.tready.eq(self.enable & room & (fifo.level <= DESC_FIFO_DEPTH - 3))
        return m
