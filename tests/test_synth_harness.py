"""The pin-limited wrapper `make synth` places the core in (scripts/synth.py): every core
port bit is driven from or captured into a shift register, and Icarus elaborates it."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from aggswitch.export import generate
from aggswitch.params import Params

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
import synth  # noqa: E402

SMALL = Params(ports=2, data_width=128, slots=8, slot_elems=32, jobs=2)


@pytest.fixture(scope="module")
def small_export():
    return generate(SMALL)


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
