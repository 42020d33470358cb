"""Functional coverage collector (cocotb-coverage), for the model of tb/uvm/covreport.py.

The collector subscribes to the monitors' ingress transactions (every DATA frame and its
round outcome: complete, new, join, duplicate, resend, mismatch, each drop reason), to the
RESULT path after the loss injection (delivered or lost), to the drivers (DATA frames lost
before the switch), to the scoreboard's latency classification, and, at the end, samples
each worker's recovery of each chunk. ``report_phase`` exports the cocotb-coverage database
(coverage.yml), the model's meta (coverage_meta.json) and the readable report
(coverage_report.txt) into the run's output directory.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path

from cocotb_coverage.coverage import CoverCross, CoverPoint, coverage_db, coverage_section
from pyuvm import uvm_component

from tb.model import frames as F
from tb.uvm import covreport
from tb.uvm.agent import AnalysisCallback
from tb.uvm.config import dtype_name, knob
from tb.uvm.items import FIRST, MISMATCH, NOISE, RETX

ROOT = covreport.ROOT


def _reset_db():
    """Forget the coverage items of a previous test of the same process."""
    for name in [n for n in coverage_db if n == ROOT or n.startswith(ROOT + ".")]:
        del coverage_db[name]


def build_samplers(meta: dict) -> dict:
    """One sampling function per group: sample(values dict)."""
    _reset_db()
    samplers = {}
    for group, points, crosses in covreport.spec(meta):
        decorators = []
        for name, bins in points:
            decorators.append(CoverPoint(f"{ROOT}.{group}.{name}",
                                         xf=(lambda s, k=name: s.get(k)), bins=list(bins)))
        for name, items, ign in crosses:
            decorators.append(CoverCross(f"{ROOT}.{group}.{name}",
                                         items=[f"{ROOT}.{group}.{i}" for i in items],
                                         ign_bins=list(ign)))

        @coverage_section(*decorators)
        def sample(s):
            return s
        samplers[group] = sample
    return samplers


class CoverageCollector(uvm_component):
    def build_phase(self):
        self.tb = self.cdb_get("tb")
        self.enabled = bool(knob(self, "coverage"))
        self.ingress = AnalysisCallback("ingress", self, self.sample_ingress)
        self.results = AnalysisCallback("results", self, self.sample_result)
        self.driver_items = AnalysisCallback("driver_items", self, self.note_item)
        self.latency = AnalysisCallback("latency", self, self.sample_latency)
        self.samplers = None
        self.data_lost = collections.Counter()     # (port, chunk) -> lost copies
        self.result_lost = collections.Counter()   # (port, seq) -> lost RESULTs
        self.counts = collections.Counter()

    def start(self, meta: dict):
        """Create the model (called by the environment once the noise catalogue is known)."""
        self.meta = meta
        if self.enabled:
            self.samplers = build_samplers(meta)

    # ------------------------------------------------------------- sampling
    def _sample(self, group, values):
        if self.samplers is not None:
            self.samplers[group](values)
            self.counts[group] += 1

    def sample_ingress(self, t):
        item = t.item
        origin = item.origin if item is not None else None
        engine = t.outcome in covreport.ENGINE_OUTCOMES
        count = None
        if engine and t.hdr is not None:
            lo, hi = 1, min(self.tb.p.slot_elems,
                            F.MX_MAX_COUNT if F.is_mx(t.hdr.dtype) else self.tb.p.slot_elems)
            count = "one" if t.hdr.count == lo else "full" if t.hdr.count == hi else "partial"
        self._sample("data", {
            "dtype": dtype_name(t.dtype) if engine and t.dtype is not None else None,
            "hdr_dtype": dtype_name(t.dtype) if t.dtype is not None else None,
            "outcome": t.outcome,
            "bank": str(t.bank) if t.bank is not None else None,
            "position": str(t.position) if t.position is not None else None,
            "ingress_bp": "stalled" if t.rec.stalls else "free",
            "origin": origin,
            "port": f"p{t.port}",
            "count": count,
        })
        if origin == MISMATCH:
            self._sample("mismatch", {"kind": item.label})
        elif origin == NOISE:
            self._sample("noise", {"case": item.label})

    def sample_result(self, txn):
        h = txn.hdr
        if h is None:
            return
        if not txn.delivered:
            self.result_lost[(txn.port, h.seq)] += 1
        self._sample("result", {
            "kind": "unicast" if txn.unicast else "multicast",
            "dtype": dtype_name(h.dtype) if h.dtype in F.DTYPES else None,
            "bank": str(h.flags & F.FLAG_BANK),
            "egress_bp": "stalled" if txn.rec.stalls else "free",
            "delivery": "delivered" if txn.delivered else "lost",
            "overflow": "yes" if h.flags & F.FLAG_OVERFLOW else "no",
            "nan": "yes" if h.flags & F.FLAG_NAN else "no",
            "port": f"p{txn.port}",
        })

    def note_item(self, item):
        if item.lost and item.origin in (FIRST, RETX):
            self.data_lost[(item.port, item.chunk)] += 1

    def sample_latency(self, entry):
        cls, unicast = entry
        self._sample("latency", {"class": cls, "kind": "unicast" if unicast else "multicast"})

    def sample_hosts(self, hosts):
        """At the end: how each worker got each chunk's RESULT."""
        for h in hosts:
            for c in h.plan.chunks:
                if c.index not in h.results:
                    continue
                n = h.attempts[c.index]
                dl = self.data_lost[(h.port, c.index)] > 0
                rl = self.result_lost[(h.port, c.seq)] > 0
                self._sample("host", {
                    "attempts": str(n) if n < 4 else "4+",
                    "recovery": ("data_and_result_lost" if dl and rl else "data_lost" if dl
                                 else "result_lost" if rl else "clean"),
                    "dtype": dtype_name(c.dtype),
                })

    # -------------------------------------------------------------- report
    def write(self, out_dir: Path, title: str) -> dict | None:
        """Export the database, the meta and the report; returns the report summary."""
        if self.samplers is None:
            return None
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        yml = out_dir / "coverage.yml"
        coverage_db.export_to_yaml(str(yml))
        (out_dir / "coverage_meta.json").write_text(json.dumps(self.meta, indent=2) + "\n")
        import yaml
        db = yaml.safe_load(yml.read_text())
        return covreport.write_report(db, self.meta, out_dir, title)
