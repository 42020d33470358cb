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
]
