"""`make serve` (run by sim/serve.py): the exported switch as a network device.

Each switch port is a UDP endpoint on a loopback address (aggswitch.worker.bridge.UdpPorts):
a datagram from a worker enters that port as a DATA frame with the worker's address in
its Ethernet/IPv4/UDP headers, and every RESULT frame leaving a port goes back to the
worker it is addressed to. The harness (tb/cocotb/harness.py) drives the ports, and its
monitor checks every RESULT against the golden model as usual.

Simulated time only runs while the switch has work. A frame enters only when the switch
is idle (nothing queued or in flight on any port, every RESULT due delivered), one at a
time, in the order the datagrams were received (port order within one read); while no
datagram is waiting the coroutine blocks in `select`, which stops the simulator with it.
So the cycles counted are the switch's busy cycles, whatever the workers' compute time,
and each frame costs the same cycles however the workers' datagrams interleave: a
lossless run of the same calls takes the same number of cycles every time. (Frames are
not overlapped across ports, so this measures function, not throughput: `make sim` does.)

It ends after AGGSWITCH_SERVE_IDLE seconds without a datagram, on SIGTERM/SIGINT or when
the file AGGSWITCH_SERVE_STOP appears; then it reads every counter over AXI4-Lite
(aggswitch.driver), compares them and all RESULTs with the golden model, logs the
per-port counters and writes them to AGGSWITCH_SERVE_SUMMARY (JSON). The test fails on
any difference from the golden model.

Before the ports open, the job-table entries of AGGSWITCH_SERVE_JOBS
("J:MASK:BASE:COUNT,...", from `--job`) are written over AXI4-Lite (the golden model's
table follows, tb.configure_job).

Environment (set by sim/serve.py): AGGSWITCH_SERVE_HOST, AGGSWITCH_SERVE_JOBS, AGGSWITCH_SERVE_BASE_PORT (0:
ephemeral ports), AGGSWITCH_SERVE_LOSS, AGGSWITCH_SERVE_IDLE, AGGSWITCH_SERVE_READY (JSON
written once the ports listen: their addresses), AGGSWITCH_SERVE_STOP,
AGGSWITCH_SERVE_SUMMARY.
"""

import collections
import json
import os
import signal
import time
from pathlib import Path

import cocotb

from aggswitch.worker.bridge import UdpPorts
from sim.serve import counter_table
from tb.cocotb.harness import start

POLL_S = 0.2            # how often a blocked wait looks at the stop conditions
STUCK_CYCLES = 200_000  # busy this long without a RESULT leaving: a hang, not a workload


def _write_json(path: str, obj):
    if path:
        tmp = Path(path + ".tmp")
        tmp.write_text(json.dumps(obj, indent=1))
        os.replace(tmp, path)


@cocotb.test()
async def serve(dut):
    env = os.environ
    idle_s = float(env.get("AGGSWITCH_SERVE_IDLE", "30"))
    stop_file = env.get("AGGSWITCH_SERVE_STOP", "")
    tb = await start(dut, "serve")
    for spec in filter(None, env.get("AGGSWITCH_SERVE_JOBS", "").split(",")):
        job, mask, base, count = (int(v) for v in spec.split(":"))
        await tb.configure_job(job, port_mask=mask, slot_base=base, slot_count=count)
        tb.log.info("job %d: ports 0x%X, slots %d..%d", job, mask, base, base + count - 1)
    net = UdpPorts(tb.ports, host=env.get("AGGSWITCH_SERVE_HOST", "127.0.0.1"),
                   base_port=int(env.get("AGGSWITCH_SERVE_BASE_PORT", "0")),
                   loss=float(env.get("AGGSWITCH_SERVE_LOSS", "0")), seed=tb.seed)
    tb.add_egress_hook(lambda rec: net.deliver(rec.port, rec.data))
    signalled = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda num, frame: signalled.append(num))
    _write_json(env.get("AGGSWITCH_SERVE_READY", ""),
                {"ports": [list(a) for a in net.addresses], "params": tb.p.name(),
                 "latency": tb.latency, "pid": os.getpid()})
    tb.log.info("serving %d ports: %s", tb.ports,
                ", ".join(f"{h}:{p}" for h, p in net.addresses))

    def stopping() -> str:
        if signalled:
            return f"signal {signalled[0]}"
        if stop_file and os.path.exists(stop_file):
            return "stop file"
        return ""

    last_datagram = time.monotonic()
    busy_cycles = injected = 0
    waiting = collections.deque()        # (port, frame) received, not yet sent
    stuck = 0
    why = ""
    while not why:
        if tb.busy():
            out_before = sum(tb.total_egress)
            await tb.cycles(1)
            busy_cycles += 1
            stuck = 0 if sum(tb.total_egress) != out_before else stuck + 1
            if stuck > STUCK_CYCLES:
                tb.error(f"busy for {STUCK_CYCLES} cycles without a RESULT: "
                         f"{tb.state_summary()}")
                why = "stuck"
            continue
        waiting.extend(net.receive())
        if waiting:
            tb.send(*waiting.popleft())
            injected += 1
            last_datagram = time.monotonic()
            continue
        why = stopping()
        if why:
            break
        left = idle_s - (time.monotonic() - last_datagram)
        if left <= 0:
            why = f"{idle_s:g} s without a datagram"
        elif net.wait(min(POLL_S, left)):
            last_datagram = time.monotonic()

    await tb.settle()
    counters = await tb.driver.counters()
    await tb.check_counters()
    errors = tb.check(raise_on_error=False)
    net.close()
    tb.log.info("stopped (%s) after %d busy cycles, %d frames in; counters:\n%s", why,
                busy_cycles, injected, counter_table(counters))
    _write_json(env.get("AGGSWITCH_SERVE_SUMMARY", ""),
                {"stopped": why, "params": tb.p.name(), "busy_cycles": busy_cycles,
                 "cycles": tb.cycle, "frames_in": injected, "network": net.counts,
                 "counters": counters, "errors": errors[:20], "error_count": len(errors)})
    assert not errors, f"{len(errors)} difference(s) from the golden model:\n" + "\n".join(errors[:20])
