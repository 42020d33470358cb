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

No path has more than a few LUT levels (issue 12's budget is 8), without a cycle of
latency more: every rule of the verdict is a register by then. The IPv4 checksum is summed
per beat as the header arrives; the length rules compare the beat count and single tkeep
bits, registered with the last beat, against the expected length's last beat and tkeep,
registered from the header; the checks of header fields and job table are registered
once more, which they can be as only a frame with payload beats (whose header was complete
a beat before its last) gets that far. The NaN scan flags each word of a beat in one stage
and ORs the flags in the next; an admitted frame's kept bytes are its elements, so tkeep
is the element mask.

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
from .numerics import thermometer



def parseable_dtypes(p: Params):
    """dtypes whose payload layout the parser checks and scans for NaN: all of SPEC §4 at
    every data_width (at 128 bits an MX block spans two beats and the scale line four:
    elements are scanned beat by beat, block scales from the captured line)."""
    dtypes = (DTYPE_INT32, DTYPE_FP32, DTYPE_BF16)
    if p.mx_ok:
        dtypes += (DTYPE_MXINT8, DTYPE_MXFP8_E4M3, DTYPE_MXFP8_E5M2)
    return dtypes


def supported_dtypes(p: Params):
    """dtypes this build admits (docs/SPEC.md §10.2): every dtype of SPEC §4."""
    return parseable_dtypes(p)


SUPPORTED_DTYPES = supported_dtypes(Params())

DESC_FIFO_DEPTH = 8


def is_mx(dtype):
    return (dtype == DTYPE_MXINT8) | (dtype == DTYPE_MXFP8_E4M3) | (dtype == DTYPE_MXFP8_E5M2)


def payload_bytes_expected(dtype, count):
    """Payload length for `dtype` and `count` (SPEC §3)."""
    return Mux((dtype == DTYPE_INT32) | (dtype == DTYPE_FP32), count << 2,
               Mux(dtype == DTYPE_BF16, count << 1, MX_SCALE_BYTES + count))


def element_nan_words(p: Params, data, keep, fmt):
    """Per 32-bit word of a payload beat: does an element that starts in it carry a NaN
    (SPEC §4)? Elements are big-endian; an element counts when its first byte is kept.
    `fmt` holds one-hot dtype selects (fp32, bf16, e4m3, e5m2), registered per frame. For
    an admitted frame the kept bytes are exactly its elements (its length is the expected
    one), so tkeep is the element mask: no count arithmetic on the beat's path."""
    B = p.beat_bytes
    byte = [data.word_select(i, 8) for i in range(B)]
    words = []
    for w in range(B // 4):
        terms = []
        i = 4 * w                                    # sign.exp8.mant23
        exp = Cat(byte[i + 1][7], byte[i][:7])
        mant = Cat(byte[i + 3], byte[i + 2], byte[i + 1][:7])
        terms.append(fmt.fp32 & keep[i] & exp.all() & mant.any())
        for i in (4 * w, 4 * w + 2):                 # sign.exp8.mant7
            exp = Cat(byte[i + 1][7], byte[i][:7])
            terms.append(fmt.bf16 & keep[i] & exp.all() & byte[i + 1][:7].any())
        for i in range(4 * w, 4 * w + 4):
            terms.append(fmt.e4m3 & keep[i] & byte[i][:7].all())
            terms.append(fmt.e5m2 & keep[i] & byte[i][2:7].all() & byte[i][:2].any())
        words.append(Cat(*terms).any())
    return Cat(*words)


def ipv4_partial_sums(p: Params, beat):
    """{beat index: sum of the IPv4 header's 16-bit words (bytes 14..33) inside that beat},
    for the beats that hold any. A word never straddles two beats (beats are 16-byte
    aligned, words 2-byte aligned)."""
    B = p.beat_bytes
    sums = {}
    for w in range(10):
        off = OFF_IP + 2 * w
        i, o = divmod(off, B)
        word = Cat(beat.word_select(o + 1, 8), beat.word_select(o, 8))
        sums.setdefault(i, []).append(word)
    return {i: sum(words) for i, words in sums.items()}


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
        # Datapath registers (beat, header, fields, stamps) have no reset: every use is
        # qualified by a valid bit or a frame counter, which do.
        s1_valid = Signal()
        s1_data = Signal(dw, reset_less=True)
        s1_keep = Signal(B, reset_less=True)
        s1_last = Signal()
        s1_payload = Signal()        # beat index >= H
        beat_idx = Signal(range(H + 1))
        hdr = Signal(HEADER_BYTES * 8, reset_less=True)

        handshake = self.tvalid & self.tready
        m.d.sync += [s1_valid.eq(handshake), s1_data.eq(self.tdata), s1_keep.eq(self.tkeep),
                     s1_last.eq(self.tlast), s1_payload.eq(beat_idx == H)]
        # The IPv4 header checksum is summed from the beats as they are accepted (one
        # partial sum per header beat), so that only the fold and the compare are left for
        # the stage after the last header beat: a frame as short as one beat gets its
        # verdict in time.
        csum_acc = Signal(20, reset_less=True)
        partial = ipv4_partial_sums(p, self.tdata)
        with m.If(handshake):
            for i in range(H):
                with m.If(beat_idx == i):
                    m.d.sync += hdr.word_select(i, min(dw, HEADER_BYTES * 8)).eq(
                        self.tdata[:min(dw, HEADER_BYTES * 8)])
                    if i == 0:
                        m.d.sync += csum_acc.eq(partial.get(0, 0))
                    elif i in partial:
                        m.d.sync += csum_acc.eq(csum_acc + partial[i])
            with m.If(self.tlast):
                m.d.sync += beat_idx.eq(0)
            with m.Elif(beat_idx != H):
                m.d.sync += beat_idx.eq(beat_idx + 1)
        s1_cycle = Signal(32, reset_less=True)
        m.d.sync += s1_cycle.eq(self.cycles)
        half = p.half_header
        if half:
            # data_width 1024: the upper half of the beat before the one in stage 1. A
            # non-MX payload starts at byte 64 of the header beat, so payload beat k is
            # this half of wire beat k and the lower half of wire beat k + 1.
            prev_hi = Signal(dw // 2, reset_less=True)
            prev_keep_hi = Signal(B // 2, reset_less=True)
            with m.If(s1_valid):
                m.d.sync += [prev_hi.eq(s1_data[dw // 2:]), prev_keep_hi.eq(s1_keep[B // 2:])]

        # --- stage 2: payload write, frame length and tkeep rule ------------------
        frame_beats = Signal(beats_bits(p) + 1)   # payload beats written for this frame
        overflowing = Signal()                    # more payload than any valid frame
        # Beats of this frame before the one in stage 1, header included, saturating above
        # the longest valid frame. The frame length L is nb * B + the kept bytes of the
        # last beat (tkeep must be a prefix there, or the frame is MALFORMED anyway), so
        # the length rules become checks of nb and of single tkeep bits, registered here.
        nb_sat = (HEADER_BYTES + 4 * ((1 << count_bits(p)) - 1) - 1) // B + 1
        nb = Signal(range(nb_sat + 1))
        keep_bad = Signal()
        full_keep = (1 << B) - 1
        # a non-empty prefix of ones: bit 0 set, and no 0 below a 1
        keep_contig = s1_keep[0] & Cat(*[s1_keep[i] | ~s1_keep[i + 1] for i in range(B - 1)]).all()

        write = s1_valid & s1_payload & ~overflowing

        cur_keep_bad = keep_bad | Mux(s1_last, ~keep_contig, s1_keep != full_keep)

        def length_below(k):
            """L < k for the frame whose last beat is in stage 1 (a prefix tkeep)."""
            terms = []
            for n in range(-(-k // B)):
                rest = k - n * B              # L < k  <=>  kept bytes < rest
                terms.append((nb == n) & (1 if rest > B else ~s1_keep[rest - 1]))
            return Cat(*terms).any()

        # Header fields, registered from the captured header every cycle. They only decide
        # a verdict where the length rules of §10.2 vouch for the bytes they come from, so
        # a short frame's stale header bytes never do.
        h = hdr
        dtype = Signal(8, reset_less=True)
        count = Signal(16, reset_less=True)
        ethertype_ok = Signal(reset_less=True)
        ip_ok = Signal(reset_less=True)         # version 4, IHL 5, checksum valid
        proto_ok = Signal(reset_less=True)
        udp_port_ok = Signal(reset_less=True)
        ver_op_ok = Signal(reset_less=True)
        job = Signal(16, reset_less=True)
        slot = Signal(16, reset_less=True)
        worker = Signal(8, reset_less=True)
        flags = Signal(8, reset_less=True)
        seq = Signal(32, reset_less=True)
        scale = Signal(8, reset_less=True)
        src_mac = Signal(48, reset_less=True)
        src_ip = Signal(32, reset_less=True)
        src_port = Signal(16, reset_less=True)
        fmt = Signal(data.StructLayout({"fp32": 1, "bf16": 1, "e4m3": 1, "e5m2": 1, "mx": 1}),
                     reset_less=True)
        # The expected frame length `64 + payload bytes` as (nb of its last beat, tkeep of
        # its last beat): L == expected  <=>  nb == exp_nb and tkeep == exp_keep. Only a
        # count the build admits matters (count_ok below), so count is cut to its width.
        h_dtype = header_byte(h, OFF_DTYPE)[:3]
        h_count = get_be(h, OFF_COUNT, 2)
        h_payload = Signal(count_bits(p) + 2)
        m.d.comb += h_payload.eq(payload_bytes_expected(h_dtype, h_count[:count_bits(p)]))
        kb = B.bit_length() - 1                  # log2(B)
        exp_nb = Signal(range(nb_sat + 1), reset_less=True)
        exp_keep = Signal(B, reset_less=True)
        # the last kept byte, (payload - 1) mod B: the low bits of the payload length only
        last_byte = Signal(kb)
        if HEADER_BYTES % B:
            # data_width 1024: the frame's last byte is (64 + payload - 1) mod B
            m.d.comb += last_byte.eq(payload_bytes_expected(h_dtype, h_count[:kb])[:kb]
                                     + (HEADER_BYTES % B - 1))
        else:
            m.d.comb += last_byte.eq(payload_bytes_expected(h_dtype, h_count[:kb])[:kb] - 1)
        # IPv4 and UDP lengths against the payload: 64 + payload - 14 and - 34, per layout
        ip50 = Signal(signed(17), reset_less=True)
        udp30 = Signal(signed(17), reset_less=True)
        ip114 = Signal(signed(17), reset_less=True)
        udp94 = Signal(signed(17), reset_less=True)
        m.d.sync += [
            ethertype_ok.eq(get_be(h, OFF_ETHERTYPE, 2) == 0x0800),
            ip_ok.eq((header_byte(h, OFF_IP) == 0x45) & (ones_complement_fold(csum_acc, 20) == 0xFFFF)),
            proto_ok.eq(header_byte(h, OFF_IP_PROTO) == 17),
            udp_port_ok.eq(get_be(h, OFF_UDP_DST, 2) == self.agg_port),
            ver_op_ok.eq(header_byte(h, OFF_VER_OP) == 0x10),
            dtype.eq(header_byte(h, OFF_DTYPE)),
            count.eq(h_count),
            job.eq(get_be(h, OFF_JOB, 2)),
            slot.eq(get_be(h, OFF_SLOT, 2)),
            worker.eq(header_byte(h, OFF_WORKER)),
            flags.eq(header_byte(h, OFF_FLAGS)),
            seq.eq(get_be(h, OFF_SEQ, 4)),
            scale.eq(header_byte(h, OFF_SCALE)),
            src_mac.eq(get_be(h, OFF_SRC_MAC, 6)),
            src_ip.eq(get_be(h, OFF_IP_SRC, 4)),
            src_port.eq(get_be(h, OFF_UDP_SRC, 2)),
            fmt.fp32.eq(h_dtype == DTYPE_FP32), fmt.bf16.eq(h_dtype == DTYPE_BF16),
            fmt.e4m3.eq(h_dtype == DTYPE_MXFP8_E4M3), fmt.e5m2.eq(h_dtype == DTYPE_MXFP8_E5M2),
            fmt.mx.eq(is_mx(h_dtype)),
            exp_nb.eq((h_payload + HEADER_BYTES - 1) >> kb),
            # kept bytes of the last beat: bytes 0 .. (64 + payload - 1) mod B
            exp_keep.eq(Cat(C(1, 1), thermometer(last_byte, B - 1))),
            ip50.eq(get_be(h, OFF_IP_TOTAL_LEN, 2) - (HEADER_BYTES - 14)),
            udp30.eq(get_be(h, OFF_UDP_LEN, 2) - (HEADER_BYTES - 34)),
            ip114.eq(get_be(h, OFF_IP_TOTAL_LEN, 2) - (HEADER_BYTES + MX_SCALE_BYTES - 14)),
            udp94.eq(get_be(h, OFF_UDP_LEN, 2) - (HEADER_BYTES + MX_SCALE_BYTES - 34)),
        ]

        # The buffer write: the beat in stage 1, or at data_width 1024 a non-MX payload
        # realigned by half a beat (one 2:1 mux on the registered beat). A frame whose last
        # wire beat has payload bytes in its upper half needs one write more, `extra`, in
        # the cycle after its tlast: stage 1 then holds the next frame's first beat (all
        # header; its upper half is only written with its second), which writes nothing.
        # fmt is still this frame's then (a single-beat frame's is only valid then).
        if half:
            extra_due = Signal()
            extra = Signal()
            at_max = write & (frame_beats + 1 == p.max_payload_beats)
            m.d.sync += extra_due.eq(s1_valid & s1_last & s1_keep[B // 2] & ~overflowing & ~at_max)
            m.d.comb += extra.eq(extra_due & ~fmt.mx)
            wen = write | extra
            wdata = Mux(fmt.mx, s1_data, Cat(prev_hi, s1_data[:dw // 2]))
            wkeep = Mux(fmt.mx, s1_keep, Cat(prev_keep_hi, Mux(extra, 0, s1_keep[:B // 2])))
        else:
            wen, wdata, wkeep = write, s1_data, s1_keep
        m.d.comb += [wport.data.eq(wdata), wport.en.eq(wen)]

        # NaN scan of the payload (the engine needs the flag when it decides the round), in
        # two steps: stage 1 flags each 32-bit word of an element beat, as written, that
        # holds a NaN element; the stage after ORs the flags into the frame's. The verdict
        # adds the last beat's flags itself. An MX frame's block scales are checked from
        # the captured scale line against the block count.
        scale_beats = p.scale_beats
        scale_beat = fmt.mx & (frame_beats < scale_beats) if scale_beats else C(0)
        nan_words = Signal(B // 4)          # stage 1's flags, for the beat before
        m.d.sync += nan_words.eq(Mux(wen & ~scale_beat,
                                     element_nan_words(p, wdata, wkeep, fmt), 0))
        frame_nan = Signal()                # the frame's beats before the one in nan_words

        # MX block scales, captured from the scale line for the descriptor. They are read
        # at the verdict, before the next frame's first payload beat can overwrite them.
        frame_scales = Signal(8 * p.mx_blocks if p.mx_ok else 0, reset_less=True)
        scale_nan = Signal(reset_less=True)     # a NaN (0xFF) scale among the frame's blocks
        if p.mx_ok:
            block_ff = Signal(p.mx_blocks, reset_less=True)
            block_valid = Signal(p.mx_blocks, reset_less=True)   # block < count / 32
            for j in range(p.scale_beats):
                lo, hi = j * B, min(p.mx_blocks, (j + 1) * B)
                if lo >= hi:
                    break
                with m.If(write & scale_beat & (frame_beats == j)):
                    m.d.sync += [frame_scales[8 * lo:8 * hi].eq(s1_data[:8 * (hi - lo)]),
                                 block_ff[lo:hi].eq(Cat(*[s1_data.word_select(i, 8).all()
                                                          for i in range(hi - lo)]))]
            if half:
                # data_width 1024: the scale line is the upper half of the header beat,
                # captured as the first element beat comes (fmt is known by then)
                n = p.mx_blocks
                with m.If(write & fmt.mx & (frame_beats == 0)):
                    m.d.sync += [frame_scales.eq(prev_hi[:8 * n]),
                                 block_ff.eq(Cat(*[prev_hi.word_select(i, 8).all() for i in range(n)]))]
            m.d.sync += [block_valid.eq(Mux(fmt.mx, thermometer(count[5:], p.mx_blocks), 0)),
                         scale_nan.eq((block_ff & block_valid).any())]
        else:
            m.d.comb += scale_nan.eq(0)

        with m.If(s1_valid):
            with m.If(s1_last):
                m.d.sync += [nb.eq(0), keep_bad.eq(0), frame_beats.eq(0), overflowing.eq(0)]
            with m.Else():
                m.d.sync += [keep_bad.eq(cur_keep_bad)]
                with m.If(nb != nb_sat):
                    m.d.sync += nb.eq(nb + 1)
                with m.If(write):
                    m.d.sync += frame_beats.eq(frame_beats + 1)
                    with m.If(frame_beats + 1 == p.max_payload_beats):
                        m.d.sync += overflowing.eq(1)
        with m.If(wen):
            m.d.sync += wp.eq(wp + 1)

        # Checks that need the header fields above, registered once more: they are needed
        # only for a frame with payload beats, whose header was complete at least one beat
        # before its last, so they are ready at its verdict. Frames of header beats only
        # are dropped before any of them counts (their length never matches).
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
        dtype_ok = Cat(*[dtype == d for d in self.dtypes]).any()
        count_ok = (count != 0) & (count <= p.slot_elems) & (~fmt.mx | (count[:5] == 0))
        # §10.2 rule 7 but for L == 64 + payload bytes, which the length check below adds:
        # L >= 64 follows from it, and the IPv4 and UDP lengths are checked against the
        # payload, one comparison per payload layout.
        lengths_ok = Mux(fmt.mx, (ip114 == count) & (udp94 == count),
                     Mux(fmt.bf16, (ip50 == count << 1) & (udp30 == count << 1),
                         (ip50 == count << 2) & (udp30 == count << 2)))
        fields_ok = Signal(reset_less=True)
        job_off = Signal(reset_less=True)
        slot_out = Signal(reset_less=True)
        worker_bad = Signal(reset_less=True)
        gslot = Signal(slot_bits(p), reset_less=True)
        m.d.sync += [
            fields_ok.eq(ver_op_ok & dtype_ok & count_ok & lengths_ok),
            job_off.eq((job >= p.jobs) | ~job_en),
            slot_out.eq((slot >= slot_count) | (base + slot >= p.slots)),
            worker_bad.eq(~port_bit | (worker != rank)),
            gslot.eq(base + slot),
        ]

        # --- stage 2: verdict on the whole frame ----------------------------------
        s2_valid = Signal()
        s2_keep_bad = Signal(reset_less=True)
        s2_lt14 = Signal(reset_less=True)
        s2_lt34 = Signal(reset_less=True)
        s2_lt42 = Signal(reset_less=True)
        s2_len_ok = Signal(reset_less=True)     # L == the expected length (of a frame with payload)
        s2_beats = Signal(beats_bits(p) + 1, reset_less=True)
        s2_t_last = Signal(32, reset_less=True)
        if not half:
            m.d.sync += [s2_valid.eq(s1_valid & s1_last), s2_keep_bad.eq(cur_keep_bad),
                         s2_lt14.eq(length_below(14)), s2_lt34.eq(length_below(34)),
                         s2_lt42.eq(length_below(42)),
                         s2_len_ok.eq((nb >= H) & (nb == exp_nb) & (s1_keep == exp_keep)),
                         s2_beats.eq(frame_beats + write), s2_t_last.eq(s1_cycle)]
        else:
            # data_width 1024: the verdict is a stage later. A frame may be one beat (header
            # and up to 64 payload bytes), whose header fields are registered only in the
            # cycle after its tlast and checked in the one after that; and a realigned
            # payload's last write (`extra`) comes the cycle after tlast. So the frame's
            # length figures wait one cycle in x_*, the length compare is made there
            # against exp_nb and exp_keep, and the header fields the verdict reads directly
            # are registered once more (`late`) to stay in step.
            x_valid = Signal()
            x_keep_bad = Signal(reset_less=True)
            x_lt14 = Signal(reset_less=True)
            x_lt34 = Signal(reset_less=True)
            x_lt42 = Signal(reset_less=True)
            x_nb = Signal.like(nb, reset_less=True)
            x_keep = Signal(B, reset_less=True)
            x_beats = Signal(beats_bits(p) + 1, reset_less=True)
            x_t_last = Signal(32, reset_less=True)
            m.d.sync += [x_valid.eq(s1_valid & s1_last), x_keep_bad.eq(cur_keep_bad),
                         x_lt14.eq(length_below(14)), x_lt34.eq(length_below(34)),
                         x_lt42.eq(length_below(42)), x_nb.eq(nb), x_keep.eq(s1_keep),
                         x_beats.eq(frame_beats + write), x_t_last.eq(s1_cycle)]
            m.d.sync += [s2_valid.eq(x_valid), s2_keep_bad.eq(x_keep_bad),
                         s2_lt14.eq(x_lt14), s2_lt34.eq(x_lt34), s2_lt42.eq(x_lt42),
                         s2_len_ok.eq((x_nb == exp_nb) & (x_keep == exp_keep)),
                         s2_beats.eq(x_beats + extra), s2_t_last.eq(x_t_last)]

        def late(sig, name):
            """A header field as the verdict reads it: at data_width 1024 registered once
            more (see above)."""
            if not half:
                return sig
            r = Signal(len(sig), name=f"{name}_late", reset_less=True)
            m.d.sync += r.eq(sig)
            return r

        ethertype_ok, ip_ok, proto_ok, udp_port_ok = (
            late(ethertype_ok, "ethertype_ok"), late(ip_ok, "ip_ok"), late(proto_ok, "proto_ok"), late(udp_port_ok, "udp_port_ok"))
        v_fmt_mx = late(fmt.mx, "fmt_mx")
        s2_nan = Signal()
        # scale_nan is two registers behind the header: right after an MX frame it still
        # holds that frame's check, so it counts only for an MX frame (fmt is this one's)
        m.d.comb += s2_nan.eq(frame_nan | nan_words.any() | (scale_nan & v_fmt_mx))
        with m.If(s2_valid):
            m.d.sync += frame_nan.eq(0)
        with m.Else():
            m.d.sync += frame_nan.eq(frame_nan | nan_words.any())

        reason = Signal(3)
        drop = Signal()
        with m.If(s2_keep_bad | s2_lt14):
            m.d.comb += [drop.eq(1), reason.eq(DROP_MALFORMED)]
        with m.Elif(~ethertype_ok):
            m.d.comb += [drop.eq(1), reason.eq(DROP_NOT_AGG)]
        with m.Elif(s2_lt34 | ~ip_ok):
            m.d.comb += [drop.eq(1), reason.eq(DROP_MALFORMED)]
        with m.Elif(~proto_ok):
            m.d.comb += [drop.eq(1), reason.eq(DROP_NOT_AGG)]
        with m.Elif(s2_lt42):
            m.d.comb += [drop.eq(1), reason.eq(DROP_MALFORMED)]
        with m.Elif(~udp_port_ok):
            m.d.comb += [drop.eq(1), reason.eq(DROP_NOT_AGG)]
        with m.Elif(~(s2_len_ok & fields_ok)):
            m.d.comb += [drop.eq(1), reason.eq(DROP_MALFORMED)]
        with m.Elif(job_off):
            m.d.comb += [drop.eq(1), reason.eq(DROP_JOB_DISABLED)]
        with m.Elif(slot_out):
            m.d.comb += [drop.eq(1), reason.eq(DROP_SLOT_RANGE)]
        with m.Elif(worker_bad):
            m.d.comb += [drop.eq(1), reason.eq(DROP_WORKER)]

        verdict = s2_valid
        m.d.comb += [
            d.job.eq(late(job_idx, "job_idx")), d.gslot.eq(gslot), d.slot.eq(late(slot, "slot")),
            d.bank.eq(late(flags[0], "bank")), d.dtype.eq(late(dtype[:3], "dtype")), d.count.eq(late(count, "count")),
            d.scale.eq(late(scale, "scale")), d.seq.eq(late(seq, "seq")), d.src_mac.eq(late(src_mac, "src_mac")),
            d.src_ip.eq(late(src_ip, "src_ip")), d.src_port.eq(late(src_port, "src_port")),
            d.start.eq(cwp[:-1]), d.beats.eq(s2_beats), d.nan.eq(s2_nan), d.t_last.eq(s2_t_last),
            d.scales.eq(frame_scales),
            fifo.w_data.eq(d), fifo.w_en.eq(verdict & ~drop),
        ]
        if not half:
            m.d.comb += wport.addr.eq(wp[:-1])
            with m.If(verdict):
                with m.If(drop):
                    m.d.sync += wp.eq(cwp)              # rewind: the frame never happened
                with m.Else():
                    m.d.sync += cwp.eq(wp)              # commit
        else:
            # At data_width 1024 the verdict comes while the next frame may already write
            # (its first payload beat, or a one-beat frame's `extra`): a rewind puts that
            # write at the rewound address.
            rewind = verdict & drop
            m.d.comb += wport.addr.eq(Mux(rewind, cwp, wp)[:-1])
            with m.If(verdict):
                with m.If(drop):
                    m.d.sync += wp.eq(cwp + wen)
                with m.Else():
                    m.d.sync += cwp.eq(wp)
        m.d.sync += [self.rx.eq(verdict), self.drop.eq(verdict & drop), self.drop_reason.eq(reason)]

        # --- flow control ---------------------------------------------------------
        # Room for the beat in stage 1 and the one offered now; the descriptor FIFO keeps
        # room for the frames whose last beats may be in flight.
        used = Signal(self.ptr_bits)
        m.d.comb += used.eq(wp - rp)
        # At data_width 1024 a beat may cost two writes (a last beat and its `extra`) and a
        # frame's verdict comes a cycle later: one beat and one descriptor more in flight.
        room = (used + (3 if half else 2) <= self.depth) | overflowing
        in_flight = 4 if half else 3
        m.d.comb += self.tready.eq(self.enable & room & (fifo.level <= DESC_FIFO_DEPTH - in_flight))
        return m
