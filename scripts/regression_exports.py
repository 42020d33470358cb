"""Refresh the committed exports of the regression's parameter sets (rtl/regression/).

`make verilog` runs it after exporting the defaults. Each set of sim/runner.py's
REGRESSION_SETS whose file is missing, or stamped with other sources than today's
(aggswitch.export.is_current), is exported again; current files are left alone.
--check: change nothing, exit 1 if any file is missing or stale.
"""

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "hw")]

from aggswitch.export import generate, is_current  # noqa: E402
from sim.runner import committed_export, regression_sets  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only report; exit 1 if any is stale")
    args = ap.parse_args(argv)
    stale = 0
    for params in regression_sets():
        path = committed_export(params)
        rel = path.relative_to(REPO)
        if is_current(path, params):
            print(f"{rel}: current")
            continue
        stale += 1
        if args.check:
            print(f"{rel}: {'stale' if path.exists() else 'missing'}")
            continue
        print(f"{rel}: exporting {params.name()}", flush=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(generate(params))
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
