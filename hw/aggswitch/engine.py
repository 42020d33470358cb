"""Aggregation engine: the shadow-bank slot memory of SPEC §5.

Frames are applied in arrival order (docs/SPEC.md §10.3), but the engine takes them in
*groups*: the oldest head descriptor (the leader) and every other port's head that joins
the same round — same job, slot, bank, dtype, count, scale and seq, its worker bit clear —
are summed through one adder tree in a single read-modify-write pass. When workers send
their chunks in the same order (the AllReduce steady state), a pass carries one frame from
every port, which is what lets all ports run at line rate (SPEC §9). A group is only formed
when no other head touches the same slot, so the outcome is bit-for-bit the outcome of
applying the frames one at a time in order.

    IDLE    pick the leader: the oldest head over all ports (ties: lowest port); read both
            banks' metadata of its slot
    DECIDE  the leader's outcome (new round / join / resend / duplicate / mismatch) and its
            group; update both banks' metadata and the learned addresses; pop the group's
            descriptors; wait here for egress room if a RESULT will follow
    PASS    one beat per cycle: read the accumulator line and every member's payload beat,
            add (or replace, for a new round), write back; on completion or resend also
            encode the line into every destination port's egress FIFO
    FINISH  free the members' payloads in the ingress buffers, hand each destination a
            RESULT descriptor, and already pick the next leader

Accumulators are exact (SPEC §4): `acc_width` = 32 + ceil(log2(ports)) bits per lane, and
a round has at most one contribution per port.
"""

from amaranth import *
from amaranth.lib import wiring, data
from amaranth.lib.wiring import In, Out

from .params import Params, latency, DROP_MISMATCH, DROP_DUPLICATE
from .frame import *
from .codec import PayloadDecoder, PayloadEncoder

from amaranth.lib.memory import Memory


def payload_beats(p: Params, count):
    """Payload beats of an INT32 payload of `count` elements."""
    shift = (p.beat_bytes - 1).bit_length()
    return ((count << 2) + (p.beat_bytes - 1)) >> shift


def select_by_age(p: Params, valid, age, oldest=True):
    """(any valid, index) of the oldest (or youngest) valid input, lowest index on ties.
    A balanced tree of comparisons, so the depth grows with log2(ports)."""
    def pick(lo, hi):
        if hi - lo == 1:
            return valid[lo], age[lo], C(lo, range(p.ports))
        mid = (lo + hi) // 2
        va, aa, ia = pick(lo, mid)
        vb, ab, ib = pick(mid, hi)
        better = (ab > aa) if oldest else (ab < aa)
        take_b = vb & (~va | better)
        return va | vb, Mux(take_b, ab, aa), Mux(take_b, ib, ia)
    v, _, i = pick(0, p.ports)
    return v, i


def same_round(a, b):
    """Two descriptors that would join the same round of the same slot and bank."""
    return ((a.job == b.job) & (a.gslot == b.gslot) & (a.bank == b.bank) & (a.dtype == b.dtype)
            & (a.count == b.count) & (a.scale == b.scale) & (a.seq == b.seq))


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
            "release_beats": Out(beats_bits(p)),
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
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        p = self.p
        P = p.ports
        lat = latency(p)
        fdesc = [getattr(self, f"desc{n}") for n in range(P)]
        fvalid = Cat(*[getattr(self, f"desc{n}_valid") for n in range(P)])
        fready = Cat(*[getattr(self, f"desc{n}_ready") for n in range(P)])
        release = Cat(*[getattr(self, f"buf{n}_release") for n in range(P)])

        # --- memories ---------------------------------------------------------------
        meta_layout = slot_meta(p)
        meta_rd, meta_wr = [], []
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
        learned_rd, learned_wr = [], []
        for n in range(P):
            mem = Memory(shape=addr_layout, depth=p.jobs, init=[])
            m.submodules[f"learned{n}"] = mem
            learned_rd.append(mem.read_port())
            learned_wr.append(mem.write_port())

        # --- the leader ------------------------------------------------------------------
        age = [Signal(32, name=f"age{n}") for n in range(P)]
        for n in range(P):
            m.d.comb += age[n].eq(self.cycles - fdesc[n].t_last)
        any_valid, winner = select_by_age(p, fvalid, age, oldest=True)
        winner_desc = Signal(frame_descriptor(p))
        with m.Switch(winner):
            for n in range(P):
                with m.Case(n):
                    m.d.comb += winner_desc.eq(fdesc[n])

        port = Signal(range(P))         # the leader's port, from IDLE on
        port_bit = Signal(P)
        m.d.comb += port_bit.eq(1 << port)
        lead = Signal(frame_descriptor(p))   # its descriptor, still at the head of its FIFO
        with m.Switch(port):
            for n in range(P):
                with m.Case(n):
                    m.d.comb += lead.eq(fdesc[n])

        mask = Signal(P)
        with m.Switch(lead.job):
            for j in range(p.jobs):
                with m.Case(j):
                    m.d.comb += mask.eq(self.job_mask.word_select(j, P))

        # Metadata of both banks of the leader's slot: `mb` its bank, `mo` the other.
        mb = Signal(meta_layout)
        mo = Signal(meta_layout)
        m.d.comb += [mb.eq(Mux(lead.bank, meta_rd[1].data, meta_rd[0].data)),
                     mo.eq(Mux(lead.bank, meta_rd[0].data, meta_rd[1].data))]

        # --- the leader's outcome (SPEC §5) -------------------------------------------------
        bit_set = (mb.bitmap & port_bit).any()
        in_progress = (mb.bitmap != 0) & ~mb.complete
        fields_match = ((mb.dtype == lead.dtype) & (mb.count == lead.count)
                        & (mb.scale == lead.scale) & (mb.seq == lead.seq))
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
        adds = act_new | act_join

        # --- the group: heads that join the leader's round -------------------------------------
        # After a new round starts only the leader's bit is set, so every matching head joins;
        # joining an open round needs the port's bit clear. Any other head on the same slot
        # (either bank) could see a different state if it were overtaken: then no group.
        prior = Mux(act_new, 0, mb.bitmap)
        joins = Signal(P)
        touches = Signal(P)
        for n in range(P):
            m.d.comb += [joins[n].eq(fvalid[n] & same_round(fdesc[n], lead) & ~prior[n]),
                         touches[n].eq(fvalid[n] & (fdesc[n].gslot == lead.gslot))]
        group = Signal(P)
        m.d.comb += group.eq(Mux(adds & ((touches & ~joins) == 0), joins, port_bit))

        # The group's youngest member completes the round: its t_last is the timestamp.
        _, youngest = select_by_age(p, group, age, oldest=False)
        t_complete = Signal(32)
        with m.Switch(youngest):
            for n in range(P):
                with m.Case(n):
                    m.d.comb += t_complete.eq(fdesc[n].t_last)

        new_bitmap = Signal(P)
        m.d.comb += new_bitmap.eq(prior | group)
        completes = Signal()
        m.d.comb += completes.eq(adds & ((mask & ~new_bitmap) == 0))
        emits = act_resend | completes
        dest = Signal(P)
        m.d.comb += dest.eq(Mux(act_resend, port_bit, mask))
        room = (dest & ~self.eg_room) == 0

        # --- registered state for the pass ------------------------------------------------
        cur_job = Signal(job_bits(p))
        cur_slot = Signal(16)
        cur_bank = Signal()
        line_base = Signal(range(acc_depth + 1))
        members = Signal(P)
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
        tstamp = Signal(32)         # completion cycle, carried in the RESULT
        t_due = Signal(32)
        frame_beats = Signal(beats_bits(p))
        beats = Signal(beats_bits(p))
        issue_k = Signal(beats_bits(p))
        p1_valid = Signal()
        p1_k = Signal(beats_bits(p))
        overflow = Signal()

        # Read ports: metadata by the leader's slot (the winner's while picking), payload
        # and accumulators by the beat being issued, learned addresses by the job in hand.
        for b in range(2):
            m.d.comb += meta_rd[b].addr.eq(lead.gslot)
        for n in range(P):
            m.d.comb += [getattr(self, f"buf{n}_addr").eq(getattr(self, f"buf{n}_ptr") + issue_k),
                         learned_rd[n].addr.eq(cur_job)]
        m.d.comb += acc_rd.addr.eq(line_base + issue_k)

        # --- the beat pipeline (stage p1: memory data valid) ---------------------------------
        # decode every member's beat, sum the members per lane, add to the accumulator line
        decoders = []
        for n in range(P):
            dec = PayloadDecoder(p)
            m.submodules[f"decoder{n}"] = dec
            m.d.comb += dec.beat.eq(getattr(self, f"buf{n}_data"))
            decoders.append(dec)
        m.submodules.encoder = enc = PayloadEncoder(p)
        sums = []
        for i in range(p.lanes):
            terms = [Mux(members[n], decoders[n].lanes[i], 0) for n in range(P)]
            while len(terms) > 1:      # balanced adder tree
                terms = [terms[j] + terms[j + 1] if j + 1 < len(terms) else terms[j]
                         for j in range(0, len(terms), 2)]
            contrib = Signal(signed(p.acc_width), name=f"contrib{i}")
            m.d.comb += contrib.eq(terms[0])
            old = acc_rd.data.word_select(i, p.acc_width).as_signed()
            s = Signal(signed(p.acc_width), name=f"sum{i}")
            m.d.comb += s.eq(Mux(~write_acc, old, Mux(replace, 0, old) + contrib))
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
        flags = Cat(cur_bank, C(0, 1), overflow, round_nan, unicast, C(0, 3))
        for n in range(P):
            rdsc = getattr(self, f"eg_desc{n}")
            la = addr_layout(learned_rd[n].data)
            m.d.comb += [
                rdsc.job.eq(cur_job), rdsc.slot.eq(cur_slot), rdsc.flags.eq(flags),
                rdsc.dtype.eq(round_dtype), rdsc.count.eq(round_count), rdsc.scale.eq(round_scale),
                rdsc.seq.eq(round_seq), rdsc.dst_mac.eq(la.mac), rdsc.dst_ip.eq(la.ip),
                rdsc.dst_port.eq(la.port), rdsc.tstamp.eq(tstamp), rdsc.t_due.eq(t_due),
                rdsc.payload_bytes.eq(round_count << 2),
            ]
        m.d.comb += self.release_beats.eq(frame_beats)

        # --- control -----------------------------------------------------------------------------
        init_idx = Signal(range(p.slots + 1))

        def pick_leader():
            for b in range(2):
                m.d.comb += meta_rd[b].addr.eq(winner_desc.gslot)
            with m.If(any_valid):
                m.d.sync += port.eq(winner)
                m.next = "DECIDE"
            with m.Else():
                m.next = "IDLE"

        with m.FSM(init="INIT") as fsm:
            with m.State("INIT"):
                # Reset empties every slot (SPEC §2).
                for b in range(2):
                    m.d.comb += [meta_wr[b].addr.eq(init_idx), meta_wr[b].data.eq(0), meta_wr[b].en.eq(1)]
                m.d.sync += init_idx.eq(init_idx + 1)
                with m.If(init_idx == p.slots - 1):
                    m.next = "IDLE"

            with m.State("IDLE"):
                pick_leader()

            with m.State("DECIDE"):
                with m.If(act_dup | act_mismatch):
                    m.d.comb += [self.ev_drop.eq(port_bit), fready.eq(port_bit), release.eq(port_bit),
                                 self.release_beats.eq(lead.beats),
                                 self.ev_drop_reason.eq(Mux(act_dup, DROP_DUPLICATE, DROP_MISMATCH))]
                    m.next = "IDLE"
                with m.Elif(~emits | room):
                    # Accepted: update both banks' metadata and the members' learned addresses.
                    m.d.comb += [self.ev_accept.eq(group), fready.eq(group)]
                    upd = Signal(meta_layout)
                    m.d.comb += upd.eq(mb)
                    with m.If(adds):
                        m.d.comb += [upd.bitmap.eq(new_bitmap), upd.complete.eq(completes)]
                    with m.If(act_new):
                        m.d.comb += [upd.dtype.eq(lead.dtype), upd.count.eq(lead.count),
                                     upd.scale.eq(lead.scale), upd.seq.eq(lead.seq),
                                     upd.slot.eq(lead.slot), upd.nan.eq(0)]
                    with m.If(completes):
                        m.d.comb += upd.tstamp.eq(t_complete)
                    other = Signal(meta_layout)
                    m.d.comb += [other.eq(mo), other.bitmap.eq(mo.bitmap & ~group)]
                    with m.If(adds):
                        for b in range(2):
                            m.d.comb += [meta_wr[b].addr.eq(lead.gslot),
                                         meta_wr[b].data.eq(Mux(lead.bank == b, upd, other)),
                                         meta_wr[b].en.eq(1)]
                    for n in range(P):
                        m.d.comb += [learned_wr[n].addr.eq(lead.job),
                                     learned_wr[n].data.eq(Cat(fdesc[n].src_mac, fdesc[n].src_ip,
                                                               fdesc[n].src_port)),
                                     learned_wr[n].en.eq(group[n])]
                    m.d.sync += [
                        cur_job.eq(lead.job), cur_slot.eq(lead.slot), cur_bank.eq(lead.bank),
                        line_base.eq((lead.gslot * 2 + lead.bank) * p.slot_lines),
                        members.eq(group), frame_beats.eq(lead.beats),
                        replace.eq(act_new), write_acc.eq(adds), emit.eq(emits),
                        unicast.eq(act_resend), dest_r.eq(dest),
                        round_count.eq(Mux(act_new, lead.count, mb.count)),
                        round_dtype.eq(Mux(act_new, lead.dtype, mb.dtype)),
                        round_scale.eq(Mux(act_new, lead.scale, mb.scale)),
                        round_seq.eq(Mux(act_new, lead.seq, mb.seq)),
                        round_nan.eq(Mux(act_new, 0, mb.nan)),
                        tstamp.eq(Mux(act_resend, mb.tstamp, t_complete)),
                        t_due.eq(Mux(act_resend, lead.t_last, t_complete) + lat),
                        # a resend reads out the round's count, whatever the frame carries
                        beats.eq(payload_beats(p, Mux(act_new, lead.count, mb.count))),
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
                m.d.comb += release.eq(members)
                with m.If(emit):
                    m.d.comb += self.eg_desc_en.eq(dest_r)
                    with m.If(unicast):
                        m.d.comb += self.ev_resend.eq(dest_r)
                    with m.Else():
                        m.d.comb += [self.ev_result.eq(1), self.ev_overflow.eq(overflow),
                                     self.ev_nan.eq(round_nan)]
                pick_leader()
        m.d.comb += self.ready.eq(~fsm.ongoing("INIT"))
        return m
