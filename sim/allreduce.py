"""`make sim`: an AllReduce through the exported switch, with a summary.

    python -m sim.allreduce [--sim verilator|icarus] [--waves 0|1] [--pcap 0|1] [--seed N] [--dtype int32]
                            [--elems N] [--ports N] [--data-width N] [--slots N]
                            [--slot-elems N] [--jobs N] [--idle-speed 0|1] [--idle-cycles N]
                            [--threads N]

One worker per port all-reduces a random tensor of `--elems` elements, chunked into
`slot_elems`-element DATA frames over a window of slots with bank alternation (the cocotb
test tb/cocotb/test_allreduce.py describes the protocol). Every element is checked against
a NumPy sum and every RESULT frame against the golden model. Prints elements, frames,
cycles, throughput as a fraction of line rate, latency and mismatches; exits non-zero on
any mismatch or failure. Outputs (log, summary JSON, with --waves 1 the FST waveform and its
GTKWave save file, with --pcap 1 the capture test_allreduce.pcapng of every frame on every
port, tb/pcap.py) go to sim/out/<params>/<sim>/test_allreduce/test_allreduce/.

With --idle-speed 1 it runs tb/cocotb/test_speed.py instead: the model with the clock
toggling (cocotb's C++ clock) and nothing else for --idle-cycles cycles, and prints the
idle simulation speed;
then its test_cost_per_cycle: what one coroutine resumed per cycle, the ingress tdata writes
and the egress reads of a busy cycle add to it (CPU time per cycle, --idle-cycles each).

--threads N (Verilator): the model evaluates each cycle on N threads (sim/runner.py); `make
sim` passes 2. The results are the same; the wall time is shorter and the CPU time longer.
"""

import argparse
import json
import sys
import time

from sim.runner import (GTKW_FILE, SIMULATORS, WAVES_FILE, _ensure_paths, add_param_args, build_and_run,
                        model_threads, params_from_args)

# dtype names of SPEC §4 (codes 0..5, in this order).
DTYPE_NAMES = ("int32", "fp32", "bf16", "mxint8", "mxfp8_e4m3", "mxfp8_e5m2")


def _positive(text):
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return v


def parse_args(argv=None):
    _ensure_paths()
    ap = argparse.ArgumentParser(prog="python -m sim.allreduce", description=__doc__.split("\n\n")[0])
    ap.add_argument("--sim", choices=SIMULATORS, default="verilator")
    ap.add_argument("--waves", type=int, choices=(0, 1), default=0, help="record waveforms")
    ap.add_argument("--pcap", type=int, choices=(0, 1), default=0,
                    help="capture every frame of every port as pcapng (tb/pcap.py)")
    ap.add_argument("--seed", type=int, default=None, help="random seed (default $AGGSWITCH_SEED or 1)")
    ap.add_argument("--dtype", choices=DTYPE_NAMES, default="int32")
    ap.add_argument("--elems", type=_positive, default=65536, help="elements per worker")
    ap.add_argument("--idle-speed", type=int, choices=(0, 1), default=0,
                    help="measure the idle model's speed (clock only) instead of the AllReduce")
    ap.add_argument("--idle-cycles", type=_positive, default=100000,
                    help="cycles of the --idle-speed measurement")
    ap.add_argument("--threads", type=_positive, default=1,
                    help="Verilator model threads (at most the CPUs available)")
    add_param_args(ap)
    a = ap.parse_args(argv)
    a.params = params_from_args(ap, a)
    from aggswitch.ingress import supported_dtypes
    if DTYPE_NAMES.index(a.dtype) not in supported_dtypes(a.params):
        ap.error(f"--dtype {a.dtype}: MX dtypes need data_width >= 256 (a 32-element "
                 f"block within one beat)")
    return a


def format_summary(s: dict) -> str:
    lat = (f"{s['latency_min']} .. {s['latency_max']} cycles"
           if s.get("latency_min") is not None else "n/a")
    rows = [
        ("simulator", f"{s['sim']}, {s['params']}, {s['dtype']}, seed {s['seed']}"),
        ("elements", f"{s['elements']} per worker x {s['workers']} workers "
                     f"({s['chunks_per_worker']} chunks each, window of {s['window_slots']} slots)"),
        ("frames in / out", f"{s['frames_in']} ({s['frames_accepted']} accepted) / {s['frames_out']}"),
        ("cycles", f"{s['cycles']} (first ingress beat to last egress beat; "
                   f"ingress alone {s['ingress_cycles']})"),
        ("throughput", f"{s['throughput']:.3f} of line rate "
                       f"(ingress only: {s['throughput_ingress']:.3f}; "
                       f"{s['accepted_ingress_bytes']} bytes accepted)"),
        ("latency", f"{lat} (documented idle latency {s['latency_documented']})"),
        ("mismatches", f"{s['mismatches']} elements, {s['wrong_headers']} headers, "
                       f"{s['scoreboard_errors']} scoreboard errors"),
    ]
    if s.get("cycles_per_second"):
        rows.append(("sim speed", f"{s['cycles_per_second']:,.0f} cycles/s ({s['sim_speed_cycles']} "
                                  f"cycles in {s['sim_speed_seconds']:.2f} s of traffic, "
                                  f"testbench included)"))
    if s.get("cycles_per_cpu_second"):
        rows.append(("sim speed (CPU)", f"{s['cycles_per_cpu_second']:,.0f} cycles per CPU second "
                                        f"({s['sim_speed_cpu_seconds']:.2f} s of CPU time)"))
    if s["dtype"] != "int32":
        rows[4:4] = [
            ("elements/cycle", f"{s['elements_per_cycle']:.2f} aggregated per cycle "
                               f"({s['elements'] * s['workers']} contributions)"),
            ("wire size", f"{s['wire_bytes_per_worker']} bytes per worker, "
                          f"{s['compression_vs_fp32']:.2f}x smaller than FP32"),
            ("accuracy", f"max |error| {s['max_abs_error']:.3g}, relative RMS error "
                         f"{s['rms_error_relative']:.3g} against the float64 sum "
                         f"(job scale 2^{s['scale']})"),
        ]
    w = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{w}}  {v}" for k, v in rows)


def _threads_text(a) -> str:
    n = model_threads(a.sim, a.threads)
    return f" ({n} model threads)" if n > 1 else ""


def idle_speed(a) -> int:
    """--idle-speed 1: the model alone (tb/cocotb/test_speed.py)."""
    res = build_and_run(a.params, a.sim, "tb.cocotb.test_speed", testcase="test_idle_speed",
                        extra_env={"AGGSWITCH_IDLE_CYCLES": a.idle_cycles}, seed=a.seed,
                        waves=bool(a.waves), threads=a.threads)
    print(f"aggswitch idle model: {a.params.name()} on {a.sim}{_threads_text(a)}")
    f = res.out_dir / "idle_speed.json"
    if f.exists():
        s = json.loads(f.read_text())
        print(f"  {'idle speed':<15}  {s['cycles_per_second']:,.0f} cycles/s ({s['cycles']} cycles "
              f"in {s['seconds']:.2f} s under cocotb: its C++ clock, no Python in the window)")
    print(f"  {'log':<15}  {res.log_file}")
    if not res.ok:
        print(res.summary(), file=sys.stderr)
        return 1
    # where a busy cycle goes besides the testbench's logic (tb/cocotb/test_speed.py)
    res = build_and_run(a.params, a.sim, "tb.cocotb.test_speed", testcase="test_cost_per_cycle",
                        extra_env={"AGGSWITCH_IDLE_CYCLES": a.idle_cycles}, seed=a.seed,
                        waves=bool(a.waves), threads=a.threads)
    f = res.out_dir / "cost_per_cycle.json"
    if f.exists():
        print(f"  cost per cycle (CPU time of the simulation process, {a.idle_cycles} cycles each):")
        for st in json.loads(f.read_text())["stages"]:
            print(f"    {st['stage']:<40}  {st['us_per_cycle_cpu']:7.1f} us/cycle")
    print(f"  {'log':<15}  {res.log_file}")
    if not res.ok:
        print(res.summary(), file=sys.stderr)
        return 1
    print("PASS")
    return 0


def main(argv=None) -> int:
    a = parse_args(argv)
    if a.idle_speed:
        return idle_speed(a)
    env = {"AGGSWITCH_ELEMS": a.elems, "AGGSWITCH_DTYPE": a.dtype, "AGGSWITCH_PCAP": a.pcap}
    t0 = time.monotonic()
    res = build_and_run(a.params, a.sim, "tb.cocotb.test_allreduce", testcase="test_allreduce",
                        extra_env=env, seed=a.seed, waves=bool(a.waves), threads=a.threads)
    wall = time.monotonic() - t0
    summary_file = res.out_dir / "allreduce_summary.json"
    print(f"aggswitch AllReduce: {a.params.name()} on {a.sim}{_threads_text(a)}")
    if summary_file.exists():
        s = json.loads(summary_file.read_text())
        print(format_summary(s))
        for e in s.get("scoreboard_first_errors", []):
            print("  !", e.splitlines()[0])
    else:
        print("  no summary written (the simulation failed before the end)")
    print(f"  {'wall time':<15}  {wall:.1f} s")
    print(f"  {'log':<15}  {res.log_file}")
    if a.waves:
        for what, f in (("waves", res.out_dir / WAVES_FILE), ("gtkwave", res.out_dir / GTKW_FILE)):
            print(f"  {what:<15}  {f if f.exists() else '(none written)'}")
    if a.pcap:
        pcap = res.out_dir / "test_allreduce.pcapng"
        print(f"  {'capture':<15}  {pcap if pcap.exists() else '(none written)'}")
    if not res.ok:
        print(res.summary(), file=sys.stderr)
        return 1
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
