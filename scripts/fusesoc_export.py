#!/usr/bin/env python3
"""FuseSoC generator `aggswitch_export` (aggswitch_export.core): exports aggswitch for a
parameter set into the generator's working directory and writes the core that names the
file and the lint waivers (rtl/lint_waivers.vlt).

FuseSoC runs it as `python3 scripts/fusesoc_export.py GEN.yml`, GEN.yml holding the
`parameters` of the `generate` section (ports, data_width, slots, slot_elems, jobs; the
ones not given keep their defaults) and `vlnv`, the name of the core to write. The export
needs the project's Python environment: when `aggswitch` does not import, the script runs
itself again with the repository's .venv/bin/python (`make venv`).

A parameter set whose export the repository keeps (rtl/aggswitch.v for the defaults,
rtl/regression/ for the regression's sets) is copied when its first line says it comes
from today's sources (`aggswitch.export.is_current`): it is byte for byte what exporting
again would write (tests/test_export.py), and elaborating the defaults takes minutes.
"""

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIELDS = ("ports", "data_width", "slots", "slot_elems", "jobs")


def committed(params) -> Path:
    """Where the repository keeps the export of `params` (a path that does not exist for
    a set it does not keep)."""
    from aggswitch.params import Params
    if params == Params():
        return REPO / "rtl" / "aggswitch.v"
    return REPO / "rtl" / "regression" / f"aggswitch_{params.name()}.v"


def main(argv):
    try:
        import yaml
        from aggswitch.export import generate, is_current
        from aggswitch.params import Params
    except ImportError:
        venv_python = REPO / ".venv" / "bin" / "python"
        if venv_python.exists() and Path(sys.prefix).resolve() != venv_python.parent.parent.resolve():
            os.execv(str(venv_python), [str(venv_python), __file__, *argv])
        raise
    config = yaml.safe_load(Path(argv[0]).read_text())
    given = config.get("parameters") or {}
    unknown = sorted(set(given) - set(FIELDS))
    if unknown:
        sys.exit(f"aggswitch_export: unknown parameters {unknown} (known: {', '.join(FIELDS)})")
    params = Params(**{k: int(v) for k, v in given.items()})
    rtl = f"aggswitch_{params.name()}.v"
    kept = committed(params)
    if is_current(kept, params):
        print(f"aggswitch_export: {kept.relative_to(REPO)} is current: copied to {rtl}")
        Path(rtl).write_text(kept.read_text())
    else:
        print(f"aggswitch_export: exporting {params.name()} to {rtl}")
        Path(rtl).write_text(generate(params))
    # the lint waivers go along: Verilator reads them before the Verilog
    Path("lint_waivers.vlt").write_text((REPO / "rtl" / "lint_waivers.vlt").read_text())
    core = {"name": config["vlnv"],
            "filesets": {"waivers": {"files": ["lint_waivers.vlt"], "file_type": "vlt"},
                         "rtl": {"files": [rtl], "file_type": "verilogSource"}},
            "targets": {"default": {"filesets": ["waivers", "rtl"], "toplevel": "aggswitch"}}}
    Path(config["vlnv"].split(":")[2] + ".core").write_text("CAPI=2:\n" + yaml.safe_dump(core))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "hw"))
    sys.exit(main(sys.argv[1:]))
