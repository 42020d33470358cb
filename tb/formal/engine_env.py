"""The aggregation engine (hw/aggswitch/engine.py) in a formal environment: legal frame
descriptors from every port, the frames in flight, and what the engine does with each.

The engine is elaborated here and added to the harness as a fragment, so the harness reads
its internal ports through the Amaranth hierarchy without changing engine.py: the write
ports of the slot metadata memories `meta_bank0/1` and the pass jobs handed to each port's
`PortPass`. The arithmetic is cut (`CUT`): the decoders, the accumulator banks and the
result encoders become free values, so the solver sees the decision logic, the schedule,
the passes' control and the emitters' control, and not the numbers.

Environment (Assume):
- one descriptor register per port, standing for the ingress FIFO's head: a new frame may
  appear in any cycle the previous one is not waiting (or is being taken), stamped
  (`t_last`) with the cycle it appears in, so frames appear in arrival order;
- every descriptor is one the ingress admits (docs/SPEC.md §10.2 rules 1-10): its job's
  port mask holds the port, its slot is in the job's range (`gslot` = `slot_base` + `slot`),
  a dtype of this build, a count of 1..`slot_elems`, its buffer beats for that payload;
- the job table is constant (docs/SPEC.md §10.7: change it only while a job is idle);
- the egress side (`eg_room`, `eg_expired`) is free unless the harness fixes it.
"""

import sys

from amaranth import *
from amaranth.hdl import Assert, Assume
from amaranth.hdl._ast import AnySeq, AnyConst
from amaranth.lib import data

from aggswitch.params import Params
from aggswitch.engine import AggregationEngine, payload_bytes
from aggswitch.ingress import supported_dtypes
from aggswitch.frame import frame_descriptor, job_bits, slot_bits, count_bits
from aggswitch.passes import PortPass
from aggswitch.codec import is_mx

from .common import elaborated, as_submodule, origin

# Datapath modules cut for the round-bookkeeping proofs (RTLIL module names).
CUT = ("top.engine.banks", "top.engine.pass*.decoder", "top.engine.emitter*.encoder",
       "top.engine.resbuf.banks")

LOOKAHEAD = 3       # frames a port can have between PICK and COMMIT (engine.py)


class RegisterMemory(Elaboratable):
    """`amaranth.lib.memory.Memory` as the engine uses it (synchronous write ports,
    synchronous read ports transparent for the write ports named), in registers the harness
    can name: the proofs by induction state invariants over the slot metadata's contents.
    Yosys' `memory_map` makes the same registers of a real Memory; this only gives them
    names. Used in place of the engine's `Memory` while the harness elaborates it."""

    def __init__(self, *, shape, depth, init=(), attrs=None, src_loc_at=0):
        assert not list(init), "the engine's memories start empty"
        self.shape = shape
        self.depth = depth
        self.words = [Signal(shape, name=f"word{i}") for i in range(depth)]
        self.write_ports = []
        self.read_ports = []

    def write_port(self, *, domain="sync", granularity=None, src_loc_at=0):
        assert domain == "sync" and granularity is None
        wp = _Port(addr=Signal(range(max(2, self.depth))), data=Signal(self.shape), en=Signal())
        self.write_ports.append(wp)
        return wp

    def read_port(self, *, domain="sync", transparent_for=(), src_loc_at=0):
        assert domain == "sync"
        rp = _Port(addr=Signal(range(max(2, self.depth))), data=Signal(self.shape), en=Signal(init=1),
                   transparent_for=tuple(transparent_for))
        self.read_ports.append(rp)
        return rp

    def elaborate(self, platform):
        m = Module()
        for wp in self.write_ports:
            for i, word in enumerate(self.words):
                with m.If(wp.en & (wp.addr == i)):
                    m.d.sync += word.eq(wp.data)
        for rp in self.read_ports:
            value = Array(self.words)[rp.addr]
            for wp in rp.transparent_for:
                value = Mux(wp.en & (wp.addr == rp.addr), wp.data, value)
            with m.If(rp.en):
                m.d.sync += rp.data.eq(value)
        return m


class _Port:
    def __init__(self, **kw):
        self.__dict__.update(kw)


def elaborate_engine(engine_cls, p):
    """An engine of `engine_cls` and its fragment, elaborated with RegisterMemory for the
    module's `Memory`."""
    module = sys.modules[engine_cls.__module__]
    saved = module.Memory
    module.Memory = RegisterMemory
    try:
        eng = engine_cls(p)
        frag = elaborated(eng)
    finally:
        module.Memory = saved
    return eng, frag


def frame_layout(p: Params):
    """What the harness keeps of a frame between the engine taking it and deciding it."""
    return data.StructLayout({
        "job": job_bits(p), "gslot": slot_bits(p), "slot": 16, "bank": 1,
        "dtype": 3, "count": count_bits(p), "scale": 8, "seq": 32,
        "age": 8,                    # cycles since the engine took it (saturating)
    })


class EngineEnv:
    """Builds the environment around an engine in module `m`. After `build`:

    - `eng`: the engine; `frag`: its fragment; `passes`: its PortPass objects;
      `meta_wp[b]`: the write port of `meta_bank{b}`
    - `mask[j]`, `base[j]`, `count[j]`: the (constant) job table
    - `commit_bits`: ports whose frame COMMIT decides this cycle (ev_accept | ev_drop);
      `cf`, `cport`, `cport_bit`: that frame (from the harness's own record) and its port
    - `sent`: destinations the decision hands a RESULT (queued or dropped at a stalled
      port); `unicast`, `rbank`, `rjob`, `rslot`: that RESULT's UNICAST and BANK flags,
      job and slot
    - `wjob`: the pass job of the decided frame (`wjob_valid`)
    - `cyc`: the cycle number (32 bits, 0 at reset)
    """

    def __init__(self, p: Params, engine_cls=AggregationEngine, room="free"):
        self.p = p
        self.engine_cls = engine_cls
        self.room = room                  # "free" or "always" (every egress takes a RESULT)

    def build(self, m):
        p = self.p
        P = p.ports
        fd = frame_descriptor(p)
        fl = frame_layout(p)
        self.eng, self.frag = eng, frag = elaborate_engine(self.engine_cls, p)
        m.submodules.engine = as_submodule(frag)
        self.passes = [origin(frag.find_subfragment(f"pass{n}"), PortPass) for n in range(P)]
        metas = [origin(frag.find_subfragment(f"meta_bank{b}"), RegisterMemory) for b in range(2)]
        self.meta_wp = [mem.write_ports[0] for mem in metas]
        self.meta_rd = [mem.read_ports[0] for mem in metas]
        self.meta_words = [mem.words for mem in metas]

        cyc = self.cyc = Signal(32)
        m.d.sync += cyc.eq(cyc + 1)
        m.d.comb += eng.cycles.eq(cyc)

        # --- the job table: constant, legal ranges ------------------------------------------
        sb = slot_bits(p) + 1
        self.mask = [Signal(P, name=f"job{j}_mask") for j in range(p.jobs)]
        self.base = [Signal(sb, name=f"job{j}_base") for j in range(p.jobs)]
        self.count = [Signal(sb, name=f"job{j}_count") for j in range(p.jobs)]
        for j in range(p.jobs):
            m.d.comb += [self.mask[j].eq(AnyConst(P)), self.base[j].eq(AnyConst(sb)),
                         self.count[j].eq(AnyConst(sb)),
                         Assume(self.base[j] + self.count[j] <= p.slots),
                         eng.job_mask.word_select(j, P).eq(self.mask[j])]
        # disjoint slot ranges (docs/SPEC.md §10.7: overlapping ranges are a configuration error)
        for i in range(p.jobs):
            for j in range(i + 1, p.jobs):
                m.d.comb += Assume((self.base[i] + self.count[i] <= self.base[j])
                                   | (self.base[j] + self.count[j] <= self.base[i])
                                   | (self.count[i] == 0) | (self.count[j] == 0))
        mask_of = Array(self.mask)
        base_of = Array(self.base)
        count_of = Array(self.count)
        dtypes = supported_dtypes(p)

        def legal(n, fr):
            """A frame the ingress admits on port n (docs/SPEC.md §10.2 rules 1-10)."""
            return ((fr.job < p.jobs) & mask_of[fr.job].bit_select(n, 1)
                    & (fr.slot < count_of[fr.job]) & (fr.gslot == base_of[fr.job] + fr.slot)
                    & Cat(*[fr.dtype == t for t in dtypes]).any()
                    & (fr.count >= 1) & (fr.count <= p.slot_elems)
                    & (~is_mx(fr.dtype) | (fr.count[:5] == 0)))
        self.legal = legal

        # --- the egress side -----------------------------------------------------------------
        if self.room == "free":
            room, expired = AnySeq(P), AnySeq(P)
            m.d.comb += [eng.eg_room.eq(room), eng.eg_expired.eq(expired), eng.eg_takes.eq(room | expired)]
        else:
            m.d.comb += [eng.eg_room.eq(-1), eng.eg_expired.eq(0), eng.eg_takes.eq(-1)]

        # --- descriptors: one register per port, legal, in arrival order ---------------------
        self.src_valid = []
        self.src = []
        self.loads = []
        dtypes = supported_dtypes(p)
        for n in range(P):
            v = Signal(name=f"src{n}_valid")
            d = Signal(fd, name=f"src{n}")
            ready = getattr(eng, f"desc{n}_ready")
            new = Signal(fd, name=f"new{n}")
            want = Signal(name=f"want{n}")
            m.d.comb += [new.as_value().eq(AnySeq(fd.size)), want.eq(AnySeq(1))]
            load = want & (~v | ready)
            pb = Signal(16, name=f"payload_bytes{n}")
            m.d.comb += pb.eq(payload_bytes(new.dtype, new.count))
            with m.If(load):
                m.d.comb += Assume(self.legal(n, new) & (new.beats == ((pb + p.beat_bytes - 1)
                                                                       >> (p.beat_bytes.bit_length() - 1))))
                m.d.sync += [v.eq(1), d.eq(new), d.t_last.eq(cyc + 1)]
            with m.Elif(ready):
                m.d.sync += v.eq(0)
            m.d.comb += [getattr(eng, f"desc{n}").eq(d), getattr(eng, f"desc{n}_valid").eq(v),
                         getattr(eng, f"head{n}_valid").eq(v), getattr(eng, f"head{n}_order").eq(0),
                         getattr(eng, f"buf{n}_data").eq(0)]
            self.src_valid.append(v)
            self.src.append(d)
            self.loads.append(load)

        # --- frames in flight: taken by PICK, not yet decided by COMMIT ---------------------
        self.commit_bits = commit_bits = Signal(P)
        m.d.comb += commit_bits.eq(eng.ev_accept | eng.ev_drop)
        self.inflight_n = []
        self.heads = []
        self.q = []
        for n in range(P):
            q = [Signal(fl, name=f"fly{n}_{k}") for k in range(LOOKAHEAD)]
            qn = Signal(range(LOOKAHEAD + 2), name=f"fly{n}_n")
            take = self.src_valid[n] & getattr(eng, f"desc{n}_ready")
            done = commit_bits[n]
            d = self.src[n]
            rec = Signal(fl, name=f"rec{n}")
            m.d.comb += [rec.job.eq(d.job), rec.gslot.eq(d.gslot), rec.slot.eq(d.slot), rec.bank.eq(d.bank),
                         rec.dtype.eq(d.dtype), rec.count.eq(d.count), rec.scale.eq(d.scale),
                         rec.seq.eq(d.seq), rec.age.eq(0)]
            for k in range(LOOKAHEAD):
                # age every entry; shift on a decision; append the taken frame
                aged = Signal(fl, name=f"aged{n}_{k}")
                m.d.comb += [aged.eq(q[k]), aged.age.eq(Mux(q[k].age == 255, 255, q[k].age + 1))]
                nxt = aged
                if k + 1 < LOOKAHEAD:
                    nxt_shift = Signal(fl, name=f"shift{n}_{k}")
                    m.d.comb += [nxt_shift.eq(q[k + 1]),
                                 nxt_shift.age.eq(Mux(q[k + 1].age == 255, 255, q[k + 1].age + 1))]
                    nxt = Mux(done, nxt_shift, aged)
                with m.If(take & (qn - done == k)):
                    m.d.sync += q[k].eq(rec)
                with m.Else():
                    m.d.sync += q[k].eq(nxt)
            m.d.sync += qn.eq(qn + take - done)
            # (invariants of the harness itself, for the induction: what it holds is legal)
            with m.If(self.src_valid[n]):
                m.d.comb += Assert(legal(n, d), "env")
            for k in range(LOOKAHEAD):
                with m.If(k < qn):
                    m.d.comb += Assert(legal(n, q[k]), "env")
            # the engine never holds more frames than its lookahead, nor decides one it has not taken
            m.d.comb += [Assert(qn <= LOOKAHEAD), Assert(~done | (qn >= 1))]
            self.inflight_n.append(qn)
            self.heads.append(q[0])
            self.q.append(q)
        # one decision per cycle
        m.d.comb += Assert((commit_bits & (commit_bits - 1)) == 0)

        self.cport = cport = Signal(range(P))
        for n in range(P):
            with m.If(commit_bits[n]):
                m.d.comb += cport.eq(n)
        self.cport_bit = Signal(P)
        m.d.comb += self.cport_bit.eq(commit_bits)
        self.cf = cf = Signal(fl)
        m.d.comb += cf.eq(Array(self.heads)[cport])
        self.committing = commit_bits.any()
        self.mask_cf = Signal(P)
        m.d.comb += self.mask_cf.eq(mask_of[cf.job])

        # --- what the decision does ---------------------------------------------------------
        self.sent = Signal(P)
        m.d.comb += self.sent.eq(eng.eg_desc_en | eng.ev_drop_egress)
        rdescs = [getattr(eng, f"eg_desc{d}") for d in range(P)]
        self.unicast = Signal()
        self.rbank = Signal()
        self.rjob = Signal(job_bits(p))
        self.rslot = Signal(16)
        for d in range(P):
            with m.If(self.sent[d]):
                m.d.comb += [self.unicast.eq(rdescs[d].flags[4]), self.rbank.eq(rdescs[d].flags[0]),
                             self.rjob.eq(rdescs[d].job), self.rslot.eq(rdescs[d].slot)]
        self.wjob_valid = Signal()
        self.wjob = Signal.like(self.passes[0].job)
        for n in range(P):
            with m.If(self.passes[n].job_valid):
                m.d.comb += [self.wjob_valid.eq(1), self.wjob.eq(self.passes[n].job)]
        return self
