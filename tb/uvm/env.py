"""The environment: one agent per switch port, the scoreboard, the coverage collector and
the transcript writer; the job's plan (tb/uvm/host.py), its hosts and the catalogue of
frames the switch must drop."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

from pyuvm import ConfigDB, uvm_component, uvm_env

from tb.cocotb.harness import describe_frame, worker_addr
from tb.uvm.agent import AnalysisCallback, PortAgent
from tb.uvm.config import dtype_name, knob
from tb.uvm.coverage import CoverageCollector
from tb.uvm.host import HostWorker, JobPlan
from tb.uvm.items import Registry
from tb.uvm.scoreboard import Scoreboard
from tb.uvm.sequences import StormSequence, noise_catalogue


def digest(data: bytes) -> str:
    return hashlib.blake2b(bytes(data), digest_size=8).hexdigest()


class TranscriptWriter(uvm_component):
    """Cycle-stamped transcript of every frame: one line per egress frame (first tvalid,
    tlast, port, back-pressure stalls, delivered to its host or lost, the frame decoded and
    a digest of its bytes) and one per ingress frame (with the golden model's verdict).
    Two runs of the same seed, on one simulator or on both, must write identical files."""

    def build_phase(self):
        self.ingress = AnalysisCallback("ingress", self, self._in)
        self.egress = AnalysisCallback("egress", self, self._out)
        self.lines_in, self.lines_out = [], []

    def _in(self, t):
        r = t.rec
        self.lines_in.append(f"{r.t_first:8d} {r.t_last:8d} s{r.port} stalls={r.stalls} "
                             f"{t.outcome}: {describe_frame(r.data)} #{digest(r.data)}")

    def _out(self, t):
        r = t.rec
        self.lines_out.append(f"{r.t_first:8d} {r.t_last:8d} m{r.port} stalls={r.stalls} "
                              f"{'delivered' if t.delivered else 'lost'}: "
                              f"{describe_frame(r.data)} #{digest(r.data)}")

    def write_files(self, out_dir: Path):
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "transcript_egress.txt").write_text("\n".join(self.lines_out) + "\n")
        (out_dir / "transcript_ingress.txt").write_text("\n".join(self.lines_in) + "\n")


class AggSwitchEnv(uvm_env):
    def build_phase(self):
        self.tb = tb = self.cdb_get("tb")
        self.cfg = cfg = self.cdb_get("cfg")
        self.registry = Registry()
        ConfigDB().set(self, "*", "registry", self.registry)
        self.agents = []
        for p in range(tb.ports):
            ConfigDB().set(self, f"agent{p}*", "port", p)
            self.agents.append(PortAgent(f"agent{p}", self))
        self.scoreboard = Scoreboard("scoreboard", self)
        self.coverage = CoverageCollector("coverage", self)
        self.transcript = TranscriptWriter("transcript", self)

        # job 0 as the switch comes out of reset: every port, every slot
        model = tb.model
        job = model.job_table[0]
        ports = [p for p in range(tb.ports) if model.job_mask(0) >> p & 1]
        self.plan = JobPlan(random.Random(f"{tb.seed}/plan"), workers=len(ports),
                            slot_count=job.slot_count, slot_elems=tb.p.slot_elems,
                            window=cfg.window, chunks=cfg.chunks, dtypes=cfg.dtypes,
                            scale_range=cfg.scale_range, extreme=cfg.extreme, nan=cfg.nan)
        self.hosts = [HostWorker(self.plan, rank, port, addr=worker_addr(port),
                                 timeout=knob(self, "timeout"), backoff=cfg.backoff,
                                 max_timeout=cfg.max_timeout, max_retries=cfg.max_retries,
                                 retransmit=bool(knob(self, "retransmit")))
                      for rank, port in enumerate(ports)]
        self.noise_cases = noise_catalogue(tb, self.plan, tb.supported_dtypes,
                                           random.Random(f"{tb.seed}/noise-catalogue"))

    def connect_phase(self):
        sb, cov, tr = self.scoreboard, self.coverage, self.transcript
        for a in self.agents:
            a.monitor.ap_in.connect(sb.ingress_fifo.analysis_export)
            a.monitor.ap_out.connect(sb.egress_fifo.analysis_export)
            a.monitor.ap_in.connect(cov.ingress.analysis_export)
            a.monitor.ap_in.connect(tr.ingress.analysis_export)
            a.channel.ap.connect(cov.results.analysis_export)
            a.channel.ap.connect(tr.egress.analysis_export)
            if a.active():
                a.driver.ap.connect(cov.driver_items.analysis_export)
        sb.ap_latency.connect(cov.latency.analysis_export)

    def end_of_elaboration_phase(self):
        names = list(dict.fromkeys(name for cases in self.noise_cases.values()
                                   for name, _, _ in cases))
        names += [f"storm: {kind}" for kind in StormSequence.KINDS]   # the epilogue's
        self.coverage.start({
            "params": self.tb.p.name(),
            "ports": self.tb.ports,
            "workers": len(self.hosts),
            "supported": [dtype_name(d) for d in self.tb.supported_dtypes],
            "used": [dtype_name(d) for d in self.cfg.dtypes],
            "noise_cases": names,
        })
