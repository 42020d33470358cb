"""Round bookkeeping of SPEC §5 on the aggregation engine, proven by k-induction.

The harness keeps an abstract shadow of every (slot, bank): the worker bitmap, whether its
round is complete and the round's dtype, count, scale and seq, updated by the rules of
SPEC §5 alone at every decision the engine takes (engine_env.py says how the decisions
are observed). It also counts, from what the engine actually does, the contributions each
worker made to the (slot, bank)'s current round (the pass jobs that add a payload; a
round starts with the job that replaces the accumulators) and the multicasts since.

Properties (Assert), at every decision:

- `outcome`: the engine's outcome is the one SPEC §5 gives for the shadow's state: a new
  round, a join, a resend, a duplicate or a mismatch (drop reason included), RESULTs to
  exactly the job's ports on completion and to the sender alone on a resend;
- `result_complete`: a multicast RESULT for (slot, bank) only when every worker of the
  job has contributed exactly once since the round started;
- `one_multicast`: the contribution that completes a round multicasts, and a round
  multicasts at most once;
- `drop_no_state`: a duplicate or a mismatch writes no slot metadata, adds nothing to the
  accumulators and sends no RESULT;
- `resend`: a unicast RESULT only for a complete round the sender contributed to, to the
  sender's port alone, and with the round's bank, job and slot;
- `bank_clear`: a worker that contributes to bank b has its bit cleared in bank 1 - b of
  that slot, in the same write;
- `in_range`: the engine writes the metadata of the decided frame's slot only, which lies
  in its job's range, and the frame's pass adds into that (slot, bank)'s accumulators only;
- `shadow`: at every cycle the metadata memories (as their write ports leave them) hold
  the shadow's bitmap, completeness and round fields for every (slot, bank).

Cover statements show each rule reachable, and two complete rounds on each bank of every
slot (reached at step 16).

The `pipeline` group states the invariants that make the induction close: the lookahead
queues hold the frames the harness saw the engine take, DECIDE and COMMIT hold their
queues' first frames, the metadata DECIDE sees is the shadow's as COMMIT leaves it, and
COMMIT's registered decision is SPEC §5's for the shadow. With them, k = 4 suffices.
"""

from amaranth import *
from amaranth.hdl import Assert, Cover
from amaranth.lib import data

from aggswitch.params import Params, DROP_MISMATCH, DROP_DUPLICATE
from aggswitch.engine import AggregationEngine
from aggswitch.frame import slot_meta, frame_descriptor, result_descriptor
from aggswitch.passes import bank_rows, port_job

from .common import ProofSet, reset_in_first_cycle, past, probe, struct_field
from .engine_env import EngineEnv, CUT, LOOKAHEAD, frame_layout

PARAMS = Params(ports=2, data_width=128, slots=2, slot_elems=32, jobs=1)


def spec_step(m, e, o, fr, me, mask, name):
    """SPEC §5 for frame `fr` from the port `me` (one-hot) of a job with port mask `mask`, on
    a (slot, bank) in state `e` whose other bank is in state `o`: the outcome and the two
    banks' states after it."""
    x = type("Step", (), {})()
    bit = (e.bitmap & me).any()
    in_progress = (e.bitmap != 0) & ~e.complete
    match = (e.dtype == fr.dtype) & (e.count == fr.count) & (e.scale == fr.scale) & (e.seq == fr.seq)
    x.bit = bit
    x.resend = bit & e.complete
    x.dup = bit & ~e.complete
    x.mismatch = ~bit & in_progress & ~match
    x.new = ~bit & ~in_progress
    x.join = ~bit & in_progress & match
    x.add = x.new | x.join
    x.bitmap = Signal(len(me), name=f"{name}_bitmap")
    m.d.comb += x.bitmap.eq(Mux(x.new, 0, e.bitmap) | me)
    x.complete = x.add & ((mask & ~x.bitmap) == 0)
    x.emits = x.resend | x.complete
    x.dest = Mux(x.resend, me, Mux(x.complete, mask, 0))
    x.e = Signal.like(e, name=f"{name}_e")
    x.o = Signal.like(o, name=f"{name}_o")
    m.d.comb += [x.e.eq(e), x.o.eq(o)]
    with m.If(x.add):
        m.d.comb += [x.e.bitmap.eq(x.bitmap), x.e.complete.eq(x.complete), x.o.bitmap.eq(o.bitmap & ~me)]
        with m.If(x.new):
            m.d.comb += [x.e.dtype.eq(fr.dtype), x.e.count.eq(fr.count), x.e.scale.eq(fr.scale),
                         x.e.seq.eq(fr.seq)]
    return x


class RoundsHarness(Elaboratable):
    GROUPS = ("outcome", "result_complete", "one_multicast", "drop_no_state", "resend", "bank_clear",
              "in_range", "shadow", "pipeline")

    def __init__(self, p: Params = PARAMS, engine_cls=AggregationEngine, room="free", covers=True,
                 groups=GROUPS):
        self.groups = set(groups)
        self.p = p
        self.engine_cls = engine_cls
        self.room = room
        self.covers = covers

    def elaborate(self, platform):
        m = Module()
        p = self.p
        P = p.ports
        S = p.slots
        reset_in_first_cycle(m)
        env = EngineEnv(p, self.engine_cls, room=self.room).build(m)
        eng = env.eng
        running = probe(env.frag, "running")
        cf = env.cf
        committing = env.committing
        mask = env.mask_cf
        me = env.cport_bit

        def check(group, *conds):
            return [Assert(c, group, src_loc_at=2) for c in conds] if group in self.groups else []

        meta = slot_meta(p)
        count_w = len(Signal(meta["count"].shape))
        sh_layout = data.StructLayout({"bitmap": P, "complete": 1, "dtype": 3, "count": count_w,
                                       "scale": 8, "seq": 32})
        # Shadow (SPEC §5), observed contributions and multicasts per (slot, bank), and the
        # metadata memories as written: index slot * 2 + bank.
        shadow = [Signal(sh_layout, name=f"shadow{i >> 1}_{i & 1}") for i in range(2 * S)]
        contrib = [Signal(2 * P, name=f"contrib{i >> 1}_{i & 1}") for i in range(2 * S)]  # 2 bits per worker
        multicasts = [Signal(2, name=f"multicasts{i >> 1}_{i & 1}") for i in range(2 * S)]
        rounds = [Signal(2, name=f"rounds{i >> 1}_{i & 1}") for i in range(2 * S)]   # completed (saturating)
        # the metadata memories' words, index slot * 2 + bank
        mirror = [env.meta_words[i & 1][i >> 1] for i in range(2 * S)]

        def pair(fr, name):
            here = Signal(range(2 * S), name=f"{name}_here")
            there = Signal(range(2 * S), name=f"{name}_there")
            m.d.comb += [here.eq(Cat(fr.bank, fr.gslot)), there.eq(Cat(~fr.bank, fr.gslot))]
            e = Signal(sh_layout, name=f"{name}_cur")
            o = Signal(sh_layout, name=f"{name}_oth")
            return here, there, e, o

        # --- SPEC §5 on the shadow, at every decision -----------------------------------------
        here, there, e, o = pair(cf, "cf")
        m.d.comb += [e.eq(Array(shadow)[here]), o.eq(Array(shadow)[there])]
        x = spec_step(m, e, o, cf, me, mask, "x")
        bit = x.bit
        x_resend, x_dup, x_mismatch, x_new, x_join, x_add, x_complete = (
            x.resend, x.dup, x.mismatch, x.new, x.join, x.add, x.complete)
        shadow_next = [Signal(sh_layout, name=f"shadow_next{i >> 1}_{i & 1}") for i in range(2 * S)]
        for i in range(2 * S):
            m.d.comb += shadow_next[i].eq(shadow[i])
            with m.If(committing & (here == i)):
                m.d.comb += shadow_next[i].eq(x.e)
            with m.If(committing & (there == i)):
                m.d.comb += shadow_next[i].eq(x.o)
            m.d.sync += shadow[i].eq(shadow_next[i])
        with m.If(committing & x_complete):
            m.d.sync += Array(rounds)[here].eq(Mux(Array(rounds)[here] == 3, 3, Array(rounds)[here] + 1))

        # --- what the engine did ---------------------------------------------------------
        drop = eng.ev_drop.any()
        multicast = (env.sent != 0) & ~env.unicast
        unicast = (env.sent != 0) & env.unicast
        wj = env.wjob
        adds = env.wjob_valid & wj.write
        starts = env.wjob_valid & wj.replace
        rows = bank_rows(p)
        # contributions to this (slot, bank) since its round started, this one included
        c_now = Signal(2 * P)
        m.d.comb += c_now.eq(Mux(starts, 0, Array(contrib)[here]))
        c_after = Signal(2 * P)
        for w in range(P):
            cw = c_now.word_select(w, 2)
            m.d.comb += c_after.word_select(w, 2).eq(Mux(adds & me[w], Mux(cw == 3, 3, cw + 1), cw))
        mc_now = Signal(2)
        m.d.comb += mc_now.eq(Mux(starts, 0, Array(multicasts)[here]))
        mc_after = Signal(2)
        m.d.comb += mc_after.eq(Mux(multicast, Mux(mc_now == 3, 3, mc_now + 1), mc_now))
        with m.If(committing):
            m.d.sync += [Array(contrib)[here].eq(c_after), Array(multicasts)[here].eq(mc_after)]

        # --- properties --------------------------------------------------------------------
        def check(group, *conds):
            return [Assert(c, group, src_loc_at=2) for c in conds] if group in self.groups else []

        all_once = Cat(*[(c_after.word_select(w, 2) == 1) | ~mask[w] for w in range(P)]).all()
        meta_write = env.meta_wp[0].en | env.meta_wp[1].en
        there_en = Mux(cf.bank, env.meta_wp[0].en, env.meta_wp[1].en)
        there_bitmap = Mux(cf.bank, env.meta_wp[0].data.bitmap, env.meta_wp[1].data.bitmap)
        with m.If(committing):
            # outcome: the engine's decision is SPEC §5's
            m.d.comb += check("outcome",
                drop == (x_dup | x_mismatch),
                ~drop | (eng.ev_drop_reason == Mux(x_dup, DROP_DUPLICATE, DROP_MISMATCH)),
                multicast == x_complete,
                unicast == x_resend,
                env.sent == Mux(x_resend, me, Mux(x_complete, mask, 0)),
                adds == x_add,
                starts == x_new)
            # result_complete
            with m.If(multicast):
                m.d.comb += check("result_complete", all_once)
            # one_multicast
            m.d.comb += check("one_multicast", mc_after <= 1)
            with m.If(adds & all_once):
                m.d.comb += check("one_multicast", multicast)
            # drop_no_state
            with m.If(drop):
                m.d.comb += check("drop_no_state", ~meta_write, ~adds, env.sent == 0)
            # resend
            with m.If(unicast):
                # observed: the round has multicast, and the sender contributed to it
                m.d.comb += check("resend", mc_now >= 1, c_now.word_select(env.cport, 2) != 0, ~starts,
                                  env.sent == me)
            # the RESULT names the frame's round
            with m.If(env.sent != 0):
                m.d.comb += check("resend", env.rbank == cf.bank, env.rjob == cf.job, env.rslot == cf.slot)
            # bank_clear
            with m.If(adds):
                m.d.comb += check("bank_clear", there_en, (there_bitmap & me) == 0)
            # in_range
            with m.If(meta_write):
                m.d.comb += check("in_range", env.meta_wp[0].addr == cf.gslot, env.meta_wp[1].addr == cf.gslot)
            with m.If(env.wjob_valid & wj.write):
                m.d.comb += check("in_range", wj.row_base == Cat(cf.bank, cf.gslot) * rows)
        with m.Else():
            # no decision, no slot write (once the memories are initialised)
            with m.If(running):
                m.d.comb += check("drop_no_state", ~meta_write, ~env.wjob_valid, env.sent == 0)
        for j in range(p.jobs):
            with m.If(committing & (cf.job == j)):
                m.d.comb += check("in_range", (cf.gslot >= env.base[j]) & (cf.gslot < env.base[j] + env.count[j]))
        # shadow: the memories hold the shadow's state
        with m.If(running):
            for i in range(2 * S):
                sh, mi = shadow[i], mirror[i]
                m.d.comb += check("shadow", mi.bitmap == sh.bitmap, mi.complete == sh.complete,
                                  (mi.dtype == sh.dtype) & (mi.count == sh.count)
                                  & (mi.scale == sh.scale) & (mi.seq == sh.seq))

        # --- pipeline: the engine's own state agrees with the shadow ----------------------------
        # Invariants of the decide pipeline, stated so that every step of the proof only needs
        # the step before it: the lookahead queues hold the frames the harness saw taken, in
        # order; DECIDE and COMMIT hold the queues' first frames; the metadata read for DECIDE
        # is the memory's; and COMMIT's registered decision is SPEC §5's for the shadow.
        if "pipeline" in self.groups:
            fd = frame_descriptor(p)
            frag = env.frag
            d_valid, c_valid = probe(frag, "d_valid"), probe(frag, "c_valid")
            dport = probe(frag, "port")
            lead = data.View(fd, probe(frag, "lead"))
            c = probe(frag, "c")
            cfield = lambda path: struct_field(c, path)
            c_port = cfield("port")
            commit = probe(frag, "commit")
            mb = data.View(meta, probe(frag, "mb"))
            mo = data.View(meta, probe(frag, "mo"))

            def same_frame(a, b):
                return ((a.job == b.job) & (a.gslot == b.gslot) & (a.slot == b.slot) & (a.bank == b.bank)
                        & (a.dtype == b.dtype) & (a.count == b.count) & (a.scale == b.scale) & (a.seq == b.seq))

            def same_state(mview, sh):
                return ((mview.bitmap == sh.bitmap) & (mview.complete == sh.complete) & (mview.dtype == sh.dtype)
                        & (mview.count == sh.count) & (mview.scale == sh.scale) & (mview.seq == sh.seq))

            for n in range(P):
                look = [data.View(fd, probe(frag, f"look{n}_{k}")) for k in range(LOOKAHEAD)]
                look_n = probe(frag, f"look{n}_n")
                picked = probe(frag, f"look{n}_picked")
                m.d.comb += check("pipeline", look_n == env.inflight_n[n], picked <= look_n,
                                  picked == (d_valid & (dport == n)) + (c_valid & (c_port == n)))
                for k in range(LOOKAHEAD):
                    with m.If(k < look_n):
                        m.d.comb += check("pipeline", same_frame(look[k], env.q[n][k]))
            # DECIDE holds its port's first frame not in COMMIT
            d_rec = Signal(frame_layout(p))
            c_first = c_valid & (c_port == dport)
            m.d.comb += d_rec.eq(Mux(c_first, Array(env.q)[dport][1], Array(env.q)[dport][0]))
            with m.If(d_valid):
                m.d.comb += check("pipeline", same_frame(lead, d_rec))
            # the metadata memories read what was written, for DECIDE's frame (a read
            # is held while its enable is low; nothing is written then)
            for b in range(2):
                rp = env.meta_rd[b]
                addr_q = Signal.like(rp.addr, name=f"meta_rd{b}_addr_q", reset_less=True)
                with m.If(rp.en):
                    m.d.sync += addr_q.eq(rp.addr)
                m.d.comb += check("pipeline", rp.data.as_value() == Array(mirror[b::2])[addr_q].as_value())
                with m.If(d_valid):
                    m.d.comb += check("pipeline", addr_q == lead.gslot)
            # before the memories are initialised: nothing taken, every slot empty so far
            init_idx = probe(frag, "init_idx")
            with m.If(~running):
                m.d.comb += check("pipeline", ~d_valid, ~c_valid, init_idx < S)
                for i in range(2 * S):
                    m.d.comb += check("pipeline", shadow[i].as_value() == 0)
                    with m.If((i >> 1) < init_idx):
                        m.d.comb += check("pipeline", mirror[i].as_value() == 0)
                for n in range(P):
                    m.d.comb += check("pipeline", env.inflight_n[n] == 0)
            # the observed contributions and multicasts per (slot, bank) (ports == 2: a round
            # in progress has its bitmap's contributions, a complete one all of its job's, once)
            if P == 2 and p.jobs == 1:
                for i in range(2 * S):
                    sh = shadow[i]
                    in_prog = (sh.bitmap != 0) & ~sh.complete
                    m.d.comb += check("pipeline", (sh.bitmap & ~env.mask[0]) == 0,
                                      sh.complete | (sh.bitmap == 0) | ((env.mask[0] & ~sh.bitmap) != 0),
                                      multicasts[i] == sh.complete)
                    for w in range(P):
                        cw = contrib[i].word_select(w, 2)
                        m.d.comb += check("pipeline", cw <= 1, ~(sh.complete & env.mask[0][w]) | (cw == 1),
                                          ~in_prog | (cw == sh.bitmap[w]), env.mask[0][w] | (cw == 0))
            # DECIDE sees its slot as COMMIT leaves it
            d_here, d_there, d_e, d_o = pair(lead, "d")
            m.d.comb += [d_e.eq(Array(shadow_next)[d_here]), d_o.eq(Array(shadow_next)[d_there])]
            with m.If(d_valid & (commit | ~c_valid) & running):
                m.d.comb += check("pipeline", same_state(mb, d_e), same_state(mo, d_o))
            # COMMIT holds SPEC §5's decision for its frame
            c_rec = Signal(frame_layout(p))
            m.d.comb += c_rec.eq(Array(env.heads)[c_port])
            c_here, c_there, c_e, c_o = pair(c_rec, "c")
            m.d.comb += [c_e.eq(Array(shadow)[c_here]), c_o.eq(Array(shadow)[c_there])]
            c_me = Signal(P)
            m.d.comb += c_me.eq(1 << c_port)
            y = spec_step(m, c_e, c_o, c_rec, c_me, Array(env.mask)[c_rec.job], "y")
            upd = data.View(meta, cfield("upd"))
            other = data.View(meta, cfield("other"))
            named = {}
            for f in ("gslot", "bank", "job_id", "dropping", "dup", "resend", "adds", "emits", "dest", "port_bit"):
                v = cfield(f)
                named[f] = Signal(len(v), name=f"c_{f}")
                m.d.comb += named[f].eq(v)
            with m.If(c_valid):
                m.d.comb += check("pipeline", named["gslot"] == c_rec.gslot)
                m.d.comb += check("pipeline", named["bank"] == c_rec.bank)
                m.d.comb += check("pipeline", named["job_id"] == c_rec.job)
                m.d.comb += check("pipeline", named["port_bit"] == c_me)
                m.d.comb += check("pipeline", named["dropping"] == (y.dup | y.mismatch))
                m.d.comb += check("pipeline", named["dup"] == y.dup)
                m.d.comb += check("pipeline", named["resend"] == y.resend)
                m.d.comb += check("pipeline", named["adds"] == y.add)
                m.d.comb += check("pipeline", named["emits"] == y.emits)
                m.d.comb += check("pipeline", ~y.emits | (named["dest"] == y.dest))   # dest matters when it emits
                with m.If(~(y.dup | y.mismatch)):
                    m.d.comb += check("pipeline", same_state(upd, y.e), same_state(other, y.o))
                cjob = data.View(port_job(p), cfield("job"))
                m.d.comb += check("pipeline", cjob.write == y.add, cjob.replace == y.new,
                                  cjob.row_base == Cat(c_rec.bank, c_rec.gslot) * bank_rows(p))
                rdesc = data.View(data.ArrayLayout(result_descriptor(p), P), cfield("rdesc"))
                for d in range(P):
                    m.d.comb += check("pipeline", rdesc[d].flags[4] == y.resend, rdesc[d].flags[0] == c_rec.bank,
                                      rdesc[d].job == c_rec.job, rdesc[d].slot == c_rec.slot)

        # --- reachability -----------------------------------------------------------------
        if self.covers:
            m.d.comb += [
                Cover(committing & x_complete & ~cf.bank), Cover(committing & x_complete & cf.bank),
                Cover(committing & x_resend), Cover(committing & x_dup), Cover(committing & x_mismatch),
                Cover(committing & x_join),               # (with two ports a join completes its round)
                Cover(committing & x_add & ((o.bitmap & me) != 0)),          # bank_clear takes effect
                Cover(committing & x_new & (e.bitmap != 0)),                  # a round replaces a complete one
                Cover(Cat(*[r >= 2 for r in rounds]).all()),                  # two rounds on every (slot, bank)
            ]
        return m


def proof_sets():
    return [
        ProofSet("rounds", "SPEC §5 round bookkeeping on the engine, against a shadow model",
                 RoundsHarness, mode="prove", depth=4, cut=CUT, timeout=1800),
        # what the mutants run against (one property group at a time, mutants.py): a bounded
        # check that finds their counterexamples, with a trace naming the property
        ProofSet("rounds_mutant", "SPEC §5 properties, one group, bounded (for the mutants)",
                 RoundsHarness, mode="bmc", depth=12, cut=CUT, timeout=900, mutants_only=True),
        # docs/SPEC.md §10.12: with three workers, one that moves to the other bank before
        # its round completes can contribute to that round twice; the check must find it
        ProofSet("rounds_3ports", "SPEC §5 at three ports: a worker contributing twice to a round "
                 "(expected counterexample, docs/SPEC.md §10.12)",
                 lambda: RoundsHarness(p=Params(ports=3, data_width=128, slots=1, slot_elems=32, jobs=1),
                                       groups=("result_complete",), covers=False),
                 mode="bmc", depth=10, cut=CUT, timeout=900, expect="FAIL"),
        ProofSet("rounds_cover", "SPEC §5: every rule reachable; two complete rounds on each (slot, bank)",
                 RoundsHarness, mode="cover", depth=20, cut=CUT, timeout=3000),
    ]
