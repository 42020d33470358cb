"""Deliberate bugs, one per property set at least, that the proofs must catch.

A mutant is a copy of one design module (hw/aggswitch/<module>.py) with one source
replacement, loaded under another name: the design in hw/ is never changed, and a mutant
whose anchor text has gone (the design changed) fails loudly instead of silently testing
nothing. `python -m tb.formal --mutants` runs every mutant against the property set it
names and expects FAIL; docs/testplan.md lists which bug kills which property.
"""

import importlib.util
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import aggswitch

HW = Path(aggswitch.__file__).resolve().parent


@dataclass(frozen=True)
class Mutant:
    name: str
    module: str           # aggswitch.<module>
    old: str              # exact source text, found exactly once
    new: str
    proof: str            # the ProofSet it runs against
    kills: str            # the property (or group) expected to fail
    why: str
    groups: tuple = ()    # rounds: only these property groups (so the kill is this property's)


def load(mutant: Mutant) -> types.ModuleType:
    """The module `aggswitch.<mutant.module>` with the mutation applied, as a new module
    (`aggswitch._mutant_<name>`) importing the rest of the package as usual."""
    path = HW / f"{mutant.module}.py"
    src = path.read_text()
    n = src.count(mutant.old)
    if n != 1:
        raise ValueError(f"mutant {mutant.name}: its anchor occurs {n} times in {path.name}, not once")
    name = f"aggswitch._mutant_{mutant.name}"
    mod = types.ModuleType(name)
    mod.__file__ = str(path)
    mod.__package__ = "aggswitch"
    sys.modules[name] = mod
    exec(compile(src.replace(mutant.old, mutant.new), f"{path.name} (mutant {mutant.name})", "exec"),
         mod.__dict__)
    return mod


MUTANTS = [
    # --- AXI4-Lite (control.py) -------------------------------------------------------------
    Mutant("axil_b_drop", "control", "        with m.Elif(self.bready):\n            m.d.sync += bvalid.eq(0)",
           "        with m.Else():\n            m.d.sync += bvalid.eq(0)",
           "axil", "BVALID held until BREADY",
           "the write response is withdrawn after one cycle whatever BREADY"),
    Mutant("axil_unmapped_okay", "control", "m.d.sync += [rdata.eq(0), rresp.eq(RESP_SLVERR)]",
           "m.d.sync += [rdata.eq(0), rresp.eq(RESP_OKAY)]",
           "axil", "SLVERR per docs/registers.md",
           "a read of an unmapped address answers OKAY"),
    Mutant("axil_read_twice", "control", "        m.d.comb += [self.arready.eq(~rvalid), self.rvalid.eq(rvalid),",
           "        m.d.comb += [self.arready.eq(1), self.rvalid.eq(rvalid),",
           "axil", "one answer per request",
           "ARREADY stays high while a read answer is pending: a second read is taken and one answer is lost"),

    # --- AXI4-Stream (egress.py) ---------------------------------------------------------------
    Mutant("axis_overwrite", "egress", "        can_load = ~out_valid | self.tready",
           "        can_load = C(1, 1)",
           "axis", "tvalid/tdata held until tready",
           "a beat waiting for tready is overwritten by the next one"),
    # --- round bookkeeping (engine.py), each against its own property group ------------------------
    Mutant("every_add_completes", "engine", "completes = adds & ((mask & ~new_bitmap) == 0)",
           "completes = adds",
           "rounds_mutant", "result_complete", "a round completes at its first contribution",
           ("result_complete",)),
    Mutant("new_round_keeps_bitmap", "engine", "new_bitmap.eq(Mux(act_new, 0, mb.bitmap) | port_bit)",
           "new_bitmap.eq(mb.bitmap | port_bit)",
           "rounds_mutant", "result_complete", "a new round starts with the previous round's bitmap",
           ("result_complete",)),
    Mutant("silent_completion", "engine", "emits = resend | completes",
           "emits = resend",
           "rounds_mutant", "one_multicast", "the frame that completes a round sends no RESULT",
           ("one_multicast",)),
    Mutant("duplicate_adds", "engine", "            adds = new | join\n",
           "            adds = new | join | dup\n",
           "rounds_mutant", "drop_no_state", "a duplicate also adds its payload and updates the slot",
           ("drop_no_state",)),
    Mutant("mismatch_joins", "engine", "join = ~bit_set & in_progress & fields_match",
           "join = ~bit_set & in_progress",
           "rounds_mutant", "drop_no_state", "a mismatching frame joins the round as well as being dropped",
           ("drop_no_state",)),
    Mutant("resend_incomplete", "engine",
           "resend = bit_set & meta.complete\n            dup = bit_set & ~meta.complete\n",
           "resend = bit_set\n            dup = C(0, 1)\n",
           "rounds_mutant", "resend", "a duplicate in a round in progress triggers a resend",
           ("resend",)),
    Mutant("resend_multicast", "engine", "dest.eq(Mux(act_resend, port_bit, mask))",
           "dest.eq(mask)",
           "rounds_mutant", "resend", "a resend goes to every port of the job",
           ("resend",)),
    Mutant("no_bank_clear", "engine", "other.bitmap.eq(Mux(adds, mo.bitmap & ~port_bit, mo.bitmap))",
           "other.bitmap.eq(mo.bitmap)",
           "rounds_mutant", "bank_clear", "a contribution to bank b leaves the worker's bit in bank 1 - b",
           ("bank_clear",)),
    Mutant("write_wrong_slot", "engine", "meta_wr[b].addr.eq(c.gslot),",
           "meta_wr[b].addr.eq(lead.gslot),",
           "rounds_mutant", "in_range", "COMMIT writes the metadata of DECIDE's slot",
           ("in_range",)),
    Mutant("no_forwarding", "engine", "same_slot = c_writes & (c.gslot == lead.gslot)",
           "same_slot = C(0, 1)",
           "rounds_mutant", "shadow", "DECIDE does not see COMMIT's write to the same slot (stale metadata)",
           ("shadow",)),
    # --- bounded response (engine.py) ---------------------------------------------------------------
    Mutant("late_passes", "engine", "lead_e, lead_r = advance(period, phase, JOB_LEAD, JOB_LEAD, P)",
           "lead_e, lead_r = advance(period + 16, phase, JOB_LEAD, JOB_LEAD, P)",
           "response", "result", "every pass starts 32 cycles later than it could"),
]
