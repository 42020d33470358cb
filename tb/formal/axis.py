"""AXI4-Stream master outputs `m{n}_axis` (hw/aggswitch/egress.py), proven by k-induction.

The top level wires each `m{n}_axis_*` straight to its port's `ResultDeparser`, so the
harness proves the deparser with every input free: the engine side (descriptors, payload
beats, `done` records, in any order and at any time, FIFOs full or not), the cycle
counter, the switch addresses, the watchdog and `tready`. What holds for any input holds
for whatever the engine really sends. The deparser (Assert):

- once it raises `tvalid`, holds it, with `tdata`, `tkeep` and `tlast`, until `tready`
  (AXI4-Stream; the design has no `tuser`);
- drives `tkeep` all ones on every beat but the last, and contiguous from bit 0 and not
  zero on the last (SPEC §2).
"""

from amaranth import *
from amaranth.hdl import Assert, Assume, Cover
from amaranth.hdl._ast import AnySeq

from aggswitch.params import Params, MX_SCALE_BYTES
from aggswitch.egress import ResultDeparser

from .common import ProofSet, reset_in_first_cycle, past_valid, past

PARAMS = Params(ports=2, data_width=128, slots=4, slot_elems=32, jobs=2)


def contiguous_from_0(keep):
    """keep is 0b0..01..1 with at least one 1."""
    return keep.any() & ((keep & (keep + 1)) == 0)


class AxiStreamHarness(Elaboratable):
    def __init__(self, p: Params = PARAMS, deparser_cls=ResultDeparser, keep=False):
        self.p = p
        self.deparser_cls = deparser_cls
        self.keep = keep             # the tkeep rules (bounded) instead of the handshake rules

    def elaborate(self, platform):
        m = Module()
        p = self.p
        reset_in_first_cycle(m)
        pv = past_valid(m)
        m.submodules.dut = eg = self.deparser_cls(p)
        for name in ("tready", "cycles", "switch_mac", "switch_ip", "agg_port", "data_in", "data_en",
                     "desc_in", "desc_en", "done_en", "done_overflow", "done_scales", "watchdog"):
            port = getattr(eg, name)
            m.d.comb += port.eq(AnySeq(len(Value.cast(port))))

        if not self.keep:
            waiting = past(m, eg.tvalid & ~eg.tready, "waiting")
            data_q, keep_q, last_q = (past(m, eg.tdata, "tdata_q"), past(m, eg.tkeep, "tkeep_q"),
                                      past(m, eg.tlast, "tlast_q"))
            with m.If(pv & ~ResetSignal() & waiting):
                m.d.comb += [Assert(eg.tvalid), Assert(eg.tdata == data_q), Assert(eg.tkeep == keep_q),
                             Assert(eg.tlast == last_q)]
        else:
            # Descriptors as the engine makes them: a payload of 1 .. max_payload_bytes bytes
            # (an MX one after its 64-byte scale line).
            d = eg.desc_in
            with m.If(eg.desc_en):
                m.d.comb += Assume((d.payload_bytes >= Mux(d.mx, MX_SCALE_BYTES + 1, 1))
                                   & (d.payload_bytes <= p.max_payload_bytes))
            with m.If(eg.tvalid):
                with m.If(eg.tlast):
                    m.d.comb += Assert(contiguous_from_0(eg.tkeep))
                with m.Else():
                    m.d.comb += Assert(eg.tkeep.all())

        m.d.comb += [Cover(eg.tvalid & ~eg.tready), Cover(eg.tvalid & eg.tready & eg.tlast),
                     Cover(eg.tvalid & eg.tlast & ~eg.tkeep.all())]
        return m


def proof_sets():
    return [
        # depth 10: the base case sends a whole frame, so a bug shows as a counterexample
        ProofSet("axis", "AXI4-Stream masters m{n}_axis: tvalid, tdata, tkeep, tlast held until tready",
                 AxiStreamHarness, mode="prove", depth=10, timeout=600, quick=True),
        ProofSet("axis_keep", "AXI4-Stream masters m{n}_axis: tkeep all ones but on the last beat, contiguous "
                 "there (SPEC §2)", lambda: AxiStreamHarness(keep=True), mode="bmc", depth=24, timeout=900),
    ]
