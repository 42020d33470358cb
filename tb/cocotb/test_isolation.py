"""Performance isolation at the egress: the pause watchdog of SPEC §7 (docs/SPEC.md §10.10).

- test_egress_watchdog: two tenants on disjoint ports and slots. One host of job 1 stops
  reading its RESULTs (its m_axis_tready held low). Once that port has been stalled past
  EGRESS_WATCHDOG cycles, the RESULTs that cannot be queued for it are dropped and counted
  (DROP_EGRESS_STALL), and job 0 completes its rounds. What the stalled port does receive
  after the stall is, in order, exactly what the golden model predicts, minus the dropped
  RESULTs; the dropped count matches the counter. A retransmission then recovers a dropped
  RESULT from the shadow bank (§5 rule 2) as a unicast resend.
- test_stall_holds_back_only_its_job: with the watchdog off, one host of job 1 stops
  reading; job 0 keeps completing rounds at full speed, job 1's rounds wait (nothing is
  dropped), and once the host reads again every RESULT arrives, bit-exact and in order.
- test_short_stall_lossless: stalls shorter than the watchdog, and any stall with the
  watchdog off (0), lose nothing: every RESULT arrives, bit-exact, and no counter moves.

Both need 4 ports and 2 jobs; on smaller parameter sets they log a warning and return.
"""

from __future__ import annotations

import cocotb

from aggswitch.regmap import EGRESS_WATCHDOG_DEFAULT
from aggswitch.resbuf import RESULT_QUOTA
from tb.cocotb.harness import start
from tb.cocotb.test_switch import expect
from tb.model import frames as F

TIMEOUT_US = 5000
# RESULTs a stalled port holds: its quota of queued RESULTs (hw/aggswitch/resbuf.py) and
# the one stuck in its output register. A job that runs more rounds than this through a
# stalled port is held back (or, past the watchdog, has RESULTs dropped).
STALLED_HOLDS = RESULT_QUOTA + 1


def slot_bank(tb, r):
    """Slot (of job 1's, the upper half) and bank of job 1's round r: its slots in bank 0,
    then in bank 1."""
    half = tb.p.slots // 2
    assert r < 2 * half, "more rounds than job 1's slots hold in both banks"
    return r % half, (r // half) % 2


async def _two_tenants(dut, name):
    """Reset, then job 0 on ports 0-1 over the lower half of the slots and job 1 on ports
    2-3 over the upper half. None where the parameter set is too small."""
    tb = await start(dut, name)
    if tb.ports < 4 or tb.p.jobs < 2 or tb.p.slots < 8:
        tb.log.warning("needs 4 ports, 2 jobs and 8 slots: skipped on %s", tb.p.name())
        return None
    half = tb.p.slots // 2
    await tb.configure_job(0, port_mask=0b0011, slot_base=0, slot_count=half)
    await tb.configure_job(1, port_mask=0b1100, slot_base=half, slot_count=half)
    return tb


@cocotb.test(timeout_time=TIMEOUT_US, timeout_unit="us")
async def test_egress_watchdog(dut):
    tb = await _two_tenants(dut, "test_egress_watchdog")
    if tb is None:
        return
    n = tb.p.slot_elems
    watchdog = 300
    assert await tb.driver.read("EGRESS_WATCHDOG") == EGRESS_WATCHDOG_DEFAULT
    await tb.driver.write("EGRESS_WATCHDOG", watchdog)

    # Job 1 runs more rounds than port 3's egress can hold while its host reads nothing.
    stalled = tb.sinks[3]
    stalled.pause = True
    rounds1 = STALLED_HOLDS + 4
    vals1 = {}
    for r in range(rounds1):
        slot, bank = slot_bank(tb, r)
        for q in (2, 3):
            vals1[r, q] = tb.random_values(n, -(1 << 24), 1 << 24)
            tb.send(q, tb.data(q, slot, vals1[r, q], job=1, seq=100 + r, bank=bank))
    # Meanwhile job 0 (ports 0 and 1) must get all its RESULTs although it shares the
    # switch with the stalled port: at most the watchdog plus the time to drain job 1's
    # frames ahead of it in the engine.
    rounds0 = 4
    for r in range(rounds0):
        for q in (0, 1):
            tb.send(q, tb.data(q, r, tb.random_values(n), job=0, seq=r))
    frame_beats = -(-tb.p.max_frame_bytes // tb.beat_bytes)
    budget = watchdog + (rounds0 + rounds1) * 2 * (frame_beats + tb.latency) + 2000
    await tb.wait_until(lambda: all(len(tb.epoch.egress[q]) == rounds0 for q in (0, 1)),
                        budget, "job 0's RESULTs while port 3 is stalled")
    assert len(tb.epoch.egress[3]) == 0, "port 3 sent a frame while its tready was low"

    # Every frame of job 1 was accepted: the engine moved past port 3.
    await tb.wait_until(lambda: len(tb.epoch.egress[2]) == rounds1, budget,
                        "job 1's RESULTs on port 2 while port 3 is stalled")
    stall_cycles = tb.cycle
    stalled.pause = False
    # (long enough for port 3 to send everything it holds)
    await tb.cycles(tb.quiet_cycles() + (STALLED_HOLDS + 8) * frame_beats)

    n_dropped = tb.reconcile_egress_drops(3)
    delivered = tb.epoch.expected[3]
    dropped = tb.epoch.egress_dropped[3]
    assert n_dropped and len(dropped) == n_dropped, \
        "nothing was dropped although port 3 stayed stalled past the watchdog"
    assert delivered, "the RESULTs queued for port 3 before the watchdog fired were lost too"
    assert not tb.errors, tb.errors
    tb.log.info("port 3 stalled %d cycles: %d RESULTs delivered, %d dropped",
                stall_cycles, len(delivered), len(dropped))
    await tb.settle()
    await tb.check_counters()

    # The worker on port 3 retransmits the first dropped round: the shadow bank still holds
    # its sum, and the resend goes to port 3 alone.
    lost = dropped[0]
    h = F.parse_frame(lost.frame).hdr
    r = h.seq - 100
    slot, bank = slot_bank(tb, r)
    rec = await tb.send_isolated(3, tb.data(3, slot, vals1[r, 3], job=1, seq=h.seq, bank=bank, retx=True))
    expect(rec, action="resend", what="retransmission of a RESULT the watchdog dropped")
    await tb.settle()
    resend = F.parse_frame(tb.epoch.egress[3][-1].data)
    assert resend.hdr.flags & F.FLAG_UNICAST and resend.payload == F.parse_frame(lost.frame).payload, \
        "the resend does not carry the dropped RESULT's sum"
    await tb.check_counters()
    tb.check()


@cocotb.test(timeout_time=TIMEOUT_US, timeout_unit="us")
async def test_stall_holds_back_only_its_job(dut):
    tb = await _two_tenants(dut, "test_stall_holds_back_only_its_job")
    if tb is None:
        return
    n = tb.p.slot_elems
    await tb.driver.write("EGRESS_WATCHDOG", 0)        # never drop: only isolation helps
    tb.sinks[3].pause = True
    rounds = 8                                          # job 0's
    rounds1 = STALLED_HOLDS + 4                         # job 1's: more than port 3 holds
    for r in range(max(rounds, rounds1)):
        for q in range(4):
            job = 0 if q < 2 else 1
            if r < (rounds if job == 0 else rounds1):
                slot, bank = (r, 0) if job == 0 else slot_bank(tb, r)
                tb.send(q, tb.data(q, slot, tb.random_values(n), job=job, seq=r, bank=bank))
    # Job 0 runs as if alone: its frames arrive back to back, so a round every frame time
    # on each of its ports, plus the latency and the start-up of the engine.
    frame_beats = -(-tb.p.max_frame_bytes // tb.beat_bytes)
    budget = 2 * rounds * (frame_beats + 2) + 4 * tb.latency + 200
    t0 = tb.cycle
    await tb.wait_until(lambda: all(len(tb.epoch.egress[q]) == rounds for q in (0, 1)),
                        budget, "job 0's RESULTs while a port of job 1 is stalled")
    tb.log.info("job 0: %d rounds in %d cycles with port 3 stalled", rounds, tb.cycle - t0)
    assert len(tb.epoch.egress[3]) == 0, "port 3 sent a frame while its tready was low"
    assert len(tb.epoch.egress[2]) < rounds1, "job 1 completed every round although port 3 is full"
    await tb.cycles(500)                                # job 1 stays held, nothing is lost
    tb.sinks[3].pause = False
    await tb.settle()
    await tb.check_counters()
    tb.check()


@cocotb.test(timeout_time=TIMEOUT_US, timeout_unit="us")
async def test_short_stall_lossless(dut):
    tb = await _two_tenants(dut, "test_short_stall_lossless")
    if tb is None:
        return
    n = tb.p.slot_elems
    frame_beats = -(-tb.p.max_frame_bytes // tb.beat_bytes)

    async def stalled_rounds(stall: int, first_slot: int):
        """Both jobs run 6 rounds while port 3 is stalled for `stall` cycles."""
        tb.sinks[3].pause = True
        for r in range(6):
            for q in range(4):
                job = 0 if q < 2 else 1
                tb.send(q, tb.data(q, first_slot + r, tb.random_values(n), job=job, seq=r))
        await tb.cycles(stall)
        tb.sinks[3].pause = False
        await tb.settle()

    # Default watchdog: a stall of a few hundred frame times is far below it.
    await stalled_rounds(min(EGRESS_WATCHDOG_DEFAULT // 2, 40 * frame_beats), 0)
    # Watchdog off: a stall well past the short watchdog of test_egress_watchdog.
    await tb.driver.write("EGRESS_WATCHDOG", 0)
    await stalled_rounds(3000, 6)
    # Every expected RESULT arrived (tb.check) and nothing was counted as dropped.
    await tb.check_counters()
    tb.check()
