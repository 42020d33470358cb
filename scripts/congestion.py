"""Routing congestion per block, from nextpnr router2's heatmaps (`make synth`).

router2 (`--router2-heatmap PREFIX`) writes, for each iteration i, PREFIX_congestion_by_net_i.csv:
one line per net, `name,count`, the number of overused wires the net occupies. This script
sums those counts over the blocks of the design, the instance paths of the RTL, so that a
build that does not route says which blocks' nets are fighting for wires, and one that
routes says where it had to negotiate.

A net belongs to the deepest instance whose path is a prefix of its name. Instance paths
come from the flattened netlist's `hdlname` attributes (Yosys keeps one per flattened
wire, the path as space-separated names, so a signal name with dots in it, such as a
struct field `s3.job.replace`, is not mistaken for a level of hierarchy). Copies of a block
(`pass0`, `pass1`) share a row (`pass#`), as in `make timing`'s report. nextpnr's own nets
for constants are listed as `(constants)`, nets and cells that Yosys named without a
hierarchical prefix as `(unnamed)`, those of the synthesis wrapper outside the core as
`(wrapper)`, and the core's own (between its blocks) as `(top)`.

A build that routes has no overused wire in its last iteration: its first iteration, the
demand before any negotiation, shows where it is dense.

    python scripts/congestion.py build/synth          # the heatmaps kept by make synth
    python scripts/congestion.py DIR --netlist NETLIST.json --core core
"""

import argparse
import collections
import csv
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import LUT4_EQ, normalise  # noqa: E402

HEATMAP_DIR = "heatmap"
_CSV = re.compile(r"_congestion_by_net_(\d+)\.csv$")
TOP_ROWS = 25


def load_netlist(netlist_path):
    with open(netlist_path) as f:
        return json.load(f)


def instances(design, core="core"):
    """Instance paths under the core instance `core` of the flattened Yosys netlist, dotted
    and relative to the core (`engine.pass0.decoder`), from the `hdlname` attributes."""
    found = set()
    for mod in design["modules"].values():
        for kind in ("netnames", "cells"):
            for obj in mod.get(kind, {}).values():
                hdl = obj.get("attributes", {}).get("hdlname")
                if not hdl:
                    continue
                parts = hdl.split(" ")[:-1]
                if not parts or parts[0] != core:
                    continue
                for k in range(2, len(parts) + 1):
                    found.add(".".join(parts[1:k]))
    return found


def read_counts(csv_path):
    """{net name: overused wires it occupies} from one congestion-by-net heatmap."""
    counts = {}
    with open(csv_path, newline="") as f:
        for row in csv.reader(f):
            if len(row) >= 2 and row[1].strip().lstrip("-").isdigit():
                counts[row[0]] = counts.get(row[0], 0) + int(row[1])
    return counts


class Blocks:
    """Net name -> block row, by the longest instance path that prefixes it."""

    def __init__(self, paths, core="core"):
        self.paths = set(paths)
        self.core = core + "."
        self.cache = {}

    def of(self, net):
        if net.startswith("$PACKER_"):
            return "(constants)"
        if net.startswith("$"):
            return "(unnamed)"
        if not net.startswith(self.core):
            return "(wrapper)"
        name = net[len(self.core):]
        parts = name.split(".")
        key = tuple(parts[:-1])
        if key not in self.cache:
            block = ""
            for k in range(len(parts) - 1, 0, -1):
                cand = ".".join(parts[:k])
                if cand in self.paths:
                    block = cand
                    break
            self.cache[key] = normalise(block)
        return self.cache[key]


def lut4_by_block(design, blocks):
    """{block row: LUT4-equivalents} of the netlist's cells (LUT4 1, CCU2C 2, as `make
    timing` counts them), each cell in the block its name starts with."""
    rows = collections.Counter()
    for mod in design["modules"].values():
        for name, cell in mod.get("cells", {}).items():
            w = LUT4_EQ.get(cell.get("type"), 0)
            if w:
                rows[blocks.of(name)] += w
    return rows


def by_block(counts, blocks):
    """{block row: (nets, overuse)} for one heatmap's counts."""
    rows = collections.defaultdict(lambda: [0, 0])
    for net, n in counts.items():
        if n <= 0:
            continue
        r = rows[blocks.of(net)]
        r[0] += 1
        r[1] += n
    return {k: tuple(v) for k, v in rows.items()}


def top_level(block):
    """The top-level block of a row: `engine.pass#.decoder` -> `engine`."""
    return block if block.startswith("(") else block.split(".")[0]


def heatmaps(directory):
    """[(iteration, csv path)] of the congestion-by-net heatmaps in `directory`, in order."""
    found = []
    for p in Path(directory).glob("*_congestion_by_net_*.csv"):
        m = _CSV.search(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def report(directory, netlist, core="core"):
    """The congestion of the first and the last heatmap in `directory`, by block: a dict
    with `first` and `last` ({iteration, total, rows: {block: (nets, overuse)}}), or None
    when there is no heatmap."""
    maps = heatmaps(directory)
    if not maps:
        return None
    design = load_netlist(netlist)
    blocks = Blocks(instances(design, core), core)
    out = {"lut4": lut4_by_block(design, blocks)}
    for key, (it, path) in (("first", maps[0]), ("last", maps[-1])):
        rows = by_block(read_counts(path), blocks)
        out[key] = {"iteration": it, "total": sum(v[1] for v in rows.values()), "rows": rows}
    return out


def markdown(rep, top=TOP_ROWS):
    """Two tables: the blocks with the most overuse (first and last iteration), and the
    top-level blocks."""
    first, last = rep["first"], rep["last"]
    # density of the last iteration, or of the first when nothing is left overused (routed)
    dens = last if last["total"] else first
    lut4 = rep.get("lut4", {})
    all_lut4 = sum(lut4.values())

    def density(over, total, luts, block):
        # the block's share of the overuse over its share of the logic: 1.0 is average
        # (not for the nets between blocks, the wrapper's or the constants')
        if block.startswith("(") or not (total and luts and all_lut4):
            return ""
        return f"{(over / total) / (luts / all_lut4):.2f}"

    def share(part, whole):
        return f"{100.0 * part / whole:.1f} %" if whole else "0 %"

    names = sorted(set(first["rows"]) | set(last["rows"]),
                   key=lambda b: (-last["rows"].get(b, (0, 0))[1], -first["rows"].get(b, (0, 0))[1], b))
    lines = [
        f"Overused wires per block, summed over the block's nets (a wire shared by k nets "
        f"counts k times): router2 iteration {first['iteration']} (the first, where the "
        f"demand is) and {last['iteration']} (the last kept).",
        "",
        f"`LUT4-eq`: the block's logic in the netlist; `density`: its share of iteration "
        f"{dens['iteration']}'s overuse over its share of the logic (above 1: more congested "
        f"than the average block).",
        "",
        f"| block | LUT4-eq | nets, it. {first['iteration']} | overuse, it. {first['iteration']} | share "
        f"| nets, it. {last['iteration']} | overuse, it. {last['iteration']} | share | density |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for b in names[:top]:
        fn, fo = first["rows"].get(b, (0, 0))
        ln, lo = last["rows"].get(b, (0, 0))
        lines.append(f"| `{b}` | {lut4.get(b, 0)} | {fn} | {fo} | {share(fo, first['total'])} "
                     f"| {ln} | {lo} | {share(lo, last['total'])} "
                     f"| {density(dens['rows'].get(b, (0, 0))[1], dens['total'], lut4.get(b, 0), b)} |")
    if len(names) > top:
        lines.append(f"| ({len(names) - top} more blocks) | | | | | | | | |")
    lines.append(f"| **all** | {all_lut4} | | {first['total']} | | | {last['total']} | | |")
    tops = collections.defaultdict(lambda: [0, 0])
    for b in names:
        tops[top_level(b)][0] += first["rows"].get(b, (0, 0))[1]
        tops[top_level(b)][1] += last["rows"].get(b, (0, 0))[1]
    top_lut4 = collections.Counter()
    for b, n in lut4.items():
        top_lut4[top_level(b)] += n
    lines += ["", f"| top-level block | LUT4-eq | overuse, it. {first['iteration']} | share "
                  f"| overuse, it. {last['iteration']} | share | density |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for b, (fo, lo) in sorted(tops.items(), key=lambda kv: (-kv[1][1], -kv[1][0], kv[0])):
        do = lo if dens is last else fo
        lines.append(f"| `{b}` | {top_lut4.get(b, 0)} | {fo} | {share(fo, first['total'])} "
                     f"| {lo} | {share(lo, last['total'])} "
                     f"| {density(do, dens['total'], top_lut4.get(b, 0), b)} |")
    return "\n".join(lines) + "\n"


def prune(directory):
    """Keep only the first and the last iteration's heatmaps (each iteration writes a few
    megabytes)."""
    by_iter = collections.defaultdict(list)
    for p in Path(directory).glob("*.csv"):
        m = re.search(r"_(\d+)\.csv$", p.name)
        if m:
            by_iter[int(m.group(1))].append(p)
    if len(by_iter) <= 2:
        return
    keep = {min(by_iter), max(by_iter)}
    for it, paths in by_iter.items():
        if it not in keep:
            for p in paths:
                p.unlink()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", help="make synth's output directory, or a directory of heatmaps")
    ap.add_argument("--netlist", help="the flattened Yosys netlist (default: DIR/aggswitch.json)")
    ap.add_argument("--core", default="core", help="instance name of the design in the wrapper")
    ap.add_argument("--top", type=int, default=TOP_ROWS, help="blocks listed")
    args = ap.parse_args(argv)
    d = Path(args.dir)
    hm = d
    summary = d / "summary.json"
    if summary.exists() and json.loads(summary.read_text()).get("heatmap"):
        hm = d / json.loads(summary.read_text())["heatmap"]     # make synth's last router2 attempt
    elif (d / HEATMAP_DIR).is_dir():
        subdirs = sorted((p for p in (d / HEATMAP_DIR).iterdir() if p.is_dir()),
                         key=lambda p: p.stat().st_mtime)
        hm = subdirs[-1] if subdirs else d / HEATMAP_DIR
    netlist = Path(args.netlist) if args.netlist else d / "aggswitch.json"
    rep = report(hm, netlist, args.core)
    if rep is None:
        print(f"congestion: no router2 heatmap in {hm}", file=sys.stderr)
        return 1
    print(markdown(rep, args.top), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
