"""Egress: per-port RESULT deparser (SPEC §6, docs/SPEC.md §10.5).

The engine hands over a RESULT in three parts: its descriptor when the round is decided
(header fields, with the destination's learned address as it stood then), then, once the
pass has encoded the whole payload into the result buffer, its payload beats as this
port reads them from there (resbuf.ResultBuffer), with a `done` record of the flags only
the pass can know (OVERFLOW, and for MX dtypes the line of block scales that precedes the
elements): with the first beat, or with the last of an MX RESULT. The deparser starts a
frame only when its `done` record is in (the reader then stays ahead of the MAC: a MAC
must never underrun) and its due cycle has come (fixed latency, §10.4), then sends the
64-byte header, built here, followed by the payload beats. Bytes beyond the frame's end are driven as zero.
"""

from amaranth import *
from amaranth.lib import wiring, data
from amaranth.lib.wiring import In, Out

from .params import Params, latency, HEADER_BYTES, AGG_VERSION, OP_RESULT, RESULT_WORKER, MX_SCALE_BYTES
from .frame import *
from .numerics import thermometer
from .resbuf import RESULT_QUOTA
from .fifo import BlockRAMFIFO

# RESULTs decided for this port and not started yet: the port's quota of result-buffer
# references.
RESULT_DESC_DEPTH = RESULT_QUOTA


def ip_header_words(ip_total, dst_ip):
    """The IPv4 header's 16-bit words that depend on the RESULT (SPEC §6), with its
    constant ones (version/IHL, TTL/protocol; identification, flags and the checksum are
    zero); the switch's own address is summed apart (`ones_sum`)."""
    return [C(0x4500, 16), ip_total, C((64 << 8) | 17, 16), dst_ip[16:], dst_ip[:16]]


def ones_sum(m, words, name):
    """Ones' complement sum of 16-bit words (end-around carry), as a 16-bit Signal."""
    total = Signal(16 + (len(words) - 1).bit_length(), name=f"{name}_sum")
    m.d.comb += total.eq(sum(words))
    folded = Signal(16, name=name)
    m.d.comb += folded.eq(ones_complement_fold(total, len(total)))
    return folded


def result_header(p: Params, d, ip_total, udp_len, csum, switch_mac, switch_ip, agg_port):
    """The 64 header bytes of a RESULT frame, as a little-endian-packed 512-bit value.
    `ip_total`, `udp_len` and the IPv4 header checksum `csum` are computed ahead (below):
    the header itself is wiring."""
    ip_wo_csum = ([C(0x45, 8), C(0, 8)] + put_be(ip_total, 2) + [C(0, 8)] * 4
                  + [C(64, 8), C(17, 8)])
    ip_addrs = put_be(switch_ip, 4) + put_be(d.dst_ip, 4)
    hdr_bytes = (
        put_be(d.dst_mac, 6) + put_be(switch_mac, 6) + [C(0x08, 8), C(0x00, 8)]
        + ip_wo_csum + put_be(csum, 2) + ip_addrs
        + put_be(agg_port, 2) + put_be(d.dst_port, 2) + put_be(udp_len, 2) + [C(0, 8)] * 2
        + [C((AGG_VERSION << 4) | OP_RESULT, 8), Cat(d.dtype, C(0, 5))]
        + put_be(Cat(d.job, C(0, 16 - len(d.job))), 2) + put_be(d.slot, 2)
        + [C(RESULT_WORKER, 8), d.flags] + put_be(d.seq, 4)
        + put_be(Cat(d.count, C(0, 16 - len(d.count))), 2) + [d.scale]
        + put_be(d.tstamp, 4) + [C(0, 8)] * 3
    )
    assert len(hdr_bytes) == HEADER_BYTES
    return Cat(*hdr_bytes)


def queued_result(p: Params):
    """A RESULT descriptor as the deparser queues it: the engine's, with the header
    fields that follow from it computed on the way in."""
    return data.StructLayout({
        "d": result_descriptor(p),
        "ip_total": 16,
        "udp_len": 16,
        "csum_part": 16,    # ones' complement sum of ip_header_words
    })


class ResultDeparser(wiring.Component):
    def __init__(self, p: Params):
        self.p = p
        super().__init__({
            "tdata": Out(p.data_width), "tkeep": Out(p.beat_bytes), "tvalid": Out(1),
            "tready": In(1), "tlast": Out(1),
            "cycles": In(32),
            "switch_mac": In(48), "switch_ip": In(32), "agg_port": In(16),
            # from the engine
            "data_in": In(p.data_width), "data_en": In(1),
            "desc_in": In(result_descriptor(p)), "desc_en": In(1),
            "done_en": In(1), "done_overflow": In(1), "done_scales": In(8 * p.mx_blocks),
            "room": Out(1),       # room for one more RESULT (the quota, resbuf.py)
            "pop": Out(1),        # a payload beat left for the output register (a credit)
            "watchdog": In(32),   # pause watchdog (cycles; 0: off), SPEC §7
            "expired": Out(1),    # tready has held a beat for `watchdog` cycles or more
            "takes": Out(1),      # room | expired, as one register (the engine's COMMIT)
            "tx": Out(1),         # a frame started (for the counters)
        })

    def elaborate(self, platform):
        m = Module()
        p = self.p
        B = p.beat_bytes
        H = p.header_beats
        rdl = result_descriptor(p)
        qrl = queued_result(p)

        depth = p.egress_beats
        m.submodules.data_fifo = dfifo = BlockRAMFIFO(width=p.data_width, depth=depth)
        m.submodules.desc_fifo = qfifo = BlockRAMFIFO(width=qrl.size, depth=RESULT_DESC_DEPTH)
        scale_bits = 8 * p.mx_blocks if p.mx_ok else 0
        m.submodules.done_fifo = done = BlockRAMFIFO(width=1 + scale_bits, depth=RESULT_DESC_DEPTH)
        m.d.comb += [dfifo.w_data.eq(self.data_in), dfifo.w_en.eq(self.data_en),
                     done.w_data.eq(Cat(self.done_overflow, self.done_scales[:scale_bits])), done.w_en.eq(self.done_en)]

        # A decided RESULT's descriptor is registered once before it is queued, and the
        # header fields that follow from it (IPv4 and UDP lengths, the RESULT's part of
        # the IPv4 checksum) are computed on the way: the descriptor is needed only once
        # the payload is complete, many cycles later, and the header is then wiring.
        in_valid = Signal()
        in_desc = Signal(rdl, reset_less=True)
        m.d.sync += [in_valid.eq(self.desc_en), in_desc.eq(self.desc_in)]
        q_in = Signal(qrl)
        m.d.comb += [q_in.d.eq(in_desc),
                     q_in.ip_total.eq(in_desc.payload_bytes + (HEADER_BYTES - 14)),
                     q_in.udp_len.eq(in_desc.payload_bytes + (HEADER_BYTES - 34))]
        m.d.comb += [q_in.csum_part.eq(ones_sum(m, ip_header_words(q_in.ip_total, in_desc.dst_ip), "csum_part")),
                     qfifo.w_data.eq(q_in), qfifo.w_en.eq(in_valid)]
        # The switch's address, summed apart (it is configuration).
        switch_sum = Signal(16, reset_less=True)
        m.d.sync += switch_sum.eq(ones_sum(m, [self.switch_ip[16:], self.switch_ip[:16]], "switch_sum_c"))

        # Room: fewer than RESULT_DESC_DEPTH RESULTs decided for this port and not started.
        # The payload FIFO needs no reservation: the result buffer holds each payload, and
        # its reader for this port writes a beat here only against a credit (`pop`).
        pop = Signal()                      # a payload beat leaves for the output register
        m.d.comb += self.pop.eq(pop)
        queued = Signal(range(RESULT_DESC_DEPTH + 1))
        started = qfifo.r_en & qfifo.r_rdy           # a RESULT leaves the queue
        m.d.sync += queued.eq(Mux(self.desc_en, Mux(started, queued, queued + 1),
                                  Mux(started, queued - 1, queued)))
        # `room` is itself a register, `queued < RESULT_DESC_DEPTH` of the value just
        # registered: the compares are made on the register, before the FSM's start and
        # desc_en select one (the engine's COMMIT sees a flip-flop, not a compare).
        room = Signal(init=1)
        room_next = Mux(self.desc_en, Mux(started, queued < RESULT_DESC_DEPTH, queued + 1 < RESULT_DESC_DEPTH),
                        Mux(started, 1, queued < RESULT_DESC_DEPTH))
        m.d.sync += room.eq(room_next)
        m.d.comb += self.room.eq(room)

        # The payload FIFO's block-RAM output is registered once more, in `pay`, before any
        # logic: the beat under the head is fetched while the one in `pay` waits.
        pay_valid = Signal()
        pay = Signal(p.data_width, reset_less=True)
        m.d.comb += dfifo.r_en.eq(~pay_valid | pop)
        with m.If(dfifo.r_rdy & (~pay_valid | pop)):
            m.d.sync += [pay.eq(dfifo.r_data), pay_valid.eq(1)]
        with m.Elif(pop):
            m.d.sync += pay_valid.eq(0)

        d = Signal(rdl, reset_less=True)    # the frame being sent
        ip_total = Signal(16, reset_less=True)
        udp_len = Signal(16, reset_less=True)
        csum = Signal(16, reset_less=True)
        hdr = Signal(HEADER_BYTES * 8)
        m.d.comb += hdr.eq(result_header(p, d, ip_total, udp_len, csum,
                                         self.switch_mac, self.switch_ip, self.agg_port))

        q_head = qrl(qfifo.r_data)
        head = q_head.d
        # Load the first beat so that tvalid rises in cycle t_ref + latency: this cycle + 1
        # >= t_ref + latency. `due_base` is this cycle + 1 - latency, made a cycle ahead from
        # the cycle counter (which counts from 0 at reset, as this starts from its init), so
        # the engine's decision path ends without a 32-bit adder and the test here is one
        # subtraction.
        lat = latency(p)
        due_base = Signal(32, init=(1 - lat) % (1 << 32))
        m.d.sync += due_base.eq(self.cycles + 2 - lat)
        until_due = Signal(32)
        m.d.comb += until_due.eq(due_base - head.t_ref)
        due = ~until_due[31]
        m.d.sync += self.tx.eq(0)

        out_valid = Signal()
        out_data = Signal(p.data_width, reset_less=True)
        out_keep = Signal(B, reset_less=True)
        out_last = Signal(reset_less=True)
        m.d.comb += [self.tvalid.eq(out_valid), self.tdata.eq(out_data),
                     self.tkeep.eq(out_keep), self.tlast.eq(out_last)]
        can_load = ~out_valid | self.tready
        with m.If(self.tready):
            m.d.sync += out_valid.eq(0)

        # Pause watchdog (SPEC §7, docs/SPEC.md §10.10): how long the beat on the port has
        # waited for tready. Once that reaches the watchdog the engine stops waiting for
        # room here and drops what it cannot queue; the flag clears when tready returns.
        stalled_for = Signal(32)
        with m.If(out_valid & ~self.tready):
            with m.If(~stalled_for.all()):
                m.d.sync += stalled_for.eq(stalled_for + 1)
        with m.Else():
            m.d.sync += stalled_for.eq(0)
        # (`stalled_for >= watchdog` is registered first, while the stall goes on, so that
        # `takes` is an OR of `room`'s logic and a few flip-flops: the flag comes a cycle
        # after the count reaches the watchdog.)
        stalling = out_valid & ~self.tready
        reached = Signal()
        m.d.sync += reached.eq(self.watchdog.any() & (stalled_for >= self.watchdog) & stalling)
        expired_next = reached & stalling
        m.d.sync += [self.expired.eq(expired_next), self.takes.eq(room_next | expired_next)]

        hbeat = Signal(range(H + 1))
        scale_beats = p.scale_beats
        scales = Signal(max(MX_SCALE_BYTES, B) * 8, reset_less=True)
        sbeat = Signal(range(scale_beats + 1))
        remaining = Signal(16, reset_less=True)     # payload bytes still to send
        keep_last = Signal(B)
        m.d.comb += keep_last.eq(thermometer(remaining, B))
        data_mask = Cat(*[keep_last[i].replicate(8) for i in range(B)])

        head_csum = Signal(16)
        m.d.comb += head_csum.eq(~ones_sum(m, [q_head.csum_part, switch_sum], "head_sum"))

        half = p.half_header
        if half:
            # data_width 1024: the header is the lower half of wire beat 0. A non-MX payload
            # follows it shifted by half a beat: wire beat 0 = header + lower half of payload
            # beat 0, wire beat k = upper half of payload beat k - 1 (`carry`) + lower half
            # of payload beat k, and one wire beat more when the last payload beat has bytes
            # in its upper half. An MX RESULT's scale line is the upper half of beat 0, its
            # element beats follow aligned. `more`: the next wire beat takes a payload beat.
            hw, HB = p.data_width // 2, B // 2
            carry = Signal(hw, reset_less=True)
            more = Signal(reset_less=True)
            hp = head.payload_bytes
            keep0 = Signal(HB)                  # payload bytes in wire beat 0 (non-MX)
            m.d.comb += keep0.eq(thermometer(hp, HB))
            scale_line = Cat(done.r_data[1:1 + scale_bits], C(0, hw - scale_bits))
            start_ok = head.mx | pay_valid
        else:
            start_ok = C(1)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(qfifo.r_rdy & done.r_rdy & due & can_load & start_ok):
                    # Latch the descriptor and send the first header beat from it.
                    m.d.comb += [qfifo.r_en.eq(1), done.r_en.eq(1)]
                    head_flags = Signal(rdl)
                    m.d.comb += [head_flags.eq(head),
                                 head_flags.flags.eq(head.flags | Cat(C(0, 2), done.r_data[0], C(0, 5)))]
                    m.d.sync += [d.eq(head_flags), ip_total.eq(q_head.ip_total),
                                 udp_len.eq(q_head.udp_len), csum.eq(head_csum),
                                 scales.eq(done.r_data[1:1 + scale_bits]), sbeat.eq(0),
                                 remaining.eq(head.payload_bytes - Mux(head.mx, MX_SCALE_BYTES, 0)),
                                 hbeat.eq(1), self.tx.eq(1)]
                    first = result_header(p, head_flags, q_head.ip_total, q_head.udp_len, head_csum,
                                          self.switch_mac, self.switch_ip, self.agg_port)
                    if not half:
                        m.d.sync += [out_valid.eq(1), out_data.eq(first[:p.data_width] if p.data_width < 512 else first),
                                     out_keep.eq((1 << min(B, HEADER_BYTES)) - 1), out_last.eq(0)]
                    else:
                        lo_mask = Cat(*[keep0[i].replicate(8) for i in range(HB)])
                        with m.If(~head.mx):
                            m.d.comb += pop.eq(1)
                        m.d.sync += [out_valid.eq(1),
                                     out_data.eq(Cat(first, Mux(head.mx, scale_line, pay[:hw] & lo_mask))),
                                     out_keep.eq(Cat(C((1 << HB) - 1, HB), Mux(head.mx, (1 << HB) - 1, keep0))),
                                     out_last.eq(~head.mx & (hp <= HB)),
                                     carry.eq(pay[hw:]),
                                     more.eq(head.mx | (hp > B)),
                                     remaining.eq(hp - HB)]     # after beat 0's half
                        with m.If(~head.mx & (hp <= HB)):
                            m.next = "IDLE"
                        with m.Else():
                            m.next = "PAYLOAD"
                    if half:
                        pass                # the next state is chosen above
                    elif H > 1:
                        m.next = "HEADER"
                    else:
                        with m.If(head.mx):
                            m.next = "SCALES"
                        with m.Else():
                            m.next = "PAYLOAD"
            if H > 1:
                with m.State("HEADER"):
                    with m.If(can_load):
                        m.d.sync += [out_valid.eq(1), out_data.eq(hdr.word_select(hbeat, p.data_width)),
                                     out_keep.eq((1 << B) - 1), out_last.eq(0), hbeat.eq(hbeat + 1)]
                        with m.If((hbeat == H - 1) & d.mx):
                            m.next = "SCALES"
                        with m.Elif(hbeat == H - 1):
                            m.next = "PAYLOAD"
            if scale_beats:
                with m.State("SCALES"):
                    # An MX payload starts with its line of block scales, from the done record.
                    with m.If(can_load):
                        m.d.sync += [out_valid.eq(1), out_data.eq(scales.word_select(sbeat, p.data_width)),
                                     out_keep.eq((1 << B) - 1), out_last.eq(0), sbeat.eq(sbeat + 1)]
                        with m.If(sbeat == scale_beats - 1):
                            m.next = "PAYLOAD"
            if half:
                with m.State("PAYLOAD"):
                    # `more` is 0 only for the extra last beat: the carry and no new beat.
                    with m.If(can_load & (pay_valid | ~more)):
                        m.d.comb += pop.eq(more)
                        last = remaining <= B
                        m.d.sync += [out_valid.eq(1), carry.eq(pay[hw:]),
                                     out_data.eq(Mux(d.mx, pay, Cat(carry, pay[:hw])) & data_mask),
                                     out_keep.eq(keep_last), out_last.eq(last),
                                     remaining.eq(remaining - B),
                                     more.eq(d.mx | (remaining > B + HB))]
                        with m.If(last):
                            m.next = "IDLE"
            else:
                with m.State("PAYLOAD"):
                    with m.If(can_load & pay_valid):
                        m.d.comb += pop.eq(1)
                        last = remaining <= B
                        m.d.sync += [out_valid.eq(1), out_data.eq(pay & data_mask),
                                     out_keep.eq(keep_last), out_last.eq(last),
                                     remaining.eq(remaining - B)]
                        with m.If(last):
                            m.next = "IDLE"
        return m
