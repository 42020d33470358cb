"""Bounded response of the aggregation engine (liveness as a bound), bounded model check.

Environment: engine_env.py's legal descriptors, at most `FRAMES` frames per port (then the
ingress is idle), every egress able to take a RESULT (`eg_room` high, nothing past the
watchdog: `tready` high and the egress draining). Properties (Assert):

- `pick`: a frame shown to the engine is taken within `N_PICK` cycles;
- `decide`: a taken frame is decided (accepted: a slot update or a resend; or dropped
  and counted) within `N_DECIDE` cycles;
- `result`: a RESULT handed to a destination port has its payload complete in the
  result buffer and its first beat, with the done record, in that port's egress FIFO
  (`eg_done_en`) within `N_RESULT` cycles of its decision (or of the completion of the
  RESULT before it on that port, which completes first).

The depth covers every frame's worst case: all `FRAMES` frames of every port taken, each
a full slot of INT32 (the longest pass), plus the bounds.
"""

from amaranth import *
from amaranth.hdl import Assert, Assume, Cover

from aggswitch.params import Params
from aggswitch.engine import AggregationEngine

from .common import ProofSet, reset_in_first_cycle
from .engine_env import EngineEnv, CUT

PARAMS = Params(ports=2, data_width=128, slots=2, slot_elems=32, jobs=1)
FRAMES = 1          # frames per port (2 make the check too slow for the 2-core machine)
N_PICK = 3
N_DECIDE = 6
N_RESULT = 28       # 24 before the result buffer: its reader adds ports + 2 cycles


class ResponseHarness(Elaboratable):
    def __init__(self, p: Params = PARAMS, engine_cls=AggregationEngine, frames=FRAMES,
                 n_pick=N_PICK, n_decide=N_DECIDE, n_result=N_RESULT):
        self.p = p
        self.engine_cls = engine_cls
        self.frames = frames
        self.bounds = n_pick, n_decide, n_result

    def elaborate(self, platform):
        m = Module()
        p = self.p
        P = p.ports
        n_pick, n_decide, n_result = self.bounds
        reset_in_first_cycle(m)
        env = EngineEnv(p, self.engine_cls, room="always").build(m)
        eng = env.eng

        for n in range(P):
            # at most `frames` frames on this port, then the ingress is idle
            offered = Signal(range(self.frames + 2), name=f"offered{n}")
            with m.If(env.loads[n]):
                m.d.sync += offered.eq(offered + 1)
                m.d.comb += Assume(offered < self.frames)
            # pick
            wait = Signal(8, name=f"pick_wait{n}")
            ready = getattr(eng, f"desc{n}_ready")
            with m.If(env.src_valid[n] & ~ready):
                m.d.sync += wait.eq(Mux(wait == 255, 255, wait + 1))
            with m.Else():
                m.d.sync += wait.eq(0)
            m.d.comb += Assert(wait < n_pick, "pick")
            # decide: the oldest frame in flight
            with m.If(env.inflight_n[n] != 0):
                m.d.comb += Assert(env.heads[n].age < n_decide, "decide")

        for d in range(P):
            # RESULTs handed to port d and not yet complete there; complete in order
            pending = Signal(4, name=f"pending{d}")
            m.d.sync += pending.eq(pending + eng.eg_desc_en[d] - eng.eg_done_en[d])
            m.d.comb += Assert(~eng.eg_done_en[d] | (pending != 0) | eng.eg_desc_en[d], "result")
            age = Signal(8, name=f"result_age{d}")
            with m.If((pending == 0) | eng.eg_done_en[d]):
                m.d.sync += age.eq(0)
            with m.Else():
                m.d.sync += age.eq(Mux(age == 255, 255, age + 1))
            m.d.comb += Assert(age < n_result, "result")

        m.d.comb += [
            Cover(eng.eg_done_en.any()),
            Cover(eng.eg_done_en == (1 << P) - 1),
        ]
        return m


def proof_sets():
    return [
        ProofSet("response", f"bounded response: taken within {N_PICK}, decided within {N_DECIDE}, "
                 f"RESULT payload complete and first beat read within {N_RESULT} cycles", ResponseHarness,
                 mode="bmc", depth=36, cut=CUT, timeout=3000, engine="abc bmc3"),
    ]
