"""Aggregation engine: the shadow-bank slot memory of SPEC §5, one port's frames at a
time per port and every port at once (docs/engine-v2.md).

    decide   one frame at a time, in arrival order (docs/SPEC.md §10.3), in a three-stage
             pipeline that takes a frame per cycle: PICK the oldest queued frame over all
             ports (ties to the lowest port) into its port's lookahead queue and read both
             banks' metadata of its slot and the learned addresses of its job; DECIDE its
             outcome (new round / join / resend / duplicate / mismatch) and its pass
             schedule, with COMMIT's writes forwarded; COMMIT it: write the metadata and
             the learned address, hand each destination port its RESULT descriptor, and
             queue the pass job on the frame's own port, with a result-buffer entry for a
             RESULT. COMMIT waits while the port's job queue is full or no entry is free
             yet; a full destination abandons the decision and flushes the stages behind
             it (a destination past the pause watchdog is dropped instead, docs/SPEC.md
             §10.10).
    pass     per port (passes.PortPass): from the scheduled start, one payload beat per
             cycle in every dtype through the rotating accumulator banks
             (passes.AccumulatorBanks);
             a completing or resent frame's sums go to the result emitter
             (emitter.ResultEmitter), which encodes them into the RESULT's entry of the
             result buffer (resbuf.ResultBuffer); every destination reads it from there
             into its egress FIFO at its own pace. A dropped frame is a one-beat job that
             only frees its buffer, so every port's buffer is freed in order.

The schedule (schedule.py) keeps the sums exact without any arbitration: passes on one
(slot, bank) start at least `RMW_GAP` cycles apart in decision order, and a port's passes
follow each other. Accumulators are exact (SPEC §4):
`acc_width` = 32 + ceil(log2(ports)) bits per lane, and a round has at most one
contribution per port.
"""

from amaranth import *
from amaranth.lib import wiring, data
from amaranth.lib.wiring import In, Out

from .params import (Params, encoder_latency, DROP_MISMATCH, DROP_DUPLICATE,
                     FLAG_BANK, FLAG_UNICAST, FLAG_NAN, DTYPE_INT32, DTYPE_FP32, DTYPE_BF16,
                     MX_SCALE_BYTES)
from .frame import *
from .codec import is_mx, elem_shift, beat_count
from .schedule import HORIZON_BITS, start_phase, advance, first_period, first_offset, latest
from .passes import RMW_GAP, JOB_LEAD, bank_rows, port_job, PortPass, AccumulatorBanks
from .emitter import ResultEmitter
from .resbuf import ResultBuffer

from amaranth.lib.memory import Memory


def payload_bytes(dtype, count):
    """Payload length for `dtype` and `count` (SPEC §3)."""
    return Mux((dtype == DTYPE_INT32) | (dtype == DTYPE_FP32), count << 2,
               Mux(dtype == DTYPE_BF16, count << 1, MX_SCALE_BYTES + count))


def oldest_onehot(entries):
    """One-hot: the first valid entry of [(valid, tag)], listed by port, in arrival order
    (docs/SPEC.md §10.3: an older tag, or the same tag and a lower port). Every pair is
    compared at once: entry i (the lower port) comes before entry j iff (t_i - t_j - 1)
    mod 2**k is negative, one subtraction; exact while the tags span fewer than 2**(k-1)
    values."""
    n = len(entries)
    before = {}
    for i in range(n):
        for j in range(i + 1, n):
            ti, tj = entries[i][1], entries[j][1]
            before[i, j] = (ti + ~tj)[len(ti) - 1]
    wins = []
    for i in range(n):
        w = entries[i][0]
        for j in range(n):
            if j < i:
                w = w & (~entries[j][0] | ~before[j, i])
            elif j > i:
                w = w & (~entries[j][0] | before[i, j])
        wins.append(w)
    return Cat(*wins)


def or_select(onehot, values):
    """values[i] for the set bit i of `onehot` (0 if none): an AND-OR tree."""
    out = 0
    for i, v in enumerate(values):
        out = out | Mux(onehot[i], v, 0)
    return out


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
            "eg_takes": In(p.ports),                    # eg_room | eg_expired, registered
            "eg_data": Out(p.data_width).array(p.ports), "eg_data_en": Out(p.ports),
            "eg_done_en": Out(p.ports), "eg_done_overflow": Out(p.ports),
            "eg_done_scales": Out(8 * p.mx_blocks).array(p.ports),  # MX: the block scales
            "eg_pop": In(p.ports),                      # a payload beat left the egress FIFO
            # events for the counters
            "ev_accept": Out(p.ports), "ev_drop": Out(p.ports), "ev_drop_reason": Out(3),
            "ev_resend": Out(p.ports), "ev_result": Out(p.ports), "ev_overflow": Out(p.ports), "ev_nan": Out(p.ports),
            "ev_drop_egress": Out(p.ports),
        }
        for n in range(p.ports):
            members[f"desc{n}"] = In(fd)
            members[f"desc{n}_valid"] = In(1)
            members[f"desc{n}_ready"] = Out(1)
            members[f"head{n}_valid"] = In(1)      # arrival tag of the first queued frame
            members[f"head{n}_order"] = In(p.order_bits)
            members[f"buf{n}_addr"] = Out(ab)
            members[f"buf{n}_data"] = In(p.data_width)
            members[f"buf{n}_release"] = Out(1)
            members[f"buf{n}_release_beats"] = Out(beats_bits(p))
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

        # --- memories ---------------------------------------------------------------
        meta_layout = slot_meta(p)
        meta_rd, meta_wr = [], []
        for b in range(2):
            mem = Memory(shape=meta_layout, depth=p.slots, init=[])
            m.submodules[f"meta_bank{b}"] = mem
            meta_wr.append(mem.write_port())
            # a read in the cycle of a write returns the new data (PICK while COMMIT)
            meta_rd.append(mem.read_port(transparent_for=(meta_wr[-1],)))
        addr_layout = learned_address()
        learned_rd, learned_wr = [], []
        for n in range(P):
            mem = Memory(shape=addr_layout, depth=p.jobs, init=[])
            m.submodules[f"learned{n}"] = mem
            learned_wr.append(mem.write_port())
            learned_rd.append(mem.read_port(transparent_for=(learned_wr[-1],)))

        # --- per-port passes, accumulator banks, result emitter -----------------------
        m.submodules.banks = banks = AccumulatorBanks(p)
        passes = []
        # Schedule time: `phase` counts cycles modulo the ports, `period` the wraps.
        phase = Signal(range(P))
        period = Signal(32)
        with m.If(phase == P - 1):
            m.d.sync += [phase.eq(0), period.eq(period + 1)]
        with m.Else():
            m.d.sync += phase.eq(phase + 1)
        m.d.comb += banks.phase.eq(phase)
        for n in range(P):
            ps = PortPass(p, n)
            m.submodules[f"pass{n}"] = ps
            passes.append(ps)
            m.d.comb += [
                ps.e_now.eq(period), ps.phase.eq(phase),
                getattr(self, f"buf{n}_addr").eq(ps.buf_addr),
                ps.buf_data.eq(getattr(self, f"buf{n}_data")),
                getattr(self, f"buf{n}_release").eq(ps.release),
                getattr(self, f"buf{n}_release_beats").eq(ps.release_beats),
                getattr(banks, f"rd_valid{n}").eq(ps.rd_valid),
                getattr(banks, f"rd_row{n}").eq(ps.rd_row),
                ps.rd_data.eq(getattr(banks, f"rd_data{n}")),
                getattr(banks, f"wr_en{n}").eq(ps.wr_en),
                getattr(banks, f"wr_row{n}").eq(ps.wr_row),
                getattr(banks, f"wr_data{n}").eq(ps.wr_data),
            ]
        # One result emitter per port, writing the RESULT's entry of the result buffer,
        # from which every destination reads it into its egress FIFO (resbuf.py): no two
        # emitters ever meet, whatever their destinations.
        m.submodules.resbuf = resbuf = ResultBuffer(p)
        for n in range(P):
            em = ResultEmitter(p)
            m.submodules[f"emitter{n}"] = em
            m.d.comb += [em.beat_in.eq(passes[n].emit), self.ev_result[n].eq(em.ev_result),
                         self.ev_overflow[n].eq(em.ev_overflow), self.ev_nan[n].eq(em.ev_nan),
                         getattr(resbuf, f"w{n}").eq(em.wr)]
        m.d.comb += [resbuf.pop.eq(self.eg_pop), self.eg_data_en.eq(resbuf.data_en),
                     self.eg_done_en.eq(resbuf.done_en), self.eg_done_overflow.eq(resbuf.done_overflow)]
        for d in range(P):
            m.d.comb += [self.eg_data[d].eq(resbuf.data[d]), self.eg_done_scales[d].eq(resbuf.done_scales[d])]

        # ======================= decide stage ========================================
        hvalid = Cat(*[getattr(self, f"head{n}_valid") for n in range(P)])
        fd = frame_descriptor(p)

        # Decide is a pipeline of three stages, one frame per cycle each: PICK chooses the
        # oldest frame and reads its slot's metadata and its job's learned addresses,
        # DECIDE works out the outcome and the schedule, COMMIT writes the metadata, hands
        # over the pass job and the RESULT descriptors. DECIDE sees COMMIT's writes through
        # forwarding, PICK's reads see them through the memories' transparency.
        #
        # Each port's descriptors leave its ingress FIFO as soon as there is room (below),
        # into a lookahead queue of LOOKAHEAD entries that holds them until COMMIT: a port
        # can have a frame in every stage, and when COMMIT must abandon a decision (a full
        # destination, below) the frames behind it are picked again from the queue.
        LOOKAHEAD = 3                        # DECIDE, COMMIT and the frame being picked
        look = [[Signal(fd, name=f"look{n}_{k}") for k in range(LOOKAHEAD)] for n in range(P)]
        look_n = [Signal(range(LOOKAHEAD + 1), name=f"look{n}_n") for n in range(P)]     # held
        picked = [Signal(range(LOOKAHEAD + 1), name=f"look{n}_picked") for n in range(P)]  # in flight
        cand = [Signal(fd, name=f"cand{n}") for n in range(P)]
        cand_valid = Signal(P)
        unshown = Signal(P)                  # the port's next frame is queued but not shown yet
        for n in range(P):
            queued = picked[n] < look_n[n]
            m.d.comb += [
                cand[n].eq(Mux(queued, Array(look[n])[picked[n]], fdesc[n])),
                cand_valid[n].eq(queued | fvalid[n]),
                unshown[n].eq(~queued & hvalid[n] & ~fvalid[n]),
            ]

        # The oldest candidate, by the frames' 32-bit tlast cycles, not by the short
        # commit tags: frames held back by a stalled destination (below) can stay queued
        # while tags wrap, and a modular compare of cycle stamps is exact over 2**31
        # cycles. A port whose next frame is not shown yet may have the oldest, so PICK
        # waits for it.
        eligible = Signal(P)                 # ports PICK may take from (all, unless frames are held)
        # Every pair is compared at once (one subtraction each) and the winner is one-hot.
        win = Signal(P)
        m.d.comb += win.eq(oldest_onehot([(cand_valid[n] & eligible[n], cand[n].t_last)
                                          for n in range(P)]))
        any_queued = win.any()
        winner = Signal(range(P))
        winner_desc = Signal(fd)
        for n in range(P):
            with m.If(win[n]):
                m.d.comb += winner.eq(n)
        m.d.comb += winner_desc.eq(or_select(win, cand))

        d_valid = Signal()                   # DECIDE holds a frame
        port = Signal(range(P))              # its port
        port_bit = Signal(P)
        m.d.comb += port_bit.eq(1 << port)
        lead = Signal(fd)                    # its descriptor
        my_phase = Signal(range(P))          # the phase its port's passes start in
        with m.Switch(port):
            for n in range(P):
                with m.Case(n):
                    m.d.comb += my_phase.eq(start_phase(n, P))

        mask = Signal(P)
        with m.Switch(lead.job):
            for j in range(p.jobs):
                with m.Case(j):
                    m.d.comb += mask.eq(self.job_mask.word_select(j, P))

        # As COMMIT leaves them (forwarded below when COMMIT holds a frame).
        meta_now = [Signal(meta_layout, name=f"meta_now{b}") for b in range(2)]
        learned_now = [Signal(addr_layout, name=f"learned_now{n}") for n in range(P)]
        mb = Signal(meta_layout)
        mo = Signal(meta_layout)
        m.d.comb += [mb.eq(Mux(lead.bank, meta_now[1], meta_now[0])),
                     mo.eq(Mux(lead.bank, meta_now[0], meta_now[1]))]

        # The frame's outcome (SPEC §5), from the slot's metadata `meta`. It is worked out
        # on each source `mb` may come from at once and selected as `mb` is (as_mb below),
        # so the bitmap tests and the wide field compare do not follow the forwarding.
        outcome_layout = data.StructLayout({
            "resend": 1, "dup": 1, "new": 1, "adds": 1, "completes": 1, "emits": 1,
            "dropping": 1, "denser": 1})
        def outcome(meta):
            bit_set = (meta.bitmap & port_bit).any()
            in_progress = (meta.bitmap != 0) & ~meta.complete
            fields_match = ((meta.dtype == lead.dtype) & (meta.count == lead.count)
                            & (meta.scale == lead.scale) & (meta.seq == lead.seq))
            resend = bit_set & meta.complete
            dup = bit_set & ~meta.complete
            mismatch = ~bit_set & in_progress & ~fields_match
            join = ~bit_set & in_progress & fields_match
            new = ~bit_set & ~in_progress
            adds = new | join
            dropping = dup | mismatch
            new_bitmap = Mux(new, 0, meta.bitmap) | port_bit
            completes = adds & ((mask & ~new_bitmap) == 0)
            emits = resend | completes
            denser = new & (elem_shift(lead.dtype) > elem_shift(meta.dtype))
            return Cat(resend, dup, new, adds, completes, emits, dropping, denser)
        act = Signal(outcome_layout)         # selected below, once the sources are known
        act_resend, act_dup, act_new = act.resend, act.dup, act.new
        adds, dropping, completes, emits = act.adds, act.dropping, act.completes, act.emits
        denser = act.denser                  # a new round in a denser dtype (below)

        new_bitmap = Signal(P)
        m.d.comb += new_bitmap.eq(Mux(act_new, 0, mb.bitmap) | port_bit)
        dest = Signal(P)
        m.d.comb += dest.eq(Mux(act_resend, port_bit, mask))

        # The round's fields: a new round takes the frame's, any other outcome the slot's.
        round_count = Mux(act_new, lead.count, mb.count)
        round_dtype = Mux(act_new, lead.dtype, mb.dtype)
        round_scale = Mux(act_new, lead.scale, mb.scale)
        # NAN (SPEC §4): a NaN in any contribution of the round, known from the ingress scan.
        round_nan = Signal()
        m.d.comb += round_nan.eq(Mux(act_resend, mb.nan, Mux(act_new, 0, mb.nan) | lead.nan))

        # RESULT descriptors, one per destination, addressed as the learned table stands
        # after this frame: its own port takes the frame's source.
        rdescs = []
        for n in range(P):
            rdsc = Signal(rd, name=f"rdesc{n}")
            rdescs.append(rdsc)
            la = learned_now[n]
            own = port_bit[n]
            m.d.comb += [
                rdsc.job.eq(lead.job), rdsc.slot.eq(lead.slot),
                rdsc.flags.eq(Mux(lead.bank, FLAG_BANK, 0) | Mux(act_resend, FLAG_UNICAST, 0)
                              | Mux(round_nan, FLAG_NAN, 0)),
                rdsc.dtype.eq(round_dtype), rdsc.mx.eq(is_mx(round_dtype)),
                rdsc.count.eq(round_count), rdsc.scale.eq(round_scale),
                rdsc.seq.eq(Mux(act_new, lead.seq, mb.seq)),
                rdsc.dst_mac.eq(Mux(own, lead.src_mac, la.mac)),
                rdsc.dst_ip.eq(Mux(own, lead.src_ip, la.ip)),
                rdsc.dst_port.eq(Mux(own, lead.src_port, la.port)),
                rdsc.tstamp.eq(Mux(act_resend, mb.tstamp, lead.t_last)),
                rdsc.t_ref.eq(lead.t_last),
                rdsc.payload_bytes.eq(payload_bytes(round_dtype, round_count)),
            ]

        # --- the pass schedule (docs/engine-v2.md) -----------------------------------
        beats = Signal(range(p.slot_lines + 1))
        mb_beats = Signal(range(p.slot_lines + 1))   # the slot's round's beats (below)
        m.d.comb += beats.eq(Mux(dropping, 1, Mux(act_new, beat_count(p, lead.dtype, lead.count), mb_beats)))
        # RMW_GAP after the start of the slot's previous pass (a drop does not touch the
        # slot). Passes of one round have one dtype and handle each word at the same offset
        # from their starts. A new round in a denser dtype (more lines per beat) reaches
        # the words sooner than the previous round's passes did, so it starts after the
        # previous pass has ended (docs/engine-v2.md).
        # The slot's metadata keeps both ends (last_r + RMW_GAP, and last_x after the pass).

        # A start constraint is kept as the start period `v` of an earlier pass and the
        # cycles `x` from that pass's start phase to the cycle the constraint ends in: the
        # first period whose cycle of phase `ph` is at or after it is v + offset(x, ph).
        # The 32-bit addition waits for COMMIT, so DECIDE only looks up small tables.
        X_MAX = P - 1 + p.slot_lines + RMW_GAP
        OFF = range(X_MAX // P + 2)
        NC = 2                               # constraints: the port, the slot

        def offset(x, ph, n=None, plus=0):
            return first_offset(x, ph, P, X_MAX, n, plus)

        job = Signal(port_job(p))            # computed in DECIDE, registered as c_job
        m.d.comb += [
            job.beats.eq(beats),
            job.row_base.eq((lead.gslot * 2 + lead.bank) * bank_rows(p)),
            job.start.eq(lead.start), job.scales.eq(lead.scales),
            job.dtype.eq(round_dtype), job.scale.eq(round_scale), job.count.eq(round_count),
            job.replace.eq(act_new), job.write.eq(adds), job.emit.eq(emits),
            job.result.eq(completes), job.nan.eq(round_nan), job.dest.eq(dest),
            job.release_beats.eq(lead.beats),
        ]

        # Both banks' metadata after the decision (written in COMMIT unless it drops).
        upd = Signal(meta_layout)
        m.d.comb += upd.eq(mb)
        with m.If(adds):
            m.d.comb += [upd.bitmap.eq(new_bitmap), upd.complete.eq(completes), upd.nan.eq(round_nan)]
        with m.If(act_new):
            m.d.comb += [upd.dtype.eq(lead.dtype), upd.count.eq(lead.count),
                         upd.scale.eq(lead.scale), upd.seq.eq(lead.seq), upd.slot.eq(lead.slot)]
        with m.If(completes):
            m.d.comb += upd.tstamp.eq(lead.t_last)
        other = Signal(meta_layout)
        m.d.comb += [other.eq(mo), other.bitmap.eq(Mux(adds, mo.bitmap & ~port_bit, mo.bitmap))]

        # The decision as registered at the end of DECIDE: everything COMMIT needs.
        decision = data.StructLayout({
            "port": range(P), "port_bit": P, "phase": range(P), "dest": P, "block": P,
            "emits": 1, "adds": 1, "dropping": 1, "dup": 1, "resend": 1,
            "gslot": len(lead.gslot), "bank": 1, "job_id": len(lead.job),
            "source": addr_layout,
            "upd": meta_layout, "other": meta_layout, "job": port_job(p),
            "other_prev": 1,                # `other` is the bank the pass before wrote
            # the start constraints (below): stamps, offsets and which apply
            "cv": data.ArrayLayout(32, NC), "cd": data.ArrayLayout(OFF, NC), "cok": NC,
            "pd": OFF, "rel": 1,
            "rdesc": data.ArrayLayout(rd, P),
        })
        fresh = Signal(decision)             # in DECIDE
        m.d.comb += [
            fresh.port.eq(port), fresh.port_bit.eq(port_bit), fresh.phase.eq(my_phase),
            fresh.dest.eq(dest), fresh.block.eq(mask | port_bit),
            fresh.emits.eq(emits), fresh.adds.eq(adds), fresh.dropping.eq(dropping),
            fresh.dup.eq(act_dup), fresh.resend.eq(act_resend),
            fresh.gslot.eq(lead.gslot), fresh.bank.eq(lead.bank), fresh.job_id.eq(lead.job),
            fresh.source.eq(Cat(lead.src_mac, lead.src_ip, lead.src_port)),
            fresh.upd.eq(upd), fresh.other.eq(other), fresh.job.eq(job),
        ]
        for n in range(P):
            m.d.comb += fresh.rdesc[n].eq(rdescs[n])
        c = Signal(decision)                 # in COMMIT
        c_valid = Signal()
        s_last = Signal(32)                  # the start of the last pass committed
        # COMMIT's other bank as it stands: when DECIDE took it from the pass committed
        # just before (forwarded, below), that pass's start was not known yet; it is
        # s_last now (no pass commits in between).
        c_other = Signal(meta_layout)
        m.d.comb += [c_other.eq(c.other), c_other.last_e.eq(Mux(c.other_prev, s_last, c.other.last_e))]

        # Where each earlier pass leaves the schedule (written by COMMIT): the start period
        # of the port's last pass, and the cycles from that start's phase to its end
        # (offset() above). Emitting passes need no constraint of their own: each writes
        # its own result-buffer entry (resbuf.py).
        port_last = Array(Signal(32, name=f"port_last{n}") for n in range(P))
        port_x = Array(Signal(range(X_MAX + 1), name=f"port_x{n}") for n in range(P))
        c_writes = c_valid & ~c.dropping
        same_slot = c_writes & (c.gslot == lead.gslot)
        # The outcome and the round's beats: worked out on each source `mb` may come from
        # (COMMIT's two banks, forwarded, and both banks' reads) at once, and the results
        # selected as `mb` is, so the wide compare and the adder do not follow the
        # forwarding.
        # The select is an AND-OR, not a multiplexer: Yosys merges operators that feed
        # the inputs of one multiplexer into one after it (opt_share), which would put
        # the forwarding in front of them again.
        src_sel = Signal(4)
        m.d.comb += src_sel.eq(Cat(same_slot & (c.bank == lead.bank), same_slot & (c.bank != lead.bank),
                                   ~same_slot & ~lead.bank, ~same_slot & lead.bank))
        def as_mb(f):
            vals = [Value.cast(f(meta)) for meta in (c.upd, c.other, meta_rd[0].data, meta_rd[1].data)]
            return or_select(src_sel, vals)
        m.d.comb += [
            act.eq(as_mb(outcome)),
            mb_beats.eq(as_mb(lambda meta: beat_count(p, meta.dtype, meta.count))),
        ]
        m.d.comb += fresh.other_prev.eq(same_slot & (c.bank != lead.bank))

        # DECIDE: the constraints of the frame on its port and its slot as the passes
        # committed so far leave them; the pass COMMIT holds now is kept apart (`rel`, `pd`): it commits in the cycle this frame enters COMMIT, which adds
        # the offset to its start (s_last) there. A stamp far from now (more than 2**15
        # periods back or 2**HORIZON_BITS ahead) is one from 2**32 periods ago and is
        # ignored, as start_after() does.
        def recent(v):
            d = (v - period)[:32]
            return (d[HORIZON_BITS:] == 0) | d[HORIZON_BITS - 1:].all()
        c_same_port = c_valid & (c.port == port)
        c_slot_bank = same_slot & (c.bank == lead.bank)
        c_same_slot = c_slot_bank & ~dropping
        slot_off = Mux(denser, offset(mb.last_x, my_phase), offset(mb.last_r, my_phase, plus=RMW_GAP))
        cons = [(port_last[port], offset(port_x[port], my_phase), ~c_same_port),
                (mb.last_e, slot_off, ~dropping & ~c_same_slot)]
        # (The slot's stamp is checked on both banks' reads before the bank is selected.)
        slot_recent = Mux(same_slot, recent(c_other.last_e),
                          Mux(lead.bank, recent(meta_rd[1].data.last_e), recent(meta_rd[0].data.last_e)))
        for i, (v, off, ok) in enumerate(cons):
            m.d.comb += [fresh.cv[i].eq(v), fresh.cd[i].eq(off),
                         fresh.cok[i].eq(ok & (slot_recent if i == 1 else recent(v)))]
        c_end = c_same_port
        # The offsets from COMMIT's pass: to the end of it (`c_end`), and to RMW_GAP after
        # its start or after its end (a denser round) when it is on this frame's slot and
        # bank and this frame adds to the slot (`c_same_slot`); the latest of those that
        # apply. The offsets only need small registers; the slot compare and the outcome
        # (the round's wide field compare, the forwarded dtype) arrive later and only pick
        # one of them: the gap after the end is the latest whenever it applies, and the
        # gap after the start is later than the end only for a pass shorter than the gap.
        off_end = offset(c.phase, my_phase, c.job.beats)
        off_gap_end = offset(c.phase, my_phase, c.job.beats, RMW_GAP)
        off_gap = offset(c.phase, my_phase, plus=RMW_GAP)
        short = c.job.beats < RMW_GAP
        pd_end = Mux(c_end, off_end, 0)
        pd_plain = Mux(c_end & ~short, off_end, off_gap)
        # c_same_slot is c_slot_bank with COMMIT's bank as the source of the outcome
        # (as_mb), so its outcome is taken from there directly, without the select.
        act_c = Signal(outcome_layout)
        m.d.comb += act_c.eq(outcome(c.upd))
        sel_dense = Signal()
        sel_plain = Signal()
        m.d.comb += [sel_dense.eq(c_slot_bank & ~act_c.dropping & act_c.denser),
                     sel_plain.eq(c_slot_bank & ~act_c.dropping & ~act_c.denser)]
        m.d.comb += [fresh.pd.eq(or_select(Cat(sel_dense, sel_plain, ~sel_dense & ~sel_plain),
                                           [off_gap_end, pd_plain, pd_end])),
                     fresh.rel.eq(c_end | c_same_slot)]
        for n in range(P):
            m.d.comb += getattr(self, f"eg_desc{n}").eq(c.rdesc[n])

        # The earliest start the port's job queue can show the job in.
        lead_e, lead_r = advance(period, phase, JOB_LEAD, JOB_LEAD, P)
        # COMMIT: the start is the latest of that earliest start (c_base, registered a cycle
        # ahead for COMMIT's frame), the constraints DECIDE registered and the one from the
        # pass committed just before (s_last): every pair compared at once, then a one-hot
        # select, so the loop from one start to the next is an adder, a compare and a mux.
        c_base = Signal(32)
        advance_d = Signal()                 # DECIDE's frame moves on (below)
        next_e, next_r = advance(lead_e, lead_r, 1, 1, P)
        m.d.sync += c_base.eq(first_period(next_e, next_r, Mux(advance_d, my_phase, c.phase)))
        vals = [(C(1, 1), c_base)] + [(c.cok[i], (c.cv[i] + c.cd[i])[:32]) for i in range(NC)]
        vals += [(c.rel, (s_last + c.pd)[:32])]
        start_e = Signal(32)
        m.d.comb += start_e.eq(latest(vals))
        # A destination without room holds the decision back, unless its egress has been
        # stalled past the pause watchdog: that port's RESULT is then dropped and counted
        # (SPEC §7), so the ports sharing the round move on. The shadow bank keeps the sum
        # for the worker's retransmission (§5 rule 2).
        c_lost = Signal(P)
        m.d.comb += c_lost.eq(Mux(c.emits, c.dest & ~self.eg_room & self.eg_expired, 0))
        c_send = c.dest & ~c_lost
        c_room = (c.dest & ~self.eg_takes) == 0
        job_ready = Cat(*[ps.job_ready for ps in passes])
        # An emitting decision also takes a result-buffer entry (one is free within a few
        # cycles, resbuf.py).
        can_commit = (job_ready & c.port_bit).any() & (~c.emits | (c_room & resbuf.alloc_ok))
        push_job = Signal(port_job(p))
        m.d.comb += [push_job.eq(c.job), push_job.e.eq(start_e),
                     push_job.dest.eq(c.job.dest & ~c_lost), push_job.entry.eq(resbuf.alloc_entry)]
        for n in range(P):
            m.d.comb += passes[n].job.eq(push_job)

        commit = Signal()
        with m.If(commit):
            for n in range(P):
                m.d.comb += passes[n].job_valid.eq(c.port_bit[n])
            c_x = c.phase + c.job.beats
            m.d.sync += [s_last.eq(start_e), port_last[c.port].eq(start_e), port_x[c.port].eq(c_x)]
            # An emitting decision (a resend or a completing round) never drops: testing
            # `emits` alone keeps the result buffer's and the egresses' enables a LUT
            # closer to COMMIT's condition.
            with m.If(c.emits):
                m.d.comb += [self.eg_desc_en.eq(c_send), self.ev_drop_egress.eq(c_lost),
                             resbuf.alloc_en.eq(1), resbuf.alloc_dest.eq(c_send),
                             resbuf.alloc_beats.eq(c.job.beats), resbuf.alloc_mx.eq(is_mx(c.job.dtype))]
            with m.If(c.dropping):
                m.d.comb += [self.ev_drop.eq(c.port_bit),
                             self.ev_drop_reason.eq(Mux(c.dup, DROP_DUPLICATE, DROP_MISMATCH))]
            with m.Else():
                m.d.comb += self.ev_accept.eq(c.port_bit)
                with m.If(c.resend):
                    m.d.comb += self.ev_resend.eq(c.port_bit & c_send)
                # Both banks' metadata: the round, and the start of the slot's last pass
                # for the schedule (a resend reads the slot too).
                for b in range(2):
                    m.d.comb += [meta_wr[b].addr.eq(c.gslot),
                                 meta_wr[b].data.eq(Mux(c.bank == b, c.upd, c_other)),
                                 meta_wr[b].en.eq(1)]
                    with m.If(c.bank == b):
                        m.d.comb += [meta_wr[b].data.last_e.eq(start_e),
                                     meta_wr[b].data.last_r.eq(c.phase),
                                     meta_wr[b].data.last_x.eq(c.phase + c.job.beats + RMW_GAP)]
                for n in range(P):
                    m.d.comb += [learned_wr[n].addr.eq(c.job_id), learned_wr[n].data.eq(c.source),
                                 learned_wr[n].en.eq(c.port_bit[n])]

        # A decision that a full destination holds back is dropped, not waited for, and
        # its frame stays at the head of its queue to be decided again once that
        # destination has room (or is past the watchdog). Meanwhile PICK takes only
        # frames that cannot interact with it: `held` grows from its job's ports to every
        # job connected to them through shared ports (one step per cycle; picking waits
        # until it is complete), and a frame is taken only if it is from none of those
        # ports and its job reaches none of them. So a stalled receiver holds back only
        # its own job (and jobs sharing ports with it), and no RESULT overtakes another
        # on any port (docs/SPEC.md §10.5, §10.10).
        held = Signal(P)                     # ports whose jobs' frames wait
        held_steps = Signal(range(p.jobs + 1))
        held_for = Signal(P)                 # the full destinations they wait for
        grown = held
        for j in range(p.jobs):
            mj = self.job_mask.word_select(j, P)
            grown = grown | Mux((mj & held).any(), mj, 0)
        with m.If(held_steps != 0):
            m.d.sync += [held.eq(grown), held_steps.eq(held_steps - 1)]
        # Retry as soon as one of those destinations can take a RESULT again.
        with m.If(held_for.any() & ((held_for & ~self.eg_takes) != held_for)):
            m.d.sync += [held.eq(0), held_steps.eq(0), held_for.eq(0)]
        holding = held.any()
        for n in range(P):
            mask_n = self.job_mask.word_select(cand[n].job, P)
            m.d.comb += eligible[n].eq(~held[n] & ((mask_n & held) == 0))

        # ======================= decide control =====================================
        # COMMIT either commits, or abandons a decision whose destination is full (the
        # frames behind it are flushed and picked again), or waits for its port's job
        # queue or a result-buffer entry (everything behind it waits too).
        abandon = Signal()
        stall = Signal()
        m.d.comb += [commit.eq(c_valid & can_commit),
                     abandon.eq(c_valid & ~can_commit & c.emits & ~c_room),
                     stall.eq(c_valid & ~can_commit & ~(c.emits & ~c_room))]
        with m.If(abandon):
            m.d.sync += [held.eq(held | c.block), held_steps.eq(p.jobs),
                         held_for.eq(held_for | (c.dest & ~self.eg_takes))]

        # Forwarding: DECIDE sees the slot and learned addresses as COMMIT leaves them.
        # (If COMMIT does not commit, DECIDE's result is flushed or waits.)
        # (The slot's last start is not: a frame of the same slot and bank takes its
        # constraint from COMMIT's pass, `rel` above.)
        c_upd = Signal(meta_layout)
        m.d.comb += [c_upd.eq(c.upd), c_upd.last_r.eq(c.phase),
                     c_upd.last_x.eq(c.phase + c.job.beats + RMW_GAP)]
        for b in range(2):
            m.d.comb += meta_now[b].eq(Mux(same_slot, Mux(c.bank == b, c_upd, c_other),
                                            meta_rd[b].data))
        for n in range(P):
            m.d.comb += learned_now[n].eq(Mux(c_writes & c.port_bit[n] & (c.job_id == lead.job),
                                               c.source, learned_rd[n].data))

        init_idx = Signal(range(p.slots + 1))
        running = Signal()
        with m.If(~running):
            # Reset empties every slot (SPEC §2).
            for b in range(2):
                m.d.comb += [meta_wr[b].addr.eq(init_idx), meta_wr[b].data.eq(0), meta_wr[b].en.eq(1)]
            m.d.sync += init_idx.eq(init_idx + 1)
            with m.If(init_idx == p.slots - 1):
                m.d.sync += running.eq(1)
        m.d.comb += self.ready.eq(running)

        # PICK: the oldest eligible frame, once every port's next frame is known (and,
        # while frames are held, once the hold has grown).
        m.d.comb += advance_d.eq(~stall & ~abandon)   # DECIDE's frame moves on (or there is none)
        go = Signal()
        m.d.comb += go.eq(running & advance_d & any_queued & ~unshown.any()
                          & (~holding | (held_steps == 0)))
        # Metadata of both banks of the frame's slot, read in PICK for the winner. While
        # DECIDE keeps its frame (COMMIT waits, so nothing is written) the read is held,
        # not repeated: the block RAM's address is the winner's alone, without a select
        # after PICK's. (The learned addresses, in distributed RAM, are read with the
        # address registered, so their read is repeated for the frame DECIDE keeps.)
        for b in range(2):
            m.d.comb += [meta_rd[b].addr.eq(winner_desc.gslot), meta_rd[b].en.eq(advance_d)]
        for n in range(P):
            m.d.comb += learned_rd[n].addr.eq(Mux(advance_d, winner_desc.job, lead.job))
        with m.If(advance_d):
            m.d.sync += [c_valid.eq(d_valid), c.eq(fresh), d_valid.eq(go),
                         port.eq(winner), lead.eq(winner_desc)]
        with m.If(abandon):
            m.d.sync += [c_valid.eq(0), d_valid.eq(0)]
        for n in range(P):
            done = commit & c.port_bit[n]    # its oldest frame in flight leaves
            take = go & win[n]
            # The FIFO's head moves into the lookahead queue whenever the queue has room,
            # picked or not, so the FIFO's read enable is a register's compare. (A port
            # with no unpicked frame in its queue has room: at most two are in flight.)
            # PICK takes the head in the cycle it moves, or from the queue later. Nothing
            # is taken before the slot memory is initialised.
            room = running & (look_n[n] != LOOKAHEAD)
            pop = room & fvalid[n]
            m.d.comb += fready[n].eq(room)
            with m.If(done):
                for k in range(LOOKAHEAD - 1):
                    m.d.sync += look[n][k].eq(look[n][k + 1])
            with m.If(pop):
                m.d.sync += Array(look[n])[look_n[n] - done].eq(fdesc[n])
            m.d.sync += look_n[n].eq(look_n[n] - done + pop)
            with m.If(abandon):
                m.d.sync += picked[n].eq(0)
            with m.Else():
                m.d.sync += picked[n].eq(picked[n] - done + take)
        return m
