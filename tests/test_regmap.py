"""The register map is the one source of truth: its generated documentation is current,
and it is consistent for every parameter set."""

from pathlib import Path

import pytest

from aggswitch.params import Params, latency
from aggswitch.regmap import register_map, markdown, by_name, PORT_COUNTERS

ROOT = Path(__file__).resolve().parents[1]


def test_registers_md_is_current():
    doc = (ROOT / "docs" / "registers.md").read_text()
    assert doc == markdown(), "docs/registers.md is stale: run `make docs`"


@pytest.mark.parametrize("p", [Params(), Params(ports=32, jobs=16, slots=512),
                               Params(ports=2, data_width=128, slots=8, slot_elems=32, jobs=1)],
                         ids=lambda p: p.name())
def test_map_is_consistent(p):
    regs = register_map(p)
    offsets = [r.offset for r in regs]
    assert len(set(offsets)) == len(offsets)
    assert all(o % 4 == 0 and o < 1 << 16 for o in offsets)
    names = by_name(p)
    assert names["LATENCY"].reset == latency(p)
    assert names["JOB0_PORT_MASK"].reset == (1 << p.ports) - 1
    assert names["JOB0_SLOT_COUNT"].reset == p.slots
    for n in range(p.ports):
        for c in PORT_COUNTERS:
            assert names[f"P{n}_{c.upper()}"].access == "counter"
    for r in regs:
        assert r.reset < 1 << r.bits
