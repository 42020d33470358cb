"""Amaranth-simulator unit tests of the result buffer (resbuf.py, docs/engine-v2.md).

A Python model of its surroundings drives the block: a decision stage that allocates an
entry per RESULT (at most one a cycle, only when `alloc_ok` and every destination is
below its quota of RESULT_QUOTA RESULTs not yet started), one writer per port that writes
each RESULT's beats one per cycle from a start in its phase of the rotation (as the
emitters do: writer s starts only in cycles t with (t + s) mod ports = 0, and flags the
entry complete the cycle before its last beat), and one egress per port that takes a
RESULT's beats from the buffer's stream and sends one beat per cycle unless stalled.
Checked against the model, cycle by cycle:

- every destination receives exactly the RESULTs addressed to it, in allocation order,
  each beat bit-exact, the done record (OVERFLOW, MX scales) with its first beat and
  never a payload beat outside a RESULT;
- no two writers are ever at one bank in a cycle (the model's schedule) and no beat is
  lost to a read conflict (the data);
- an entry is in use from its allocation until its last destination has read its last
  beat, and free from the cycle after: it is freed by the last reader, not before;
- the egress FIFO never holds more than `egress_beats` beats, and once a RESULT has
  started at an egress that is not stalled, its beats arrive in time for one beat per
  cycle (no underrun);
- a burst of completions on every port at once, each to every port, is written in the
  cycles of the passes (nothing waits) and read at about one beat per cycle per port;
- with one destination stalled, the RESULTs of the others keep flowing, and its own
  arrive in order once it reads again.
"""

import random

import pytest
from amaranth.sim import Simulator

from aggswitch.params import Params
from aggswitch.resbuf import ResultBuffer, RESULT_QUOTA, result_entries, side_bits


def _result(p, rng, idx, dest, beats, source):
    sb = side_bits(p)
    # an MX RESULT (where the build has MX): its beats carry their blocks' scales, a block's
    # on its first beat (a block spans block_beats beats: 2 at data_width 128, whose second
    # beat's side bits are 0, as the emitter writes them)
    D = p.block_beats
    mx = bool(sb) and beats <= D * -(-8 * p.mx_blocks // sb) and rng.random() < 0.5
    side = [rng.getrandbits(sb) if mx and j % D == 0 else 0 for j in range(beats)]
    line = sum(v << (sb * (j // D)) for j, v in enumerate(side)) & ((1 << 8 * p.mx_blocks) - 1)
    return {"idx": idx, "dest": dest, "beats": beats, "source": source, "mx": mx,
            "data": [rng.getrandbits(p.data_width) for _ in range(beats)], "side": side,
            "overflow": rng.getrandbits(1), "scales": line,
            "entry": None, "readers": set(d for d in range(p.ports) if dest >> d & 1),
            "freed_at": None, "alloc_at": None}


def run(p: Params, requests, stall=lambda d, t: False, cycles=6000, seed=1, check_rate=None):
    """Drive the buffer with `requests` [(cycle due, dest mask, beats, source)] and check
    it against the model. Returns per-port (first beat cycle, last beat cycle) of the run."""
    rng = random.Random(seed)
    P = p.ports
    F = p.egress_beats
    N = result_entries(p)
    dut = ResultBuffer(p)
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    results = []
    pending = sorted(requests, key=lambda r: r[0])
    held = []                                  # due, not yet allocated (in order)
    queued = [0] * P                           # per port: decided, not started
    schedule = [{} for _ in range(P)]          # per port: cycle -> (result, beat) to write
    finish = [{} for _ in range(P)]            # per port: cycle -> result complete next cycle
    wr_free = [0] * P                          # per port: first cycle after its last pass
    stream = [[] for _ in range(P)]            # per port: expected result indices
    fifo = [[] for _ in range(P)]              # per port: beats at the egress: (idx, beat)
    cur = [None] * P                           # per port: [result, beats received]
    sending = [None] * P                       # per port: [result, beats sent]
    sent = [[] for _ in range(P)]
    times = [[None, None] for _ in range(P)]
    done_at = [[] for _ in range(P)]
    in_use_since = {}                          # entry -> result

    async def bench(ctx):
        t = 0
        while t < cycles:
            # --- decision: allocate for the oldest due request whose destinations have room
            while pending and pending[0][0] <= t:
                held.append(pending.pop(0))
            ctx.set(dut.alloc_en, 0)
            ok = ctx.get(dut.alloc_ok)
            entry = ctx.get(dut.alloc_entry)
            for k, (due, dest, beats, source) in enumerate(held):
                blocked = any(dest >> d & 1 and queued[d] >= RESULT_QUOTA for d in range(P))
                if blocked:
                    continue               # only RESULTs to a full port wait
                # RESULTs to one port stay in order: an earlier held one to a shared port wins
                if any(h[1] & dest for h in held[:k]):
                    continue
                if not ok:
                    break
                r = _result(p, rng, len(results), dest, beats, source)
                assert entry not in in_use_since, f"entry {entry} allocated while in use"
                r["entry"], r["alloc_at"] = entry, t
                in_use_since[entry] = r
                results.append(r)
                ctx.set(dut.alloc_en, 1)
                ctx.set(dut.alloc_dest, dest)
                ctx.set(dut.alloc_beats, beats)
                ctx.set(dut.alloc_mx, r["mx"])
                for d in range(P):
                    if dest >> d & 1:
                        queued[d] += 1
                        stream[d].append(r["idx"])
                # its pass: 3 cycles on at the earliest, after the port's last pass, in
                # the port's phase; beat j then in cycle start + j
                start = max(t + 3, wr_free[source])
                start += (-(start + source)) % P
                wr_free[source] = start + beats
                for j in range(beats):
                    assert start + j not in schedule[source]
                    schedule[source][start + j] = (r, j)
                finish[source][start + beats - 2] = r
                held.pop(k)
                break
            # --- writers
            banks = {}
            for s in range(P):
                w = getattr(dut, f"w{s}")
                ctx.set(w.valid, 0)
                ctx.set(w.last, 0)
                ctx.set(w.finish, 0)
                if t in schedule[s]:
                    r, j = schedule[s].pop(t)
                    assert j % P not in banks, "two writers in one bank"
                    banks[j % P] = s
                    ctx.set(w.valid, 1)
                    ctx.set(w.entry, r["entry"])
                    ctx.set(w.beat, j)
                    ctx.set(w.data, r["data"][j])
                    if side_bits(p):
                        ctx.set(w.side, r["side"][j])
                    if j == r["beats"] - 1:
                        ctx.set(w.last, 1)
                        ctx.set(w.overflow, r["overflow"])
                if t in finish[s]:
                    ctx.set(w.finish, 1)
                    ctx.set(w.finish_entry, finish[s].pop(t)["entry"])
            # --- egress: take what the buffer delivers, send a beat a cycle unless stalled
            pops = 0
            for d in range(P):
                done = ctx.get(dut.done_en) >> d & 1
                if ctx.get(dut.data_en) >> d & 1:
                    if cur[d] is None or cur[d][1] == cur[d][0]["beats"]:
                        assert stream[d], f"port {d}: a RESULT nobody sent it"
                        cur[d] = [results[stream[d].pop(0)], 0]
                    r, j = cur[d]
                    # the done record: with the first beat, or with the last of an MX RESULT
                    want_done = j == r["beats"] - 1 if r["mx"] else j == 0
                    assert done == want_done, (d, r["idx"], j, r["mx"], done)
                    if done:
                        assert ctx.get(dut.done_overflow) >> d & 1 == r["overflow"]
                        if r["mx"]:
                            assert ctx.get(dut.done_scales[d]) == r["scales"], (d, r["idx"])
                        done_at[d].append(r["idx"])
                    assert ctx.get(dut.data[d]) == r["data"][j], (d, r["idx"], j)
                    cur[d][1] += 1
                    fifo[d].append((r, j))
                    assert len(fifo[d]) <= F, f"port {d}: egress FIFO overflow"
                    if j == r["beats"] - 1:
                        r["readers"].discard(d)
                        if not r["readers"]:
                            r["freed_at"] = t
                    if times[d][0] is None:
                        times[d][0] = t
                    times[d][1] = t
                elif done:
                    raise AssertionError(f"port {d}: a done record without a beat")
                # send: a RESULT starts once its done record is here (the deparser's rule),
                # then one beat per cycle; an underrun is a beat missing mid-RESULT
                if not stall(d, t):
                    if sending[d] is None and fifo[d] and fifo[d][0][0]["idx"] in done_at[d]:
                        assert fifo[d][0][1] == 0
                        sending[d] = [fifo[d][0][0], 0]
                        queued[d] -= 1
                    if sending[d] is not None:
                        assert fifo[d], f"port {d}: underrun in RESULT {sending[d][0]['idx']} at {t}"
                        r, j = fifo[d].pop(0)
                        pops |= 1 << d
                        sent[d].append((r["idx"], j))
                        if j == r["beats"] - 1:
                            sending[d] = None
            ctx.set(dut.pop, pops)
            # --- entries: in use from allocation to the cycle after the last read
            in_use = ctx.get(dut.in_use)
            for e, r in list(in_use_since.items()):
                if r["alloc_at"] == t:
                    continue
                if r["freed_at"] is not None and r["freed_at"] <= t:
                    assert not in_use >> e & 1, f"entry {e} still in use after its last read"
                    del in_use_since[e]
                else:
                    assert in_use >> e & 1, f"entry {e} freed before its last reader read it"
            await ctx.tick()
            t += 1

    sim.add_testbench(bench)
    sim.run()
    for d in range(P):
        want = [(r["idx"], j) for r in results if r["dest"] >> d & 1 for j in range(r["beats"])]
        assert sent[d] == want, f"port {d}: sent {len(sent[d])} beats of {len(want)}"
    assert not pending and not held, "RESULTs never allocated"
    assert len(results) == len(requests)
    return times, results


PARAMS = [Params(ports=2, data_width=128, slots=8, slot_elems=32, jobs=2),
          Params(ports=3, data_width=256, slots=8, slot_elems=64, jobs=2),
          Params(ports=4, data_width=128, slots=8, slot_elems=64, jobs=2)]


@pytest.mark.parametrize("p", PARAMS, ids=lambda p: p.name())
def test_random_results(p):
    """Random RESULTs (destinations, lengths, sources) at random times."""
    rng = random.Random(7)
    P = p.ports
    t = 10
    reqs = []
    for _ in range(60):
        t += rng.choice([0, 1, 2, 5, 20])
        dest = rng.randrange(1, 1 << P)
        reqs.append((t, dest, rng.randint(1, p.slot_lines), rng.randrange(P)))
    run(p, reqs, cycles=t + 60 * p.slot_lines * 2 + 200)


@pytest.mark.parametrize("p", PARAMS, ids=lambda p: p.name())
def test_burst_to_shared_destinations(p):
    """Every port completes a full-slot RESULT to every port in the same cycles, again and
    again: the writers never wait for one another, and every port reads at about one
    beat per cycle."""
    P = p.ports
    L = p.slot_lines
    rounds = 12
    reqs = [(10 + k * L * P // 2 + s, (1 << P) - 1, L, s) for k in range(rounds) for s in range(P)]
    times, results = run(p, reqs, cycles=rounds * L * P + 400)
    beats = rounds * P * L
    for d in range(P):
        first, last = times[d]
        # one beat per cycle, plus a turn per RESULT at most
        assert last - first + 1 <= beats + rounds * P * P, (d, last - first + 1, beats)


def test_stalled_destination():
    """Port 0 stops reading: RESULTs to the other ports keep flowing; port 0's wait (only
    they), and arrive in order once it reads again."""
    p = Params(ports=4, data_width=128, slots=8, slot_elems=64, jobs=2)
    L = p.slot_lines
    stall_until = 1500
    reqs = []
    t = 10
    for k in range(40):
        reqs.append((t, 0b0011, L, k % 2))                # job A: ports 0 and 1 (port 0 stalls)
        # job B: ports 2 and 3, in bursts of 4 (as fast as its ports can send them)
        reqs.append((10 + 4 * L * (k // 4) + L // 2, 0b1100, L, 2 + k % 2))
        t += L
    times, results = run(p, reqs, stall=lambda d, t: d == 0 and t < stall_until, cycles=3500)
    # job B's RESULTs all went out during port 0's stall, at the rate they came: the
    # entries port 0 holds leave enough of each kind (a burst's worth) for job B
    last_b = max(times[2][1], times[3][1])
    assert last_b < t + 4 * L + 100, f"job B ended at {last_b}, its last RESULT was due at {t}"
    # job A's could not: port 0 held at most its quota and the one it read
    assert times[0][1] > stall_until
