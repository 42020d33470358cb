"""The Verilog export: committed copy in sync, reproducible, relocatable, SPEC §2 port list."""

import re
import shutil
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest

from aggswitch.params import Params

REPO = Path(__file__).resolve().parent.parent
COMMITTED = REPO / "rtl" / "aggswitch.v"
SMALL = Params(ports=2, data_width=128, slots=8, slot_elems=32, jobs=2)


@lru_cache(maxsize=None)
def exported(params: Params) -> str:
    """generate(params), through the simulation runner's cache: an export of the default
    parameters takes minutes, and the cocotb tests need the same text (sim/build/)."""
    from sim.runner import verilog_text
    return verilog_text(params)


def test_committed_export_is_current():
    """The committed file's first line names today's hardware sources. The simulation
    runner uses the file itself when it does (sim/runner.py), so the tests run what a
    user gets."""
    from aggswitch.export import is_current, sources_key, stamp_of
    assert COMMITTED.exists(), "rtl/aggswitch.v is missing: run `make verilog` and commit it"
    first = COMMITTED.read_text().split("\n", 1)[0]
    assert stamp_of(first) is not None, f"rtl/aggswitch.v has no export stamp: {first[:100]}"
    assert is_current(COMMITTED, Params()), (
        f"rtl/aggswitch.v ({stamp_of(first)}) is out of date with hw/ "
        f"({Params().name()}, {sources_key()}): run `make verilog` and commit the result")


def test_sources_key_follows_the_hardware(tmp_path, monkeypatch):
    """The key changes with a hardware source and with the parameters, not with the host
    library (hw/aggswitch/worker/)."""
    import aggswitch.export as export
    base = export.sources_key(Params())
    assert export.sources_key(SMALL) != base
    pkg = tmp_path / "aggswitch"
    for f in export.PACKAGE.rglob("*.py"):
        dst = pkg / f.relative_to(export.PACKAGE)
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(f.read_bytes())
    monkeypatch.setattr(export, "PACKAGE", pkg)
    assert export.sources_key(Params()) == base
    (pkg / "worker" / "client.py").write_text("# edited\n", encoding="utf-8")
    assert export.sources_key(Params()) == base
    (pkg / "engine.py").write_bytes((pkg / "engine.py").read_bytes() + b"\n")
    assert export.sources_key(Params()) != base


def test_regression_exports_are_current():
    """rtl/regression/ holds a current export of each of the regression's other parameter
    sets (sim/runner.py REGRESSION_SETS): the simulation runner uses those files instead of
    exporting the sets again (about 60 CPU-seconds of a fresh clone's `make test`)."""
    from aggswitch.export import is_current
    from sim.runner import REPO as RUNNER_REPO, committed_export, regression_sets
    stale = [str(committed_export(p).relative_to(RUNNER_REPO)) for p in regression_sets()
             if not is_current(committed_export(p), p)]
    assert not stale, (f"missing or out of date with hw/: {', '.join(stale)}: run `make "
                       "verilog` (scripts/regression_exports.py) and commit the result")


def test_regression_sets_are_the_tests_sets():
    """REGRESSION_SETS is the list of parameter sets whose exports `make test` needs besides
    the default: those of tests/test_rtl.py (in `make test`) and tests/test_lint.py."""
    from sim.runner import regression_sets
    from tests import test_lint, test_rtl
    used = {test_rtl.SMALL, test_rtl.MX_SMALL, test_rtl.MX128, test_lint.SMALL}
    assert set(regression_sets()) == used


# In `make regress`: exporting the defaults again takes minutes. `make test` checks the
# stamp above, and the reproducibility of the export on the small set below.
@pytest.mark.regress
def test_committed_export_regenerates():
    from aggswitch.export import generate
    # Compare bytes: the file is written with Path.write_text, i.e. UTF-8 and "\n".
    assert COMMITTED.read_bytes() == generate(Params()).encode(), (
        "rtl/aggswitch.v differs from a fresh export: run `make verilog` and commit the result")


def test_export_is_reproducible(tmp_path):
    # A second, independent elaboration in another interpreter, with another hash seed (set
    # iteration order), against the cached one. The small parameter set has every construct
    # of the default one; the default export is compared with the committed file above,
    # which was written by another process on another machine. It runs the command line
    # (`python -m aggswitch.export`, as `make verilog` does), which makes the directory
    # of its output file.
    out = tmp_path / "sub" / f"aggswitch_{SMALL.name()}.v"
    res = subprocess.run([sys.executable, "-m", "aggswitch.export", "--ports", str(SMALL.ports),
                          "--data-width", str(SMALL.data_width), "--slots", str(SMALL.slots),
                          "--slot-elems", str(SMALL.slot_elems), "--jobs", str(SMALL.jobs),
                          "-o", str(out)], capture_output=True, text=True, timeout=900,
                         env={"PYTHONHASHSEED": "12345", "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr[-3000:]
    assert out.read_text() == exported(SMALL)


@pytest.mark.parametrize("params", [Params(), SMALL], ids=["default", SMALL.name()])
def test_export_has_no_host_paths(params):
    text = exported(params)
    problems = []
    for n, line in enumerate(text.splitlines(), 1):
        if re.search(r"/(work|home|tmp|root|usr|opt|var|Users)/", line) \
                or re.search(r"\.py:\d+", line) or re.search(r"\bsrc\s*=", line):
            problems.append(f"{n}: {line.strip()[:120]}")
    assert not problems, ("the export names host paths or source locations "
                          "(export with emit_src=False):\n" + "\n".join(problems[:20]))


def top_module(text, name="aggswitch"):
    m = re.search(rf"^module {re.escape(name)}\s*\((.*?)\);(.*?)^endmodule", text,
                  re.S | re.M)
    assert m, f"no module `{name}` in the export"
    return m.group(1), m.group(2)


_DECL = re.compile(r"^\s*(input|output|inout)\s+(?:wire\s+|reg\s+)?(?:signed\s+)?"
                   r"(?:\[(\d+):(\d+)\]\s*)?\\?([A-Za-z_$][\w$.]*)\s*;", re.M)


def port_decls(text):
    header, body = top_module(text)
    listed = [p.strip().lstrip("\\").strip() for p in header.split(",") if p.strip()]
    decls = {}
    for direction, msb, lsb, name in _DECL.findall(body):
        width = int(msb) - int(lsb) + 1 if msb else 1
        decls[name] = (direction, width)
    return listed, decls


def spec_ports(p: Params, axil_addr_width: int):
    """SPEC §2: name -> (direction, width), seen from the switch."""
    ports = {"clk": ("input", 1), "rst": ("input", 1)}
    for n in range(p.ports):
        ports.update({
            f"s{n}_axis_tdata": ("input", p.data_width),
            f"s{n}_axis_tkeep": ("input", p.data_width // 8),
            f"s{n}_axis_tvalid": ("input", 1),
            f"s{n}_axis_tready": ("output", 1),
            f"s{n}_axis_tlast": ("input", 1),
            f"m{n}_axis_tdata": ("output", p.data_width),
            f"m{n}_axis_tkeep": ("output", p.data_width // 8),
            f"m{n}_axis_tvalid": ("output", 1),
            f"m{n}_axis_tready": ("input", 1),
            f"m{n}_axis_tlast": ("output", 1),
        })
    # AXI4-Lite slave, 32-bit data.
    a = axil_addr_width
    ports.update({
        "s_axil_awaddr": ("input", a), "s_axil_awprot": ("input", 3),
        "s_axil_awvalid": ("input", 1), "s_axil_awready": ("output", 1),
        "s_axil_wdata": ("input", 32), "s_axil_wstrb": ("input", 4),
        "s_axil_wvalid": ("input", 1), "s_axil_wready": ("output", 1),
        "s_axil_bresp": ("output", 2), "s_axil_bvalid": ("output", 1),
        "s_axil_bready": ("input", 1),
        "s_axil_araddr": ("input", a), "s_axil_arprot": ("input", 3),
        "s_axil_arvalid": ("input", 1), "s_axil_arready": ("output", 1),
        "s_axil_rdata": ("output", 32), "s_axil_rresp": ("output", 2),
        "s_axil_rvalid": ("output", 1), "s_axil_rready": ("input", 1),
    })
    return ports


@pytest.mark.parametrize("params", [Params(), SMALL], ids=["default", SMALL.name()])
def test_top_ports_match_spec(params):
    text = exported(params)
    listed, decls = port_decls(text)
    assert len(listed) == len(set(listed)), "a port is listed twice in the module header"
    # The AXI4-Lite address width is the project's choice (the register map is ours);
    # it must be the same on both channels and wide enough for a 32-bit register file.
    aw = decls.get("s_axil_awaddr", ("", 0))[1]
    assert aw == decls.get("s_axil_araddr", ("", 0))[1] and 2 < aw <= 32, \
        "s_axil_awaddr and s_axil_araddr must be declared with the same width"
    expected = spec_ports(params, aw)

    missing = sorted(set(expected) - set(listed))
    extra = sorted(set(listed) - set(expected))
    assert not missing and not extra, (f"top-level ports differ from SPEC §2: "
                                       f"missing {missing}, unexpected {extra}")
    wrong = {name: {"declared": decls.get(name), "spec": want}
             for name, want in expected.items() if decls.get(name) != want}
    assert not wrong, f"port direction/width differs from SPEC §2: {wrong}"


def test_non_default_parameters_export():
    text = exported(SMALL)
    assert re.search(r"^module aggswitch\s*\(", text, re.M)
    listed, decls = port_decls(text)
    assert "s1_axis_tdata" in decls and "s2_axis_tdata" not in decls
    assert decls["m1_axis_tdata"] == ("output", 128)
    assert decls["m1_axis_tkeep"] == ("output", 16)


def test_export_has_no_combinational_always():
    # A combinational `always @*` needs a time-0 event to compute its first value, which
    # Icarus raises in -g2005 but not in -g2012 (cocotb's default): the export writes
    # combinational logic as `assign`s only (hw/aggswitch/export.py).
    text = exported(SMALL)
    bad = [line.strip() for line in text.splitlines()
           if re.match(r"\s*always\s*@\s*\(?\s*\*", line) or "dump_module" in line]
    assert not bad, f"combinational always blocks in the export: {bad[:5]}"
    assert re.search(r"^\s*always @\(posedge clk\)", text, re.M)


YOSYS = shutil.which("yosys")


# Flattened, with every process as cells: `check -assert` fails on any problem it finds,
# among them a combinational loop (the export waives Verilator's UNOPTFLAT, which reports
# loops through whole words: hw/aggswitch/export.py, LINT_WAIVED).
LOOP_CHECK = "proc; flatten; check -assert"


@pytest.mark.parametrize("mode", ["", "-sv"], ids=["verilog", "sv"])
def test_yosys_reads_export(mode, tmp_path):
    # Debian's yosys (installed by .ci/run), not the builtin one that wrote the file. The
    # small parameter set has every construct of the default one and parses in seconds.
    # The Verilog read also checks that no bit of the export depends on itself.
    assert YOSYS, "yosys not found: install the Debian package `yosys` (see the README)"
    rtl = tmp_path / f"aggswitch_{SMALL.name()}.v"
    rtl.write_text(exported(SMALL))
    script = f"read_verilog {mode} {rtl}; hierarchy -check -top aggswitch"
    if not mode:
        script += "; " + LOOP_CHECK
    res = subprocess.run([YOSYS, "-q", "-p", script], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f"yosys {script} failed:\n{res.stdout[-3000:]}{res.stderr[-3000:]}"


def test_loop_check_finds_a_loop(tmp_path):
    """LOOP_CHECK fails on a module with a combinational loop, split over two assigns of one
    word's bits as the export's wide wires are, and passes without the loop."""
    assert YOSYS, "yosys not found: install the Debian package `yosys` (see the README)"

    def check(feedback):
        rtl = tmp_path / "loop.v"
        rtl.write_text("module loop(input wire a, output wire y);\n  wire [1:0] w;\n"
                       f"  assign w[0] = a & {feedback};\n  assign w[1] = ~w[0];\n"
                       "  assign y = w[1];\nendmodule\n")
        return subprocess.run([YOSYS, "-q", "-p", f"read_verilog {rtl}; hierarchy -top loop; "
                               + LOOP_CHECK], capture_output=True, text=True, timeout=60)
    res = check("w[1]")
    assert res.returncode != 0 and "loop" in (res.stdout + res.stderr), res.stdout + res.stderr
    res = check("a")
    assert res.returncode == 0, res.stdout + res.stderr


def continuous_targets(text, verilator=False):
    """{(module, net): number of continuous assigns that drive some of its bits}, in the
    branch of the export a simulator other than Verilator reads (or Verilator's)."""
    counts, module, skip = {}, None, False
    for line in text.splitlines():
        if line.startswith("module "):
            module = line.split()[1].split("(")[0]
        elif line == "`ifdef VERILATOR":
            skip = not verilator
        elif line == "`else":
            skip = verilator
        elif line == "`endif":
            skip = False
        elif not skip and line.startswith("  assign "):
            lhs = line[len("  assign "):].split(" = ", 1)[0]
            for target in lhs.strip("{} ").split(", "):
                net = re.match(r"(\\\S+|[^\s\[]+)", target).group(1)
                counts[(module, net)] = counts.get((module, net), 0) + 1
    return counts


@pytest.mark.parametrize("params", [Params(), SMALL], ids=["default", SMALL.name()])
def test_nets_have_one_driver_outside_verilator(params):
    # Icarus resolves a net of several drivers bit by bit on every change of any of them
    # (hw/aggswitch/export.py, one_driver_per_net): outside Verilator every net the
    # export drives with continuous assigns has one, and Verilator keeps the slices.
    text = COMMITTED.read_text() if params == Params() else exported(params)
    many = {k: n for k, n in continuous_targets(text).items() if n > 1}
    assert not many, f"nets with several continuous drivers: {sorted(many.items())[:10]}"
    sliced = {k: n for k, n in continuous_targets(text, verilator=True).items() if n > 1}
    assert sliced, "Verilator's branch lost the slices"


ONE_DRIVER_SNIPPET = r"""module m(a, b, c, x, y, z, \e$1 , g);
  input [7:0] a;
  input [7:0] b;
  input [3:0] c;
  output [19:0] x;
  output [5:0] y;
  output [7:0] z;
  output [3:0] \e$1 ;
  output [3:0] g;
  wire [19:0] x;
  wire [5:0] y;
  wire [7:0] z;
  wire [3:0] \e$1 ;
  wire [3:0] g;
  assign x[8:0] = a + b;
  assign x[12:9] = c;
  assign { y[5:3], x[19:13], \e$1 [3:2] } = { a, b } >> c;
  assign x[13] = 1'h1;
  assign y[2:0] = 3'h5;
  assign \e$1 [1:0] = a[7:6] ^ b[1:0];
  assign z[7:4] = a[3:0];
  assign g = ~c;
endmodule
"""


def test_one_driver_per_net_keeps_the_values(tmp_path):
    """The rewrite on a module with every form write_verilog uses (slices with an
    expression wider than its slice, constants, an escaped name, an assign to several
    nets), simulated in Icarus on random inputs: the concatenation, and the Verilator
    branch, give the values the slices give. x's slices overlap (bit 13 twice) and z's
    leave bits undriven: those nets are not merged."""
    from aggswitch.export import one_driver_per_net
    iverilog = shutil.which("iverilog")
    if iverilog is None:
        pytest.skip("Icarus Verilog not installed")
    snippet = ONE_DRIVER_SNIPPET.replace("  assign x[13] = 1'h1;\n", "")
    merged = one_driver_per_net(snippet)
    counts = continuous_targets(merged)
    assert counts[("m", "x")] == counts[("m", "y")] == counts[("m", "\\e$1")] == 1
    assert "`ifdef VERILATOR" in merged and "a + b" in merged
    # the partially driven z and the doubly driven x (bit 13) stay as they are
    assert one_driver_per_net(ONE_DRIVER_SNIPPET).count("assign x[") == 4
    assert "assign z[7:4]" in merged
    bench = """module tb;
  reg [7:0] a, b; reg [3:0] c; integer i;
  wire [19:0] x; wire [5:0] y; wire [7:0] z; wire [3:0] e, g;
  m dut(a, b, c, x, y, z, e, g);
  initial begin
    for (i = 0; i < 200; i = i + 1) begin
      a = $random; b = $random; c = $random; #1;
      $display("%h %h %h %h %h", x, y, z, e, g);
    end
  end
endmodule
"""
    outputs = []
    for name, text, define in (("slices", snippet, []), ("merged", merged, []),
                               ("verilator", merged, ["-DVERILATOR"])):
        src = tmp_path / f"{name}.v"
        src.write_text(text + bench)
        vvp = tmp_path / f"{name}.vvp"
        subprocess.run([iverilog, "-g2012", *define, "-o", str(vvp), str(src)], check=True)
        res = subprocess.run([shutil.which("vvp") or "vvp", "-n", str(vvp)], check=True,
                             capture_output=True, text=True)
        outputs.append(res.stdout)
    assert len(outputs[0].splitlines()) == 200
    # the carry of a + b lands in x[8]: the slice's width, not the sum's own
    assert any(int(line.split()[0], 16) & 0x100 for line in outputs[0].splitlines())
    assert outputs[1] == outputs[0] and outputs[2] == outputs[0]


@pytest.mark.regress
@pytest.mark.parametrize("index", range(4))
def test_regression_export_regenerates(index):
    from aggswitch.export import generate
    from sim.runner import committed_export, regression_sets
    params = regression_sets()[index]
    path = committed_export(params)
    assert path.read_bytes() == generate(params).encode(), (
        f"{path.name} differs from a fresh export: run `make verilog` and commit the result")
