"""pyuvm tests of the `aggswitch` switch (cocotb test module ``tb.uvm.test_uvm``).

    python -m sim.runner tb.uvm.test_uvm --sim verilator --testcase UvmRandomTest --seed 7

- UvmSmokeTest: a short AllReduce without loss, noise, idle cycles or back-pressure.
- UvmRandomTest: the regression test (``make regress``): loss rates, ingress idle and
  egress back-pressure drawn per seed (0-20 % loss, up to 50 % idle/back-pressure),
  mismatch frames and frames of every drop reason mixed in.
- UvmLossTest: 20 % DATA and 20 % RESULT loss, no noise.
- UvmNoRetransmitTest: the same without retransmissions; must fail (expect_fail).

Every test: the scoreboard (every RESULT against the golden model, nothing unanswered,
latency exact when idle and at least LATENCY under load), every ingress verdict as the
stimulus meant it, every worker holds every chunk's RESULT equal to the sum of the
workers' contributions (and, for INT32 jobs, the whole tensor equal to the NumPy sum),
each round completed exactly once, every counter equal to the golden model's.

Knobs: tb/uvm/config.py (AGGSWITCH_UVM_* environment variables). Outputs in
$AGGSWITCH_OUT_DIR: uvm_summary.json, coverage.yml / coverage_meta.json /
coverage_report.txt / coverage_summary.json, transcript_egress.txt, transcript_ingress.txt.
"""

from __future__ import annotations

import json
import os
import random
import traceback
from pathlib import Path

import cocotb
import numpy as np
from pyuvm import ConfigDB, uvm_root, uvm_test

from tb.cocotb.harness import start
from tb.model import frames as F
from tb.uvm.config import UvmConfig
from tb.uvm.covreport import summary_line
from tb.uvm.env import AggSwitchEnv
from tb.uvm.sequences import AllReduceSequence

TIMEOUT_MS = 40   # simulated time per test (4 ns cycles: 10 M cycles); the watchdog is tighter


def egress_pause(rng: random.Random, p: float, stall_p: float, stall_len: int):
    """Pause generator of an egress sink: bursts of 1..8 cycles, paused with probability
    `p`; with probability `stall_p` per burst, a stall of stall_len/2..stall_len cycles
    instead, long enough to fill the switch's egress FIFO and, behind it, the ingress
    buffers (lossless back-pressure: tready falls at the ingress, nothing is dropped)."""
    while True:
        if stall_p and rng.random() < stall_p:
            val, n = True, rng.randint(stall_len // 2, stall_len)
        else:
            val, n = rng.random() < p, rng.randint(1, 8)
        for _ in range(n):
            yield val


class AggSwitchBaseTest(uvm_test):
    """Builds the environment on the harness; runs the AllReduce; checks; reports."""

    knobs: dict = {}   # this test's knob choices (before AGGSWITCH_UVM_* overrides)
    harness = None     # the TB, built and reset by the cocotb entry point (cocotb_test)

    def build_phase(self):
        self.tb = tb = AggSwitchBaseTest.harness
        base = UvmConfig.from_env(**self.knobs)
        self.cfg = cfg = base.resolve(random.Random(f"{tb.seed}/knobs"), tb.p,
                                      tb.supported_dtypes)
        self.logger.info("knobs: %s", json.dumps(cfg.as_dict()))
        ConfigDB().set(None, "*", "tb", tb)
        ConfigDB().set(None, "*", "cfg", cfg)
        self.env = AggSwitchEnv("env", self)
        self.failures = []
        self.cycles = 0

    async def run_phase(self):
        self.raise_objection()
        tb, cfg = self.tb, self.cfg
        try:
            if cfg.idle > 0:
                tb.random_idle(cfg.idle)
            if cfg.backpressure > 0 or cfg.stalls > 0:
                seeds = iter([tb.rng.getrandbits(64) for _ in range(tb.ports)])
                stall_len = 8 * tb.p.buffer_beats
                tb.set_backpressure_generator(lambda: egress_pause(
                    random.Random(next(seeds)), cfg.backpressure, cfg.stalls, stall_len))
            seq = AllReduceSequence("allreduce", self.env)
            await seq.start()
            if seq.failure:
                self.failures.append(seq.failure)
            tb.set_idle_generator(None)
            tb.set_backpressure_generator(None)
            await tb.settle()
            await tb.check_counters()
        except Exception as e:  # noqa: BLE001 -- reported by check_phase, test fails there
            self.failures.append(f"run phase: {type(e).__name__}: {e}\n{traceback.format_exc()}")
        finally:
            self.cycles = tb.cycle
            self.drop_objection()

    def check_phase(self):
        env, tb = self.env, self.tb
        errs = list(self.failures)
        errs += env.scoreboard.final()
        errs += [f"harness: {e}" for e in tb.errors]
        plan = env.plan
        for h in env.hosts:
            errs += h.errors
            missing = h.unanswered()
            if missing:
                errs.append(f"worker {h.rank} (port {h.port}): no RESULT for chunks "
                            f"{missing[:16]}{' ...' if len(missing) > 16 else ''}")
        # each chunk completed exactly once: nothing lost, nothing added twice
        if tb.model.counters.results != len(plan):
            errs.append(f"{tb.model.counters.results} rounds completed for {len(plan)} chunks")
        ref = plan.int32_tensors()
        if ref is not None and not any(h.unanswered() for h in env.hosts):
            _, want = ref
            for h in env.hosts:
                got = np.concatenate([F.int32_from_payload(F.parse_frame(h.results[i]).payload)
                                      for i in range(len(plan))])
                bad = np.flatnonzero(got != want)
                if bad.size:
                    errs.append(f"worker {h.rank}: {bad.size} of {plan.elems} tensor elements "
                                f"differ from the NumPy sum, first [{bad[0]}] got "
                                f"{got[bad[0]]} expected {want[bad[0]]}")
        self.errors = errs
        env.coverage.sample_hosts(env.hosts)

    def report_phase(self):
        env, tb, cfg = self.env, self.tb, self.cfg
        out = Path(os.environ.get("AGGSWITCH_OUT_DIR", "."))
        sim = os.environ.get("AGGSWITCH_SIM", "?")
        name = type(self).__name__
        if cfg.transcript:
            env.transcript.write_files(out)
        cov = None
        if cfg.coverage:
            env.coverage.meta.update(sim=sim, test=name, seeds=[tb.seed])
            cov = env.coverage.write(out, f"aggswitch functional coverage: {name}, seed "
                                          f"{tb.seed}")
            if cov is not None:
                self.logger.info("coverage: %s (%s)", summary_line(cov),
                                 out / "coverage_report.txt")
                if cov["hit_unreachable"]:
                    self.errors.append("coverage: bins hit although unreachable in this "
                                       "build: " + "; ".join(cov["hit_unreachable_list"][:8]))
        sb = env.scoreboard
        stats = {h.rank: dict(h.stats) for h in env.hosts}
        summary = {
            "test": name, "sim": sim, "seed": tb.seed, "params": tb.p.name(),
            "passed": not self.errors, "errors": len(self.errors),
            "first_errors": [e[:2000] for e in self.errors[:10]],
            "knobs": cfg.as_dict(), "cycles": self.cycles,
            "chunks": len(env.plan), "elements": env.plan.elems,
            "frames_in": len(sb.ingress), "frames_out": len(sb.egress),
            "outcomes": dict(sb.outcomes),
            "data_lost": sum(env.coverage.data_lost.values()),
            "results_lost": sum(env.coverage.result_lost.values()),
            "mismatch_frames": sb.outcomes.get("mismatch", 0),
            "latency": {"documented": tb.latency, "min": min(sb.latencies, default=None),
                        "max": max(sb.latencies, default=None), **sb.latency_stats},
            "hosts": stats, "coverage": cov,
        }
        out.mkdir(parents=True, exist_ok=True)
        (out / "uvm_summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
        self.logger.info("%s seed %d: %d cycles, %d chunks x %d workers, %d frames in, %d out, "
                         "outcomes %s, latency %s..%s (documented %d, %d idle-exact), %d errors",
                         name, tb.seed, self.cycles, len(env.plan), len(env.hosts),
                         len(sb.ingress), len(sb.egress), dict(sb.outcomes),
                         summary["latency"]["min"], summary["latency"]["max"], tb.latency,
                         sb.latency_stats.get("idle_exact", 0), len(self.errors))

    def final_phase(self):
        if self.errors:
            shown = "\n".join(e[:3000] for e in self.errors[:20])
            more = f"\n... and {len(self.errors) - 20} more" if len(self.errors) > 20 else ""
            raise AssertionError(f"{len(self.errors)} error(s):\n{shown}{more}")


def cocotb_test(cls=None, **kwargs):
    """Register the pyuvm test class `cls` as the cocotb test of the same name (`kwargs`
    go to cocotb.test), which builds the harness, resets the switch, then runs the UVM
    phases. (pyuvm.test would leave the harness to the build phase, and pyuvm's run phase
    starts with a NullTrigger: cocotbext-axi's AXI4-Lite coroutines would then sample the
    switch's outputs at the clock edge of time 0, before Icarus has evaluated them.)"""
    if cls is None:
        return lambda c: cocotb_test(c, **kwargs)

    @cocotb.test(name=cls.__name__, timeout_time=TIMEOUT_MS, timeout_unit="ms", **kwargs)
    async def entry(dut):
        AggSwitchBaseTest.harness = await start(dut, cls.__name__)
        await uvm_root().run_test(cls)
    globals()[f"_cocotb_{cls.__name__}"] = entry
    return cls


@cocotb_test
class UvmSmokeTest(AggSwitchBaseTest):
    knobs = dict(data_loss=0.0, result_loss=0.0, idle=0.0, backpressure=0.0, stalls=0.0,
                 noise=0.0, mismatch=0.0)


@cocotb_test
class UvmRandomTest(AggSwitchBaseTest):
    knobs = {}


@cocotb_test
class UvmLossTest(AggSwitchBaseTest):
    knobs = dict(data_loss=0.2, result_loss=0.2, noise=0.0, mismatch=0.0)


@cocotb_test(expect_fail=True)
class UvmNoRetransmitTest(AggSwitchBaseTest):
    """Negative test: hosts that never retransmit cannot finish a lossy AllReduce; the
    environment must fail it (watchdog, chunks without RESULT). cocotb counts the expected
    failure as a pass; uvm_summary.json has the errors."""
    knobs = dict(data_loss=0.2, result_loss=0.2, retransmit=False, watchdog=3000, noise=0.0,
                 mismatch=0.0)
