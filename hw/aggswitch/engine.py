"""Aggregation engine: the shadow-bank slot memory of SPEC §5.

Frames are applied in arrival order (docs/SPEC.md §10.3), but the engine takes them in
*groups*: the oldest head descriptor (the leader) and every other port's head that joins
the same round — same job, slot, bank, dtype, count, scale and seq, its worker bit clear —
are summed through one adder tree in a single read-modify-write pass. When workers send
their chunks in the same order (the AllReduce steady state), a pass carries one frame from
every port, which is what lets all ports run at line rate (SPEC §9). A group is only formed
when no other head touches the same slot, so the outcome is bit-for-bit the outcome of
applying the frames one at a time in order.

Two stages run concurrently:

  decide   PICK the leader (the oldest head over all ports, ties to the lowest port) and
           read both banks' metadata of its slot; DECIDE its outcome (new round / join /
           resend / duplicate / mismatch) and its group, into registers; COMMIT it:
           update both banks' metadata and the learned addresses, pop the group's
           descriptors, hand each destination port its RESULT descriptor, and queue a
           pass job. COMMIT waits while the job queue or a destination's egress is full.
           (Three cycles per group: the registers after DECIDE cut the long path from the
           metadata read through the group trees to the FIFO pops and memory writes.)
  pass     one beat per cycle, back to back across jobs: read the accumulator line and
           every member's payload beat, add (or replace, for a new round), write back; on
           completion or resend also encode the line into each destination's egress FIFO.
           The last beat frees the members' payloads and tells the destinations the
           payload is complete. A dropped frame is a one-beat job that only frees its
           payload, so the ingress buffers are freed in order.

Accumulators are exact (SPEC §4): `acc_width` = 32 + ceil(log2(ports)) bits per lane, and
a round has at most one contribution per port.
"""

from amaranth import *
from amaranth.lib import wiring, data
from amaranth.lib.wiring import In, Out

from .params import (Params, encoder_latency, DROP_MISMATCH, DROP_DUPLICATE,
                     FLAG_BANK, FLAG_UNICAST, FLAG_NAN, DTYPE_INT32, DTYPE_FP32, DTYPE_BF16,
                     MX_SCALE_BYTES)
from .frame import *
from .numerics import thermometer
from .codec import LineDecoder, LineEncoder, is_mx, elem_shift

from amaranth.lib.memory import Memory


def line_count(p: Params, count):
    """Accumulator lines of a round of `count` elements (one pass cycle each)."""
    shift = (p.lanes - 1).bit_length()
    return (count + (p.lanes - 1)) >> shift


def payload_bytes(dtype, count):
    """Payload length for `dtype` and `count` (SPEC §3)."""
    return Mux((dtype == DTYPE_INT32) | (dtype == DTYPE_FP32), count << 2,
               Mux(dtype == DTYPE_BF16, count << 1, MX_SCALE_BYTES + count))


def port_before(a, b, ports):
    """a < b for port indices that may be Python ints (known) or signals. Comparisons whose
    outcome is known are resolved here, so none reaches the Verilog as a constant compare."""
    if isinstance(a, int) and isinstance(b, int):
        return C(int(a < b), 1)
    if isinstance(b, int):
        return C(0, 1) if b == 0 else a < b
    if isinstance(a, int):
        return C(0, 1) if a == ports - 1 else b > a
    return a < b


def tag_before(a, b):
    """Arrival tag a is older than tag b: (b - a) mod 2**k in 1 .. 2**(k-1) - 1. Exact for
    the queued frames, which span fewer than half the tag space (Params.order_bits)."""
    k = len(a)
    diff = (b - a)[:k]
    return diff.any() & ~diff[k - 1]


def older(a_tag, a_port, b_tag, b_port, ports):
    """Frame a comes before frame b in arrival order (docs/SPEC.md §10.3): an earlier last
    beat (an older tag), or the same cycle and a lower port."""
    return tag_before(a_tag, b_tag) | ((a_tag == b_tag) & port_before(a_port, b_port, ports))


def younger(a_tag, a_port, b_tag, b_port, ports):
    """Frame a has a later last beat than frame b (ties: either; they share the cycle)."""
    return tag_before(b_tag, a_tag)


def oldest(entries, ports, before=older):
    """(valid, tag, port) of the first valid entry of [(valid, tag, port)] in the order
    `before`: a balanced tree of comparisons, so the depth grows with log2 of the number of
    entries."""
    def pick(lo, hi):
        if hi - lo == 1:
            return entries[lo]
        mid = (lo + hi) // 2
        va, aa, pa = pick(lo, mid)
        vb, ab, pb = pick(mid, hi)
        take_b = vb & (~va | before(ab, pb, aa, pa, ports))
        as_value = lambda x: C(x, range(ports)) if isinstance(x, int) else x
        return va | vb, Mux(take_b, ab, aa), Mux(take_b, as_value(pb), as_value(pa))
    return pick(0, len(entries))


def same_round(a, b):
    """Two descriptors that would join the same round of the same slot and bank."""
    return ((a.job == b.job) & (a.gslot == b.gslot) & (a.bank == b.bank) & (a.dtype == b.dtype)
            & (a.count == b.count) & (a.scale == b.scale) & (a.seq == b.seq))


def pass_job(p: Params, acc_depth):
    """What the decide stage queues for the pass stage."""
    return data.StructLayout({
        "members": p.ports,             # ports whose payload lines are summed
        "start": data.ArrayLayout(buf_addr_bits(p), p.ports),
        "scales": data.ArrayLayout(8 * p.mx_blocks if p.mx_ok else 0, p.ports),
        "line_base": range(acc_depth),
        "lines": range(p.slot_lines + 1),   # lines to issue (>= 1)
        "count": count_bits(p),         # elements of the round (for OVERFLOW)
        "dtype": 3,
        "scale": 8,
        "replace": 1,                   # new round: the accumulators are overwritten
        "write": 1,                     # new round or join (a resend only reads)
        "emit": 1,                      # completion or resend: encode into egress
        "nan": 1,                       # the round's NAN flag (for the counter)
        "dest": p.ports,                # egress ports of the RESULT
        "release": p.ports,             # ingress buffers to free at the end
        "release_beats": beats_bits(p),
    })


def line_ctl(p: Params):
    """What travels with a line from the accumulate stage through the result encoder."""
    return data.StructLayout({
        "valid": 1,
        "line": range(p.slot_lines),
        "last": 1,
        "dtype": 3,
        "emit": 1,
        "result": 1,                    # a completed round (for the counters)
        "nan": 1,
        "dest": p.ports,
    })


class AggregationEngine(wiring.Component):
    def __init__(self, p: Params):
        self.p = p
        fd = frame_descriptor(p)
        rd = result_descriptor(p)
        ab = buf_addr_bits(p)
        members = {
            "cycles": In(32),
            "ready": Out(1),                              # slot memory initialised
            "job_mask": In(p.ports * p.jobs),
            # egress: descriptors at decision time, then payload beats, then `done`
            "eg_desc_en": Out(p.ports), "eg_room": In(p.ports),
            "eg_expired": In(p.ports),                  # past the pause watchdog (SPEC §7)
            "eg_data": Out(p.data_width), "eg_data_en": Out(p.ports),
            "eg_done_en": Out(p.ports), "eg_done_overflow": Out(1),
            "eg_done_scales": Out(8 * p.mx_blocks),     # MX: the RESULT's block scales
            "release_beats": Out(beats_bits(p)),
            # events for the counters
            "ev_accept": Out(p.ports), "ev_drop": Out(p.ports), "ev_drop_reason": Out(3),
            "ev_resend": Out(p.ports), "ev_result": Out(1), "ev_overflow": Out(1), "ev_nan": Out(1),
            "ev_drop_egress": Out(p.ports),
        }
        for n in range(p.ports):
            members[f"desc{n}"] = In(fd)
            members[f"desc{n}_valid"] = In(1)
            members[f"desc{n}_ready"] = Out(1)
            members[f"head{n}_valid"] = In(1)      # arrival tags of the first two queued frames
            members[f"head{n}_order"] = In(p.order_bits)
            members[f"next{n}_valid"] = In(1)
            members[f"next{n}_order"] = In(p.order_bits)
            members[f"buf{n}_addr"] = Out(ab)
            members[f"buf{n}_data"] = In(p.data_width)
            members[f"buf{n}_release"] = Out(1)
            members[f"eg_desc{n}"] = Out(rd)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        p = self.p
        P = p.ports
        rd = result_descriptor(p)
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
            meta_wr.append(mem.write_port())
            meta_rd.append(mem.read_port())
        acc_depth = p.slots * 2 * p.slot_lines
        m.submodules.acc = acc = Memory(shape=p.lanes * p.acc_width, depth=acc_depth, init=[])
        acc_wr = acc.write_port()
        # Transparent: a job may read a line in the very cycle the job before writes it.
        acc_rd = acc.read_port(transparent_for=(acc_wr,))
        addr_layout = learned_address()
        learned_rd, learned_wr = [], []
        for n in range(P):
            mem = Memory(shape=addr_layout, depth=p.jobs, init=[])
            m.submodules[f"learned{n}"] = mem
            learned_wr.append(mem.write_port())
            learned_rd.append(mem.read_port())

        # ======================= decide stage ========================================
        # Arrival tags of the first two queued frames of every port.
        hvalid = Cat(*[getattr(self, f"head{n}_valid") for n in range(P)])
        nvalid = Cat(*[getattr(self, f"next{n}_valid") for n in range(P)])
        order = [getattr(self, f"head{n}_order") for n in range(P)]
        order2 = [getattr(self, f"next{n}_order") for n in range(P)]
        pidx = list(range(P))
        # The leader: the oldest queued frame of all. Taken once its descriptor shows.
        any_queued, _, winner = oldest([(hvalid[n], order[n], pidx[n]) for n in range(P)], P)
        winner_shown = Signal()
        winner_desc = Signal(frame_descriptor(p))
        with m.Switch(winner):
            for n in range(P):
                with m.Case(n):
                    m.d.comb += [winner_desc.eq(fdesc[n]), winner_shown.eq(fvalid[n])]

        port = Signal(range(P))              # the leader's port, from PICK on
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

        # Metadata of both banks of the leader's slot: `mb` its bank, `mo` the other. Read
        # addresses follow the leader (the winner while picking), so the data is there in
        # DECIDE; learned addresses likewise by job.
        read_desc = Signal(frame_descriptor(p))
        m.d.comb += read_desc.eq(lead)
        for b in range(2):
            m.d.comb += meta_rd[b].addr.eq(read_desc.gslot)
        for n in range(P):
            m.d.comb += learned_rd[n].addr.eq(read_desc.job)
        mb = Signal(meta_layout)
        mo = Signal(meta_layout)
        m.d.comb += [mb.eq(Mux(lead.bank, meta_rd[1].data, meta_rd[0].data)),
                     mo.eq(Mux(lead.bank, meta_rd[0].data, meta_rd[1].data))]

        # The leader's outcome (SPEC §5).
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
        dropping = act_dup | act_mismatch

        # The group: heads that join the leader's round and come, in arrival order, before
        # every frame that does not. After a new round starts only the leader's bit is set,
        # so every matching head joins; joining an open round needs the port's bit clear.
        # A group is thus the next frames in line, and applying it at once is applying
        # them one by one: what blocks it is the oldest head that does not join, or the
        # oldest frame queued behind a head that does.
        prior = Mux(act_new, 0, mb.bitmap)
        joins = Signal(P)
        for n in range(P):
            m.d.comb += joins[n].eq(fvalid[n] & same_round(fdesc[n], lead) & ~prior[n])
        blockers = ([(hvalid[n] & ~joins[n], order[n], pidx[n]) for n in range(P)]
                    + [(joins[n] & nvalid[n], order2[n], pidx[n]) for n in range(P)])
        blocked, block_order, block_port = oldest(blockers, P)
        in_line = Signal(P)
        for n in range(P):
            m.d.comb += in_line[n].eq(joins[n] & (~blocked | older(order[n], pidx[n], block_order, block_port, P)))
        group = Signal(P)
        m.d.comb += group.eq(Mux(adds, in_line, port_bit))

        # The group's youngest member completes the round: its t_last is the timestamp.
        # (Members that tie on the cycle share the timestamp, so ties do not matter here.)
        _, _, youngest = oldest([(group[n], order[n], pidx[n]) for n in range(P)], P, before=younger)
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

        # The round's fields: a new round takes the leader's, any other outcome the slot's.
        round_count = Mux(act_new, lead.count, mb.count)
        round_dtype = Mux(act_new, lead.dtype, mb.dtype)
        round_scale = Mux(act_new, lead.scale, mb.scale)
        # NAN (SPEC §4): a NaN in any contribution of the round, known from the ingress scan.
        member_nan = Cat(*[group[n] & fdesc[n].nan for n in range(P)]).any()
        round_nan = Signal()
        m.d.comb += round_nan.eq(Mux(act_resend, mb.nan, Mux(act_new, 0, mb.nan) | member_nan))

        # RESULT descriptors, one per destination, addressed as the learned table stands
        # after this group: members take their own frame's source.
        rdescs = []
        for n in range(P):
            rdsc = Signal(rd, name=f"rdesc{n}")
            rdescs.append(rdsc)
            la = addr_layout(learned_rd[n].data)
            m.d.comb += [
                rdsc.job.eq(lead.job), rdsc.slot.eq(lead.slot),
                rdsc.flags.eq(Mux(lead.bank, FLAG_BANK, 0) | Mux(act_resend, FLAG_UNICAST, 0)
                              | Mux(round_nan, FLAG_NAN, 0)),
                rdsc.dtype.eq(round_dtype), rdsc.mx.eq(is_mx(round_dtype)),
                rdsc.count.eq(round_count), rdsc.scale.eq(round_scale),
                rdsc.seq.eq(Mux(act_new, lead.seq, mb.seq)),
                rdsc.dst_mac.eq(Mux(group[n], fdesc[n].src_mac, la.mac)),
                rdsc.dst_ip.eq(Mux(group[n], fdesc[n].src_ip, la.ip)),
                rdsc.dst_port.eq(Mux(group[n], fdesc[n].src_port, la.port)),
                rdsc.tstamp.eq(Mux(act_resend, mb.tstamp, t_complete)),
                rdsc.t_ref.eq(Mux(act_resend, lead.t_last, t_complete)),
                rdsc.payload_bytes.eq(payload_bytes(round_dtype, round_count)),
            ]

        # The pass job for this decision.
        job_layout = pass_job(p, acc_depth)
        new_job = Signal(job_layout)        # computed in DECIDE, registered as commit_job
        m.d.comb += [
            new_job.members.eq(Mux(adds, group, 0)),
            new_job.line_base.eq((lead.gslot * 2 + lead.bank) * p.slot_lines),
            # a resend reads out the round's count, whatever the frame carries
            new_job.lines.eq(Mux(dropping, 1, line_count(p, round_count))),
            new_job.count.eq(round_count), new_job.dtype.eq(round_dtype),
            new_job.scale.eq(round_scale), new_job.nan.eq(round_nan),
            new_job.replace.eq(act_new), new_job.write.eq(adds), new_job.emit.eq(emits),
            new_job.dest.eq(dest),
            new_job.release.eq(group), new_job.release_beats.eq(lead.beats),
        ]
        for n in range(P):
            m.d.comb += [new_job.start[n].eq(fdesc[n].start), new_job.scales[n].eq(fdesc[n].scales)]

        # Both banks' metadata after the decision (written in COMMIT when it adds).
        upd = Signal(meta_layout)
        m.d.comb += upd.eq(mb)
        with m.If(adds):
            m.d.comb += [upd.bitmap.eq(new_bitmap), upd.complete.eq(completes), upd.nan.eq(round_nan)]
        with m.If(act_new):
            m.d.comb += [upd.dtype.eq(lead.dtype), upd.count.eq(lead.count),
                         upd.scale.eq(lead.scale), upd.seq.eq(lead.seq), upd.slot.eq(lead.slot)]
        with m.If(completes):
            m.d.comb += upd.tstamp.eq(t_complete)
        other = Signal(meta_layout)
        m.d.comb += [other.eq(mo), other.bitmap.eq(mo.bitmap & ~group)]

        # The decision as registered at the end of DECIDE, for COMMIT. Only the egress
        # room is looked at in COMMIT itself, as the pass keeps filling the FIFOs.
        c_group = Signal(P)
        c_port_bit = Signal(P)
        c_dest = Signal(P)
        c_emits = Signal()
        c_adds = Signal()
        c_dropping = Signal()
        c_dup = Signal()
        c_resend = Signal()
        c_upd = Signal(meta_layout)
        c_other = Signal(meta_layout)
        commit_job = Signal(job_layout)
        # A destination without room holds the decision back, unless its egress has been
        # stalled past the pause watchdog: that port's RESULT is then dropped and counted
        # (SPEC §7), so the ports sharing the round move on. The shadow bank keeps the sum
        # for the worker's retransmission (§5 rule 2).
        c_lost = Signal(P)
        m.d.comb += c_lost.eq(Mux(c_emits, c_dest & ~self.eg_room & self.eg_expired, 0))
        c_send = c_dest & ~c_lost
        c_room = (c_dest & ~self.eg_room & ~self.eg_expired) == 0
        push_job = Signal(job_layout)
        m.d.comb += [push_job.eq(commit_job), push_job.dest.eq(commit_job.dest & ~c_lost)]

        # ======================= pass stage ==========================================
        # issue   one accumulator line per cycle: payload buffer addresses
        # p1      payload beats valid: each member's line into the decoders' field registers
        # p1b     decode (shift, round, sign) into the contribution registers
        # p2      accumulator line valid (read in p1b): add, write back, into the encoder
        # encoder encoder_latency(p) cycles (codec.LineEncoder), controls alongside
        # pack    encoded lines packed into payload beats for the egress FIFOs
        #
        # A two-entry job queue: q[0] is being issued, q[1] waits behind it.
        q0 = Signal(job_layout)
        q1 = Signal(job_layout)
        q0_valid = Signal()
        q1_valid = Signal()
        issue_k = Signal(range(p.slot_lines))
        issuing_last = q0_valid & (issue_k == q0.lines - 1)
        push = Signal()

        with m.If(issuing_last):
            m.d.sync += [issue_k.eq(0), q0.eq(q1), q0_valid.eq(q1_valid), q1_valid.eq(0)]
        with m.Elif(q0_valid):
            m.d.sync += issue_k.eq(issue_k + 1)
        with m.If(push):
            with m.If(~q0_valid | (issuing_last & ~q1_valid)):
                m.d.sync += [q0.eq(push_job), q0_valid.eq(1)]
            with m.Else():
                m.d.sync += [q1.eq(push_job), q1_valid.eq(1)]

        # Line k of the round is in payload beat k >> elem_shift, after the MX scale line.
        beat_k = Signal(range(p.max_payload_beats + p.scale_beats))
        m.d.comb += beat_k.eq((issue_k >> elem_shift(q0.dtype))
                              + Mux(is_mx(q0.dtype), p.scale_beats if p.mx_ok else 0, 0))
        for n in range(P):
            m.d.comb += getattr(self, f"buf{n}_addr").eq(q0.start[n] + beat_k)

        # Stage p1: payload beats valid. The job's controls travel with the line.
        p1_valid = Signal()
        p1 = Signal(job_layout)
        p1_k = Signal(range(p.slot_lines))
        p1_last = Signal()
        m.d.sync += [p1_valid.eq(q0_valid), p1.eq(q0), p1_k.eq(issue_k), p1_last.eq(issuing_last)]

        m.d.comb += [release.eq(Mux(p1_valid & p1_last, p1.release, 0)),
                     self.release_beats.eq(p1.release_beats)]

        # Decode every member's line (LineDecoder.LATENCY = 1: the element fields are
        # registered at the end of p1, converted in p1b); non-members contribute 0.
        blk_shift = (p.block_lines - 1).bit_length()
        assert LineDecoder.LATENCY == 1
        p1b_valid = Signal()
        p1b = Signal(job_layout)
        p1b_k = Signal(range(p.slot_lines))
        p1b_last = Signal()
        m.d.sync += [p1b_valid.eq(p1_valid), p1b.eq(p1), p1b_k.eq(p1_k), p1b_last.eq(p1_last)]
        contrib_regs = []
        for n in range(P):
            dec = LineDecoder(p)
            m.submodules[f"decoder{n}"] = dec
            m.d.comb += [dec.beat.eq(getattr(self, f"buf{n}_data")), dec.dtype.eq(p1.dtype),
                         dec.sub.eq(p1_k[:2] & ((1 << elem_shift(p1.dtype)) - 1)),
                         dec.scale.eq(p1.scale)]
            if p.mx_ok:
                m.d.comb += dec.block_scale.eq(p1.scales[n].word_select(p1_k >> blk_shift, 8))
            regs = [Signal(signed(32), name=f"contrib{n}_{i}") for i in range(p.lanes)]
            for i in range(p.lanes):
                m.d.sync += regs[i].eq(Mux(p1b.members[n], dec.q[i], 0))
            contrib_regs.append(regs)

        # Stage p2: accumulate.
        p2_valid = Signal()
        p2 = Signal(job_layout)
        p2_k = Signal(range(p.slot_lines))
        p2_last = Signal()
        m.d.sync += [p2_valid.eq(p1b_valid), p2.eq(p1b), p2_k.eq(p1b_k), p2_last.eq(p1b_last)]
        m.d.comb += acc_rd.addr.eq(p1b.line_base + p1b_k)     # read in p1b, data in p2
        sums = []
        for i in range(p.lanes):
            terms = [contrib_regs[n][i] for n in range(P)]
            while len(terms) > 1:      # balanced adder tree over the members
                terms = [terms[j] + terms[j + 1] if j + 1 < len(terms) else terms[j]
                         for j in range(0, len(terms), 2)]
            contrib = Signal(signed(p.acc_width), name=f"contrib{i}")
            m.d.comb += contrib.eq(terms[0])
            old = acc_rd.data.word_select(i, p.acc_width).as_signed()
            s = Signal(signed(p.acc_width), name=f"sum{i}")
            m.d.comb += s.eq(Mux(~p2.write, old, Mux(p2.replace, 0, old) + contrib))
            sums.append(s)
        m.d.comb += [acc_wr.addr.eq(p2.line_base + p2_k), acc_wr.data.eq(Cat(*sums)),
                     acc_wr.en.eq(p2_valid & p2.write)]

        # Result encoder, with the line's controls in a matching delay line.
        m.submodules.encoder = enc = LineEncoder(p)
        # Lanes below `count`: line k is full below the count's line, partial on it.
        lane_bits = (p.lanes - 1).bit_length()
        count_line, count_lane = p2.count[lane_bits:], p2.count[:lane_bits]
        valid_lanes = Mux(count_line > p2_k, (1 << p.lanes) - 1,
                          Mux(count_line == p2_k, thermometer(count_lane, p.lanes), 0))
        m.d.comb += [enc.valid.eq(p2_valid), enc.dtype.eq(p2.dtype), enc.scale.eq(p2.scale),
                     enc.line.eq(p2_k), enc.valid_lanes.eq(valid_lanes)]
        for i in range(p.lanes):
            m.d.comb += enc.acc[i].eq(sums[i])
        ctl = Signal(line_ctl(p))
        m.d.comb += [ctl.valid.eq(p2_valid), ctl.line.eq(p2_k), ctl.last.eq(p2_last),
                     ctl.dtype.eq(p2.dtype), ctl.emit.eq(p2.emit), ctl.result.eq(p2.emit & p2.write),
                     ctl.nan.eq(p2.nan), ctl.dest.eq(p2.dest)]
        for j in range(encoder_latency(p)):
            nxt = Signal(line_ctl(p), name=f"ctl{j}")
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
            with m.If(ctl.valid & enc.scale_valid):
                m.d.sync += scales.word_select(ctl.line >> blk_shift, 8).eq(enc.scale_byte)
        finishing = ctl.valid & ctl.last
        eg_data = Signal(p.data_width)
        eg_data_en = Signal(P)
        eg_done_en = Signal(P)
        eg_overflow = Signal()
        eg_scales = Signal(8 * p.mx_blocks)
        m.d.sync += [
            eg_data.eq(beat),
            eg_data_en.eq(Mux(flush & ctl.emit, ctl.dest, 0)),
            eg_done_en.eq(Mux(finishing & ctl.emit, ctl.dest, 0)),
            eg_overflow.eq(job_overflow),
            self.ev_result.eq(finishing & ctl.result),
            self.ev_overflow.eq(finishing & ctl.result & job_overflow),
            self.ev_nan.eq(finishing & ctl.result & ctl.nan),
        ]
        with m.If(finishing):
            m.d.sync += scales.eq(0)        # the scale line ends in zero bytes (SPEC §3)
        # A block has at least two lines, so the last scale is in before the last line.
        assert not p.mx_ok or p.block_lines >= 2
        m.d.sync += eg_scales.eq(scales)
        m.d.comb += [
            self.eg_data.eq(eg_data), self.eg_data_en.eq(eg_data_en),
            self.eg_done_en.eq(eg_done_en), self.eg_done_overflow.eq(eg_overflow),
            self.eg_done_scales.eq(eg_scales),
        ]

        # ======================= decide control =====================================
        init_idx = Signal(range(p.slots + 1))
        with m.FSM(init="INIT") as fsm:
            with m.State("INIT"):
                # Reset empties every slot (SPEC §2).
                for b in range(2):
                    m.d.comb += [meta_wr[b].addr.eq(init_idx), meta_wr[b].data.eq(0), meta_wr[b].en.eq(1)]
                m.d.sync += init_idx.eq(init_idx + 1)
                with m.If(init_idx == p.slots - 1):
                    m.next = "PICK"

            with m.State("PICK"):
                m.d.comb += read_desc.eq(winner_desc)
                with m.If(any_queued & winner_shown):
                    m.d.sync += port.eq(winner)
                    m.next = "DECIDE"

            with m.State("DECIDE"):
                # Register the decision; COMMIT applies it.
                m.d.sync += [
                    c_group.eq(group), c_port_bit.eq(port_bit), c_dest.eq(dest),
                    c_emits.eq(emits), c_adds.eq(adds), c_dropping.eq(dropping),
                    c_dup.eq(act_dup), c_resend.eq(act_resend),
                    c_upd.eq(upd), c_other.eq(other), commit_job.eq(new_job),
                ]
                for n in range(P):
                    m.d.sync += getattr(self, f"eg_desc{n}").eq(rdescs[n])
                m.next = "COMMIT"

            with m.State("COMMIT"):
                # The heads of the group's ports stay put until popped here; frames that
                # arrived since DECIDE queue behind the heads (or become heads that the
                # next PICK sees), so the decision still holds.
                with m.If(~q1_valid & (~c_emits | c_room)):
                    m.d.comb += [push.eq(1), fready.eq(c_group)]
                    with m.If(c_dropping):
                        m.d.comb += [self.ev_drop.eq(c_port_bit),
                                     self.ev_drop_reason.eq(Mux(c_dup, DROP_DUPLICATE, DROP_MISMATCH))]
                    with m.Else():
                        m.d.comb += self.ev_accept.eq(c_group)
                        with m.If(c_emits):
                            m.d.comb += [self.eg_desc_en.eq(c_send), self.ev_drop_egress.eq(c_lost)]
                        with m.If(c_resend):
                            m.d.comb += self.ev_resend.eq(c_port_bit & c_send)
                        # Both banks' metadata (a resend changes neither).
                        with m.If(c_adds):
                            for b in range(2):
                                m.d.comb += [meta_wr[b].addr.eq(lead.gslot),
                                             meta_wr[b].data.eq(Mux(lead.bank == b, c_upd, c_other)),
                                             meta_wr[b].en.eq(1)]
                        for n in range(P):
                            m.d.comb += [learned_wr[n].addr.eq(lead.job),
                                         learned_wr[n].data.eq(Cat(fdesc[n].src_mac, fdesc[n].src_ip,
                                                                   fdesc[n].src_port)),
                                         learned_wr[n].en.eq(c_group[n])]
                    m.next = "PICK"
        m.d.comb += self.ready.eq(~fsm.ongoing("INIT"))
        return m
