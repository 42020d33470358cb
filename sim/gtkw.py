"""GTKWave save files for the waveforms of a simulation.

With waves, sim/runner.py calls :func:`write_save_file` after the run: next to the dump
(``aggswitch.fst``) it writes ``aggswitch.gtkw``, which opens the dump in GTKWave with the
top-level ports in groups:

* ``clock and reset``: clk, rst;
* one group per port, ``port n``, holding two groups: ``s{n}_axis`` (worker to switch)
  and ``m{n}_axis`` (switch to worker), each tvalid, tready, tlast, tkeep, tdata;
* ``s_axil`` (AXI4-Lite): the write address, write data, write response, read address
  and read data channels, in that order;
* any other port of the export, should it get one, in ``other ports``.

The names come from the port list of the exported Verilog that was simulated (so they are
those of its parameter set), under the module's scope ``aggswitch``, which both Icarus
(``$dumpvars(0, aggswitch)``) and Verilator dump; vectors carry their range as GTKWave
names them (``aggswitch.s0_axis_tdata[511:0]``). 1-bit signals show in binary, vectors in
hexadecimal.

    gtkwave sim/out/<params>/<sim>/<test module>/<test case>/aggswitch.gtkw
"""

from __future__ import annotations

import re
from pathlib import Path

SCOPE = "aggswitch"

# GTKWave trace flags (its analyzer.h): the `@<hex>` line before the traces it applies to.
TR_HEX = 0x2
TR_BIN = 0x8
TR_RJUSTIFY = 0x20
TR_BLANK = 0x200
TR_GRP_BEGIN = 0x800000
TR_GRP_END = 0x1000000
FLAG_BIT = TR_BIN | TR_RJUSTIFY            # @28
FLAG_VECTOR = TR_HEX | TR_RJUSTIFY         # @22
FLAG_GROUP_BEGIN = TR_GRP_BEGIN | TR_BLANK  # @800200
FLAG_GROUP_END = TR_GRP_END | TR_BLANK      # @1000200

AXIS_ORDER = ("tvalid", "tready", "tlast", "tkeep", "tdata")
AXIL_ORDER = ("awvalid", "awready", "awaddr", "awprot",
              "wvalid", "wready", "wdata", "wstrb",
              "bvalid", "bready", "bresp",
              "arvalid", "arready", "araddr", "arprot",
              "rvalid", "rready", "rdata", "rresp")

_PORT_DECL = re.compile(r"^\s*(input|output|inout)\s+(?:\[(\d+):(\d+)\]\s*)?(\w+)\s*;", re.M)


def ports(verilog: str, module: str = SCOPE) -> dict[str, tuple[int, int] | None]:
    """{port name: (msb, lsb) or None for one bit} of `module` in the Verilog text, in
    declaration order."""
    start = re.search(rf"^\s*module\s+{re.escape(module)}\s*[(;]", verilog, re.M)
    if start is None:
        raise ValueError(f"no module {module} in the Verilog text")
    end = verilog.find("endmodule", start.end())
    body = verilog[start.end():end if end >= 0 else None]
    return {m[4]: (int(m[2]), int(m[3])) if m[2] is not None else None
            for m in _PORT_DECL.finditer(body)}


def trace_name(name: str, rng) -> str:
    return f"{SCOPE}.{name}" + (f"[{rng[0]}:{rng[1]}]" if rng else "")


def groups(port_list: dict) -> list:
    """The groups of the save file: [(title, [trace name | (subgroup title, [trace name])])]."""
    left = dict(port_list)

    def take(names):
        return [trace_name(n, left.pop(n)) for n in names if n in left]

    out = [("clock and reset", take(("clk", "rst")))]
    n = 0
    while f"s{n}_axis_tdata" in left or f"m{n}_axis_tdata" in left:
        out.append((f"port {n}", [
            (f"s{n}_axis (worker to switch)", take(f"s{n}_axis_{s}" for s in AXIS_ORDER)),
            (f"m{n}_axis (switch to worker)", take(f"m{n}_axis_{s}" for s in AXIS_ORDER))]))
        n += 1
    out.append(("s_axil (AXI4-Lite)", take(f"s_axil_{s}" for s in AXIL_ORDER)
                + take(sorted(p for p in left if p.startswith("s_axil_")))))
    if left:
        out.append(("other ports", take(list(left))))
    return [g for g in out if g[1]]


def save_file(dumpfile: Path, savefile: Path, port_list: dict, title: str = "") -> str:
    """The text of a GTKWave save file for `dumpfile` listing `port_list` in groups."""
    lines = ["[*]",
             f"[*] aggswitch waves{': ' + title if title else ''} (written by sim/gtkw.py)",
             "[*]",
             f'[dumpfile] "{Path(dumpfile).resolve()}"',
             f'[savefile] "{Path(savefile).resolve()}"',
             "[timestart] 0",
             "[size] 1600 900",
             "[pos] -1 -1",
             f"[treeopen] {SCOPE}.",
             "[sst_width] 240",
             "[signals_width] 320",
             "[sst_expanded] 1",
             "[sst_vpaned_height] 280"]
    flag = None

    def trace(name):
        nonlocal flag
        f = FLAG_VECTOR if name.endswith("]") else FLAG_BIT
        if f != flag:
            lines.append(f"@{f:x}")
            flag = f
        lines.append(name)

    def group(title, items):
        nonlocal flag
        lines.extend([f"@{FLAG_GROUP_BEGIN:x}", f"-{title}"])
        flag = None
        for item in items:
            if isinstance(item, tuple):
                group(*item)
            else:
                trace(item)
        lines.extend([f"@{FLAG_GROUP_END:x}", f"-{title}"])
        flag = None

    for g in groups(port_list):
        group(*g)
    lines += ["[pattern_trace] 1", "[pattern_trace] 0"]
    return "\n".join(lines) + "\n"


def write_save_file(savefile: Path, dumpfile: Path, params, sim: str, verilog: str) -> Path:
    """Write the save file of a run's dump: the ports of `verilog` (the export simulated)."""
    savefile = Path(savefile)
    savefile.write_text(save_file(dumpfile, savefile, ports(verilog), f"{params.name()} on {sim}"))
    return savefile
