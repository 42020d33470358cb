"""Amaranth-simulator unit tests of the per-port passes (docs/engine-v2.md).

- The schedule arithmetic (schedule.py) against plain integer arithmetic on cycles.
- Every port's PortPass on the shared AccumulatorBanks, with random rounds in INT32, BF16
  and MXINT8 (1, 2 and 4 lines per beat) scheduled as the decision stage schedules them (a
  port's passes back to back, passes on one slot RMW_GAP cycles apart, emitting passes not
  overlapping): no two ports ever touch one bank in a cycle, and the sums each completing
  pass emits are the exact column sums of its round. Breaking the rule that keeps a
  slot's passes apart (a gap of 0) makes it fail. Once its jobs are done, a pass holds
  its payload-buffer address, so that an idle switch's decoders stay still (an
  event-driven simulator then has nothing to evaluate).
- The line rotation between beat order and the bank word (to_lines / to_beat).
"""

import random

import pytest
from amaranth import *
from amaranth.sim import Simulator

from aggswitch.params import Params, DTYPE_INT32, DTYPE_BF16, DTYPE_MXINT8, MX_BLOCK
from aggswitch.schedule import advance, first_period, start_phase, start_after, first_offset, latest
from aggswitch.frame import buf_addr_bits
from aggswitch.passes import (RMW_GAP, JOB_LEAD, WORD_LINES, READ_BANK, WRITE_BANK,
                              bank_in_stage, PortPass, AccumulatorBanks,
                              bank_rows, port_job, line_selects, to_lines, to_beat)


@pytest.mark.parametrize("ports", [2, 3, 4, 5])
def test_schedule_arithmetic(ports):
    n_max = 9
    e, r = Signal(32), Signal(range(ports))
    n = Signal(range(n_max + 1))
    phase = Signal(range(ports))
    e2, r2 = advance(e, r, n, n_max, ports)
    f = first_period(e, r, phase)
    m = Module()
    m.d.comb += Signal().eq(0)
    sim = Simulator(m)
    cases = [(ev, rv, nv, ph) for ev in (0, 7, (1 << 32) - 1) for rv in range(ports)
             for nv in range(n_max + 1) for ph in range(ports)]

    async def bench(ctx):
        for ev, rv, nv, ph in cases:
            ctx.set(e, ev)
            ctx.set(r, rv)
            ctx.set(n, nv)
            ctx.set(phase, ph)
            t = ev * ports + rv + nv
            assert (ctx.get(e2), ctx.get(r2)) == ((t // ports) % (1 << 32), t % ports)
            # the first cycle of phase `ph` at or after cycle (ev, rv)
            t0 = ev * ports + rv
            first = t0 + (ph - rv) % ports
            assert ctx.get(f) == (first // ports) % (1 << 32), (ev, rv, ph)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("ports", [2, 3, 4])
def test_first_offset(ports):
    """first_offset's tables give, for every start phase, length and phase, the period of
    the first cycle of that phase at or after the end, as counted on plain cycles."""
    x_max = ports - 1 + 9 + 2
    x = Signal(range(ports))
    n = Signal(range(10))
    phase = Signal(range(ports))
    outs = {plus: first_offset(x, phase, ports, x_max, n, plus) for plus in (0, 2)}
    xw = Signal(7)                  # as wide as the engine's stamps: the adder, not the table
    outs_wide = {plus: first_offset(xw, phase, ports, x_max, plus=plus) for plus in (0, 2)}
    m = Module()
    m.d.comb += Signal().eq(0)
    sim = Simulator(m)

    async def bench(ctx):
        for xv in range(ports):
            for nv in range(10):
                for ph in range(ports):
                    ctx.set(x, xv)
                    ctx.set(n, nv)
                    ctx.set(phase, ph)
                    for plus, out in outs.items():
                        t = xv + nv + plus
                        first = t + (ph - t) % ports     # cycles from the start of period 0
                        assert ctx.get(out) == first // ports, (xv, nv, plus, ph)
        # x wide (no n)
        for xv in range(x_max - 1):
            for ph in range(ports):
                ctx.set(xw, xv)
                ctx.set(phase, ph)
                for plus, out in outs_wide.items():
                    t = xv + plus
                    first = t + (ph - t) % ports
                    assert ctx.get(out) == first // ports, (xv, plus, ph)
    sim.add_testbench(bench)
    sim.run()


def test_latest_picks_the_latest_valid_period():
    """latest() against max() on periods within 2**31 of each other, across the wrap."""
    cs = [Signal(32, name=f"c{i}") for i in range(5)]
    vs = [Signal(name=f"v{i}") for i in range(5)]
    out = latest(list(zip(vs, cs)))
    m = Module()
    m.d.comb += Signal().eq(0)
    sim = Simulator(m)
    M = 1 << 32
    rng = random.Random(5)

    async def bench(ctx):
        for _ in range(300):
            base = rng.choice([0, 3, M - 2, rng.getrandbits(32)])
            ahead = [rng.choice([0, 1, 2, 9, 1000, (1 << 30) + 5]) for _ in cs]
            valid = [rng.getrandbits(1) for _ in cs]
            for c, v, a, ok in zip(cs, vs, ahead, valid):
                ctx.set(c, (base + a) % M)
                ctx.set(v, ok)
            want = max((a for a, ok in zip(ahead, valid) if ok), default=None)
            assert ctx.get(out) == (0 if want is None else (base + want) % M)
    sim.add_testbench(bench)
    sim.run()


def test_start_after_ignores_stale_stamps():
    """Constraints at or after the base delay the start to the latest of them; ones before
    it, including stamps 2**32 periods old that look recent, never hold a pass back by more
    than the horizon (here 2**8 periods)."""
    base = Signal(32)
    cs = [Signal(32, name=f"c{i}") for i in range(3)]
    vs = [Signal(name=f"v{i}") for i in range(3)]
    out = start_after(base, list(zip(vs, cs)), bits=8)
    m = Module()
    m.d.comb += Signal().eq(0)
    sim = Simulator(m)
    M = 1 << 32
    rng = random.Random(3)

    def model(b, cons):
        ahead = [(c - b) % M for v, c in cons if v]
        ahead = [a for a in ahead if a < 256]
        return (b + max(ahead, default=0)) % M

    async def bench(ctx):
        for _ in range(400):
            b = rng.choice([0, 5, M - 3, (1 << 31) + 7, rng.getrandbits(32)])
            cons = [(rng.getrandbits(1), (b + rng.choice([-100, -1, 0, 1, 17, 255, 256, 1 << 20,
                                                           rng.getrandbits(32)])) % M)
                    for _ in range(3)]
            ctx.set(base, b)
            for (v, c), sv, sc in zip(cons, vs, cs):
                ctx.set(sv, v)
                ctx.set(sc, c)
            assert ctx.get(out) == model(b, cons), (b, cons)
        # a valid constraint one period behind the base never wins, even near the wrap
        ctx.set(base, 2)
        ctx.set(vs[0], 1)
        ctx.set(cs[0], M - 1)
        ctx.set(vs[1], 0)
        ctx.set(vs[2], 0)
        assert ctx.get(out) == 2
    sim.add_testbench(bench)
    sim.run()


class Passes(Elaboratable):
    """Every port's PortPass on one AccumulatorBanks, each port reading a small payload
    memory of its own (the ingress buffer's place)."""

    def __init__(self, p, payloads):
        self.p = p
        self.payloads = payloads
        self.passes = [PortPass(p, n) for n in range(p.ports)]
        self.banks = AccumulatorBanks(p)
        self.phase = Signal(range(p.ports))
        self.period = Signal(32)

    def elaborate(self, platform):
        m = Module()
        p = self.p
        P = p.ports
        m.submodules.banks = banks = self.banks
        m.d.comb += banks.phase.eq(self.phase)
        with m.If(self.phase == P - 1):
            m.d.sync += [self.phase.eq(0), self.period.eq(self.period + 1)]
        with m.Else():
            m.d.sync += self.phase.eq(self.phase + 1)
        for n, ps in enumerate(self.passes):
            m.submodules[f"pass{n}"] = ps
            buf = Array(C(v, p.data_width) for v in self.payloads[n])
            data = Signal(p.data_width, name=f"buf_data{n}")
            m.d.sync += data.eq(buf[ps.buf_addr])
            m.d.comb += [ps.e_now.eq(self.period), ps.phase.eq(self.phase), ps.buf_data.eq(data)]
            for name in ("rd_valid", "rd_row", "wr_en", "wr_row", "wr_data"):
                m.d.comb += getattr(banks, f"{name}{n}").eq(getattr(ps, name))
            m.d.comb += ps.rd_data.eq(getattr(banks, f"rd_data{n}"))
        return m


# Element codes per dtype: bytes per element, how to encode an integer value, its range.
# MXINT8 with block scale 135 and scale -2 is the integer byte itself (v = b * 2**-6 *
# 2**8 * 2**-2: a negative AGG scale, which the job stores as its 8 bits); BF16 with scale
# 0 carries small integers exactly.
def _elem_bytes(dtype, v):
    if dtype == DTYPE_INT32:
        return v.to_bytes(4, "big", signed=True)
    if dtype == DTYPE_BF16:
        if v == 0:
            return b"\0\0"
        sign, mag = (0x8000 if v < 0 else 0), abs(v)
        e = mag.bit_length() - 1                       # |v| < 2**8: exact in BF16
        mant = (mag << (7 - e)) & 0x7F
        return (sign | ((e + 127) << 7) | mant).to_bytes(2, "big")
    return (v & 0xFF).to_bytes(1, "big")


_RANGE = {DTYPE_INT32: (-2**31, 2**31 - 1), DTYPE_BF16: (-255, 255), DTYPE_MXINT8: (-127, 127)}
_SHIFT = {DTYPE_INT32: 0, DTYPE_BF16: 1, DTYPE_MXINT8: 2}


def _plan(p, rng, rounds, gap, dtypes, dense_wait=True):
    """Random rounds over a few slots, every port contributing once per round in a random
    order, scheduled like the decision stage does. Returns the per-port payload beats,
    the jobs per port (with start cycles) and the expected emits (beat-order sums)."""
    P = p.ports
    payloads = [[] for _ in range(P)]
    jobs = [[] for _ in range(P)]
    expected = []
    port_free = [0] * P
    slot_last = {}
    emit_free = 0
    now = 0
    room = 1 << buf_addr_bits(p)                       # beats a port's buffer addresses
    for k in range(rounds):
        gslot, bank = rng.randrange(min(p.slots, 3)), rng.getrandbits(1)
        dtype = rng.choice(dtypes)
        per_beat = p.lanes << _SHIFT[dtype]
        scale_beats = p.scale_beats if dtype == DTYPE_MXINT8 else 0
        beats = rng.randint(1, -(-p.slot_elems // per_beat))
        if len(payloads[0]) + beats + scale_beats > room:
            break
        lo, hi = _RANGE[dtype]
        vals = {q: [[rng.randint(lo, hi) for _ in range(per_beat)] for _ in range(beats)]
                for q in range(P)}
        order = rng.sample(range(P), P)
        for i, q in enumerate(order):
            now += rng.randint(1, 3)                   # the decision stage's pace
            emits = i == P - 1
            t = max(now + JOB_LEAD, port_free[q])
            if (gslot, bank) in slot_last:
                last_t, last_beats, last_dtype = slot_last[gslot, bank]
                # a denser dtype than the slot's last pass waits for that pass's end
                denser = dense_wait and _SHIFT[dtype] > _SHIFT[last_dtype]
                t = max(t, last_t + gap + (last_beats if denser else 0))
            if emits:
                t = max(t, emit_free)
            t += (start_phase(q, P) - t) % P           # the port's phase
            port_free[q] = t + beats
            slot_last[gslot, bank] = (t, beats, dtype)
            if emits:
                emit_free = t + beats
            start = len(payloads[q])
            payloads[q] += [0] * scale_beats           # the MX scale line (scales below)
            for line in vals[q]:
                # big-endian elements, byte 0 of the beat in bits 7..0 (SPEC §2, §3)
                beat = b"".join(_elem_bytes(dtype, v) for v in line)
                payloads[q].append(int.from_bytes(beat, "little"))
            jobs[q].append(dict(t=t, start=start, beats=beats, gslot=gslot, bank=bank,
                                replace=i == 0, emit=emits, dtype=dtype))
        # MX block b has scale 135 + b % 2 (below): the odd blocks' elements count twice
        # (a block spans two beats at data_width 128, a part of a beat at 512)
        mul = lambda b, j: 1 + (dtype == DTYPE_MXINT8 and (b * per_beat + j) // MX_BLOCK % 2)
        sums = [[mul(b, j) * sum(vals[q][b][j] for q in range(P)) for j in range(per_beat)]
                for b in range(beats)]
        expected.append((order[-1], sums))
    return payloads, jobs, expected


def _run_passes(p, seed, gap, dtypes=(DTYPE_INT32,), dense_wait=True):
    rng = random.Random(seed)
    payloads, jobs, expected = _plan(p, rng, rounds=12, gap=gap, dtypes=dtypes, dense_wait=dense_wait)
    depth = 1 << max(1, (max(len(b) for b in payloads) - 1).bit_length())
    payloads = [b + [0] * (depth - len(b)) for b in payloads]
    dut = Passes(p, payloads)
    P = p.ports
    got = []
    errors = []

    async def feeder(ctx):
        # Each port's jobs go into its queue in order, as early as the queue takes them:
        # a job waits in the queue for its start cycle.
        queues = [list(jobs[q]) for q in range(P)]
        end = max(j["t"] + j["beats"] for q in range(P) for j in jobs[q]) + 16
        for cycle in range(end):
            for q in range(P):
                ps = dut.passes[q]
                ctx.set(ps.job_valid, 0)
                if queues[q] and ctx.get(ps.job_ready):
                    j = queues[q].pop(0)
                    mx = j["dtype"] == DTYPE_MXINT8
                    ctx.set(ps.job, port_job(p).const({
                        "e": j["t"] // P, "beats": j["beats"],
                        "row_base": (j["gslot"] * 2 + j["bank"]) * bank_rows(p),
                        "start": j["start"], "dtype": j["dtype"],
                        "scale": -2 & 0xFF if mx else 0,
                        # MX block scales 135 (2**8) and 136 (2**9) in turn
                        "scales": int.from_bytes(bytes(135 + b % 2 for b in range(p.mx_blocks)),
                                                 "little") if mx else 0,
                        "count": j["beats"] * (p.lanes << _SHIFT[j["dtype"]]),
                        "replace": int(j["replace"]),
                        "write": 1, "emit": int(j["emit"]), "result": int(j["emit"]),
                        "dest": 1, "release_beats": j["beats"]}))
                    ctx.set(ps.job_valid, 1)
            # bank usage in this cycle: one reader and one writer per bank at most
            rd = [ctx.get(dut.passes[n].rd_bank) for n in range(P) if ctx.get(dut.passes[n].rd_valid)]
            wr = [ctx.get(dut.passes[n].wr_bank) for n in range(P) if ctx.get(dut.passes[n].wr_en)]
            if len(set(rd)) != len(rd) or len(set(wr)) != len(wr):
                errors.append(f"cycle {cycle}: two ports in one bank (reads {rd}, writes {wr})")
            # and each at the bank the banks' rotation gives it in this cycle's phase
            phase = ctx.get(dut.phase)
            for n in range(P):
                ps = dut.passes[n]
                for valid, bank, offset in ((ps.rd_valid, ps.rd_bank, READ_BANK),
                                            (ps.wr_en, ps.wr_bank, WRITE_BANK)):
                    if ctx.get(valid) and ctx.get(bank) != bank_in_stage(phase, n, P, offset):
                        errors.append(f"cycle {cycle}: port {n} at bank {ctx.get(bank)}, the "
                                      f"rotation gives {bank_in_stage(phase, n, P, offset)}")
            # After the last job (its beats are through S3 by `end` - 8), an idle pass holds
            # its buffer address: the buffer's output and the decoder stay still.
            if cycle >= end - 8:
                for n in range(P):
                    idle_addr[n].add(ctx.get(dut.passes[n].buf_addr))
            for n in range(P):
                e = dut.passes[n].emit
                if ctx.get(e.valid):
                    per_beat = p.lanes << _SHIFT[ctx.get(e.dtype)]
                    got.append((n, ctx.get(e.beat), [ctx.get(e.sums[i]) for i in range(per_beat)]))
            await ctx.tick()

    idle_addr = [set() for _ in range(P)]
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(feeder)
    sim.run()
    assert not errors, errors[:4]
    assert all(len(a) == 1 for a in idle_addr), f"an idle pass's buffer address moved: {idle_addr}"
    # Emitted beats, grouped by round in emit order.
    rounds = []
    for n, beat, sums in got:
        if beat == 0:
            rounds.append((n, []))
        rounds[-1][1].append(sums)
    return rounds, expected


@pytest.mark.parametrize("p", [Params(ports=3, data_width=128, slots=4, slot_elems=64, jobs=1),
                               Params(ports=4, data_width=128, slots=4, slot_elems=32, jobs=1)],
                         ids=lambda p: p.name())
def test_rotating_passes_exact(p):
    rounds, expected = _run_passes(p, seed=1, gap=RMW_GAP)
    assert len(expected) >= 6 and len(rounds) == len(expected)
    for (port, sums), (exp_port, exp_sums) in zip(rounds, expected):
        assert port == exp_port
        assert sums == exp_sums


@pytest.mark.parametrize("p", [Params(ports=3, data_width=256, slots=4, slot_elems=128, jobs=1),
                               Params(ports=2, data_width=256, slots=4, slot_elems=64, jobs=1),
                               Params(ports=3, data_width=128, slots=4, slot_elems=128, jobs=1)],
                         ids=lambda p: p.name())
@pytest.mark.parametrize("seed", [1, 2])
def test_rotating_passes_every_width(p, seed):
    """Rounds of 1, 2 and 4 lines per beat on the same slots: a beat's lines land side
    by side in the bank words, and a round in one dtype never disturbs the lines of the
    beats it does not own."""
    rounds, expected = _run_passes(p, seed=seed, gap=RMW_GAP,
                                   dtypes=(DTYPE_INT32, DTYPE_BF16, DTYPE_MXINT8))
    assert len(expected) >= 6 and len(rounds) == len(expected)
    for (port, sums), (exp_port, exp_sums) in zip(rounds, expected):
        assert port == exp_port
        assert sums == exp_sums


def test_denser_round_must_wait():
    """Without the wait for the previous pass's end, a round in a denser dtype overtakes
    the previous round's passes on the slot's words, and the sums come out wrong (the
    same seed as test_rotating_passes_every_width, which passes with the wait)."""
    p = Params(ports=3, data_width=256, slots=4, slot_elems=128, jobs=1)
    rounds, expected = _run_passes(p, seed=1, gap=RMW_GAP, dtypes=(DTYPE_INT32, DTYPE_BF16, DTYPE_MXINT8),
                                   dense_wait=False)
    assert [s for _, s in rounds] != [s for _, s in expected]


def test_slot_gap_is_needed():
    """Without the gap between a slot's passes, a pass reads lines before the one before
    it has written them back, and the sums come out wrong."""
    p = Params(ports=4, data_width=128, slots=4, slot_elems=32, jobs=1)
    rounds, expected = _run_passes(p, seed=1, gap=0)
    assert [s for _, s in rounds] != [s for _, s in expected]


def test_line_rotation():
    """A beat of s lines at word line f (a multiple of s): to_lines puts its group g at line
    f + g, and to_beat brings line f + g back to group g."""
    m = Module()
    first = Signal(2)
    shift = Signal(2)
    groups = [Signal(8, name=f"g{i}") for i in range(WORD_LINES)]
    lines = to_lines(groups, *line_selects(shift))
    back = to_beat(lines, first)
    m.d.comb += Signal().eq(0)
    sim = Simulator(m)

    async def bench(ctx):
        for i, g in enumerate(groups):
            ctx.set(g, 10 + i)
        for sh in (0, 1, 2):
            s = 1 << sh
            ctx.set(shift, sh)
            for f in range(0, WORD_LINES, s):
                ctx.set(first, f)
                for g in range(s):
                    assert ctx.get(lines[f + g]) == 10 + g, (s, f, g)
                    assert ctx.get(back[g]) == 10 + g, (s, f, g)
    sim.add_testbench(bench)
    sim.run()
