"""The register map as SystemRDL (docs/aggswitch.rdl) and PeakRDL's C header of it
(docs/aggswitch_rdl.h), both generated from hw/aggswitch/regmap.py by `make docs`.

systemrdl-compiler compiles the RDL; the walk over its register model must find every
register of regmap.py at its address with its width, access and one field (name, bit
position, width, reset), and nothing else. PeakRDL's C header of the same RDL must compile
with `cc` against static assertions of regmap.py's offsets, masks and reset values. Each
check is also shown to fail when the RDL and the map disagree."""

import dataclasses
import shutil
import subprocess
from pathlib import Path

import pytest

from systemrdl import RDLCompiler
from systemrdl.node import RegNode
from systemrdl.rdltypes import AccessType

from aggswitch import regmap_rdl
from aggswitch.params import Params
from aggswitch.regmap import PORT_COUNTER_BASE, PORT_COUNTER_STRIDE, register_map

ROOT = Path(__file__).resolve().parents[1]
RDL = ROOT / "docs" / "aggswitch.rdl"
HEADER = ROOT / "docs" / "aggswitch_rdl.h"

OTHER_PARAMS = [Params(ports=2, data_width=128, slots=8, slot_elems=32, jobs=1),
                Params(ports=32, jobs=16, slots=512)]


def compile_rdl(path):
    rdlc = RDLCompiler()
    rdlc.compile_file(str(path))
    return rdlc.elaborate(top_def_name="aggswitch").top


def map_name(reg) -> str:
    """The regmap.py name of a register of the compiled model: `ID`, `JOB2.CTRL` ->
    `JOB2_CTRL`, `PORT[3].RX` -> `P3_RX`."""
    parts = reg.get_path_segments()[1:]
    if parts[0].startswith("PORT["):
        return f"P{parts[0][5:-1]}_{parts[1]}"
    return "_".join(parts)


def field_access(f) -> str:
    """regmap.py's access of a field: `counter` (read-only, counts), `ro` (a read-only
    constant: hardware cannot change it), `rw`, or what else it is."""
    sw, hw, counter = f.get_property("sw"), f.get_property("hw"), f.get_property("counter")
    if sw == AccessType.r and counter:
        return "counter"
    if sw == AccessType.r and hw == AccessType.na:
        return "ro"
    if sw == AccessType.rw and hw == AccessType.r and not counter:
        return "rw"
    return f"sw={sw.name} hw={hw.name} counter={counter}"


def model(top) -> dict:
    """{regmap name: (address, width, access, [(field, lsb, width, reset)])} of the
    compiled register model."""
    out = {}
    for reg in top.descendants(unroll=True):
        if isinstance(reg, RegNode):
            fields = list(reg.fields())
            access = {field_access(f) for f in fields}
            out[map_name(reg)] = (reg.absolute_address, reg.get_property("regwidth"),
                                  access.pop() if len(access) == 1 else sorted(access),
                                  [(f.inst_name, f.lsb, f.width, f.get_property("reset")) for f in fields])
    return out


def disagreements(top, regs) -> list[str]:
    """Every difference between the compiled model and regmap.py's registers `regs`."""
    got = model(top)
    want = {r.name: (r.offset, 32, r.access, [("value", 0, r.bits, r.reset)]) for r in regs}
    out = [f"{n}: not in the RDL" for n in want if n not in got]
    out += [f"{n}: not in regmap.py" for n in got if n not in want]
    out += [f"{n}: RDL {got[n]} != regmap.py {want[n]}" for n in want if n in got and got[n] != want[n]]
    return out


def test_rdl_is_current():
    assert RDL.read_text() == regmap_rdl.systemrdl(), "docs/aggswitch.rdl is stale: run `make docs`"


def test_rdl_header_is_current(tmp_path):
    regmap_rdl.c_header(RDL, tmp_path / HEADER.name)
    assert HEADER.read_text() == (tmp_path / HEADER.name).read_text(), \
        "docs/aggswitch_rdl.h is stale: run `make docs`"


def test_rdl_matches_map():
    regs = register_map(Params())
    top = compile_rdl(RDL)
    assert disagreements(top, regs) == []
    assert len(model(top)) == len(regs)
    assert top.size == PORT_COUNTER_BASE + PORT_COUNTER_STRIDE * Params().ports  # ends with the last port's counters


@pytest.mark.parametrize("p", OTHER_PARAMS, ids=lambda p: p.name())
def test_rdl_matches_map_other_params(p, tmp_path):
    (tmp_path / "a.rdl").write_text(regmap_rdl.systemrdl(p))
    assert disagreements(compile_rdl(tmp_path / "a.rdl"), register_map(p)) == []


def test_disagreements_are_found(tmp_path):
    """The comparison fails when regmap.py and the RDL differ in any respect it checks."""
    regs = register_map(Params())
    top = compile_rdl(RDL)
    i = next(k for k, r in enumerate(regs) if r.name == "JOB2_SLOT_COUNT")
    r = regs[i]
    for change in (dict(offset=r.offset + 4), dict(bits=r.bits + 1), dict(reset=1),
                   dict(access="ro"), dict(name="JOB2_SLOT_NUMBER")):
        wrong = regs[:i] + [dataclasses.replace(r, **change)] + regs[i + 1:]
        assert disagreements(top, wrong), change
    assert disagreements(top, regs[:-1]) == [f"{regs[-1].name}: not in regmap.py"]
    # and an RDL edited by hand: the port stride, a reset value, a counter made writable
    text = RDL.read_text()
    for old, new in (("+= 0x40;", "+= 0x80;"),
                     ("value[6:0] = 0x40;", "value[6:0] = 0x3F;"),
                     ("field { sw = r; hw = na; counter; } value[31:0] = 0x0;\n        } DROP_WORKER",
                      "field { sw = rw; hw = r; } value[31:0] = 0x0;\n        } DROP_WORKER")):
        assert text.count(old) == 1, old
        (tmp_path / "edited.rdl").write_text(text.replace(old, new))
        assert disagreements(compile_rdl(tmp_path / "edited.rdl"), regs), new


def c_program(regs, p) -> str:
    """Static assertions of regmap.py's values against PeakRDL's header: every register's
    offset in the `aggswitch_t` struct, its size, and its field's mask, position, width
    and reset macros."""
    lines = ["#include <stddef.h>", '#include "aggswitch_rdl.h"', ""]

    def check(expr, value):
        lines.append(f'_Static_assert({expr} == {value:#x}u, "{expr} == {value:#x}");')

    for r in regs:
        if r.name.startswith("P") and r.name[1].isdigit():
            n, m = r.name[1:].split("_", 1)
            member, macro = f"PORT[{n}].{m}", f"AGGSWITCH__PORT__{m}__VALUE"
        elif r.name.startswith("JOB") and r.name[3].isdigit():
            j, m = r.name[3:].split("_", 1)
            member, macro = f"JOB{j}.{m}", f"AGGSWITCH__JOB{j}__{m}__VALUE"
        else:
            member, macro = r.name, f"AGGSWITCH__{r.name}__VALUE"
        check(f"offsetof(aggswitch_t, {member})", r.offset)
        check(f"sizeof(((aggswitch_t *)0)->{member})", 4)
        check(f"{macro}_bm", (1 << r.bits) - 1)
        check(f"{macro}_bp", 0)
        check(f"{macro}_bw", r.bits)
        check(f"{macro}_reset", r.reset)
    check("sizeof(aggswitch_t)", PORT_COUNTER_BASE + PORT_COUNTER_STRIDE * p.ports)
    lines += ["", "int main(void) { return 0; }", ""]
    return "\n".join(lines)


def cc_compile(tmp_path, program: str):
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "no C compiler (cc)"
    (tmp_path / "t.c").write_text(program)
    return subprocess.run([cc, "-std=gnu11", "-Wall", "-Wextra", "-Werror", "-I", str(tmp_path),
                           "-o", str(tmp_path / "t"), str(tmp_path / "t.c")], capture_output=True, text=True)


def test_peakrdl_header_compiles_and_matches_map(tmp_path):
    p = Params()
    regs = register_map(p)
    regmap_rdl.c_header(RDL, tmp_path / "aggswitch_rdl.h")
    # plus the README's example, run on a buffer standing for the register window
    program = c_program(regs, p).replace("int main(void) { return 0; }", """\
#include <stdint.h>

static uint32_t example(volatile aggswitch_t *sw) {
    sw->JOB1.PORT_MASK = 0xA & AGGSWITCH__JOB1__PORT_MASK__VALUE_bm;
    return sw->PORT[2].DROP_WORKER;
}

int main(void) {
    static uint32_t window[sizeof(aggswitch_t) / 4];
    window[0x10A0 / 4] = 7;
    uint32_t drops = example((volatile aggswitch_t *)window);
    return !(drops == 7 && window[0x114 / 4] == 0xA);
}""")
    assert program.count("_Static_assert") == 6 * len(regs) + 1
    build = cc_compile(tmp_path, program)
    assert build.returncode == 0, build.stderr
    assert subprocess.run([str(tmp_path / "t")]).returncode == 0
    # the same program against a map that disagrees with the header does not compile
    i = next(k for k, r in enumerate(regs) if r.name == "P2_DROP_WORKER")
    wrong = regs[:i] + [dataclasses.replace(regs[i], offset=regs[i].offset + 4)] + regs[i + 1:]
    build = cc_compile(tmp_path, c_program(wrong, p))
    assert build.returncode != 0
    assert "offsetof(aggswitch_t, PORT[2].DROP_WORKER) == 0x10a4" in build.stderr, build.stderr


@pytest.mark.parametrize("p", OTHER_PARAMS[:1], ids=lambda p: p.name())
def test_peakrdl_header_other_params(p, tmp_path):
    (tmp_path / "a.rdl").write_text(regmap_rdl.systemrdl(p))
    regmap_rdl.c_header(tmp_path / "a.rdl", tmp_path / "aggswitch_rdl.h")
    build = cc_compile(tmp_path, c_program(register_map(p), p))
    assert build.returncode == 0, build.stderr
