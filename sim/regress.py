"""`make regress`: a pyuvm test over N random seeds in parallel, with a pass/fail line per
seed, the command that reproduces each failing seed, and the merged coverage report.

    python -m sim.regress --seeds N [--sim verilator|icarus] [--seed FIRST] [--test NAME]
                          [--parallel auto|N] [--ports N] [--data-width N] [--slots N]
                          [--slot-elems N] [--jobs N]

Seeds are random (drawn from the system's entropy) unless --seed gives the first one (then
FIRST, FIRST+1, ...). The seeds run as pytest-xdist cases of this file (``pytest -n``),
each one a cocotb run of ``tb.uvm.test_uvm`` (sim/runner.py) on the cached build. Per seed,
everything the run writes (results.xml, sim.log, uvm_summary.json, the coverage database
and report, the transcripts) lands in ``build/regress/<params>/<sim>/seed-<seed>/``; the
merged coverage of all the seeds in ``build/coverage/<params>/<sim>/`` (coverage.yml,
coverage_report.txt, coverage_summary.json). Exit status 0 when every seed passed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
REGRESS_ROOT = REPO / "build" / "regress"
COVERAGE_ROOT = REPO / "build" / "coverage"
TEST_MODULE = "tb.uvm.test_uvm"
DEFAULT_TEST = "UvmRandomTest"
ENV_VAR = "AGGSWITCH_REGRESS"   # JSON: the regression's seeds, simulator, test, parameters
PARAM_FIELDS = ("ports", "data_width", "slots", "slot_elems", "jobs")


def seed_dir(root: Path, seed: int) -> Path:
    return root / f"seed-{seed}"


def repro_command(sim: str, test: str, seed: int, params: dict) -> str:
    """The command that runs one seed again (from the repository root), with the knobs set
    in the environment (AGGSWITCH_UVM_*)."""
    from aggswitch import Params
    d = Params()
    opts = "".join(f" --{f.replace('_', '-')} {params[f]}" for f in PARAM_FIELDS
                   if params[f] != getattr(d, f))
    knobs = "".join(f"{k}={shlex.quote(v)} " for k, v in sorted(os.environ.items())
                    if k.startswith("AGGSWITCH_UVM_"))
    run = (f".venv/bin/python -m sim.runner {TEST_MODULE} --sim {sim} --testcase {test} "
           f"--seed {seed}{opts}")
    if sim == "verilator":
        run = f"PY=.venv/bin/python bash scripts/with-verilator {run}"
    return knobs + run


@contextlib.contextmanager
def _outputs_under(path: Path):
    """Run outputs of sim.runner under `path` instead of sim/out (one directory per seed:
    runs of the same test case would otherwise share sim/out/<params>/<sim>/...)."""
    import sim.runner as runner
    saved = runner.OUT_ROOT
    runner.OUT_ROOT = path
    try:
        yield
    finally:
        runner.OUT_ROOT = saved


def _find(run_dir: Path, name: str):
    hits = sorted(run_dir.rglob(name))
    return hits[0] if hits else None


# ------------------------------------------------------------ the pytest cases

def _regress_config():
    raw = os.environ.get(ENV_VAR)
    return json.loads(raw) if raw else None


_CFG = _regress_config()
_SEEDS = _CFG["seeds"] if _CFG else []

try:
    import pytest
except ImportError:   # the CLI needs no pytest
    pytest = None

if pytest is not None and _CFG:
    @pytest.mark.parametrize("seed", _SEEDS, ids=[f"seed{s}" for s in _SEEDS])
    def test_seed(seed):
        """One seed of the regression (run by `python -m sim.regress`, not by `make test`)."""
        from aggswitch import Params
        from sim.runner import build_and_run
        cfg = _CFG
        params = Params(**cfg["params"])
        root = Path(cfg["root"])
        out = seed_dir(root, seed)
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.monotonic()
        with _outputs_under(out):
            res = build_and_run(params, cfg["sim"], TEST_MODULE, testcase=cfg["test"], seed=seed)
        result = {"seed": seed, "ok": res.ok, "summary": res.summary(),
                  "wall_s": round(time.monotonic() - t0, 1),
                  "log": str(res.log_file) if res.log_file else None,
                  "repro": repro_command(cfg["sim"], cfg["test"], seed, cfg["params"])}
        out.mkdir(parents=True, exist_ok=True)
        (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
        if not res.ok:
            pytest.fail(res.summary() + "\n  reproduce: " + result["repro"], pytrace=False)


# -------------------------------------------------------------------- the CLI

def parse_args(argv=None):
    from aggswitch import Params
    d = Params()
    ap = argparse.ArgumentParser(prog="python -m sim.regress",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=8, help="number of seeds (default 8)")
    ap.add_argument("--seed", type=int, default=None, help="first seed (default: random seeds)")
    ap.add_argument("--sim", choices=("verilator", "icarus"), default="verilator")
    ap.add_argument("--test", default=DEFAULT_TEST, help=f"pyuvm test (default {DEFAULT_TEST})")
    ap.add_argument("-n", "--parallel", default="auto",
                    help="parallel runs (pytest-xdist -n; default auto)")
    ap.add_argument("--ports", type=int, default=d.ports)
    ap.add_argument("--data-width", type=int, default=d.data_width)
    ap.add_argument("--slots", type=int, default=d.slots)
    ap.add_argument("--slot-elems", type=int, default=d.slot_elems)
    ap.add_argument("--jobs", type=int, default=d.jobs, help="job-table entries (design parameter)")
    a = ap.parse_args(argv)
    if a.seeds < 1:
        ap.error("--seeds must be at least 1")
    a.params = {"ports": a.ports, "data_width": a.data_width, "slots": a.slots,
                "slot_elems": a.slot_elems, "jobs": a.jobs}
    try:
        Params(**a.params)
    except ValueError as e:
        ap.error(str(e))
    if a.seed is not None:
        a.seed_list = [a.seed + i for i in range(a.seeds)]
    else:
        r = random.SystemRandom()
        a.seed_list = sorted(r.sample(range(1, 1 << 20), a.seeds))
    return a


def merge_coverage(root: Path, seeds, out_dir: Path, title: str):
    """Merge the seeds' coverage databases and write the report; returns its summary."""
    from tb.uvm import covreport
    files, metas = [], []
    for s in seeds:
        yml = _find(seed_dir(root, s), "coverage.yml")
        meta = _find(seed_dir(root, s), "coverage_meta.json")
        if yml is not None and meta is not None:
            files.append(yml)
            metas.append(json.loads(meta.read_text()))
    if not files:
        return None
    shutil.rmtree(out_dir, ignore_errors=True)
    db = covreport.merge_files(files, out_dir / "coverage.yml")
    meta = covreport.merge_meta(metas)
    (out_dir / "coverage_meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return covreport.write_report(db, meta, out_dir, title)


def main(argv=None) -> int:
    for p in (REPO / "hw", REPO):
        if str(p) not in sys.path:
            sys.path.insert(0, str(p))
    a = parse_args(argv)
    from aggswitch import Params
    from sim.runner import build
    params = Params(**a.params)
    root = REGRESS_ROOT / params.name() / a.sim
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    print(f"==> regression: {a.test} on {a.sim}, {params.name()}, {len(a.seed_list)} seeds: "
          f"{' '.join(map(str, a.seed_list))}", flush=True)
    print(f"==> building {params.name()} for {a.sim} (cached)", flush=True)
    build(params, a.sim)

    env = dict(os.environ)
    env[ENV_VAR] = json.dumps({"seeds": a.seed_list, "sim": a.sim, "test": a.test,
                               "params": a.params, "root": str(root)})
    env.pop("AGGSWITCH_SEED", None)
    cmd = [sys.executable, "-m", "pytest", "-n", str(a.parallel), "-p", "no:cacheprovider", "-q",
           "--no-header", "-rN", str(Path(__file__).resolve())]
    print("==> " + " ".join(cmd[2:]), flush=True)
    t0 = time.monotonic()
    subprocess.run(cmd, cwd=REPO, env=env, check=False)
    wall = time.monotonic() - t0

    # ---- per-seed table
    rows, failed = [], []
    for s in a.seed_list:
        d = seed_dir(root, s)
        res = json.loads((d / "result.json").read_text()) if (d / "result.json").exists() else None
        summ = _find(d, "uvm_summary.json")
        summ = json.loads(summ.read_text()) if summ else {}
        ok = bool(res and res["ok"])
        k = summ.get("knobs", {})
        rows.append((s, "PASS" if ok else "FAIL", summ.get("cycles", "-"),
                     summ.get("chunks", "-"), k.get("window", "-"),
                     f"{k.get('data_loss', '-')}/{k.get('result_loss', '-')}",
                     f"{k.get('idle', '-')}/{k.get('backpressure', '-')}",
                     f"{res['wall_s']}s" if res else "-"))
        if not ok:
            failed.append((s, res, summ))
    print()
    head = ("seed", "result", "cycles", "chunks", "window", "loss data/result",
            "idle/backpressure", "wall")
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    for r in [head] + rows:
        print("  " + "  ".join(str(v).ljust(w) for v, w in zip(r, widths)))
    for s, res, summ in failed:
        print(f"\nFAILED seed {s}")
        errs = summ.get("first_errors") or ([res["summary"]] if res else ["no result (crashed?)"])
        for e in errs[:3]:
            print("    " + e.splitlines()[0][:300])
        if res and res.get("log"):
            print(f"    log: {res['log']}")
        print(f"    reproduce: {repro_command(a.sim, a.test, s, a.params)}")

    # ---- merged coverage
    cov_dir = COVERAGE_ROOT / params.name() / a.sim
    title = (f"aggswitch functional coverage: {a.test}, {params.name()}, {a.sim}, "
             f"{len(a.seed_list)} seeds")
    try:
        from tb.uvm.covreport import summary_line
        cov = merge_coverage(root, a.seed_list, cov_dir, title)
        if cov is not None:
            print(f"\ncoverage: {summary_line(cov)}")
            print(f"  report: {cov_dir / 'coverage_report.txt'}")
    except Exception as e:  # noqa: BLE001 -- the seeds' verdicts stand; report the problem
        print(f"\ncoverage: could not merge ({type(e).__name__}: {e})")
    n_ok = len(a.seed_list) - len(failed)
    print(f"\n{n_ok}/{len(a.seed_list)} seeds passed in {wall:.0f} s; per-seed outputs in {root}")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
