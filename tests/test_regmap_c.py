"""The register map's machine-readable description (docs/aggswitch_regs.json) and C header
(docs/aggswitch_regs.h), both generated from hw/aggswitch/regmap.py: current, and equal
to the map, the header as a C compiler reads it."""

import json
import shutil
import subprocess
from pathlib import Path

from aggswitch.params import Params
from aggswitch.regmap import by_name, c_header, description, register_map

ROOT = Path(__file__).resolve().parents[1]
JSON = ROOT / "docs" / "aggswitch_regs.json"
HEADER = ROOT / "docs" / "aggswitch_regs.h"


def test_generated_files_are_current():
    assert json.loads(JSON.read_text()) == description(), "docs/aggswitch_regs.json is stale: run `make docs`"
    assert HEADER.read_text() == c_header(), "docs/aggswitch_regs.h is stale: run `make docs`"


def test_description_matches_map():
    d = json.loads(JSON.read_text())
    p = Params()
    assert d["parameters"] == {f: getattr(p, f) for f in d["parameters"]}
    got = [(r["name"], r["offset"], r["access"], r["reset"], r["fields"][0]["width"])
           for r in d["registers"]]
    assert got == [(r.name, r.offset, r.access, r.reset, r.bits) for r in register_map(p)]
    regs = by_name(p)
    for a in d["arrays"]:  # every member of every group is the register of that name
        for i in range(a["count"]):
            for m in a["members"]:
                name = f"{a['name']}{i}_{m['name']}" if a["name"] == "JOB" else f"P{i}_{m['name']}"
                assert regs[name].offset == a["base"] + a["stride"] * i + m["offset"], name


def test_c_header_compiles_and_matches_map(tmp_path):
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "no C compiler (cc)"
    p = Params()
    regs = register_map(p)
    lines = ['#include <stdio.h>', '#include "aggswitch_regs.h"', "int main(void) {"]
    for r in regs:
        n = f"AGGSWITCH_{r.name}"
        lines.append(f'  printf("%s %u %u %u\\n", "{r.name}", {n}_OFFSET, {n}_RESET, {n}_MASK);')
    for j in range(p.jobs):
        for m in ("CTRL", "PORT_MASK", "SLOT_BASE", "SLOT_COUNT"):
            lines.append(f'  printf("JOB{j}_{m} %u\\n", AGGSWITCH_JOB_{m}({j}));')
    for n in range(p.ports):
        for r in regs:
            if r.name.startswith(f"P{n}_"):
                m = r.name[len(f"P{n}_"):]
                lines.append(f'  printf("{r.name} %u\\n", AGGSWITCH_PORT_{m}({n}));')
    lines += ['  printf("counts %u %u\\n", AGGSWITCH_JOB_COUNT, AGGSWITCH_PORT_COUNT);', "  return 0;", "}"]
    (tmp_path / "t.c").write_text("\n".join(lines) + "\n")
    build = subprocess.run([cc, "-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror",
                            "-I", str(HEADER.parent), "-o", str(tmp_path / "t"), str(tmp_path / "t.c")],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    out = subprocess.run([str(tmp_path / "t")], capture_output=True, text=True, check=True).stdout
    rows = [line.split() for line in out.splitlines()]
    names = by_name(p)
    seen = set()
    for row in rows[:-1]:
        r = names[row[0]]
        if len(row) == 4:
            assert [int(x) for x in row[1:]] == [r.offset, r.reset, (1 << r.bits) - 1], row
            seen.add(r.name)
        else:
            assert int(row[1]) == r.offset, row  # the array macro names the same register
    assert seen == set(names)
    assert rows[-1] == ["counts", str(p.jobs), str(p.ports)]
