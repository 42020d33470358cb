"""hw/aggswitch/dedupe.py: identical module definitions kept once, in the export (shared
form) and in `make timing --dedupe` (wrapper form, scripts/verilog_dedupe.py).

Hand-written Verilog in write_verilog's form: copies that differ only in generated names
are one definition after it, the instantiations of a dropped copy name the kept one with
the connections mapped port by port, and Yosys proves the result equivalent to the input
(flattened, `equiv_make`, `equiv_simple`, `equiv_induct`, `equiv_status -assert`); a copy
that computes something else is kept. Every export is written in the shared form
(aggswitch.export.generate), and every simulation test runs it; `make timing` and
tests/test_timing.py also put Amaranth's own Verilog of single blocks through the wrapper
form."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
from verilog_dedupe import WRAPPED, dedupe, parse  # noqa: E402

YOSYS = shutil.which("yosys")

# Two copies of a leaf (`\top.p0.add`, `\top.p1.add`: other generated names, other port
# names, the ports in the same order), their parents (which differ only in the leaf they
# instantiate and a generated wire) and a leaf of another kind (`\top.sub`).
LEAF = """module \\top.p{i}.add (a, \\port${n}$0 , clk, q);
  wire [7:0] _{m}_;
  input [7:0] a;
  wire [7:0] a;
  input [7:0] \\port${n}$0 ;
  wire [7:0] \\port${n}$0 ;
  input clk;
  wire clk;
  output [7:0] q;
  reg [7:0] q = 8'h00;
  assign _{m}_ = a {op} \\port${n}$0 ;
  always @(posedge clk)
    q <= _{m}_;
endmodule
"""
PARENT = """module \\top.p{i} (x, y, clk, z);
  input [7:0] x;
  wire [7:0] x;
  input [7:0] y;
  wire [7:0] y;
  input clk;
  wire clk;
  output [7:0] z;
  wire [7:0] z;
  wire [7:0] \\s${n} ;
  assign \\s${n}  = y ^ 8'h5a;
  \\top.p{i}.add  add (
    .a(x),
    .clk(clk),
    .\\port${n}$0 (\\s${n} ),
    .q(z)
  );
endmodule
"""
SUB = """module \\top.sub (a, b, q);
  input [7:0] a;
  wire [7:0] a;
  input [7:0] b;
  wire [7:0] b;
  output [7:0] q;
  wire [7:0] q;
  assign q = a - b;
endmodule
"""
TOP = """(* top =  1  *)
module top(a, b, clk, q0, q1, q2);
  input [7:0] a;
  wire [7:0] a;
  input [7:0] b;
  wire [7:0] b;
  input clk;
  wire clk;
  output [7:0] q0;
  wire [7:0] q0;
  output [7:0] q1;
  wire [7:0] q1;
  output [7:0] q2;
  wire [7:0] q2;
  \\top.p0  p0 (
    .clk(clk),
    .x(a),
    .y(b),
    .z(q0)
  );
  \\top.p1  p1 (
    .clk(clk),
    .x(b),
    .y(a),
    .z(q1)
  );
  \\top.sub  sub (
    .a(q0),
    .b(q1),
    .q(q2)
  );
endmodule
"""


def design(op1="+"):
    return ("/* header */\n\n" + LEAF.format(i=0, n=11, m=3, op="+")
            + LEAF.format(i=1, n=42, m=7, op=op1) + PARENT.format(i=0, n=11)
            + PARENT.format(i=1, n=42) + SUB + TOP)


def equivalent(tmp_path, gold: str, gate: str) -> subprocess.CompletedProcess:
    (tmp_path / "gold.v").write_text(gold)
    (tmp_path / "gate.v").write_text(gate)
    prep = "hierarchy -top top; proc; flatten; opt_clean"
    script = (f"read_verilog {tmp_path / 'gold.v'}; {prep}; rename top gold; design -stash gold; "
              f"read_verilog {tmp_path / 'gate.v'}; {prep}; rename top gate; design -stash gate; "
              "design -copy-from gold -as gold gold; design -copy-from gate -as gate gate; "
              "equiv_make gold gate equiv; hierarchy -top equiv; equiv_simple -seq 2; equiv_induct; "
              "equiv_status -assert")
    return subprocess.run([YOSYS, "-q", "-p", script], capture_output=True, text=True,
                          timeout=120)


def test_copies_are_defined_once():
    out, copies = dedupe(design())
    assert copies == {"\\top.p1.add": "\\top.p0.add", "\\top.p1": "\\top.p0"}
    _, modules, _ = parse(out)
    # \top.p1.add is left out: only \top.p1's own body, now a wrapper, instantiated it
    assert [m.name for m in modules] == ["\\top.p0.add", "\\top.p0", "\\top.p1", "\\top.sub", "top"]
    p1 = modules[2]
    assert p1.header == "module \\top.p1 (x, y, clk, z);\n"
    assert p1.body == ("  input [7:0] x;\n  input [7:0] y;\n  input clk;\n  output [7:0] z;\n"
                       f"  \\top.p0  {WRAPPED} (\n    .x(x),\n    .y(y),\n    .clk(clk),\n"
                       "    .z(z)\n  );\n")
    # the modules that instantiate copies are as they were
    assert modules[-1].text() == TOP and modules[1].text() == PARENT.format(i=0, n=11)
    assert out.startswith("/* header */\n\n") and "(* top =  1  *)\nmodule top(" in out


def test_a_copy_that_computes_something_else_stays():
    out, dropped = dedupe(design(op1="-"))
    assert dropped == {}
    assert out == design(op1="-")


@pytest.mark.skipif(YOSYS is None, reason="Debian's yosys not installed")
def test_result_is_equivalent(tmp_path):
    out, dropped = dedupe(design())
    assert dropped
    res = equivalent(tmp_path, design(), out)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    # and the check can fail: the other leaf's copy computes a - b
    res = equivalent(tmp_path, design(op1="-"), out)
    assert res.returncode != 0


def test_shared_copies_are_left_out():
    """The export's form: a parent instantiates the kept definition directly, under its
    own instance name, its connections renamed to the kept definition's ports; the copy's
    definition is gone, and a parent that became identical to another is a copy too."""
    out, copies = dedupe(design(), shared=True)
    assert copies == {"\\top.p1.add": "\\top.p0.add", "\\top.p1": "\\top.p0"}
    _, modules, _ = parse(out)
    assert [m.name for m in modules] == ["\\top.p0.add", "\\top.p0", "\\top.sub", "top"]
    # the kept parent and the leaf are as they were; the top names the kept parent twice
    assert modules[0].text() == LEAF.format(i=0, n=11, m=3, op="+")
    assert modules[1].text() == PARENT.format(i=0, n=11)
    top = modules[-1].text()
    assert "\\top.p0  p0 (" in top and "\\top.p0  p1 (" in top and "\\top.p1 " not in top
    assert WRAPPED not in out
    # a copy's instance keeps its instance name and its connections, port for port
    assert "  \\top.p0  p1 (\n    .clk(clk),\n    .x(b),\n    .y(a),\n    .z(q1)\n  );\n" in top


# A top that instantiates both leaves itself, the copy's port in another order of
# connection than its declaration.
FLAT_TOP = "module top(a, b, clk, q0, q1);\n" + "".join(
    f"  {d} {w}{n};\n  wire {w}{n};\n" for d, w, n in
    (("input", "[7:0] ", "a"), ("input", "[7:0] ", "b"), ("input", "", "clk"),
     ("output", "[7:0] ", "q0"), ("output", "[7:0] ", "q1"))) + """  \\top.p0.add  a0 (
    .\\port$11$0 (b),
    .a(a),
    .clk(clk),
    .q(q0)
  );
  \\top.p1.add  a1 (
    .a(q0),
    .clk(clk),
    .\\port$42$0 (a),
    .q(q1)
  );
endmodule
"""


def flat_design(op1="+"):
    return (LEAF.format(i=0, n=11, m=3, op="+") + LEAF.format(i=1, n=42, m=7, op=op1)
            + FLAT_TOP)


def test_shared_connections_are_renamed(tmp_path):
    """A parent that is no copy keeps its text but for the copy's instance: that names the
    kept definition and connects its port names (`\\port$11$0`, not `\\port$42$0`)."""
    out, copies = dedupe(flat_design(), shared=True)
    assert copies == {"\\top.p1.add": "\\top.p0.add"}
    assert "$42" not in out
    assert ("  \\top.p0.add  a1 (\n    .a(q0),\n    .clk(clk),\n    .\\port$11$0 (a),\n"
            "    .q(q1)\n  );\n") in out
    if YOSYS:
        res = equivalent(tmp_path, flat_design(), out)
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]


def test_shared_copy_that_computes_something_else_stays():
    out, dropped = dedupe(design(op1="-"), shared=True)
    assert dropped == {} and out == design(op1="-")


@pytest.mark.skipif(YOSYS is None, reason="Debian's yosys not installed")
def test_shared_result_is_equivalent(tmp_path):
    out, dropped = dedupe(design(), shared=True)
    assert dropped
    res = equivalent(tmp_path, design(), out)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    res = equivalent(tmp_path, design(op1="-"), out)
    assert res.returncode != 0
