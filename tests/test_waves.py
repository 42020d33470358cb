"""Waveforms (`WAVES=1`, `--waves 1`): both simulators write FST, and a GTKWave save file
(sim/gtkw.py) next to it groups the ports by bus.

The dump is read back with pywellen (an independent FST reader): it must be FST, cover the
simulated cycles, and hold every signal the save file names, with the width the name
gives. The save file is checked line by line against the format GTKWave reads."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import pywellen

from aggswitch import Params
from sim import gtkw
from sim.runner import GTKW_FILE, WAVES_FILE, build_and_run, verilog_text
from tb.cocotb.harness import CLK_PERIOD_NS
from tests.groups import model

SMALL = Params(ports=2, data_width=128, slots=8, slot_elems=32, jobs=2)

# The keys of a save file's `[key] value` lines that GTKWave 3.3 reads (savefile.c).
GTKW_KEYS = {"*", "dumpfile", "dumpfile_mtime", "dumpfile_size", "savefile", "timestart", "size", "pos",
             "treeopen", "sst_width", "signals_width", "sst_expanded", "sst_vpaned_height",
             "pattern_trace", "color", "markername", "ruler"}


def parse_gtkw(text: str):
    """Check `text` against GTKWave's save file syntax; returns ({key: [values]}, groups),
    groups as {title path (tuple): [trace names directly in it]}. Raises AssertionError."""
    keys, groups = {}, {}
    stack = []        # open group titles
    flags = None      # the flags of the last @ line
    pending = None    # "begin"/"end": a group flag waiting for its -title line
    for n, line in enumerate(text.splitlines(), 1):
        where = f"line {n}: {line!r}"
        assert line and line == line.strip(), where
        if pending:
            assert line.startswith("-"), f"{where}: a group flag must be followed by -title"
            if pending == "begin":
                stack.append(line[1:])
                groups[tuple(stack)] = []
            else:
                assert stack and stack[-1] == line[1:], f"{where}: closes a group that is not open"
                stack.pop()
            pending = None
            continue
        if line.startswith("["):
            m = re.fullmatch(r"\[([a-z_*]+)\](?: (.*))?", line)
            assert m and m[1] in GTKW_KEYS, where
            keys.setdefault(m[1], []).append(m[2])
        elif line.startswith("@"):
            assert re.fullmatch(r"@[0-9a-f]+", line), where
            flags = int(line[1:], 16)
            if flags & gtkw.TR_GRP_BEGIN:
                pending = "begin"
            elif flags & gtkw.TR_GRP_END:
                pending = "end"
        elif line.startswith("-"):
            raise AssertionError(f"{where}: a -comment line outside a group flag")
        else:
            assert flags is not None and not flags & (gtkw.TR_GRP_BEGIN | gtkw.TR_GRP_END | gtkw.TR_BLANK), \
                f"{where}: a trace needs trace flags first"
            assert re.fullmatch(r"[A-Za-z_$][\w$]*(\.[A-Za-z_$][\w$]*)+(\[\d+:\d+\])?", line), where
            assert stack, f"{where}: a trace outside every group"
            groups[tuple(stack)].append(line)
    assert not stack and not pending, f"unclosed groups {stack}"
    for k in ("dumpfile", "savefile"):
        assert len(keys.get(k, [])) == 1 and re.fullmatch(r'"[^"]+"', keys[k][0]), (k, keys.get(k))
    return keys, groups


def expected_tree(p: Params) -> list:
    """The groups and their traces, from the bus names alone: [(title, [trace | group])]."""
    kb = p.data_width // 8

    def axis(prefix):
        return [f"aggswitch.{prefix}_tvalid", f"aggswitch.{prefix}_tready", f"aggswitch.{prefix}_tlast",
                f"aggswitch.{prefix}_tkeep[{kb - 1}:0]", f"aggswitch.{prefix}_tdata[{p.data_width - 1}:0]"]

    axil = ["awvalid", "awready", "awaddr[15:0]", "awprot[2:0]",
            "wvalid", "wready", "wdata[31:0]", "wstrb[3:0]",
            "bvalid", "bready", "bresp[1:0]",
            "arvalid", "arready", "araddr[15:0]", "arprot[2:0]",
            "rvalid", "rready", "rdata[31:0]", "rresp[1:0]"]
    return ([("clock and reset", ["aggswitch.clk", "aggswitch.rst"])]
            + [(f"port {n}", [(f"s{n}_axis (worker to switch)", axis(f"s{n}_axis")),
                              (f"m{n}_axis (switch to worker)", axis(f"m{n}_axis"))]) for n in range(p.ports)]
            + [("s_axil (AXI4-Lite)", [f"aggswitch.s_axil_{s}" for s in axil])])


def expected_groups(p: Params) -> dict:
    """expected_tree as parse_gtkw returns it: {title path: [traces directly in it]}."""
    out = {}

    def walk(path, items):
        out[path] = [i for i in items if isinstance(i, str)]
        for i in items:
            if not isinstance(i, str):
                walk(path + (i[0],), i[1])

    for title, items in expected_tree(p):
        walk((title,), items)
    return out


def expected_listing(p: Params) -> list:
    """What GTKWave shows for the save file: (flags, name) of every row, groups included,
    names without their scope. Flags: 0x28 binary, 0x22 hexadecimal, 0x800200/0x1000200
    group begin/end."""
    out = []

    def walk(title, items):
        out.append((0x800200, title))
        for i in items:
            if isinstance(i, str):
                name = i.split(".", 1)[1]
                out.append((0x22 if name.endswith("]") else 0x28, name))
            else:
                walk(*i)
        out.append((0x1000200, title))

    for g in expected_tree(p):
        walk(*g)
    return out


# Lists the traces GTKWave loaded from a save file, then quits (gtkwave -S).
GTKWAVE_TCL = """\
set f [open "{out}" w]
set n [gtkwave::getTotalNumTraces]
for {{set i 0}} {{$i < $n}} {{incr i}} {{
    puts $f "[gtkwave::getTraceFlagsFromIndex $i] [gtkwave::getTraceNameFromIndex $i]"
}}
close $f
gtkwave::/File/Quit
"""


def gtkwave_listing(save: Path, tmp_path: Path) -> list:
    """GTKWave's own reading of the save file (and of the dump it names): (flags, name) of
    every row it shows. Headless, on a virtual X server."""
    gtkwave, xvfb = shutil.which("gtkwave"), shutil.which("xvfb-run")
    assert gtkwave and xvfb, "gtkwave or xvfb-run not found: install the Debian packages " \
                             "`gtkwave`, `xvfb` and `xauth` (see the README)"
    out, script = tmp_path / "traces.txt", tmp_path / "list.tcl"
    script.write_text(GTKWAVE_TCL.format(out=out))
    run = subprocess.run([xvfb, "-a", "-n", str(100 + os.getpid() % 20000), gtkwave, "-S", str(script), str(save)],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.exists(), f"gtkwave wrote no listing (exit {run.returncode}):\n{run.stdout}\n{run.stderr}"
    return [(int(f), name) for f, name in (line.split(" ", 1) for line in out.read_text().splitlines())]


def test_save_file_of_the_export():
    """Without a simulator: the save file of the SMALL export lists its ports in the groups."""
    ports = gtkw.ports(verilog_text(SMALL))
    text = gtkw.save_file(Path("/x/aggswitch.fst"), Path("/x/aggswitch.gtkw"), ports)
    keys, groups = parse_gtkw(text)
    assert keys["dumpfile"] == ['"/x/aggswitch.fst"'] and keys["savefile"] == ['"/x/aggswitch.gtkw"']
    assert groups == expected_groups(SMALL)
    # vectors in hexadecimal, single bits in binary
    assert "@22\naggswitch.s0_axis_tkeep[15:0]\naggswitch.s0_axis_tdata[127:0]\n" in text
    assert "@28\naggswitch.s0_axis_tvalid\n" in text


def test_save_file_syntax_check_fails():
    """The syntax check rejects what GTKWave would not read as groups of traces."""
    good = gtkw.save_file(Path("a.fst"), Path("a.gtkw"), gtkw.ports(verilog_text(SMALL)))
    parse_gtkw(good)
    for bad in (good.replace("@1000200\n-port 1\n", "", 1),            # unclosed group
                good.replace("-port 1", "-port one", 1),                # closes another title
                good.replace("@800200\n-clock and reset\n", "", 1),     # trace outside a group
                good.replace("@28\naggswitch.clk", "aggswitch.clk", 1),  # trace after a group flag
                good.replace("[dumpfile]", "[dump_file]"),
                good.replace("[savefile]", "[*]"),
                good.replace("aggswitch.rst", "aggswitch.rst[0:]")):
        assert bad != good
        with pytest.raises(AssertionError):
            parse_gtkw(bad)


def dump_vars(path: Path) -> dict:
    """{scope.name: var} of the scope `aggswitch` of the dump."""
    w = pywellen.Waveform(str(path))
    scope = next(s for s in w.all_scopes() if s.full_name == "aggswitch")
    return w, {v.full_name: v for v in scope.vars()}


def rises(w, var) -> list:
    changes = []
    w.stream_changes(lambda t, _sig, value: changes.append((t, value)), [var])
    return [t for t, v in changes if v == 1]


@pytest.mark.parametrize("sim", [pytest.param("verilator", marks=model(SMALL)),
                                 "icarus"])
def test_waves(sim, tmp_path):
    """A short simulation (one round, about 650 cycles) with waves: FST, and a save file
    whose every trace is a signal of the dump, which GTKWave opens with every trace."""
    res = build_and_run(SMALL, sim, "tb.cocotb.test_switch", testcase="test_single_round", waves=True)
    assert res.ok, res.summary()
    fst, save = res.out_dir / WAVES_FILE, res.out_dir / GTKW_FILE
    assert fst.exists() and save.exists()
    assert not list(res.out_dir.glob("*.vcd"))
    w, vars_ = dump_vars(fst)
    assert w.file_format == "FST"

    keys, groups = parse_gtkw(save.read_text())
    assert keys["dumpfile"] == [f'"{fst.resolve()}"'] and keys["savefile"] == [f'"{save.resolve()}"']
    assert groups == expected_groups(SMALL)
    for trace in (t for ts in groups.values() for t in ts):
        m = re.fullmatch(r"(.*?)(?:\[(\d+):(\d+)\])?", trace)
        assert m[1] in vars_, f"{trace}: not in the dump"
        width = int(m[2]) - int(m[3]) + 1 if m[2] else 1
        assert vars_[m[1]].bitwidth == width, trace

    # the dump covers the run: one clock edge per period, and traffic on the ports
    clk = rises(w, vars_["aggswitch.clk"])
    assert len(clk) > 300
    unit = {"fs": 1e-6, "ps": 1e-3, "ns": 1.0}[str(w.timescale.unit).rsplit(".", 1)[-1].lower()]
    period = round(CLK_PERIOD_NS / (w.timescale.factor * unit))
    assert {b - a for a, b in zip(clk, clk[1:])} == {period}
    for port in ("s0_axis_tvalid", "s1_axis_tvalid", "m0_axis_tvalid", "m1_axis_tvalid", "s_axil_arvalid"):
        assert rises(w, vars_[f"aggswitch.{port}"]), port

    # GTKWave opens the save file and the dump, and shows every trace in its group
    assert gtkwave_listing(save, tmp_path) == expected_listing(SMALL)
