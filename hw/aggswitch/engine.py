"""Aggregation engine: the shadow-bank slot memory of SPEC §5.

One frame at a time, in arrival order (docs/SPEC.md §10.3):

    IDLE    pick the oldest head descriptor over all ports (ties: lowest port); read both
            banks' metadata of its slot
    DECIDE  new round / join / resend / duplicate / mismatch; update both banks' metadata
            and the learned address; wait here for egress room if a RESULT will follow
    PASS    one beat per cycle: read accumulator line and payload beat, add (or replace,
            for a new round), write back; on completion or resend also encode the line
            and write it into every destination port's egress FIFO
    FINISH  free the payload in the ingress buffer, hand each destination a RESULT
            descriptor (header fields, learned address, due cycle)

Accumulators are exact (SPEC §4): `acc_width` = 32 + ceil(log2(ports)) bits per lane.
"""

from amaranth import *
from amaranth.lib import wiring, data
from amaranth.lib.wiring import In, Out
from amaranth.lib.memory import Memory

from .params import (Params, latency, DROP_MISMATCH, DROP_DUPLICATE, FLAG_BANK,
                     FLAG_OVERFLOW, FLAG_NAN, FLAG_UNICAST)
from .frame import *
from .codec import PayloadDecoder, PayloadEncoder


def payload_beats(p: Params, count):
    """Payload beats of an INT32 payload of `count` elements."""
    shift = (p.beat_bytes - 1).bit_length()
    return ((count << 2) + (p.beat_bytes - 1)) >> shift


def oldest(p: Params, valid, age):
    """Index of the valid input with the largest age, lowest index on ties (a balanced tree)."""
    def pick(lo, hi):
        if hi - lo == 1:
            return valid[lo], age[lo], C(lo, range(p.ports))
        mid = (lo + hi) // 2
        va, aa, ia = pick(lo, mid)
        vb, ab, ib = pick(mid, hi)
        take_b = vb & (~va | (ab > aa))
        return (va | vb, Mux(take_b, ab, aa), Mux(take_b, ib, ia))
    return pick(0, p.ports)


class AggregationEngine(wiring.Component):
    def __init__(self, p: Params, buf_addr_bits: int):
        self.p = p
        fd = frame_descriptor(p)
        rd = result_descriptor(p)
        members = {
            "cycles": In(32),
            "ready": Out(1),                              # slot memory initialised
            "job_mask": In(p.ports * p.jobs),
            # egress: one payload beat broadcast, written where enabled
            "eg_data": Out(p.data_width), "eg_data_en": Out(p.ports),
            "eg_desc_en": Out(p.ports), "eg_room": In(p.ports),
            # events for the counters
            "ev_accept": Out(p.ports), "ev_drop": Out(p.ports), "ev_drop_reason": Out(3),
            "ev_resend": Out(p.ports), "ev_result": Out(1), "ev_overflow": Out(1), "ev_nan": Out(1),
        }
        for n in range(p.ports):
            members[f"desc{n}"] = In(fd)
            members[f"desc{n}_valid"] = In(1)
            members[f"desc{n}_ready"] = Out(1)
            members[f"buf{n}_addr"] = Out(buf_addr_bits)
            members[f"buf{n}_data"] = In(p.data_width)
            members[f"buf{n}_ptr"] = In(buf_addr_bits)
            members[f"buf{n}_release"] = Out(1)
            members[f"eg_desc{n}"] = Out(rd)
        members["release_beats"] = Out(beats_bits(p))
        self.buf_addr_bits = buf_addr_bits
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        p = self.p
        P = p.ports
        lat = latency(p)
        fdesc = [getattr(self, f"desc{n}") for n in range(P)]
        fvalid = Cat(*[getattr(self, f"desc{n}_valid") for n in range(P)])

        # --- memories ---------------------------------------------------------------
        meta_layout = slot_meta(p)
        meta_mem = []
        meta_rd = []
        meta_wr = []
        for b in range(2):
            mem = Memory(shape=meta_layout, depth=p.slots, init=[])
            m.submodules[f"meta_bank{b}"] = mem
            meta_rd.append(mem.read_port())
            meta_wr.append(mem.write_port())
        acc_depth = p.slots * 2 * p.slot_lines
        m.submodules.acc = acc = Memory(shape=p.lanes * p.acc_width, depth=acc_depth, init=[])
        acc_rd = acc.read_port()
        acc_wr = acc.write_port()
        addr_layout = learned_address()
        learned_rd = []
        learned_wr = []
        for n in range(P):
            mem = Memory(shape=addr_layout, depth=p.jobs, init=[])
            m.submodules[f"learned{n}"] = mem
            learned_rd.append(mem.read_port())
            learned_wr.append(mem.write_port())

        m.submodules.decoder = dec = PayloadDecoder(p)
        m.submodules.encoder = enc = PayloadEncoder(p)

        # --- the frame in hand --------------------------------------------------------
        cur = Signal(frame_descriptor(p))
        port = Signal(range(P))
        port_bit = Signal(P)
        m.d.comb += port_bit.eq(1 << port)

        age = [Signal(32, name=f"age{n}") for n in range(P)]
        for n in range(P):
            m.d.comb += age[n].eq(self.cycles - fdesc[n].t_last)
        any_valid, _, winner = oldest(p, fvalid, age)
        winner_desc = Signal(frame_descriptor(p))
        with m.Switch(winner):
            for n in range(P):
                with m.Case(n):
                    m.d.comb += winner_desc.eq(fdesc[n])

        mask = Signal(P)
        with m.Switch(cur.job):
            for j in range(p.jobs):
                with m.Case(j):
                    m.d.comb += mask.eq(self.job_mask.word_select(j, P))

        # Metadata of both banks of the slot in hand: `mb` the frame's bank, `mo` the other.
        mb = Signal(meta_layout)
        mo = Signal(meta_layout)
        m.d.comb += [mb.eq(Mux(cur.bank, meta_rd[1].data, meta_rd[0].data)),
                     mo.eq(Mux(cur.bank, meta_rd[0].data, meta_rd[1].data))]

        # --- decision (combinational, used in DECIDE) --------------------------------------
        bit_set = (mb.bitmap & port_bit).any()
        in_progress = (mb.bitmap != 0) & ~mb.complete
        fields_match = ((mb.dtype == cur.dtype) & (mb.count == cur.count)
                        & (mb.scale == cur.scale) & (mb.seq == cur.seq))
        act_resend = Signal()
        act_dup = Signal()
        act_mismatch = Signal()
        act_new = Signal()
        act_join = Signal()
        m.d.comb += [
            act_resend.eq(bit_set & mb.complete),
            act_dup.eq(bit_set & ~mb.complete),
            act_mismatch.eq(~bit_set & in_progress & ~fields_match),
            act_join.eq(~bit_set & in_progress & fields_match),
            act_new.eq(~bit_set & ~in_progress),
        ]
        new_bitmap = Mux(act_new, 0, mb.bitmap) | port_bit
        completes = Signal()
        m.d.comb += completes.eq((act_new | act_join) & ((mask & ~new_bitmap) == 0))
        emits = act_resend | completes
        dest = Signal(P)
        m.d.comb += dest.eq(Mux(act_resend, port_bit, mask))
        room = (dest & ~self.eg_room) == 0

        # --- registered state for the pass ------------------------------------------------
        replace = Signal()          # new round: accumulators are overwritten
        write_acc = Signal()        # new round or join (a resend only reads)
        emit = Signal()
        unicast = Signal()
        dest_r = Signal(P)
        round_count = Signal(count_bits(p))
        round_dtype = Signal(3)
        round_scale = Signal(8)
        round_seq = Signal(32)
        round_nan = Signal()
        tstamp = Signal(32)
        beats = Signal(beats_bits(p))
        issue_k = Signal(beats_bits(p))
        p1_valid = Signal()
        p1_k = Signal(beats_bits(p))
        overflow = Signal()

        line_base = Signal(range(acc_depth + 1))
        m.d.comb += line_base.eq((cur.gslot * 2 + cur.bank) * p.slot_lines)

        # Read ports: metadata by the slot in hand (or the winner while idle), payload and
        # accumulators by the beat being issued, learned addresses by the job in hand.
        for b in range(2):
            m.d.comb += meta_rd[b].addr.eq(cur.gslot)
        for n in range(P):
            m.d.comb += [getattr(self, f"buf{n}_addr").eq(getattr(self, f"buf{n}_ptr") + issue_k),
                         learned_rd[n].addr.eq(cur.job)]
        m.d.comb += acc_rd.addr.eq(line_base + issue_k)

        # --- the beat pipeline (stage p1: memory data valid) ---------------------------------
        in_beat = Signal(p.data_width)
        with m.Switch(port):
            for n in range(P):
                with m.Case(n):
                    m.d.comb += in_beat.eq(getattr(self, f"buf{n}_data"))
        m.d.comb += dec.beat.eq(in_beat)
        sums = []
        for i in range(p.lanes):
            old = acc_rd.data.word_select(i, p.acc_width).as_signed()
            s = Signal(signed(p.acc_width), name=f"sum{i}")
            m.d.comb += s.eq(Mux(~write_acc, old, Mux(replace, 0, old) + dec.lanes[i]))
            sums.append(s)
            m.d.comb += enc.lanes[i].eq(s)
        first_elem = p1_k * p.lanes
        m.d.comb += enc.valid_lanes.eq(Cat(*[(first_elem + i) < round_count for i in range(p.lanes)]))
        m.d.comb += [
            acc_wr.addr.eq(line_base + p1_k),
            acc_wr.data.eq(Cat(*sums)),
            acc_wr.en.eq(p1_valid & write_acc),
            self.eg_data.eq(enc.beat),
            self.eg_data_en.eq(Mux(p1_valid & emit, dest_r, 0)),
        ]

        # --- result descriptors --------------------------------------------------------------
        flags = Cat(cur.bank, C(0, 1), overflow, round_nan, unicast, C(0, 3))
        for n in range(P):
            rdsc = getattr(self, f"eg_desc{n}")
            la = addr_layout(learned_rd[n].data)
            m.d.comb += [
                rdsc.job.eq(cur.job), rdsc.slot.eq(cur.slot), rdsc.flags.eq(flags),
                rdsc.dtype.eq(round_dtype), rdsc.count.eq(round_count), rdsc.scale.eq(round_scale),
                rdsc.seq.eq(round_seq), rdsc.dst_mac.eq(la.mac), rdsc.dst_ip.eq(la.ip),
                rdsc.dst_port.eq(la.port), rdsc.tstamp.eq(tstamp),
                rdsc.t_due.eq(cur.t_last + lat), rdsc.payload_bytes.eq(round_count << 2),
            ]

        # --- control -----------------------------------------------------------------------------
        init_idx = Signal(range(p.slots + 1))
        m.d.comb += self.release_beats.eq(cur.beats)

        with m.FSM(init="INIT") as fsm:
            with m.State("INIT"):
                # Reset empties every slot (SPEC §2).
                for b in range(2):
                    m.d.comb += [meta_wr[b].addr.eq(init_idx), meta_wr[b].data.eq(0), meta_wr[b].en.eq(1)]
                m.d.sync += init_idx.eq(init_idx + 1)
                with m.If(init_idx == p.slots - 1):
                    m.next = "IDLE"

            with m.State("IDLE"):
                for b in range(2):
                    m.d.comb += meta_rd[b].addr.eq(winner_desc.gslot)
                with m.If(any_valid):
                    m.d.sync += [cur.eq(winner_desc), port.eq(winner)]
                    with m.Switch(winner):
                        for n in range(P):
                            with m.Case(n):
                                m.d.comb += getattr(self, f"desc{n}_ready").eq(1)
                    m.next = "DECIDE"

            with m.State("DECIDE"):
                with m.If(act_dup | act_mismatch):
                    m.d.comb += [self.ev_drop.eq(port_bit),
                                 self.ev_drop_reason.eq(Mux(act_dup, DROP_DUPLICATE, DROP_MISMATCH))]
                    for n in range(P):
                        m.d.comb += getattr(self, f"buf{n}_release").eq(port == n)
                    m.next = "IDLE"
                with m.Elif(~emits | room):
                    # Accepted: update the metadata of both banks and the learned address.
                    m.d.comb += self.ev_accept.eq(port_bit)
                    upd = Signal(meta_layout)
                    m.d.comb += upd.eq(mb)
                    with m.If(act_new | act_join):
                        m.d.comb += [upd.bitmap.eq(new_bitmap), upd.complete.eq(completes)]
                    with m.If(act_new):
                        m.d.comb += [upd.dtype.eq(cur.dtype), upd.count.eq(cur.count),
                                     upd.scale.eq(cur.scale), upd.seq.eq(cur.seq),
                                     upd.slot.eq(cur.slot), upd.nan.eq(0)]
                    with m.If(completes):
                        m.d.comb += upd.tstamp.eq(cur.t_last)
                    other = Signal(meta_layout)
                    m.d.comb += [other.eq(mo), other.bitmap.eq(mo.bitmap & ~port_bit)]
                    with m.If(act_new | act_join):
                        for b in range(2):
                            m.d.comb += [meta_wr[b].addr.eq(cur.gslot),
                                         meta_wr[b].data.eq(Mux(cur.bank == b, upd, other)),
                                         meta_wr[b].en.eq(1)]
                    with m.Switch(port):
                        for n in range(P):
                            with m.Case(n):
                                m.d.comb += [learned_wr[n].addr.eq(cur.job),
                                             learned_wr[n].data.eq(Cat(cur.src_mac, cur.src_ip, cur.src_port)),
                                             learned_wr[n].en.eq(1)]
                    m.d.sync += [
                        replace.eq(act_new), write_acc.eq(~act_resend), emit.eq(emits),
                        unicast.eq(act_resend), dest_r.eq(dest),
                        round_count.eq(Mux(act_new, cur.count, mb.count)),
                        round_dtype.eq(Mux(act_new, cur.dtype, mb.dtype)),
                        round_scale.eq(Mux(act_new, cur.scale, mb.scale)),
                        round_seq.eq(Mux(act_new, cur.seq, mb.seq)),
                        round_nan.eq(Mux(act_new, 0, mb.nan)),
                        tstamp.eq(Mux(act_resend, mb.tstamp, cur.t_last)),
                        beats.eq(payload_beats(p, Mux(act_new, cur.count, mb.count))),
                        issue_k.eq(0), p1_valid.eq(0), overflow.eq(0),
                    ]
                    m.next = "PASS"

            with m.State("PASS"):
                m.d.sync += [p1_valid.eq(issue_k != beats), p1_k.eq(issue_k)]
                with m.If(issue_k != beats):
                    m.d.sync += issue_k.eq(issue_k + 1)
                with m.If(p1_valid & enc.overflow):
                    m.d.sync += overflow.eq(1)
                with m.If(p1_valid & (p1_k == beats - 1)):
                    m.next = "FINISH"

            with m.State("FINISH"):
                for n in range(P):
                    m.d.comb += getattr(self, f"buf{n}_release").eq(port == n)
                with m.If(emit):
                    m.d.comb += self.eg_desc_en.eq(dest_r)
                    with m.If(unicast):
                        m.d.comb += self.ev_resend.eq(port_bit)
                    with m.Else():
                        m.d.comb += [self.ev_result.eq(1), self.ev_overflow.eq(overflow),
                                     self.ev_nan.eq(round_nan)]
                m.next = "IDLE"
        m.d.comb += self.ready.eq(~fsm.ongoing("INIT"))
        return m
