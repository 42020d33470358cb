"""`make train`: a small real model trained with PyTorch DDP three ways, one of them with
every gradient all-reduced by the simulated RTL.

    python -m sim.train [--sim verilator|icarus] [--dtype int32] [--loss F] [--steps N]
                        [--seed N] [--python /usr/bin/python3] [--out build/train] ...
                        [--ports N] [--data-width N] [--slots N] [--slot-elems N] [--jobs N]

This process (the project's venv) starts `python -m sim.serve` (the exported RTL under
cocotb as a UDP device, sim/serve.py) on ephemeral loopback ports, then runs
examples/ddp_compare.py in the system Python (Debian's python3-torch and python3-sklearn):
one worker process per switch port, each training three replicas of a 64-32-10 MLP on
scikit-learn's digits side by side,

1. plain DDP (gloo's float all-reduce),
2. the switch hook's quantisation summed exactly by gloo on int64,
3. the DDP hook through the switch (aggswitch.worker.ddp),

then stops the server (which checks every RESULT and counter against the golden model)
and reports per-step loss, final loss and test accuracy and simulated cycles per step,
writes build/train/<tag>.json and plots the loss curves into build/train/<tag>.png (tag:
the dtype, with the loss rate when there is one). It fails unless run 3's parameters are
bit-identical to run 2's after every step, run 3 ends within LOSS_TOL / ACC_TOL of run 1
in training loss and test accuracy, the parameters agree across the ranks and the server
agreed with the golden model. Cycles per step are the differences between the switch's
cycle counter in the last RESULT of consecutive steps (the simulation only runs while the
switch has work, so they do not depend on how fast the workers compute).

Every wait is bounded: the server's start (30 minutes, a build included) and stop (2
minutes), a worker's all-reduce (`--deadline`), gloo's collectives (30 s more), and the
workers themselves: each writes its output to build/train/workers-<tag>/rank<r>.log, and
when one fails or writes nothing for 2 x deadline + 60 s, every worker writes its Python
stacks into its log and is killed, and the run fails with the end of every log
(aggswitch.worker.ranks, examples/ddp_compare.py; this process does the same, 60 s later,
should ddp_compare.py itself not end).
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from sim.runner import REPO, SIMULATORS, _ensure_paths, params_from_args

RUNS = ("gloo", "quant", "switch")
LABELS = {"gloo": "(1) DDP, gloo float all-reduce",
          "quant": "(2) hook's quantisation, gloo int64 sum",
          "switch": "(3) DDP hook through aggswitch"}
# run 3 against run 1 at the end: training-set loss (absolute) and test accuracy
LOSS_TOL = 0.02
ACC_TOL = 0.02
# Defaults: small enough that the build and 300 steps take a few minutes; MX needs
# data_width >= 256.
DEFAULT_PARAMS = {"ports": 4, "data_width": 256, "slots": 16, "slot_elems": 64, "jobs": 1}
TORCH_PYTHON = os.environ.get("AGGSWITCH_TORCH_PYTHON", "/usr/bin/python3")


def parse_args(argv=None):
    _ensure_paths()
    ap = argparse.ArgumentParser(prog="python -m sim.train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--sim", choices=SIMULATORS, default="verilator")
    ap.add_argument("--dtype", default="int32", help="SPEC §4 dtype name of the switch hook")
    ap.add_argument("--loss", type=float, default=0.0,
                    help="fraction of DATA and RESULT frames the server drops at random")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1, help="model, data order and frame loss")
    ap.add_argument("--lr", type=float, default=0.5)
    ap.add_argument("--batch", type=int, default=64, help="global batch, split over the workers")
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--scale", type=int, default=16, help="job scale: values travel as RNE(x * 2^scale)")
    ap.add_argument("--world", type=int, default=None, help="worker processes (default: one per port)")
    ap.add_argument("--timeout", type=float, default=None,
                    help="seconds before a worker retransmits a chunk (default 0.5 without frame "
                         "loss, 0.2 with)")
    ap.add_argument("--deadline", type=float, default=60.0,
                    help="seconds a worker's all-reduce may take before it fails; a worker that "
                         "writes nothing for 2 x deadline + 60 s fails the run (see below)")
    ap.add_argument("--python", default=TORCH_PYTHON,
                    help="interpreter with torch and scikit-learn for the workers")
    ap.add_argument("--out", default=str(REPO / "build" / "train"))
    ap.add_argument("--print-every", type=int, default=25)
    ap.add_argument("--plot", action=argparse.BooleanOptionalAction, default=True,
                    help="plot the loss curves (matplotlib, the `bench` extra)")
    for f, v in DEFAULT_PARAMS.items():
        ap.add_argument(f"--{f.replace('_', '-')}", type=int, default=v)
    a = ap.parse_args(argv)
    a.params = params_from_args(ap, a)
    a.world = a.params.ports if a.world is None else a.world
    if a.timeout is None:
        # Lossless: well above a round trip (a window of every worker's frames queued in the
        # simulation), so no spurious retransmission adds cycles. With loss every lost frame
        # costs a timeout, and a spurious retransmission is harmless.
        a.timeout = 0.2 if a.loss else 0.5
    if not 2 <= a.world <= a.params.ports:
        ap.error(f"--world must be 2..{a.params.ports} (one worker per switch port)")
    if a.batch % a.world:
        ap.error("--batch must be a multiple of the worker count")
    if not 0 <= a.loss < 1:
        ap.error("--loss must be in [0, 1)")
    from aggswitch.worker.convert import dtype_code
    from aggswitch.worker.wire import is_mx
    try:
        code = dtype_code(a.dtype)
    except ValueError as e:
        ap.error(str(e))
    a.dtype = a.dtype.lower() if isinstance(a.dtype, str) else a.dtype
    if is_mx(code) and a.params.data_width < 256:
        ap.error("MX dtypes need --data-width 256 or more")
    return a


def have_torch(python: str) -> bool:
    probe = ("import importlib.util as u, sys; "
             "sys.exit(not all(u.find_spec(m) for m in ('torch', 'sklearn', 'numpy')))")
    try:
        return subprocess.run([python, "-c", probe], capture_output=True, timeout=120).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def analyse(ranks: list, summary: dict, a) -> dict:
    """The comparison: per-step loss of each run (mean over the workers), bit-identity of
    runs 3 and 2, cycles per step, final figures and the verdicts."""
    n = min(len(r["steps"]) for r in ranks)
    loss = {name: [sum(r["steps"][s]["loss"][name] for r in ranks) / len(ranks) for s in range(n)]
            for name in RUNS}
    identical = [all(r["steps"][s]["identical"] for r in ranks) for s in range(n)]
    ts = [ranks[0]["steps"][s]["timestamp"] for s in range(n)]
    cycles = [None] + [(ts[s] - ts[s - 1]) & 0xFFFFFFFF if None not in (ts[s], ts[s - 1]) else None
                       for s in range(1, n)]
    final = ranks[0]["final"]
    same = all(all(r["params_equal_across_ranks"].values()) for r in ranks)
    d_loss = final["switch"]["train_loss"] - final["gloo"]["train_loss"]
    d_acc = final["switch"]["test_accuracy"] - final["gloo"]["test_accuracy"]
    stats = {}
    for r in ranks:
        for k, v in r["stats"].items():
            stats[k] = stats.get(k, 0) + v
    checks = {
        "every worker finished every step": all(r["ok"] for r in ranks) and n == a.steps,
        "switch parameters bit-identical to quant after every step": n > 0 and all(identical),
        f"switch within {LOSS_TOL} of gloo in training loss": abs(d_loss) <= LOSS_TOL,
        f"switch within {ACC_TOL} of gloo in test accuracy": abs(d_acc) <= ACC_TOL,
        "parameters equal on every worker": same,
        "server: every RESULT and counter as the golden model predicts":
            summary.get("error_count", 1) == 0 and summary.get("status") == 0,
    }
    measured = [c for c in cycles if c is not None]
    return {
        "params": a.params.name(), "sim": a.sim, "dtype": a.dtype, "loss_rate": a.loss,
        "steps": n, "workers": len(ranks), "parameters": ranks[0]["parameters"],
        "lr": a.lr, "batch": a.batch, "scale": a.scale, "seed": a.seed,
        "loss": loss, "identical": identical, "timestamps": ts, "cycles": cycles,
        "cycles_per_step": {"mean": sum(measured) / len(measured) if measured else None,
                            "min": min(measured, default=None), "max": max(measured, default=None)},
        "busy_cycles": summary.get("busy_cycles"), "final": final,
        "delta_vs_gloo": {"train_loss": d_loss, "test_accuracy": d_acc},
        "first_difference": next((s for s, ok in enumerate(identical) if not ok), None),
        "worker_stats": stats, "network": summary.get("network", {}),
        "counters": summary.get("counters"), "server_errors": summary.get("errors", []),
        "seconds": max(r["seconds"] for r in ranks), "checks": checks,
        "ok": all(checks.values()),
    }


def report(res: dict, every: int) -> str:
    lines = [f"aggswitch train: {res['workers']} workers, {res['parameters']} parameters, "
             f"{res['steps']} steps, {res['dtype']} at scale {res['scale']}, frame loss "
             f"{res['loss_rate']:g}; switch {res['params']} on {res['sim']}", "",
             "per-step loss (mean over the workers' shards), switch cycles per step:",
             f"  {'step':>5}  {'(1) gloo':>9}  {'(2) quant':>9}  {'(3) switch':>10}  "
             f"{'(3)==(2)':>8}  {'cycles':>7}"]
    for s in range(res["steps"]):
        if s % every == 0 or s == res["steps"] - 1:
            c = res["cycles"][s]
            lines.append(f"  {s:>5}  {res['loss']['gloo'][s]:>9.4f}  {res['loss']['quant'][s]:>9.4f}  "
                         f"{res['loss']['switch'][s]:>10.4f}  {'yes' if res['identical'][s] else 'NO':>8}  "
                         f"{'-' if c is None else c:>7}")
    cps = res["cycles_per_step"]
    ident = sum(res["identical"])
    lines += ["", f"  {'run':<40}  {'final loss':>10}  {'test acc.':>9}  {'vs (1)':>16}  "
              f"{'params == (2)':>15}  cycles/step",
              f"  {'':<40}  {'(train set)':>10}  {'(360)':>9}  {'loss, accuracy':>16}"]
    for name in RUNS:
        f = res["final"][name]
        if name == "gloo":
            vs = "-"
        else:
            vs = (f"{f['train_loss'] - res['final']['gloo']['train_loss']:+.4f}, "
                  f"{f['test_accuracy'] - res['final']['gloo']['test_accuracy']:+.3f}")
        eq = {"gloo": "-", "quant": "-",
              "switch": f"{ident}/{res['steps']} steps"}[name]
        cyc = (f"{cps['mean']:.0f} ({cps['min']}..{cps['max']})"
               if name == "switch" and cps["mean"] is not None else "-")
        lines.append(f"  {LABELS[name]:<40}  {f['train_loss']:>10.4f}  {f['test_accuracy']:>9.3f}  "
                     f"{vs:>16}  {eq:>15}  {cyc}")
    st, net = res["worker_stats"], res["network"]
    lines += ["", f"switch: {res['busy_cycles']} busy cycles; workers sent "
                  f"{st.get('retransmissions', 0)} retransmissions, took "
                  f"{st.get('unicast_results', 0)} unicast resends; the server lost "
                  f"{net.get('lost_data', 0)} DATA and {net.get('lost_results', 0)} RESULT frames; "
                  f"{res['seconds']:.0f} s of training"]
    if res["first_difference"] is not None:
        lines.append(f"(3) and (2) first differ after step {res['first_difference']}")
    for e in res["server_errors"][:5]:
        lines.append("server: " + e.splitlines()[0])
    lines.append("")
    lines += [f"  {'ok ' if ok else 'FAIL'} {what}" for what, ok in res["checks"].items()]
    return "\n".join(lines)


def plot(res: dict, path: Path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax, dx, bx) = plt.subplots(3, 1, figsize=(8, 8), sharex=True,
                                     gridspec_kw={"height_ratios": [3, 1.2, 1]})
    steps = range(res["steps"])
    styles = {"gloo": ("tab:blue", "-", 2.5), "quant": ("tab:orange", "--", 1.5),
              "switch": ("tab:green", ":", 1.5)}
    for name in RUNS:
        color, ls, lw = styles[name]
        f = res["final"][name]
        ax.plot(steps, res["loss"][name], color=color, ls=ls, lw=lw,
                label=f"{LABELS[name]} (test acc. {f['test_accuracy']:.3f})")
    ax.set_yscale("log")
    ax.set_ylabel("training loss (batch)")
    loss_note = f", {res['loss_rate']:g} frame loss" if res["loss_rate"] else ""
    ax.set_title(f"{res['workers']} workers, {res['parameters']}-parameter MLP on digits, "
                 f"{res['dtype']}{loss_note}\nswitch {res['params']} ({res['sim']})", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    for name in ("quant", "switch"):
        color, ls, lw = styles[name]
        dx.plot(steps, [q - g for q, g in zip(res["loss"][name], res["loss"]["gloo"])],
                color=color, ls=ls, lw=lw)
    dx.axhline(0, color="tab:blue", lw=1)
    dx.set_ylabel("loss minus (1)")
    dx.grid(True, alpha=0.3)
    cyc = [c if c is not None else float("nan") for c in res["cycles"]]
    bx.plot(steps, cyc, color="tab:green", lw=1)
    bx.set_ylabel("switch cycles\nper step")
    bx.set_xlabel("step")
    bx.set_ylim(bottom=0)
    bx.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def worker_stall(a) -> float:
    """Seconds a worker may write nothing before examples/ddp_compare.py ends them all
    (--stall): one all-reduce deadline waiting for a peer, then gloo's timeout (deadline +
    30 s), with 30 s to spare."""
    return 2 * a.deadline + 60


def run_workers(cmd, log_dir, world: int, stall: float) -> int:
    """Run examples/ddp_compare.py (`cmd`) in its own session and return its exit status.
    ddp_compare.py bounds its own wait for the ranks; should it still write nothing into
    the ranks' logs for `stall` seconds, or should this process be ended, every process of
    the session is asked for its stacks (SIGUSR1, faulthandler in the ranks), killed, and
    the end of every rank's log is printed."""
    from aggswitch.worker.ranks import end_processes, log_sizes, tails
    proc = subprocess.Popen(cmd, cwd=REPO, start_new_session=True)
    sizes, changed = None, time.monotonic()
    try:
        while True:
            try:
                return proc.wait(1.0)
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            new = log_sizes(log_dir, world)
            if new != sizes:
                sizes, changed = new, now
            elif now - changed > stall:
                print(f"aggswitch train: the workers wrote nothing for {stall:g} s: ending them",
                      file=sys.stderr, flush=True)
                break
    finally:
        if proc.poll() is None:
            end_processes(session_pids(proc.pid))
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
            print(tails(log_dir, world), file=sys.stderr, flush=True)
    return proc.returncode if proc.returncode is not None else 1


def session_pids(sid: int) -> list:
    """Every process of session `sid` (Linux /proc)."""
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.getsid(int(d)) == sid:
                    pids.append(int(d))
            except OSError:
                pass
    return pids


def main(argv=None) -> int:
    a = parse_args(argv)
    if not have_torch(a.python):
        print(f"aggswitch train: {a.python} cannot import torch, sklearn and numpy "
              "(Debian: apt-get install python3-torch python3-sklearn; see the README)",
              file=sys.stderr)
        return 2
    from sim.serve import running
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = a.dtype + (f"-loss{a.loss:g}" if a.loss else "")
    ranks_file = out / f"{tag}.ranks.json"
    if ranks_file.exists():
        ranks_file.unlink()
    log_dir = out / f"workers-{tag}"
    shutil.rmtree(log_dir, ignore_errors=True)
    log_dir.mkdir()
    print(f"aggswitch train: {a.world} workers ({a.python}, logs in {log_dir}), switch "
          f"{a.params.name()} on {a.sim} (building it first if needed; server log in "
          f"{out / ('serve-' + tag)})", flush=True)
    # SIGTERM ends the run like Ctrl-C: the workers are killed and the server stopped
    signal.signal(signal.SIGTERM, lambda num, frame: sys.exit(128 + num))
    t0 = time.monotonic()
    with running(a.params, a.sim, out / f"serve-{tag}", loss=a.loss, seed=a.seed,
                 idle=600, ready_timeout=1800) as srv:
        print(f"  switch ready after {time.monotonic() - t0:.0f} s: ports "
              + ", ".join(f"{h}:{p}" for h, p in srv.addresses[:a.world]), flush=True)
        cmd = [a.python, str(REPO / "examples" / "ddp_compare.py"),
               "--switch", ",".join(f"{h}:{p}" for h, p in srv.addresses[:a.world]),
               "--world", str(a.world), "--dtype", a.dtype, "--scale", str(a.scale),
               "--steps", str(a.steps), "--batch", str(a.batch), "--lr", str(a.lr),
               "--hidden", str(a.hidden), "--seed", str(a.seed),
               "--slot-elems", str(a.params.slot_elems), "--window", str(a.params.slots),
               "--timeout", str(a.timeout), "--print-every", str(a.print_every),
               "--json", str(ranks_file), "--deadline", str(a.deadline),
               "--log-dir", str(log_dir), "--stall", str(worker_stall(a))]
        returncode = run_workers(cmd, log_dir, a.world, worker_stall(a) + 60)
        status = srv.stop()
        summary = srv.summary() if os.path.exists(srv.summary_file) else {}
        summary["status"] = status
    if returncode != 0 or not ranks_file.exists():
        print(f"aggswitch train: the workers failed (exit {returncode}); server exit {status}, "
              f"log {srv.log_file}; the workers' logs are in {log_dir}", file=sys.stderr)
        return 1
    ranks = json.loads(ranks_file.read_text())
    res = analyse(ranks, summary, a)
    res["wall_seconds"] = time.monotonic() - t0
    (out / f"{tag}.json").write_text(json.dumps(res, indent=1))
    outputs = [out / f"{tag}.json"]
    if a.plot:
        outputs.append(out / f"{tag}.png")
        plot(res, outputs[-1])
    print()
    print(report(res, a.print_every))
    print(f"\noutputs: {', '.join(map(str, outputs))} ({res['wall_seconds']:.0f} s in all)")
    print("PASS" if res["ok"] else "FAIL")
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
