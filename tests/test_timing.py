"""The logic-level report of `make timing` (scripts/timing.py): its counting rules on
hand-made netlists and on real Yosys output, issue 12's 8 levels on the deep blocks alone
(`make test`), and the level budget of every block (tests/timing_budget.txt) on whole
exports (`make regress`), a ratchet: a block deeper than its budget fails, a block
shallower than its budget prints a hint to tighten it."""

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from aggswitch.export import generate
from aggswitch.params import (DTYPE_BF16, DTYPE_MXFP8_E4M3, DTYPE_MXFP8_E5M2, DTYPE_MXINT8,
                              Params)

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
import timing  # noqa: E402

YOSYS = shutil.which("yosys")
BUDGET = REPO / "tests" / "timing_budget.txt"
# The configurations the budget is checked on: the smallest legal one (about a minute of
# Yosys here), and the smallest with MX dtypes (data_width >= 256, SPEC §10.2), whose beat
# decoders have the BF16+MX and MX-only lanes and whose encoders have the MX stages
# (several minutes: `make regress` only), and four ports at 128-bit beats (the other
# parameters at their defaults), where COMMIT's checks over four ports and the decision's
# forwarding are deepest (about 8 minutes of Yosys: `make regress` only).
SMALL = Params(ports=2, data_width=128, slots=4, slot_elems=32, jobs=1)
MX_SMALL = Params(ports=2, data_width=256, slots=4, slot_elems=64, jobs=1)
P4_W128 = Params(ports=4, data_width=128)

DIRS = {
    "LUT4": ({"A", "B", "C", "D"}, {"Z"}),
    "PFUMX": ({"ALUT", "BLUT", "C0"}, {"Z"}),
    "L6MUX21": ({"D0", "D1", "SD"}, {"Z"}),
    "CCU2C": ({"A0", "B0", "C0", "D0", "A1", "B1", "C1", "D1", "CIN"}, {"S0", "S1", "COUT"}),
    "TRELLIS_FF": ({"CLK", "DI", "CE", "LSR"}, {"Q"}),
    "TRELLIS_DPR16X4": ({"WCK", "WRE", "DI", "WAD", "RAD"}, {"DO"}),
    "DP16KD": ({"CLKA", "ADA0", "DIA0", "WEA"}, {"DOA0"}),
}


class Net:
    """A hand-made Yosys JSON netlist: cells are added with their connections by net name."""

    def __init__(self):
        self.modules = {}

    def module(self, name, ports=()):
        mod = {"attributes": {}, "ports": {}, "cells": {}, "netnames": {}, "_bits": {}}
        self.modules[name] = mod
        for pname, direction in ports:
            mod["ports"][pname] = {"direction": direction, "bits": [self.bit(name, pname)]}
        return name

    def bit(self, mod, net):
        if net in ("0", "1"):
            return net
        m = self.modules[mod]
        if net not in m["_bits"]:
            m["_bits"][net] = len(m["_bits"]) + 2
            m["netnames"][net] = {"hide_name": 0, "bits": [m["_bits"][net]]}
        return m["_bits"][net]

    def cell(self, mod, name, typ, **conns):
        if typ in DIRS:
            ins, outs = DIRS[typ]
            dirs = {p: "input" if p in ins else "output" for p in conns}
        else:   # a submodule instance
            dirs = {}
        self.modules[mod]["cells"][name] = {
            "type": typ, "port_directions": dirs, "parameters": {},
            "connections": {p: [self.bit(mod, n)] for p, n in conns.items()}}

    def ff(self, mod, name, d, q):
        self.cell(mod, name, "TRELLIS_FF", CLK="clk", DI=d, Q=q)

    def json(self):
        mods = {}
        for name, m in self.modules.items():
            mods[name] = {k: v for k, v in m.items() if k != "_bits"}
        for typ in DIRS:   # the cell library, as synth_ecp5 writes it
            mods[typ] = {"attributes": {"blackbox": "1"}, "ports": {}, "cells": {}, "netnames": {}}
        return {"modules": mods}


def levels(net, top="top"):
    rep = timing.analyse(net.json(), top)
    return rep, {r["block"]: r["levels"] for r in rep["blocks"]}


def lut(net, mod, name, out, *ins):
    pins = dict(zip("ABCD", ins))
    net.cell(mod, name, "LUT4", Z=out, **pins)


def test_lut_chain_counts_each_lut():
    n = Net()
    top = n.module("top", [("clk", "input")])
    n.ff(top, "r0", "d0", "q0")
    lut(n, top, "l1", "a", "q0")
    lut(n, top, "l2", "b", "a", "q0")
    lut(n, top, "l3", "c", "b")
    n.ff(top, "r1", "c", "q1")
    lut(n, top, "l4", "d0", "q1")
    rep, lv = levels(n)
    assert rep["overall"]["levels"] == 3
    assert rep["overall"]["from"] == "q0" and rep["overall"]["to"].startswith("q1")
    assert [c["net"] for c in rep["overall"]["cells"]] == ["a", "b", "c"]
    assert rep["lut4_eq"] == 4


def test_carry_chain_is_one_level_until_it_is_left_and_reentered():
    n = Net()
    top = n.module("top", [("clk", "input")])
    n.ff(top, "ra", "x", "qa")
    n.ff(top, "rb", "x", "qb")
    # five CCU2C in a chain, entered at the first: one level at the last one's carry out
    for k in range(5):
        n.cell(top, f"c{k}", "CCU2C", A0="qa", B0="qb", CIN=f"co{k - 1}" if k else "0",
               COUT=f"co{k}", S0=f"s{k}")
    n.ff(top, "r_sum", "co4", "q_sum")
    rep, _ = levels(n)
    assert rep["overall"]["levels"] == 1
    assert rep["lut4_eq"] == 10          # two LUT4 sites per CCU2C
    # leave the chain at c0, through a LUT, and enter again at c5: 3 levels
    lut(n, top, "l", "back", "s0")
    n.cell(top, "c5", "CCU2C", A0="back", CIN="co4", COUT="co5", S0="s5")
    n.ff(top, "r_re", "s5", "q_re")
    rep, _ = levels(n)
    assert rep["overall"]["levels"] == 3
    assert rep["overall"]["to"].startswith("q_re")


def test_wide_lut_muxes_count_through_the_select_only():
    n = Net()
    top = n.module("top", [("clk", "input")])
    for r in ("a", "b", "s", "t"):
        n.ff(top, f"r{r}", "x", f"q{r}")
    lut(n, top, "l0", "f0", "qa")
    lut(n, top, "l1", "f1", "qb")
    n.cell(top, "m5", "PFUMX", ALUT="f0", BLUT="f1", C0="qs", Z="f5")
    n.cell(top, "m6", "L6MUX21", D0="f5", D1="f1", SD="qt", Z="f6")
    n.ff(top, "r_out", "f6", "q_out")
    rep, _ = levels(n)
    assert rep["overall"]["levels"] == 1      # a LUT6: one level, from a, b, s or t
    lut(n, top, "ls", "sel", "qs")            # a select that comes from logic counts
    n.cell(top, "m5b", "PFUMX", ALUT="f0", BLUT="f1", C0="sel", Z="g5")
    n.ff(top, "r_g", "g5", "q_g")
    rep, _ = levels(n)
    assert rep["overall"]["levels"] == 2 and rep["overall"]["to"].startswith("q_g")


def test_rams_and_ports_cut_and_start_paths():
    n = Net()
    top = n.module("top", [("clk", "input"), ("i", "input"), ("o", "output")])
    n.ff(top, "ra", "x", "qa")
    lut(n, top, "l0", "addr", "qa")
    n.cell(top, "lram", "TRELLIS_DPR16X4", WCK="clk", WRE="qa", DI="qa", WAD="qa",
           RAD="addr", DO="lo")          # asynchronous read: one level
    lut(n, top, "l1", "lo2", "lo")
    n.ff(top, "rl", "lo2", "ql")         # qa -> l0 -> lram -> l1 -> ql: 3
    n.cell(top, "ebr", "DP16KD", CLKA="clk", ADA0="ql", DIA0="ql", WEA="qa", DOA0="bo")
    lut(n, top, "l2", "bo2", "bo")
    n.ff(top, "rb", "bo2", "qb")         # from the block RAM output: 1
    lut(n, top, "l3", "o", "i")          # input to output: 1
    rep, lv = levels(n)
    assert rep["overall"]["levels"] == 3 and rep["overall"]["to"].startswith("ql")
    row = rep["blocks"][0]
    assert row["ram_levels"] == 1 and row["ram_path"]["to"].startswith("qb")
    assert row["ebr"] == 1 and row["lutram"] == 1


def test_hierarchy_is_flattened_into_blocks():
    n = Net()
    top = n.module("top", [("clk", "input")])
    # `sub` holds a register; `sub.comb` is combinational and belongs to `sub`; `sub`
    # passes `p` straight through to `q` (a port bit shared by two ports)
    sub = n.module("top.sub", [("clk", "input"), ("i", "input"), ("o", "output"),
                               ("p", "input"), ("q", "output")])
    comb = n.module("top.sub.comb", [("a", "input"), ("z", "output")])
    n.modules[sub]["ports"]["q"]["bits"] = n.modules[sub]["ports"]["p"]["bits"]
    lut(n, comb, "l", "z", "a")
    n.cell(sub, "comb", "top.sub.comb", a="i", z="zz")
    lut(n, sub, "l2", "zz2", "zz")
    n.ff(sub, "r", "zz2", "o")
    n.ff(top, "r0", "x", "q0")
    lut(n, top, "l0", "in", "q0")
    n.cell(top, "sub0", "top.sub", clk="clk", i="in", o="out", p="in", q="thru")
    n.cell(top, "sub1", "top.sub", clk="clk", i="thru", o="out1", p="0", q="zero")
    lut(n, top, "l1", "x2", "thru")
    n.ff(top, "r1", "x2", "q1")
    rep, lv = levels(n)
    assert lv == {"(top)": 2, "sub#": 3}
    sub_row = [r for r in rep["blocks"] if r["block"] == "sub#"][0]
    assert sub_row["instances"] == ["sub0", "sub1"]
    assert sub_row["lut4_eq"] == 2                 # its own LUT and the comb module's
    assert sub_row["path"]["from"] == "q0" and sub_row["path"]["to"].startswith("sub")
    assert sub_row["path"]["through"] == ["(top)", "sub#"]


def test_copies_that_differ_are_one_row_with_their_total():
    """Copies of one block can be different circuits (the decoder lanes come in three
    kinds): the row has the largest copy's LUTs and, in `lut4_eq_total`, all of them
    together, as the markdown table shows."""
    n = Net()
    top = n.module("top", [("clk", "input")])
    small = n.module("top.sub0", [("clk", "input"), ("i", "input"), ("o", "output")])
    lut(n, small, "l", "z", "i")
    n.ff(small, "r", "z", "o")
    big = n.module("top.sub1", [("clk", "input"), ("i", "input"), ("o", "output")])
    lut(n, big, "l1", "z1", "i")
    lut(n, big, "l2", "z2", "z1")
    lut(n, big, "l3", "z3", "z2")
    n.ff(big, "r", "z3", "o")
    n.ff(top, "r0", "x", "q0")
    n.cell(top, "sub0", "top.sub0", clk="clk", i="q0", o="out0")
    n.cell(top, "sub1", "top.sub1", clk="clk", i="q0", o="out1")
    rep, _ = levels(n)
    row = {r["block"]: r for r in rep["blocks"]}["sub#"]
    assert row["instances"] == ["sub0", "sub1"]
    assert row["lut4_eq"] == 3 and row["lut4_eq_total"] == 4
    meta = {"rtl": "x.v", "yosys_version": "0", "yosys_seconds": 0, "analysis_seconds": 0}
    assert "| `sub#` | 2 | 4 | 3 | " in timing.markdown(rep, meta)


def test_a_copys_wrapper_is_not_a_block():
    """`make timing --dedupe` (scripts/verilog_dedupe.py): a copy is a wrapper module around
    one instance, named WRAPPED, of the kept definition; its cells are the copy's block,
    named as without the wrapper."""
    n = Net()
    top = n.module("top", [("clk", "input")])
    sub = n.module("top.sub0", [("clk", "input"), ("i", "input"), ("o", "output")])
    lut(n, sub, "l", "z", "i")
    n.ff(sub, "r", "z", "o")
    wrap = n.module("top.sub1", [("clk", "input"), ("i", "input"), ("o", "output")])
    n.cell(wrap, timing.WRAPPED, "top.sub0", clk="clk", i="i", o="o")
    n.ff(top, "r0", "x", "q0")
    n.cell(top, "sub0", "top.sub0", clk="clk", i="q0", o="out0")
    n.cell(top, "sub1", "top.sub1", clk="clk", i="out0", o="out1")
    rep, lv = levels(n)
    row = {r["block"]: r for r in rep["blocks"]}
    assert lv == {"(top)": 0, "sub#": 1}
    assert row["sub#"]["instances"] == ["sub0", "sub1"] and row["sub#"]["lut4_eq"] == 1
    assert row["sub#"]["path"]["to"] in ("sub0.o (DI)", "sub1.o (DI)"), row["sub#"]["path"]
    assert timing.WRAPPED not in json.dumps(rep)


def test_own_levels_stay_in_one_top_level_block():
    """`internal_levels` (the report's "own" column): the deepest path that starts and ends
    in the same copy of a top-level block, not counting what arrives from another one."""
    n = Net()
    top = n.module("top", [("clk", "input")])
    sub = n.module("top.sub", [("clk", "input"), ("i", "input"), ("o", "output")])
    # inside: ri -> 2 LUTs -> ro; from outside: i -> 1 LUT -> ro (plus the 3 before it)
    n.ff(sub, "ri", "x", "qi")
    lut(n, sub, "a1", "n1", "qi")
    lut(n, sub, "a2", "n2", "n1", "i")
    n.ff(sub, "ro", "n2", "o")
    n.ff(top, "r0", "x", "q0")
    lut(n, top, "l0", "t0", "q0")
    lut(n, top, "l1", "t1", "t0")
    lut(n, top, "l2", "t2", "t1")
    n.cell(top, "sub0", "top.sub", clk="clk", i="t2", o="out0")
    # a second copy fed by the first one's output: a path between copies is not "own"
    lut(n, top, "l3", "t3", "out0")
    lut(n, top, "l4", "t4", "t3")
    n.cell(top, "sub1", "top.sub", clk="clk", i="t4", o="out1")
    rep, lv = levels(n)
    row = {r["block"]: r for r in rep["blocks"]}
    assert lv["sub#"] == 4                          # l0 l1 l2, then a2
    assert row["sub#"]["internal_levels"] == 2      # a1 a2, inside one copy
    assert row["sub#"]["internal_path"]["from"].startswith("sub")
    assert row["(top)"]["internal_levels"] is None  # no register of the top's own


def test_budget_file_and_check(tmp_path):
    f = tmp_path / "budget.txt"
    f.write_text("# comment\n\nengine  17  not yet pipelined\nfifo  8  issue budget\n")
    budget = timing.read_budget(f)
    assert budget == {"engine": (17, "not yet pipelined"), "fifo": (8, "issue budget")}
    path = {"from": "a", "to": "b", "through": ["x"]}
    rep = {"blocks": [{"block": "engine", "levels": 12, "path": path},
                      {"block": "fifo", "levels": 9, "path": path},
                      {"block": "new", "levels": 8, "path": path}]}
    failures, hints, stale = timing.check_budget(rep, budget)
    assert len(failures) == 1 and failures[0].startswith("fifo: 9 levels, budget 8")
    assert hints == ["engine: 12 levels, budget 17: tighten it to 12"]
    assert stale == []
    rep["blocks"][2]["levels"] = 9          # a block without an entry gets the issue's 8
    assert len(timing.check_budget(rep, budget)[0]) == 2


def _synth(tmp_path, verilog, top):
    src = tmp_path / "d.v"
    src.write_text(verilog)
    netlist, _, _ = timing.run_yosys(src, tmp_path / "out", top, YOSYS, quiet=True)
    return timing.analyse(netlist, top)


@pytest.mark.skipif(YOSYS is None, reason="yosys not found (Debian package yosys)")
def test_real_netlist_adder_and_compare(tmp_path):
    """What Yosys makes of a registered 40-bit adder (one carry chain: one level) and of a
    sum compared with a third register (a chain, then the comparison's LUTs)."""
    rep = _synth(tmp_path, """
module add40(input clk, input [39:0] a_in, input [39:0] b_in, output reg [39:0] s);
  reg [39:0] a, b;
  always @(posedge clk) begin a <= a_in; b <= b_in; s <= a + b; end
endmodule
""", "add40")
    assert rep["overall"]["levels"] == 1
    assert rep["cells"]["CCU2C"] == 20 and rep["cells"]["TRELLIS_FF"] == 120
    rep = _synth(tmp_path, """
module addcmp(input clk, input [39:0] a_in, input [39:0] b_in, input [39:0] c_in,
              output reg eq);
  reg [39:0] a, b, c;
  always @(posedge clk) begin a <= a_in; b <= b_in; c <= c_in; eq <= (a + b) == c; end
endmodule
""", "addcmp")
    assert 3 <= rep["overall"]["levels"] <= 5
    assert rep["overall"]["to"].startswith("eq")
    assert rep["overall"]["cells"][0]["type"] == "CCU2C"


def _report(params, tmp_path_factory):
    assert YOSYS, "yosys not found: install the Debian package `yosys` (see the README)"
    out = tmp_path_factory.mktemp("timing")
    rtl = out / f"aggswitch_{params.name()}.v"
    rtl.write_text(generate(params))
    netlist, _, _ = timing.run_yosys(rtl, out, "aggswitch", YOSYS, quiet=True)
    report = timing.analyse(netlist)
    (out / "timing.json").write_text(json.dumps(report, indent=1))
    return report


# In `make regress`: synthesising the export takes about 80 s of CPU at SMALL, several
# minutes at MX_SMALL and about 8 at P4_W128, too much for `make test`'s budget; the
# counting rules above stay in `make test`.
@pytest.mark.regress
@pytest.mark.parametrize("params", [SMALL, MX_SMALL, P4_W128],
                         ids=[SMALL.name(), MX_SMALL.name(), P4_W128.name()])
def test_level_budget(params, tmp_path_factory):
    """Every block at most as deep as tests/timing_budget.txt allows (8, the issue's budget,
    for a block without an entry), at 128-bit beats and at 256-bit beats with the MX
    dtypes (the decoder's MX lanes, the encoder's MX stages), and at four ports (COMMIT's
    checks over four ports). A block that got shallower prints how far its budget can be
    tightened."""
    report = _report(params, tmp_path_factory)
    failures, hints, stale = timing.check_budget(report, timing.read_budget(BUDGET))
    for h in hints:
        warnings.warn(f"timing budget can be tightened: {h}")
    assert not stale, f"entries of {BUDGET.name} that match no block: {stale}"
    assert not failures, "deeper than the budget:\n" + "\n".join(failures) + \
        f"\n(table: python scripts/timing.py on the {params.name()} export)"


# The deep blocks alone, in `make test`: each synthesised on its own (seconds of Yosys,
# where a whole export takes minutes), at four ports and 128-bit beats (MX blocks over two
# beats, the default accumulator width) and the other parameters small. An input port of
# the block counts as a register, as the register that drives it in the design. Issue 12
# named these paths: the decoder's field mux, exponent adder and shifter (its three lane
# forms), the result encoder's normaliser, rounding and MX block scale, the ingress
# verdict and its NaN scan, the RESULT header with its IPv4 checksum, and the pass from
# the decoders into the adders. `make regress` checks the whole exports (above).
DEEP = Params(ports=4, data_width=128, slots=4, slot_elems=64, jobs=1)
MX_LANE = (DTYPE_MXINT8, DTYPE_MXFP8_E4M3, DTYPE_MXFP8_E5M2)


def _deep_block(name):
    from aggswitch.codec import BeatEncoder
    from aggswitch.egress import ResultDeparser
    from aggswitch.ingress import IngressParser
    from aggswitch.numerics import ElementToFixed
    from aggswitch.passes import PortPass
    return {
        # the lanes as the beat decoder builds them (the exponent base an input)
        "decoder_lane": lambda: ElementToFixed(pipelined=True, shared_base=True),
        "decoder_lane_bf16_mx": lambda: ElementToFixed(pipelined=True, shared_base=True,
                                                       formats=(DTYPE_BF16,) + MX_LANE),
        "decoder_lane_mx": lambda: ElementToFixed(pipelined=True, shared_base=True,
                                                  formats=MX_LANE),
        "encoder": lambda: BeatEncoder(DEEP),
        "ingress": lambda: IngressParser(DEEP, 0),
        "deparser": lambda: ResultDeparser(DEEP),
        "pass": lambda: PortPass(DEEP, 0),
    }[name]()


DEEP_BLOCKS = ["decoder_lane", "decoder_lane_bf16_mx", "decoder_lane_mx", "encoder",
               "ingress", "deparser", "pass"]


def block_levels(block, name, out):
    """The block's report (scripts/timing.py) from Yosys on its own Verilog export; the
    netlist is left in `out` (block_netlist). Yosys reads the export with each set of
    identical modules defined once (`make timing TIMING_OPTS=--dedupe`): the pass's 16
    decoder lanes are three circuits, so its check takes about 7 s instead of 19. The
    other blocks have no copies; for them the flow is the plain one."""
    from amaranth.back import verilog
    rtl = out / f"{name}.v"
    rtl.write_text(verilog.convert(block, name=name))
    netlist, _, _ = timing.run_yosys(rtl, out, name, YOSYS, quiet=True, dedupe_copies=True)
    out.joinpath(".netlist").write_text(str(netlist))
    return timing.analyse(netlist, top=name)


def block_netlist(out):
    return json.loads(Path(out.joinpath(".netlist").read_text()).read_text())


def input_sinks(netlist, module, port):
    """(cell type, pin) of every cell input that a bit of `module`'s input `port` drives."""
    mod = netlist["modules"][module]
    bits = set(mod["ports"][port]["bits"])
    return {(cell["type"], pin) for cell in mod["cells"].values()
            for pin, direction in cell["port_directions"].items()
            if direction == "input" and bits & set(cell["connections"][pin])}


@pytest.mark.skipif(YOSYS is None, reason="yosys not installed")
@pytest.mark.parametrize("name", DEEP_BLOCKS)
def test_deep_block_levels(name, tmp_path):
    """Every path of the block within issue 12's 8 levels."""
    report = block_levels(_deep_block(name), name, tmp_path)
    o = report["overall"]
    assert o["levels"] <= 8, (f"{name}: {o['levels']} levels, from {o['from']} to {o['to']}: "
                              + " -> ".join(c["type"] for c in o["cells"]))
    if name == "pass":
        # The ingress buffer's block-RAM output is registered before the decoder: every bit
        # of buf_data goes straight into a flip-flop (a block RAM's clock-to-output delay
        # is several times a flip-flop's).
        sinks = input_sinks(block_netlist(tmp_path), name, "buf_data")
        assert sinks == {("TRELLIS_FF", "DI")}, sinks


@pytest.mark.skipif(YOSYS is None, reason="yosys not installed")
def test_deep_block_levels_can_fail(tmp_path):
    """The same check finds the decoder lane without its pipeline register too deep."""
    from aggswitch.numerics import ElementToFixed
    report = block_levels(ElementToFixed(pipelined=False), "decoder_lane_comb", tmp_path)
    assert report["overall"]["levels"] > 8, report["overall"]


PARITY7 = """module parity7 (input clk, input [6:0] a, output reg y);
    always @(posedge clk) y <= ^a;
endmodule
"""


@pytest.mark.skipif(YOSYS is None, reason="yosys not installed")
def test_lut_sizes_of_the_mapping(tmp_path):
    """`--lut-sizes` (scripts/ecp5_map.py) reaches Yosys' LUT mapping: a 7-input function is
    one LUT7 (an L6MUX21 over LUT4s) with synth_ecp5's own LUT4..LUT7, and two levels
    with LUT4..LUT5, none of them a LUT6 or LUT7 (no L6MUX21)."""
    import collections
    rtl = tmp_path / "parity7.v"
    rtl.write_text(PARITY7)
    found = {}
    for sizes in ("4:7", "4:5"):
        netlist, _, _ = timing.run_yosys(rtl, tmp_path / sizes.replace(":", "_"), "parity7",
                                         YOSYS, quiet=True, lut_sizes=sizes)
        cells = json.loads(netlist.read_text())["modules"]["parity7"]["cells"].values()
        found[sizes] = (collections.Counter(c["type"] for c in cells),
                        timing.analyse(netlist, top="parity7")["overall"]["levels"])
    wide, wide_levels = found["4:7"]
    narrow, narrow_levels = found["4:5"]
    assert wide["L6MUX21"] >= 1 and wide_levels == 1, found
    assert narrow["L6MUX21"] == 0 and narrow_levels == 2, found
    assert timing.LUT_SIZES == "4:7"      # the default is synth_ecp5's own (README says why)
