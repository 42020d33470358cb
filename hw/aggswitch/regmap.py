"""The AXI4-Lite register map (SPEC §8), defined once.

The RTL (`control.py`), the Python driver (`driver.py`), the testbenches and the generated
documentation (`docs/registers.md`, `python -m aggswitch.regmap`) all read this table.

All registers are 32 bits wide at word-aligned byte addresses. Reads of an unmapped
address and writes to an unmapped or read-only address answer SLVERR and change nothing.
Counters are 32-bit, wrap to 0, are not cleared by reading, and are cleared by `rst`.
"""

import argparse
import sys
from dataclasses import dataclass

from .params import (Params, latency, DEFAULT_MAC, DEFAULT_IP, DEFAULT_AGG_PORT, DROP_REASONS)

ID_MAGIC = 0x41474753          # "AGGS"
VERSION = 0x00010100           # 1.1.0 (major.minor.patch in bytes 2, 1, 0)

JOB_BASE = 0x0100
JOB_STRIDE = 0x10
GLOBAL_COUNTER_BASE = 0x0800
PORT_COUNTER_BASE = 0x1000
PORT_COUNTER_STRIDE = 0x40

# Egress pause watchdog default (SPEC §7): cycles a port's egress may stall before RESULTs
# that cannot be queued for it are dropped; the order of a datacenter PFC watchdog.
EGRESS_WATCHDOG_DEFAULT = 16384

PORT_COUNTERS = (("rx", "accepted", "tx", "resent") + tuple(f"drop_{r}" for r in DROP_REASONS)
                 + ("drop_egress_stall",))
GLOBAL_COUNTERS = ("results", "overflows", "nans")

COUNTER_DOC = {
    "rx": "frames received (every frame whose last beat was accepted)",
    "accepted": "DATA frames accepted: started or joined a round, or triggered a resend",
    "tx": "RESULT frames sent (multicast copies and resends)",
    "resent": "RESULT frames resent to a single worker (UNICAST)",
    "drop_not_agg": "dropped: not IPv4/UDP to the AGG port",
    "drop_malformed": "dropped: malformed (docs/SPEC.md §10.2 rules 1, 3, 5, 7)",
    "drop_job_disabled": "dropped: job disabled or out of range",
    "drop_slot_range": "dropped: slot outside the job's range",
    "drop_worker": "dropped: worker index is not the one the job maps to the port",
    "drop_mismatch": "dropped: joins a round with other dtype/count/scale/seq",
    "drop_duplicate": "dropped: duplicate contribution to a round in progress",
    "drop_egress_stall": ("RESULT frames for this port dropped because its egress had been stalled "
                          "past EGRESS_WATCHDOG cycles and could queue no more (docs/SPEC.md §10.10)"),
    "results": "rounds completed (each counted once, whatever the number of ports)",
    "overflows": "completed rounds whose RESULT had OVERFLOW set",
    "nans": "completed rounds whose RESULT had NAN set",
}


@dataclass(frozen=True)
class Register:
    name: str
    offset: int
    access: str              # "ro", "rw" or "counter" (read-only, counts events)
    reset: int
    bits: int                # implemented bits, from bit 0; the others read 0
    doc: str


def register_map(p: Params = Params()):
    """Every register for the parameter set `p`, in address order."""
    regs = [
        Register("ID", 0x000, "ro", ID_MAGIC, 32, 'identification, "AGGS"'),
        Register("VERSION", 0x004, "ro", VERSION, 32, "register map version 1.0.0"),
        Register("PORTS", 0x008, "ro", p.ports, 32, "elaborated `ports`"),
        Register("DATA_WIDTH", 0x00C, "ro", p.data_width, 32, "elaborated `data_width` (bits)"),
        Register("SLOTS", 0x010, "ro", p.slots, 32, "elaborated `slots` (per bank)"),
        Register("SLOT_ELEMS", 0x014, "ro", p.slot_elems, 32, "elaborated `slot_elems`"),
        Register("JOBS", 0x018, "ro", p.jobs, 32, "elaborated `jobs`"),
        Register("LATENCY", 0x01C, "ro", latency(p), 32,
                 "fixed latency in cycles, last DATA beat to first RESULT tvalid (docs/SPEC.md §10.4)"),
        Register("CYCLES", 0x020, "counter", 0, 32, "free-running cycle counter (the RESULT timestamp clock)"),
        Register("SWITCH_MAC_HI", 0x040, "rw", DEFAULT_MAC >> 32, 16, "switch MAC, bits 47..32"),
        Register("SWITCH_MAC_LO", 0x044, "rw", DEFAULT_MAC & 0xFFFFFFFF, 32, "switch MAC, bits 31..0"),
        Register("SWITCH_IP", 0x048, "rw", DEFAULT_IP, 32, "switch IPv4 address"),
        Register("AGG_PORT", 0x04C, "rw", DEFAULT_AGG_PORT, 16, "AGG UDP port"),
        Register("EGRESS_WATCHDOG", 0x050, "rw", EGRESS_WATCHDOG_DEFAULT, 32,
                 "egress pause watchdog in cycles: once a port's `tready` has held a RESULT beat "
                 "this long, RESULTs that cannot be queued for it are dropped (drop_egress_stall); "
                 "0 disables it (docs/SPEC.md §10.10)"),
    ]
    slot_field = (p.slots).bit_length()
    for j in range(p.jobs):
        base = JOB_BASE + JOB_STRIDE * j
        regs += [
            Register(f"JOB{j}_CTRL", base + 0x0, "rw", 1 if j == 0 else 0, 1, f"job {j}: bit 0 enable"),
            Register(f"JOB{j}_PORT_MASK", base + 0x4, "rw", (1 << p.ports) - 1 if j == 0 else 0, p.ports,
                     f"job {j}: ports of its workers (worker k is the k-th set port)"),
            Register(f"JOB{j}_SLOT_BASE", base + 0x8, "rw", 0, slot_field, f"job {j}: first slot in the pool"),
            Register(f"JOB{j}_SLOT_COUNT", base + 0xC, "rw", p.slots if j == 0 else 0, slot_field,
                     f"job {j}: number of slots"),
        ]
    for i, name in enumerate(GLOBAL_COUNTERS):
        regs.append(Register(name.upper(), GLOBAL_COUNTER_BASE + 4 * i, "counter", 0, 32, COUNTER_DOC[name]))
    for n in range(p.ports):
        for i, name in enumerate(PORT_COUNTERS):
            regs.append(Register(f"P{n}_{name.upper()}", PORT_COUNTER_BASE + PORT_COUNTER_STRIDE * n + 4 * i,
                                 "counter", 0, 32, f"port {n}: {COUNTER_DOC[name]}"))
    assert len({r.offset for r in regs}) == len(regs)
    assert max(r.offset for r in regs) < 1 << 16
    return regs


def by_name(p: Params = Params()):
    return {r.name: r for r in register_map(p)}


def markdown(p: Params = Params()) -> str:
    """docs/registers.md."""
    lines = [
        "# aggswitch register map",
        "",
        "<!-- Generated by `python -m aggswitch.regmap` (`make docs`) from hw/aggswitch/regmap.py; do not edit. -->",
        "",
        "AXI4-Lite, 32-bit data, 16-bit byte addresses. Every register is 32 bits wide at a",
        "word-aligned address; bits above a register's implemented width read 0 and ignore",
        "writes. `wstrb` selects the bytes a write changes.",
        "",
        "- A read of an unmapped address, and a write to an unmapped or read-only address,",
        "  answers SLVERR and changes nothing.",
        "- Counters are 32 bits, wrap to 0, are not cleared by reading, and are cleared by `rst`.",
        "- Job-table writes take effect for frames admitted after the write (docs/SPEC.md §10.7).",
        "",
        f"Shown for the default parameters ({p.name()}). Job registers repeat every "
        f"0x{JOB_STRIDE:X} bytes from 0x{JOB_BASE:04X} for each of `jobs`; port counters repeat every "
        f"0x{PORT_COUNTER_STRIDE:X} bytes from 0x{PORT_COUNTER_BASE:04X} for each of `ports`.",
        "",
        "| offset | name | access | reset | bits | description |",
        "|---|---|---|---|---|---|",
    ]
    for r in register_map(p):
        lines.append(f"| 0x{r.offset:04X} | {r.name} | {r.access} | 0x{r.reset:X} | {r.bits} | {r.doc} |")
    return "\n".join(lines) + "\n"


def _arrays(p: Params):
    """The repeated groups: (prefix, base, stride, count, [(member, offset in group)])."""
    return [("JOB", JOB_BASE, JOB_STRIDE, p.jobs,
             [("CTRL", 0x0), ("PORT_MASK", 0x4), ("SLOT_BASE", 0x8), ("SLOT_COUNT", 0xC)]),
            ("PORT", PORT_COUNTER_BASE, PORT_COUNTER_STRIDE, p.ports,
             [(c.upper(), 4 * i) for i, c in enumerate(PORT_COUNTERS)])]


def description(p: Params = Params()) -> dict:
    """The register map as a machine-readable description (docs/aggswitch_regs.json): the
    block (IP-XACT-like: name, address and data width, parameters), every register (name,
    byte offset, access, reset, implemented bits as one field, description) and the
    repeated groups (job table, port counters) with base, stride and count."""
    return {
        "name": "aggswitch", "version": f"{VERSION >> 16}.{VERSION >> 8 & 0xFF}.{VERSION & 0xFF}",
        "bus": "AXI4-Lite", "address_width": 16, "data_width": 32,
        "parameters": {f: getattr(p, f) for f in ("ports", "data_width", "slots", "slot_elems", "jobs")},
        "registers": [
            {"name": r.name, "offset": r.offset, "access": r.access, "reset": r.reset,
             "fields": [{"name": "value", "lsb": 0, "width": r.bits}], "description": r.doc}
            for r in register_map(p)],
        "arrays": [{"name": name, "base": base, "stride": stride, "count": count,
                    "members": [{"name": m, "offset": off} for m, off in members]}
                   for name, base, stride, count, members in _arrays(p)],
    }


def c_header(p: Params = Params()) -> str:
    """docs/aggswitch_regs.h: byte offsets, reset values and masks for drivers."""
    out = ["/* aggswitch register map (docs/registers.md). Generated by `python -m aggswitch.regmap`",
           " * (`make docs`) from hw/aggswitch/regmap.py; do not edit.",
           f" * Register values for the parameter set {p.name()}; offsets hold for every set. */",
           "#ifndef AGGSWITCH_REGS_H", "#define AGGSWITCH_REGS_H", "",
           f"#define AGGSWITCH_REGMAP_VERSION 0x{VERSION:08X}u", ""]
    for r in register_map(p):
        n = f"AGGSWITCH_{r.name}"
        out += [f"/* {r.doc} ({r.access}) */",
                f"#define {n}_OFFSET 0x{r.offset:04X}u",
                f"#define {n}_RESET 0x{r.reset:08X}u",
                f"#define {n}_MASK 0x{(1 << r.bits) - 1:08X}u"]
    out.append("")
    for name, base, stride, count, members in _arrays(p):
        out.append(f"/* {count} x {name} at 0x{base:04X}, every 0x{stride:X} bytes */")
        out.append(f"#define AGGSWITCH_{name}_COUNT {count}u")
        for m, off in members:
            out.append(f"#define AGGSWITCH_{name}_{m}(i) (0x{base + off:04X}u + 0x{stride:X}u * (unsigned)(i))")
    return "\n".join(out + ["", "#endif /* AGGSWITCH_REGS_H */", ""])


def main(argv=None):
    ap = argparse.ArgumentParser(description="Print the register map as Markdown")
    ap.add_argument("-o", "--output")
    ap.add_argument("--json", help="also write the machine-readable description here")
    ap.add_argument("--c-header", help="also write the C header here")
    args = ap.parse_args(argv)
    text = markdown()
    if args.output:
        with open(args.output, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    if args.json:
        import json
        with open(args.json, "w") as f:
            f.write(json.dumps(description(), indent=1) + "\n")
    if args.c_header:
        with open(args.c_header, "w") as f:
            f.write(c_header())


if __name__ == "__main__":
    main()
