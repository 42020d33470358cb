"""The pin-limited wrapper `make synth` places the core in (scripts/synth.py): every core
port bit is driven from or captured into a shift register, and Icarus elaborates it."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from aggswitch.params import Params

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
import synth  # noqa: E402

SMALL = Params(ports=2, data_width=128, slots=8, slot_elems=32, jobs=2)


@pytest.fixture(scope="module")
def small_export():
    from sim.runner import verilog_text   # the export, cached with the cocotb tests'
    return verilog_text(SMALL)


def test_top_ports_match_spec_widths(small_export):
    ports = {name: (d, w) for name, d, w in synth.top_ports(small_export, "aggswitch")}
    # SPEC §2 names and widths, for ports = 2, data_width = 128
    assert ports["clk"] == ("input", 1) and ports["rst"] == ("input", 1)
    for n in range(SMALL.ports):
        assert ports[f"s{n}_axis_tdata"] == ("input", 128)
        assert ports[f"s{n}_axis_tkeep"] == ("input", 16)
        assert ports[f"s{n}_axis_tready"] == ("output", 1)
        assert ports[f"m{n}_axis_tdata"] == ("output", 128)
        assert ports[f"m{n}_axis_tready"] == ("input", 1)
    assert ports["s_axil_rdata"] == ("output", 32)
    assert ports["s_axil_wdata"] == ("input", 32)


def test_harness_connects_every_port_bit(small_export):
    ports = synth.top_ports(small_export, "aggswitch")
    text = synth.harness_verilog(ports, "aggswitch", "clk", "rst")
    ins = sum(w for n, d, w in ports if d == "input" and n not in ("clk", "rst"))
    outs = sum(w for n, d, w in ports if d == "output")
    assert f"reg [{ins - 1}:0] in_sr;" in text and f"reg [{outs - 1}:0] out_sr;" in text
    # each port once, and the slices tile the shift registers exactly
    conns = re.findall(r"\.(\w+)\((in_sr|outs)\[(\d+):(\d+)\]\)", text)
    assert sorted(n for n, *_ in conns) == sorted(n for n, d, w in ports
                                                 if n not in ("clk", "rst"))
    for reg, total in (("in_sr", ins), ("outs", outs)):
        spans = sorted((int(lo), int(hi)) for _, r, hi, lo in conns if r == reg)
        assert spans[0][0] == 0 and spans[-1][1] == total - 1
        assert all(a[1] + 1 == b[0] for a, b in zip(spans, spans[1:]))


@pytest.mark.skipif(shutil.which("iverilog") is None, reason="Icarus Verilog not installed")
def test_harness_elaborates(small_export, tmp_path):
    ports = synth.top_ports(small_export, "aggswitch")
    (tmp_path / "core.v").write_text(small_export)
    (tmp_path / "harness.v").write_text(synth.harness_verilog(ports, "aggswitch", "clk", "rst"))
    run = subprocess.run(["iverilog", "-g2005", "-s", synth.HARNESS, "-o", str(tmp_path / "h.vvp"),
                          str(tmp_path / "harness.v"), str(tmp_path / "core.v")],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert run.returncode == 0, run.stdout
    assert "warning" not in run.stdout.lower(), run.stdout


def test_adder_ports_and_wrapper():
    """The bare adder of the fmax ratio: 40-bit inputs and output, in the same wrapper."""
    ports = synth.top_ports(synth.adder_verilog(), synth.ADDER_TOP)
    assert ports == [("clk", "input", 1), ("rst", "input", 1), ("a", "input", 40),
                     ("b", "input", 40), ("s", "output", 40)]
    text = synth.harness_verilog(ports, synth.ADDER_TOP, "clk", "rst")
    assert "reg [79:0] in_sr;" in text and "reg [39:0] out_sr;" in text


@pytest.mark.skipif(shutil.which("iverilog") is None, reason="Icarus Verilog not installed")
def test_adder_adds_with_registered_inputs_and_output(tmp_path):
    """Icarus: the sum of the inputs of cycle n appears after the second clock edge."""
    (tmp_path / "adder.v").write_text(synth.adder_verilog())
    cases = [(0xFF_FFFF_FFFF, 1), (0x12_3456_789A, 0xED_CBA9_8765), (0x80_0000_0000, 0x80_0000_0001)]
    lines = ["module tb;", "  reg clk = 0; reg [39:0] a, b; wire [39:0] s;",
             f"  {synth.ADDER_TOP} dut(.clk(clk), .rst(1'b0), .a(a), .b(b), .s(s));",
             "  initial begin"]
    for x, y in cases:
        lines += [f"    a = 40'h{x:x}; b = 40'h{y:x};", "    #1 clk = 1; #1 clk = 0;",
                  "    #1 clk = 1; #1 clk = 0;", '    $display("%h", s);']
    lines += ["  end", "endmodule"]
    (tmp_path / "tb.v").write_text("\n".join(lines) + "\n")
    build = subprocess.run(["iverilog", "-g2005", "-o", str(tmp_path / "tb.vvp"),
                            str(tmp_path / "tb.v"), str(tmp_path / "adder.v")],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert build.returncode == 0, build.stdout
    run = subprocess.run(["vvp", "-n", str(tmp_path / "tb.vvp")], stdout=subprocess.PIPE, text=True)
    got = [int(v, 16) for v in run.stdout.split()]
    assert got == [(x + y) % (1 << 40) for x, y in cases]


def test_summary_shows_adder_and_ratio():
    summary = {"clock": "clk", "target_mhz": 50.0, "fmax_mhz": 100.0, "router": "router2",
               "seed": 1, "part": "LFE5U-85F", "package": "CABGA381", "rtl": "rtl/x.v",
               "yosys_version": "0.23", "synthesis": {"LUT4": 10, "TRELLIS_FF": 5},
               "adder": {"width": 40, "fmax_mhz": 250.0, "target_mhz": 400.0}}
    rows = {label: value for label, value, _ in synth.fmax_rows(summary)}
    assert rows["fmax bare 40-bit adder (MHz)"] == "250.00"
    assert rows["fmax / adder fmax"] == "0.400"
    assert "| fmax / adder fmax | | 0.400" in synth.markdown(summary)
    summary["fmax_mhz"] = None          # the design did not route: no ratio
    rows = {label: value for label, value, _ in synth.fmax_rows(summary)}
    assert rows["fmax / adder fmax"] == "n/a" and rows["fmax bare 40-bit adder (MHz)"] == "250.00"
