"""`make bench`: offered load and latency of the exported switch under the traffic
patterns of issue 11, in every dtype the build admits.

    python -m sim.bench [--sim verilator|icarus] [--seed N] [--frames N]
                        [--patterns lockstep,skew,...] [--dtypes int32,bf16,...]
                        [--ports N] [--data-width N] [--slots N] [--slot-elems N] [--jobs N]
                        [--threads N]

Runs tb/cocotb/test_bench.py (the patterns, the hosts and the checks are described there)
on the exported RTL under cocotb with the cocotbext-axi bus models, then prints a table,
writes build/bench/bench.json and plots build/bench/bench.png (matplotlib, the `bench`
extra). The table and the JSON also record the simulation speed (simulated cycles per
second of wall time, per run and overall; --threads N: a Verilator model evaluated on N
threads, as `make bench` runs it, see sim/runner.py). Every RESULT is checked against the golden model; the run fails (exit status 1)
on any mismatch or scoreboard error, after writing the outputs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from sim.allreduce import DTYPE_NAMES, _positive
from sim.runner import (REPO, SIMULATORS, _ensure_paths, add_param_args, build_and_run, model_threads,
                        params_from_args)

PATTERNS = ("lockstep", "skew", "jitter", "random_order", "loss", "mixed_jobs",
            "stalled_port")
DEFAULT_FRAMES = 384    # DATA frames per worker and pattern: about 10 minutes at the defaults
DEFAULT_STALL = 20000   # cycles the stalled port's tready is held low
OUT_DIR = REPO / "build" / "bench"


def _names(known):
    def parse(text):
        names = tuple(x.strip().lower() for x in text.split(",") if x.strip())
        bad = [x for x in names if x not in known]
        if bad or not names:
            raise argparse.ArgumentTypeError(f"unknown {', '.join(bad) or '(empty)'}; "
                                             f"known: {', '.join(known)}")
        return names
    return parse


def parse_args(argv=None):
    _ensure_paths()
    ap = argparse.ArgumentParser(prog="python -m sim.bench",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--sim", choices=SIMULATORS, default="verilator")
    ap.add_argument("--seed", type=int, default=None, help="random seed (default 1)")
    ap.add_argument("--frames", type=_positive, default=DEFAULT_FRAMES,
                    help=f"DATA frames (chunks) per worker and pattern (default {DEFAULT_FRAMES})")
    ap.add_argument("--stall", type=_positive, default=DEFAULT_STALL,
                    help=f"cycles the stalled port's tready is held low (default {DEFAULT_STALL})")
    ap.add_argument("--patterns", type=_names(PATTERNS), default=PATTERNS,
                    help=f"comma-separated subset of {','.join(PATTERNS)}")
    ap.add_argument("--dtypes", type=_names(DTYPE_NAMES), default=DTYPE_NAMES,
                    help="comma-separated dtypes (default: all; those the build refuses are "
                         "skipped)")
    ap.add_argument("--threads", type=_positive, default=1,
                    help="Verilator model threads (at most the CPUs available)")
    ap.add_argument("--out", type=Path, default=OUT_DIR, help="output directory")
    ap.add_argument("--flip-result", type=int, default=0, metavar="N",
                    help=argparse.SUPPRESS)  # test hook: corrupt the N-th RESULT
    add_param_args(ap)
    a = ap.parse_args(argv)
    a.params = params_from_args(ap, a)
    from aggswitch.ingress import supported_dtypes
    ok = supported_dtypes(a.params)
    a.skipped_dtypes = [x for x in a.dtypes if DTYPE_NAMES.index(x) not in ok]
    a.dtypes = tuple(x for x in a.dtypes if DTYPE_NAMES.index(x) in ok)
    if not a.dtypes:
        ap.error(f"none of the dtypes is supported by {a.params.name()}")
    return a


# ------------------------------------------------------------------------ report

def _lat(lat) -> str:
    if not lat or lat.get("n", 0) == 0:
        return "n/a"
    med = lat["median"]
    med = f"{med:g}" if isinstance(med, float) else str(med)
    return f"{lat['min']}/{med}/{lat['max']}"


def _speed(cps) -> str:
    return f"{cps:,.0f}" if cps else "n/a"


def sim_speed(runs) -> dict:
    """Simulated cycles per second of wall time over every run (the model's build and
    start-up excluded), testbench included."""
    cycles = sum(r.get("sim_cycles", 0) for r in runs)
    wall = sum(r.get("wall_s", 0.0) for r in runs)
    return {"sim_cycles": cycles, "sim_seconds": round(wall, 2),
            "cycles_per_second": round(cycles / wall) if wall > 0 else None}


def format_table(data: dict) -> str:
    """The per-(pattern, dtype) table, then one line per stalled-port run."""
    head = ("pattern", "dtype", "accepted", "of presented", "stalls", "dropped", "per port",
            "latency min/med/max", "RESULTs", "retx", "mismatches", "cycles/s")
    rows = []
    for r in data["runs"]:
        rows.append((r["pattern"], r["dtype"], f"{r['accepted']:.3f}", f"{r['presented']:.3f}",
                     str(r.get("stall_cycles", "n/a")), str(r.get("dropped_beats", "n/a")),
                     " ".join(f"{x:.2f}" for x in r["per_port"]), _lat(r["latency"]),
                     str(r["results_checked"]), str(r["hosts"]["retransmissions"]),
                     str(r["mismatches"]), _speed(r.get("cycles_per_second"))))
    w = [max(len(x) for x in col) for col in zip(head, *rows)]
    line = lambda cells: "  ".join(c.ljust(n) for c, n in zip(cells, w)).rstrip()  # noqa: E731
    out = [line(head), line(["-" * n for n in w])] + [line(r) for r in rows]
    for r in data["runs"]:
        s = r.get("stall")
        if not s:
            continue
        c = s["counters_at_stall_end"] or {}
        drops = {k: v for k, v in c.items() if k.startswith("drop_") and v}
        out.append(f"stalled_port {r['dtype']}: ports {','.join(map(str, s['other_ports']))} "
                   f"(other job) accepted {s['others_accepted']:.3f} over their window of "
                   f"{s['others_window_cycles']} cycles; port {s['port']} stalled "
                   f"{s['cycles']} cycles, its counters at the end of the stall: "
                   + ", ".join(f"{k} {v}" for k, v in c.items()
                               if not k.startswith("drop_"))
                   + (", " + ", ".join(f"{k} {v}" for k, v in drops.items()) if drops
                      else ", no drops"))
    return "\n".join(out)


def plot(data: dict, path: Path) -> bool:
    """Grouped bar chart: accepted fraction per pattern (groups) and dtype (bars); for
    stalled_port, that of the ports outside the stalled port's job."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    runs = data["runs"]
    patterns = list(dict.fromkeys(r["pattern"] for r in runs))
    dtypes = list(dict.fromkeys(r["dtype"] for r in runs))
    val = {(r["pattern"], r["dtype"]): r["stall"]["others_accepted"] if r.get("stall")
           else r["accepted"] for r in runs}
    fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(patterns) + 2), 4.2))
    width = 0.8 / max(1, len(dtypes))
    for k, dt in enumerate(dtypes):
        xs = [i + (k - (len(dtypes) - 1) / 2) * width for i in range(len(patterns))]
        ax.bar(xs, [val.get((p, dt), 0.0) for p in patterns], width, label=dt)
    ax.set_xticks(range(len(patterns)), [p.replace("stalled_port", "stalled_port\n(other job)")
                                         for p in patterns], fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.axhline(1.0, color="grey", linewidth=0.6)
    ax.set_ylabel("accepted fraction of line rate")
    ax.set_title(f"aggswitch {data['params']} on {data['sim']}: accepted ingress load "
                 f"(seed {data['seed']}, {data['frames']} frames/worker)", fontsize=9)
    ax.legend(fontsize=7, ncol=min(6, len(dtypes)), loc="upper right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv=None) -> int:
    a = parse_args(argv)
    env = {"AGGSWITCH_BENCH_PATTERNS": ",".join(a.patterns),
           "AGGSWITCH_BENCH_DTYPES": ",".join(a.dtypes),
           "AGGSWITCH_BENCH_FRAMES": a.frames, "AGGSWITCH_BENCH_STALL": a.stall}
    if a.flip_result:
        env["AGGSWITCH_BENCH_FLIP"] = a.flip_result
    print(f"aggswitch bench: {a.params.name()} on {a.sim}, patterns {','.join(a.patterns)}, "
          f"dtypes {','.join(a.dtypes)}"
          + (f" (not supported by this build: {','.join(a.skipped_dtypes)})"
             if a.skipped_dtypes else "")
          + f", {a.frames} frames per worker", flush=True)
    t0 = time.monotonic()
    res = build_and_run(a.params, a.sim, "tb.cocotb.test_bench", testcase="test_bench",
                        extra_env=env, seed=a.seed, threads=a.threads)
    wall = time.monotonic() - t0
    raw_file = res.out_dir / "bench_raw.json"
    if not raw_file.exists():
        print("  no results written (the simulation failed before the first pattern ended)")
        print(res.summary(), file=sys.stderr)
        return 1
    data = json.loads(raw_file.read_text())
    data.update(sim=a.sim, model_threads=model_threads(a.sim, a.threads), wall_s=round(wall, 1), passed=res.ok,
                skipped_dtypes=a.skipped_dtypes, log=str(res.log_file))
    data["mismatches"] = sum(r["mismatches"] for r in data["runs"])
    data["errors"] = sum(len(r["errors"]) for r in data["runs"])
    data["sim_speed"] = sim_speed(data["runs"])
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "bench.json").write_text(json.dumps(data, indent=1) + "\n")
    print(format_table(data))
    print(f"  accepted: accepted ingress bytes per cycle / (ports * data_width/8) over the "
          f"window (first beat to the last first-copy tlast); of presented: beats taken / "
          f"(beats + tvalid-without-tready cycles), 1.0 without back-pressure; stalls: "
          f"those cycles; dropped: beats taken in frames the switch dropped (duplicates, "
          f"mismatches); latency: RESULT first tvalid - DATA "
          f"tlast (documented idle latency {data['latency_documented']})")
    print(f"  checked {sum(r['results_checked'] for r in data['runs'])} RESULTs against the "
          f"golden model: {data['mismatches']} mismatches, {data['errors']} errors")
    sp = data["sim_speed"]
    print(f"  sim speed   {_speed(sp['cycles_per_second'])} cycles/s ({sp['sim_cycles']:,} "
          f"cycles in {sp['sim_seconds']:.1f} s of the runs, testbench included, {a.sim}, "
          f"{data['model_threads']} model thread(s))")
    png = a.out / "bench.png"
    if plot(data, png):
        print(f"  plot        {png}")
    else:
        print("  plot        skipped: matplotlib is not installed (the `bench` extra)")
    print(f"  json        {a.out / 'bench.json'}")
    print(f"  log         {res.log_file}")
    print(f"  wall time   {wall:.1f} s")
    for r in data["runs"]:
        for e in r["errors"][:3]:
            print(f"  ! {r['pattern']}/{r['dtype']}: {e.splitlines()[0]}")
    if not res.ok or data["mismatches"] or data["errors"]:
        print(res.summary(), file=sys.stderr)
        print("FAIL")
        return 1
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
