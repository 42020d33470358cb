"""`make serve`: the exported switch, simulated, as a UDP network device on 127.0.0.1.

    python -m sim.serve [--sim verilator|icarus] [--base-port N] [--host 127.0.0.1]
                        [--loss F] [--idle S] [--seed N] [--ready-file F] [--summary-file F]
                        [--job J:MASK:BASE:COUNT ...] [--ports N] [--data-width N] [--slots N] [--slot-elems N] [--jobs N]

Switch port p listens on UDP host:(base-port + p) (`--base-port 0`: ephemeral ports, see
the ready file). Workers (aggswitch.worker.Worker) send AGG datagrams there and get their
RESULTs back; tb/cocotb/serve.py describes the device. At reset job 0 is enabled on every
port over every slot; each `--job J:MASK:BASE:COUNT` (numbers in Python syntax, e.g.
`--job 1:0b1100:32:32`) writes job J's entry over AXI4-Lite before the ports open: port
mask, first slot and slot count (docs/control-plane.md). `--loss` drops that fraction of
DATA and RESULT frames at random (seeded by `--seed`). The server stops after `--idle`
seconds without a datagram, on SIGINT/SIGTERM, or when the stop file appears, and then
prints every port's counters (read over AXI4-Lite) and exits non-zero if the RTL
disagreed with the golden model.
"""

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time

from sim.runner import (REPO, SIMULATORS, _ensure_paths, add_param_args, build_and_run, out_dir_for,
                        params_from_args)

TEST_MODULE = "tb.cocotb.serve"


def counter_table(counters: dict) -> str:
    """The per-port counters as a text table (one row per port) and the global ones."""
    names = list(counters["ports"][0])
    rows = [["port"] + [n.replace("drop_", "d:") for n in names]]
    rows += [[str(p)] + [str(c[n]) for n in names] for p, c in enumerate(counters["ports"])]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in rows]
    lines.append("results %d, overflows %d, nans %d" % (counters["results"],
                                                        counters["overflows"], counters["nans"]))
    return "\n".join(lines)


def parse_job(spec: str, params) -> tuple:
    """(job, port_mask, slot_base, slot_count) of a `--job J:MASK:BASE:COUNT` option,
    checked against the parameters (ValueError)."""
    try:
        job, mask, base, count = (int(v, 0) for v in spec.split(":"))
    except ValueError:
        raise ValueError(f"--job {spec}: expected J:MASK:BASE:COUNT (integers)") from None
    if not 0 <= job < params.jobs:
        raise ValueError(f"--job {spec}: job {job} outside 0..{params.jobs - 1}")
    if not 0 < mask < 1 << params.ports:
        raise ValueError(f"--job {spec}: port mask {mask:#x} invalid for {params.ports} ports")
    if base < 0 or count < 1 or base + count > params.slots:
        raise ValueError(f"--job {spec}: slots {base}..{base + count - 1} outside 0..{params.slots - 1}")
    return job, mask, base, count


def parse_args(argv=None):
    _ensure_paths()
    from aggswitch.worker.bridge import loopback_host
    ap = argparse.ArgumentParser(prog="python -m sim.serve", description=__doc__.split("\n\n")[0])
    ap.add_argument("--sim", choices=SIMULATORS, default="verilator")
    ap.add_argument("--host", default="127.0.0.1", help="loopback address to listen on")
    ap.add_argument("--base-port", type=int, default=0x4147,
                    help="UDP port of switch port 0 (port p: base + p); 0 = ephemeral ports")
    ap.add_argument("--loss", type=float, default=0.0,
                    help="fraction of DATA and RESULT frames dropped at random")
    ap.add_argument("--idle", type=float, default=60.0, help="stop after this many seconds without a datagram")
    ap.add_argument("--seed", type=int, default=None, help="random seed (loss); default $AGGSWITCH_SEED or 1")
    ap.add_argument("--ready-file", default=None,
                    help="JSON written once every port listens (addresses); default in the run's output directory")
    ap.add_argument("--summary-file", default=None, help="JSON of the counters at the end")
    ap.add_argument("--job", action="append", default=[], metavar="J:MASK:BASE:COUNT",
                    help="configure job J (enabled) on the ports of MASK over slots "
                         "BASE..BASE+COUNT-1 before serving; repeatable")
    add_param_args(ap)
    a = ap.parse_args(argv)
    a.params = params_from_args(ap, a)
    try:
        a.jobs_table = [parse_job(j, a.params) for j in a.job]
    except ValueError as e:
        ap.error(str(e))
    try:
        loopback_host(a.host)
    except ValueError as e:
        ap.error(str(e))
    if not 0 <= a.loss < 1:
        ap.error("--loss must be in [0, 1)")
    if a.base_port and not 1024 <= a.base_port <= 65535 - a.ports:
        ap.error("--base-port must leave room for every port in 1024..65535")
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    odir = out_dir_for(a.params, a.sim, TEST_MODULE, "serve")
    odir.mkdir(parents=True, exist_ok=True)
    ready = os.path.abspath(a.ready_file or odir / "serve_ready.json")
    summary = os.path.abspath(a.summary_file or odir / "serve_summary.json")
    stop = str(odir / f"serve_stop.{os.getpid()}")
    for f in (ready, summary, stop):
        if os.path.exists(f):
            os.unlink(f)
    env = {"AGGSWITCH_SERVE_HOST": a.host, "AGGSWITCH_SERVE_BASE_PORT": a.base_port,
           "AGGSWITCH_SERVE_LOSS": a.loss, "AGGSWITCH_SERVE_IDLE": a.idle,
           "AGGSWITCH_SERVE_READY": ready, "AGGSWITCH_SERVE_SUMMARY": summary,
           "AGGSWITCH_SERVE_STOP": stop,
           "AGGSWITCH_SERVE_JOBS": ",".join(":".join(map(str, j)) for j in a.jobs_table)}

    # A signal here only asks the simulation to stop (it reads the counters first).
    def ask_stop(num, frame):
        open(stop, "w").close()
    signal.signal(signal.SIGTERM, ask_stop)
    signal.signal(signal.SIGINT, ask_stop)

    result = {}
    run = threading.Thread(target=lambda: result.update(res=build_and_run(
        a.params, a.sim, TEST_MODULE, testcase="serve", extra_env=env, seed=a.seed)),
        daemon=True)
    t0 = time.monotonic()
    print(f"aggswitch serve: {a.params.name()} on {a.sim}: building and starting", flush=True)
    run.start()
    announced = False
    while run.is_alive():
        run.join(0.2)
        if not announced and os.path.exists(ready):
            info = json.loads(open(ready).read())
            for p, (host, port) in enumerate(info["ports"]):
                print(f"  switch port {p}: udp {host}:{port}", flush=True)
            for job, mask, base, count in a.jobs_table:
                print(f"  job {job}: ports {[p for p in range(a.ports) if mask >> p & 1]}, "
                      f"slots {base}..{base + count - 1}", flush=True)
            print(f"  latency {info['latency']} cycles; loss {a.loss:g}; stops after "
                  f"{a.idle:g} s idle or on SIGINT/SIGTERM (ready in "
                  f"{time.monotonic() - t0:.1f} s)", flush=True)
            announced = True
    if os.path.exists(stop):
        os.unlink(stop)
    res = result.get("res")
    if os.path.exists(summary):
        s = json.loads(open(summary).read())
        print(f"aggswitch serve: stopped ({s['stopped']}) after {s['busy_cycles']} busy cycles, "
              f"{s['frames_in']} frames in")
        print(f"  network: {s['network']}")
        print("  " + counter_table(s["counters"]).replace("\n", "\n  "))
        for e in s["errors"]:
            print("  !", e.splitlines()[0])
    if res is None or not res.ok:
        print(res.summary() if res else "aggswitch serve: the simulation did not run", file=sys.stderr)
        return 1
    print(f"  log: {res.log_file}")
    print("PASS (every RESULT and counter as the golden model predicts)")
    return 0



class Server:
    """A `python -m sim.serve` process started by :func:`running` (see there)."""

    def __init__(self, proc, info: dict, summary_file, log_file):
        self.proc, self.info = proc, info
        self.summary_file, self.log_file = summary_file, log_file
        self.addresses = [tuple(a) for a in info["ports"]]

    def stop(self, timeout: float = 120.0) -> int:
        """SIGTERM (the server reads its counters and exits); SIGKILL to its process group
        after `timeout` seconds. Returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except Exception:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)
        return self.proc.returncode

    def summary(self) -> dict:
        return json.loads(open(self.summary_file).read())

    def log(self) -> str:
        return open(self.log_file, errors="replace").read()


@contextlib.contextmanager
def running(params, sim: str, workdir, *, loss: float = 0.0, seed: int = 1, idle: float = 60.0,
            ready_timeout: float = 900.0, jobs=()):
    """Start `python -m sim.serve` for `params` on ephemeral loopback ports in its own
    process group (files in `workdir`), wait until its ports listen (building first if
    needed, up to `ready_timeout` seconds), yield a :class:`Server`, and stop it on the way
    out (use ``Server.stop()`` first to see the exit status and summary). `jobs`:
    (job, port_mask, slot_base, slot_count) entries written before serving (`--job`)."""
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    ready, summary = os.path.join(workdir, "ready.json"), os.path.join(workdir, "summary.json")
    log = os.path.join(workdir, "serve.log")
    for f in (ready, summary):
        if os.path.exists(f):
            os.unlink(f)
    cmd = [sys.executable, "-m", "sim.serve", "--sim", sim, "--base-port", "0",
           "--loss", str(loss), "--seed", str(seed), "--idle", str(idle),
           "--ready-file", ready, "--summary-file", summary,
           "--ports", str(params.ports), "--data-width", str(params.data_width),
           "--slots", str(params.slots), "--slot-elems", str(params.slot_elems),
           "--jobs", str(params.jobs)]
    for j in jobs:
        cmd += ["--job", ":".join(str(v) for v in j)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "hw")]))
    with open(log, "w") as logf:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=logf, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    server = None
    try:
        end = time.monotonic() + ready_timeout
        while not os.path.exists(ready):
            if proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"sim.serve did not start (exit {proc.poll()}):\n"
                                   + open(log, errors="replace").read()[-3000:])
            time.sleep(0.1)
        server = Server(proc, json.loads(open(ready).read()), summary, log)
        yield server
    finally:
        if server is not None:
            server.stop()
        elif proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)


if __name__ == "__main__":
    sys.exit(main())
