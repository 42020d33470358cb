"""Functional regression of the exported `aggswitch` (INT32 datapath).

Every test drives real frames through the AXI4-Stream ports and ends with the harness'
scoreboard (tb/cocotb/harness.py): every RESULT frame of every port equal, byte for byte
and in order, to the golden model's (tb/model), nothing missing or extra, and the latency
exact when the test sent the completing frame into an idle switch, bounded below under load.
On top of that, the tests check the arithmetic independently (NumPy-free Python sums) and
assert that the golden model classified each crafted frame as the test intends, so a test
cannot silently stop exercising its clause.

Tests are parameter-generic (ports, data_width, slots, slot_elems, jobs from AGGSWITCH_*).
"""

import itertools
import random

import cocotb
from cocotb.triggers import with_timeout
from cocotbext.axi import AxiStreamFrame

from tb.cocotb.harness import (INT32_MAX, INT32_MIN, TB, fix_lengths, patch, sat32, start,
                               worker_addr)
from tb.model import frames as F

TIMEOUT_US = 5000  # per test, simulated time (the clock period is 4 ns)

ACCEPTED = "accepted"


# ----------------------------------------------------------------- helpers

def expect(rec, drop=ACCEPTED, action=None, completed=None, what=""):
    """Assert the golden model's verdict on an ingress frame is what the test intends."""
    o = rec.outcome
    assert o is not None, f"{what}: the golden model failed on this frame"
    want = None if drop == ACCEPTED else drop
    if o.drop != want:
        raise AssertionError(
            f"{what}: golden model says {o.drop_name or 'accepted'} ({o.action}), the test "
            f"expects {F.DROP_REASONS[want] if want is not None else 'accepted'} -- test or "
            "model out of step with docs/SPEC.md")
    if action is not None and o.action != action:
        raise AssertionError(f"{what}: golden model action {o.action}, test expects {action}")
    if completed is not None and o.completed != completed:
        raise AssertionError(f"{what}: golden model completed={o.completed}, test expects "
                             f"{completed}")
    return o


def column_sums(vals):
    """Exact element-wise sums of the workers' value lists."""
    return [sum(col) for col in zip(*vals)]


SWITCH_DEFAULT = (F.DEFAULT_MAC, F.DEFAULT_IP, F.DEFAULT_AGG_PORT)


def check_result(frame: bytes, port: int, *, slot: int, bank: int, seq: int, sums,
                 job: int = 0, unicast: bool = False, ts=None, scale: int = 0, what="",
                 dst=None, switch=SWITCH_DEFAULT):
    """Check a RESULT frame against the spec directly (independent of the golden model).
    `dst`: the worker's (MAC, IPv4, UDP port), default worker_addr(port)."""
    p = F.parse_frame(frame)
    h = p.hdr
    exp_vals = [sat32(s) for s in sums]
    overflow = any(e != s for e, s in zip(exp_vals, sums))
    got_vals = [int(x) for x in F.int32_from_payload(p.payload)]
    mac, ip, udp = dst or worker_addr(port)
    errs = []

    def chk(name, got, exp):
        if got != exp:
            errs.append(f"{name}: got {got!r}, expected {exp!r}")
    chk("ver/op", (h.ver, h.op), (1, F.OP_RESULT))
    chk("dtype", h.dtype, F.INT32)
    chk("job", h.job, job)
    chk("slot", h.slot, slot)
    chk("worker", h.worker, F.RESULT_WORKER)
    chk("flags", h.flags, (bank & 1) | (F.FLAG_OVERFLOW if overflow else 0)
        | (F.FLAG_UNICAST if unicast else 0))
    chk("seq", h.seq, seq)
    chk("count", h.count, len(sums))
    chk("scale", h.scale, scale)
    if ts is not None:
        chk("timestamp", p.timestamp, ts & 0xFFFFFFFF)
    chk("reserved tail", h.reserved[4:], bytes(3))
    chk("dst", (p.dst_mac, p.dst_ip, p.dst_port), (mac, ip, udp))
    chk("src", (p.src_mac, p.src_ip, p.src_port), tuple(switch))
    chk("ethertype/ip", (p.ethertype, p.ip_version, p.ip_ihl, p.ip_ttl, p.ip_proto, p.checksum_ok),
        (0x0800, 4, 5, 64, 17, True))
    chk("lengths", (p.ip_total_length, p.udp_length, p.length),
        (p.length - 14, p.length - 34, 64 + 4 * len(sums)))
    chk("udp checksum", p.udp_checksum, 0)
    if got_vals != exp_vals:
        bad = [i for i in range(min(len(got_vals), len(exp_vals))) if got_vals[i] != exp_vals[i]]
        errs.append(f"payload: {len(bad)} elements differ, first "
                    + ", ".join(f"[{i}] got {got_vals[i]} exp {exp_vals[i]}" for i in bad[:4]))
    if errs:
        raise AssertionError(f"{what} RESULT on port {port}: " + "; ".join(errs))


def extreme_values(rng: random.Random, n: int, workers: int):
    """Per-worker values whose partial sums overflow int32 in some orders and whose totals
    sometimes saturate: exercises exact accumulation and egress saturation."""
    vals = [[0] * n for _ in range(workers)]
    for j in range(n):
        kind = j % 5
        for w in range(workers):
            if kind == 0:
                v = INT32_MAX
            elif kind == 1:
                v = INT32_MIN
            elif kind == 2:
                v = INT32_MAX if w % 2 == 0 else INT32_MIN
            elif kind == 3:
                v = rng.choice((INT32_MAX, INT32_MIN, rng.randint(INT32_MIN, INT32_MAX)))
            else:
                v = rng.randint(INT32_MIN, INT32_MAX)
            vals[w][j] = v
    return vals


async def finish(tb: TB):
    """End of test: let everything drain, compare every counter with the golden model's,
    then the scoreboard (raises on any error, counters included)."""
    await tb.settle()
    await tb.check_counters()
    tb.check()


# ------------------------------------------------------------------- tests

@cocotb.test(timeout_time=TIMEOUT_US, timeout_unit="us")
async def test_single_round(dut):
    """One slot, every worker: results bit-exact on every port, latency exact."""
    tb = await start(dut, "test_single_round")
    P, n = tb.ports, tb.p.slot_elems
    vals = [tb.random_values(n, -(1 << 28), 1 << 28) for _ in range(P)]
    for w in range(P - 1):
        tb.send(w, tb.data(w, 0, vals[w], seq=7))
    rec = await tb.send_isolated(P - 1, tb.data(P - 1, 0, vals[P - 1], seq=7))
    expect(rec, action="join" if P > 1 else "new", completed=True, what="completing frame")
    await tb.settle()
    for port in range(P):
        res = tb.epoch.egress[port]
        assert len(res) == 1, f"port {port}: {len(res)} RESULT frames, expected 1"
        check_result(res[0].data, port, slot=0, bank=0, seq=7, sums=column_sums(vals),
                     ts=rec.t_last, what="round 1")
        lat = res[0].t_first - rec.t_last
        assert lat == tb.latency, f"port {port}: latency {lat}, documented {tb.latency}"

    # Every worker at once, sums that saturate (OVERFLOW): latency bounded, bits exact.
    ext = extreme_values(tb.rng, n, P)
    for w in range(P):
        tb.send(w, tb.data(w, 1, ext[w], seq=8))
    await tb.settle()
    for port in range(P):
        res = tb.epoch.egress[port]
        assert len(res) == 2, f"port {port}: {len(res)} RESULT frames, expected 2"
        check_result(res[1].data, port, slot=1, bank=0, seq=8, sums=column_sums(ext),
                     what="saturating round")
    await finish(tb)


@cocotb.test(timeout_time=TIMEOUT_US, timeout_unit="us")
async def test_aggregation_rules(dut):
    """Every clause of SPEC §5: new round, join, completion multicast, resend after
    completion (UNICAST), duplicate drop, mismatch drops (dtype, count, scale, seq), bank
    alternation and the clearing of a worker's bit in the other bank."""
    tb = await start(dut, "test_aggregation_rules")
    P = tb.ports
    last = P - 1
    S = min(5, tb.p.slots - 1)
    n = min(24, tb.p.slot_elems)
    vals = {seq: [tb.random_values(n, -100000, 100000) for _ in range(P)] for seq in (10, 11, 12)}

    def frame(w, seq, bank, **kw):
        return tb.data(w, S, vals[seq][w], seq=seq, bank=bank, **kw)

    def n_results(port):
        return len(tb.epoch.egress[port])

    # §5.1: the first frame starts a new round, the others join, the last completes it.
    expect(await tb.send_wait(0, frame(0, 10, 0)), action="new", what="round 10 worker 0")
    for w in range(1, last):
        expect(await tb.send_wait(w, frame(w, 10, 0)), action="join", what=f"round 10 worker {w}")
    done = await tb.send_isolated(last, frame(last, 10, 0))
    expect(done, action="join", completed=True, what="round 10 completing frame")
    await tb.settle()
    for port in range(P):
        assert n_results(port) == 1, f"port {port}: completion must multicast one RESULT"
        check_result(tb.epoch.egress[port][0].data, port, slot=S, bank=0, seq=10,
                     sums=column_sums(vals[10]), ts=done.t_last, what="round 10")

    # §5.2: a worker whose bit is set in a complete round gets the RESULT again, alone.
    w = 1 % P
    r = await tb.send_isolated(w, frame(w, 10, 0, retx=True))
    expect(r, action="resend", what="retransmission after completion")
    await tb.settle()
    for port in range(P):
        assert n_results(port) == (2 if port == w else 1), f"port {port}: resend is unicast"
    check_result(tb.epoch.egress[w][1].data, w, slot=S, bank=0, seq=10,
                 sums=column_sums(vals[10]), unicast=True, ts=done.t_last, what="resend")

    # Bank alternation: the next round of the slot uses bank 1.
    expect(await tb.send_wait(0, frame(0, 11, 1)), action="new", what="round 11 worker 0")
    # §5.3: the same worker again in a round not complete: duplicate.
    expect(await tb.send_wait(0, frame(0, 11, 1)), drop=F.DUPLICATE, what="duplicate")
    expect(await tb.send_wait(0, frame(0, 11, 1, retx=True)), drop=F.DUPLICATE,
           what="duplicate with RETX")
    # Bank 0 is still complete, and `last` has not moved on: resend while bank 1 is busy.
    r = await tb.send_isolated(last, frame(last, 10, 0, retx=True))
    expect(r, action="resend", what="resend of bank 0 while bank 1 is in progress")

    # Mismatch: joining round 11 with another count, scale, seq or dtype.
    w = 1 % P
    short = tb.data(w, S, vals[11][w][:n - 1], seq=11, bank=1)
    expect(await tb.send_wait(w, short), drop=F.MISMATCH, what="count mismatch")
    expect(await tb.send_wait(w, frame(w, 11, 1, scale=3)), drop=F.MISMATCH, what="scale mismatch")
    expect(await tb.send_wait(w, tb.data(w, S, vals[11][w], seq=12, bank=1)), drop=F.MISMATCH,
           what="seq mismatch")
    fp32 = frame(w, 11, 1, dtype=F.FP32)  # FP32 has INT32's payload length
    expect(await tb.send_wait(w, fp32),
           drop=F.MISMATCH if F.FP32 in tb.supported_dtypes else F.MALFORMED,
           what="dtype mismatch (MALFORMED while this build lacks FP32)")

    # None of those touched the round: it completes with the original contributions.
    for w in range(1, last):
        expect(await tb.send_wait(w, frame(w, 11, 1)), action="join", what=f"round 11 worker {w}")
    done = await tb.send_isolated(last, frame(last, 11, 1))
    expect(done, completed=True, what="round 11 completing frame")
    await tb.settle()
    for port in range(P):
        check_result(tb.epoch.egress[port][-1].data, port, slot=S, bank=1, seq=11,
                     sums=column_sums(vals[11]), ts=done.t_last, what="round 11")

    # Back to bank 0: its last round is complete, so the first frame starts a new round.
    expect(await tb.send_wait(0, frame(0, 12, 0)), action="new", what="round 12 worker 0")
    for w in range(1, last):
        expect(await tb.send_wait(w, frame(w, 12, 0)), action="join", what=f"round 12 worker {w}")
    done = await tb.send_isolated(last, frame(last, 12, 0))
    expect(done, completed=True, what="round 12 completing frame")
    await tb.settle()
    for port in range(P):
        check_result(tb.epoch.egress[port][-1].data, port, slot=S, bank=0, seq=12,
                     sums=column_sums(vals[12]), ts=done.t_last, what="round 12")

    # Worker `last` contributed to bank 0 (round 12): that cleared its bit in bank 1, so a
    # late retransmission of round 11 is not a resend but starts a new round in bank 1.
    r = await tb.send_isolated(last, frame(last, 11, 1, retx=True))
    expect(r, action="new", what="stale retransmission after moving to the other bank")
    # ... while worker 0, still set in bank 0's complete round 12, gets a resend.
    r = await tb.send_isolated(0, frame(0, 12, 0, retx=True))
    expect(r, action="resend", what="resend of round 12")
    await finish(tb)


def _static_drop_cases(tb: TB):
    """(name, port, frame bytes or (bytes, per-byte tkeep), expected drop code, slot of the
    check round).
    Every case is a DATA frame for the check round's (slot, bank) spoiled in one way, from
    another source address (a wrongly admitted frame would change the learned address)."""
    P, B = tb.ports, tb.beat_bytes
    # 64 + 64 bytes: whole beats at every data width up to 512; at 1024 (a 128-byte beat)
    # 64 + 192 bytes, two beats, so that the cases that cut a beat have one to cut
    n = 16 if B <= 64 else min(48, tb.p.slot_elems)
    se, slots, jobs = tb.p.slot_elems, tb.p.slots, tb.p.jobs
    S = min(9, slots - 1)
    vals = tb.random_values(n, -1000, 1000)

    def base(port=0, **kw):
        kw.setdefault("slot", S)
        f = tb.data(port, kw.pop("slot"), kw.pop("values", vals), **kw)
        # another host's addresses (checksum refreshed)
        f = patch(f, 6, (0x02_BA_D0_00_00_00 + port).to_bytes(6, "big"), checksum=False)
        f = patch(f, 26, (0x0A_BA_D0_00 + port).to_bytes(4, "big"), checksum=False)
        f = patch(f, 34, (0xBAD0 + port).to_bytes(2, "big"))
        return f

    def agg(off, value: bytes, **kw):
        return patch(base(**kw), 42 + off, value)

    good = base()
    cases = []

    def add(name, frame, code, slot=S, port=0):
        cases.append((name, port, frame, code, slot))

    # rule 1
    keep = [1] * len(good)
    k = list(keep); k[10] = 0
    add("tkeep hole in a non-last beat", (good, k), F.MALFORMED)
    k = list(keep); k[-2] = 0
    add("last-beat tkeep not contiguous", (good, k), F.MALFORMED)
    k = list(keep); k[len(good) - B] = 0
    add("last-beat tkeep not from bit 0", (good, k), F.MALFORMED)
    add("last beat with tkeep zero", (good + bytes(B), keep + [0] * B), F.MALFORMED)
    add("runt, L < 14", good[:10], F.MALFORMED)
    add("one byte", good[:1], F.MALFORMED)
    # rule 2
    add("EtherType IPv6", patch(good, 12, b"\x86\xdd", checksum=False), F.NOT_AGG)
    add("EtherType VLAN", patch(good, 12, b"\x81\x00", checksum=False), F.NOT_AGG)
    # rule 3
    add("L < 34", good[:30], F.MALFORMED)
    add("IPv4 version 6", patch(good, 14, b"\x65"), F.MALFORMED)
    add("IPv4 IHL 6", patch(good, 14, b"\x46"), F.MALFORMED)
    bad_sum = bytearray(good); bad_sum[24] ^= 0x01
    add("bad IPv4 header checksum", bytes(bad_sum), F.MALFORMED)
    # rule 4
    add("IPv4 protocol TCP", patch(good, 23, b"\x06"), F.NOT_AGG)
    # rule 5
    add("L < 42", good[:40], F.MALFORMED)
    # rule 6
    add("wrong UDP destination port", patch(good, 36, (F.DEFAULT_AGG_PORT + 1).to_bytes(2, "big")),
        F.NOT_AGG)
    # rule 7
    add("L < 64", good[:50], F.MALFORMED)
    add("L < 64, lengths consistent", fix_lengths(good[:63]), F.MALFORMED)
    add("IPv4 total length too large", patch(good, 16, (len(good) - 10).to_bytes(2, "big")),
        F.MALFORMED)
    add("UDP length too small", patch(good, 38, (len(good) - 38).to_bytes(2, "big")), F.MALFORMED)
    add("AGG ver 2", agg(0, b"\x20"), F.MALFORMED)
    add("AGG op RESULT", agg(0, b"\x11"), F.MALFORMED)
    if F.FP32 not in tb.supported_dtypes:
        add("dtype FP32 (not in this build)", agg(1, bytes([F.FP32])), F.MALFORMED)
    add("dtype 9 (unknown)", agg(1, b"\x09"), F.MALFORMED)
    if F.BF16 in tb.supported_dtypes:
        add("BF16 with an INT32-length payload", agg(1, bytes([F.BF16])), F.MALFORMED)
    mx = [d for d in (F.MXINT8, F.MXFP8_E4M3, F.MXFP8_E5M2) if d in tb.supported_dtypes]
    if mx:
        add("MX count not a multiple of 32",
            base(dtype=mx[0], count=33, payload=bytes(64 + 33)), F.MALFORMED)
        add("MX payload one byte short",
            base(dtype=mx[-1], count=32, payload=bytes(64 + 31)), F.MALFORMED)
        add("MX without its scale line",
            base(dtype=mx[0], count=32, payload=bytes(32)), F.MALFORMED)
    add("count 0, no payload", fix_lengths(agg(12, b"\0\0")[:64]), F.MALFORMED)
    big = tb.random_values(se + 1, -1000, 1000)
    add("count slot_elems + 1", base(values=big), F.MALFORMED)
    add("count above the payload", agg(12, (n + 1).to_bytes(2, "big")), F.MALFORMED)
    add("truncated", good[:-4], F.MALFORMED)
    add("truncated, lengths consistent", fix_lengths(good[:-4]), F.MALFORMED)
    add("truncated by a beat, lengths consistent", fix_lengths(good[:-B]), F.MALFORMED)
    add("oversized", good + bytes(4), F.MALFORMED)
    add("oversized, lengths consistent", fix_lengths(good + bytes(4)), F.MALFORMED)
    add("oversized by far, lengths consistent",
        fix_lengths(good + bytes(2 * tb.p.max_frame_bytes)), F.MALFORMED)
    # rule 8
    if jobs > 1:
        add("job 1 (disabled by default)", base(job=1), F.JOB_DISABLED)
    add("job = jobs", agg(2, jobs.to_bytes(2, "big")), F.JOB_DISABLED)
    add("job 0xFFFF", agg(2, b"\xff\xff"), F.JOB_DISABLED)
    # rule 9 (check the slot the index would alias to if truncated)
    add("slot = slots", base(slot=slots), F.SLOT_RANGE, slot=0)
    add("slot 0xFFFF", base(slot=0xFFFF), F.SLOT_RANGE, slot=0xFFFF % slots)
    add("slot = 2 * slots + S", base(slot=2 * slots + S), F.SLOT_RANGE, slot=S)
    # rule 10
    add("worker index of another port", base(worker=1), F.WORKER)
    add("worker 0xFF", base(worker=0xFF), F.WORKER)
    add("worker 0 on the last port", base(port=P - 1, worker=0), F.WORKER, port=P - 1)
    return cases


@cocotb.test(timeout_time=TIMEOUT_US, timeout_unit="us")
async def test_static_drops(dut):
    """Every static drop reason of SPEC §10.2 (rules 1-10), each frame followed by a valid
    round on the slot it targets (or would alias to), which must come out exactly as if the
    dropped frame had never arrived: no slot state, bitmap or learned address changed."""
    tb = await start(dut, "test_static_drops")
    P = tb.ports
    n = 16
    bank = {}
    seq = 100
    for name, port, bad, code, slot in _static_drop_cases(tb):
        seq += 1
        b = bank.get(slot, 0)
        bank[slot] = b ^ 1
        vals = [tb.random_values(n, -5000, 5000) for _ in range(P)]

        def bad_frame():
            # aim the spoiled frame at this round's bank and seq: admitted by mistake, it
            # would start the round or count as a contribution to it
            data, tkeep = bad if isinstance(bad, tuple) else (bad, None)
            f = bytearray(data)
            if len(f) >= 64 and f[12:14] == b"\x08\x00":
                f[49] = (f[49] & ~1) | b
                f[50:54] = seq.to_bytes(4, "big")
            return bytes(f) if tkeep is None else AxiStreamFrame(bytes(f), tkeep=list(tkeep))

        expect(await tb.send_wait(port, bad_frame()), drop=code, what=name)
        for w in range(P - 1):
            tb.send(w, tb.data(w, slot, vals[w], seq=seq, bank=b))
        await tb.settle(quiet=8)
        expect(await tb.send_wait(port, bad_frame()), drop=code, what=name + " (again)")
        done = await tb.send_isolated(P - 1, tb.data(P - 1, slot, vals[P - 1], seq=seq, bank=b))
        expect(done, completed=True, what=f"round after '{name}'")
        await tb.settle(quiet=8)
        for p in range(P):
            check_result(tb.epoch.egress[p][-1].data, p, slot=slot, bank=b, seq=seq,
                         sums=column_sums(vals), ts=done.t_last, what=f"round after '{name}'")
        tb.log.info("%-45s dropped as %s, no state changed", name, F.DROP_REASONS[code])

    # Fields the switch must ignore (SPEC §10.2 "Not checked"): the round is accepted.
    seq += 1
    vals = [tb.random_values(n, -5000, 5000) for _ in range(P)]
    S = min(9, tb.p.slots - 1)
    b = bank.get(S, 0)
    variants = [
        lambda f: patch(f, 0, bytes.fromhex("0a0b0c0d0e0f"), checksum=False),  # dst MAC
        lambda f: patch(f, 30, bytes([192, 168, 7, 7])),                       # dst IPv4
        lambda f: patch(f, 22, b"\x01"),                                       # TTL 1
        lambda f: patch(f, 18, b"\x12\x34\x40\x00"),                           # id, DF
        lambda f: patch(f, 15, b"\xb8"),                                       # DSCP/ECN
        lambda f: patch(f, 40, b"\xbe\xef"),                                   # UDP checksum
        lambda f: patch(f, 49, bytes([f[49] | 0x1E])),                         # flag bits 1-4
        lambda f: patch(f, 57, b"\x55" * 7),                                   # reserved
    ]
    for w in range(P):
        f = tb.data(w, S, vals[w], seq=seq, bank=b)
        for i in range(w, len(variants), P):
            f = variants[i](f)
        rec = await tb.send_wait(w, f, exact=(w == P - 1))
        expect(rec, completed=(w == P - 1), what=f"ignored fields, worker {w}")
    await tb.settle()
    for p in range(P):
        check_result(tb.epoch.egress[p][-1].data, p, slot=S, bank=b, seq=seq,
                     sums=column_sums(vals), what="round with ignored fields")
    await finish(tb)


@cocotb.test(timeout_time=TIMEOUT_US, timeout_unit="us")
async def test_random_traffic(dut):
    """SwitchML-style workers over many slots and both banks, random counts and values,
    retransmissions, duplicates and noise frames, random ingress idle cycles and egress
    back-pressure; checked frame for frame by the scoreboard and by independent sums."""
    tb = await start(dut, "test_random_traffic")
    P, se = tb.ports, tb.p.slot_elems
    nslots = min(16, tb.p.slots)
    nchunks = 4 * nslots
    rng = tb.rng
    slot_of = rng.sample(range(tb.p.slots), nslots)
    chunks = []
    for i in range(nchunks):
        count = rng.choice((1, se, rng.randint(1, se), rng.randint(1, se)))
        if rng.random() < 0.25:
            vals = extreme_values(rng, count, P)
        else:
            vals = [[rng.randint(INT32_MIN // P, INT32_MAX // P) for _ in range(count)]
                    for _ in range(P)]
        chunks.append(dict(slot=slot_of[i % nslots], bank=(i // nslots) % 2, seq=1000 + i,
                           vals=vals))
    tb.random_idle(0.3)
    tb.random_backpressure(0.4)
    queues = [tb.subscribe(p) for p in range(P)]
    got = [dict() for _ in range(P)]  # (slot, bank, seq) -> first RESULT received
    wrng = [random.Random(rng.getrandbits(64)) for _ in range(P)]

    def frame(w, c, retx=False):
        return tb.data(w, c["slot"], c["vals"][w], seq=c["seq"], bank=c["bank"], retx=retx)

    def noise(w, r):
        c = chunks[r.randrange(nchunks)]
        f = frame(w, c)
        kind = r.randrange(4)
        if kind == 0:
            return patch(f, 36, b"\x12\x34")             # not for the AGG port
        if kind == 1:
            return patch(f, 44, (tb.p.slots + r.randrange(100)).to_bytes(2, "big"))  # slot
        if kind == 2:
            return f[:r.randrange(1, len(f))]             # truncated
        return patch(f, 48, bytes([(w + 1) % P]))         # wrong worker index

    async def take(w):
        rec = await with_timeout(queues[w].get(), 400, "us")
        h = F.parse_frame(rec.data).hdr
        got[w].setdefault((h.slot, h.flags & 1, h.seq), rec.data)

    async def worker(w):
        r = wrng[w]
        for i, c in enumerate(chunks):
            if i >= nslots:
                prev = chunks[i - nslots]
                key = (prev["slot"], prev["bank"], prev["seq"])
                while key not in got[w]:
                    await take(w)
                if r.random() < 0.1:     # retransmission of a round already answered
                    tb.send(w, frame(w, prev, retx=True))
            tb.send(w, frame(w, c))
            if r.random() < 0.05:        # duplicate (or resend, if the round completes first)
                tb.send(w, frame(w, c, retx=True))
            if r.random() < 0.05:
                tb.send(w, noise(w, r))
            # keep at most a couple of frames queued so that arrivals interleave
            await tb.source_below(w, 2)
        for c in chunks[-nslots:]:
            while (c["slot"], c["bank"], c["seq"]) not in got[w]:
                await take(w)

    tasks = [cocotb.start_soon(worker(w)) for w in range(P)]
    for t in tasks:
        await with_timeout(t, 2000, "us")
    tb.set_idle_generator(None)
    tb.set_backpressure_generator(None)
    await tb.settle()
    for w in range(P):
        for c in chunks:
            key = (c["slot"], c["bank"], c["seq"])
            check_result(got[w][key], w, slot=c["slot"], bank=c["bank"], seq=c["seq"],
                         sums=column_sums(c["vals"]), what=f"chunk seq {c['seq']}")
    lats = [lat for _, _, lat in tb.latencies()]
    tb.log.info("%d chunks, %d RESULT frames, latency min %d max %d (documented %d)",
                nchunks, len(lats), min(lats), max(lats), tb.latency)
    await finish(tb)


@cocotb.test(timeout_time=TIMEOUT_US, timeout_unit="us")
async def test_retransmissions_at_line_rate(dut):
    """Duplicates, mismatches and resends cost the switch no more than the beats they
    occupy (issue 11): every port streams full frames back to back, its own rounds mixed
    with DUPLICATE copies of a round in progress, MISMATCH frames for it and RETX copies
    of completed rounds (unicast resends from the shadow bank), and `tready` never falls:
    each port takes its frames in exactly their beats. The RESULTs are checked by the
    scoreboard and against independent sums."""
    tb = await start(dut, "test_retransmissions_at_line_rate")
    P, n = tb.ports, tb.p.slot_elems
    K = min(tb.p.slots - 1, 12)              # rounds on slots 1..K; slot 0 stays in progress
    assert P >= 2 and K >= 3, "needs two ports and four slots"
    vals = {s: [tb.random_values(n, INT32_MIN // P, INT32_MAX // P) for _ in range(P)]
            for s in range(K + 1)}
    # Every frame has the same length, so the ports stay in step: frame k of every port
    # ends in the same cycle and is decided in port order (docs/SPEC.md §10.3).
    held = 1000                              # slot 0: port 0's round, never joined until the end

    def frame(w, s, seq=None, retx=False):
        return tb.data(w, s, vals[s][w], seq=s if seq is None else seq, retx=retx)

    plan = [[] for _ in range(P)]
    for w in range(P):
        plan[w].append(frame(w, 0, held if w == 0 else held + 1))   # new / MISMATCH
        for i in range(1, K + 1):
            plan[w].append(frame(w, i))                            # new or join
            if w == 0:
                plan[w].append(frame(w, 0, held, retx=True))       # DUPLICATE
            else:
                plan[w].append(frame(w, 0, held + 1 + i))          # MISMATCH
            if i >= 3:
                plan[w].append(frame(w, i - 2, retx=True))         # resend
        if w:
            plan[w].append(frame(w, 0, held))                      # the last completes slot 0
    for w in range(P):
        for f in plan[w]:
            tb.send(w, f)
    await tb.settle()

    recs = tb.epoch.ingress
    kinds = {}
    for r in recs:
        o = r.outcome
        k = o.drop_name if o.drop is not None else o.action
        kinds[k] = kinds.get(k, 0) + 1
    tb.log.info("outcomes %s", kinds)
    # the traffic is what this test is about
    assert kinds.get("duplicate", 0) == K, kinds
    assert kinds.get("mismatch", 0) == (P - 1) * (K + 1), kinds
    assert kinds.get("resend", 0) == P * (K - 2), kinds
    for w in range(P):
        mine = [r for r in recs if r.port == w]
        assert len(mine) == len(plan[w]), f"port {w}: {len(mine)} of {len(plan[w])} frames"
        stalls = sum(r.stalls for r in mine)
        beats = sum(-(-len(r.data) // tb.beat_bytes) for r in mine)
        span = mine[-1].t_last - mine[0].t_first + 1
        assert stalls == 0, (f"port {w}: tready low for {stalls} cycles while it offered "
                             f"{beats} beats")
        assert span == beats, f"port {w}: {beats} beats took {span} cycles"
    for port in range(P):
        res = {}
        for e in tb.epoch.egress[port]:
            h = F.parse_frame(e.data).hdr
            res.setdefault(h.slot, e.data)
        assert sorted(res) == list(range(K + 1)), f"port {port}: RESULTs of slots {sorted(res)}"
        for s in range(1, K + 1):
            check_result(res[s], port, slot=s, bank=0, seq=s, sums=column_sums(vals[s]),
                         what=f"slot {s}")
        check_result(res[0], port, slot=0, bank=0, seq=held, sums=column_sums(vals[0]),
                     what="slot 0")
    await finish(tb)


@cocotb.test(timeout_time=TIMEOUT_US, timeout_unit="us")
async def test_order_independence(dut):
    """The same contributions in several arrival orders (one after the other, and all at
    once) give bit-identical sums and flags: accumulation is exact (SPEC §4)."""
    tb = await start(dut, "test_order_independence")
    P = tb.ports
    n = min(40, tb.p.slot_elems)
    vals = extreme_values(tb.rng, n, P)
    orders = [list(range(P)), list(reversed(range(P)))]
    for _ in range(3):
        orders.append(tb.rng.sample(range(P), P))
    orders = orders[:max(1, tb.p.slots - 1)]  # one slot per order, one for "all at once"
    slot = 0
    for k, order in enumerate(orders):
        for j, w in enumerate(order):
            f = tb.data(w, slot + k, vals[w], seq=500)
            if j == P - 1:
                await tb.send_isolated(w, f)
            else:
                await tb.send_wait(w, f)
    k = len(orders)
    for w in range(P):
        tb.send(w, tb.data(w, slot + k, vals[w], seq=500))
    await tb.settle()
    sums = column_sums(vals)
    payloads = set()
    for p in range(P):
        res = tb.epoch.egress[p]
        assert len(res) == k + 1, f"port {p}: {len(res)} RESULTs, expected {k + 1}"
        for i, g in enumerate(res):
            check_result(g.data, p, slot=slot + i, bank=0, seq=500, sums=sums,
                         what=f"order {orders[i] if i < k else 'simultaneous'}")
            pf = F.parse_frame(g.data)
            payloads.add((pf.payload, pf.hdr.flags))
    assert len(payloads) == 1, f"{len(payloads)} different sums for the same contributions"
    await finish(tb)


@cocotb.test(timeout_time=TIMEOUT_US, timeout_unit="us")
async def test_reset_mid_frame(dut):
    """Reset in the middle of an ingress frame (with a round in progress), and again while
    RESULT frames wait on stalled egress ports: afterwards every slot is empty, the cut
    frame's tail is dropped, nothing stale comes out, and normal rounds work."""
    tb = await start(dut, "test_reset_mid_frame")
    P, n = tb.ports, tb.p.slot_elems
    v1 = [tb.random_values(n, -1000, 1000) for _ in range(P)]
    for w in range(P - 1):
        tb.send(w, tb.data(w, 0, v1[w], seq=1))
    await tb.settle()
    # a slow frame on the last port, cut by a one-cycle reset after its second beat
    tb.set_idle_generator(lambda: itertools.cycle([0, 1, 1]))
    tb.send(P - 1, tb.data(P - 1, 0, v1[P - 1], seq=1))
    await tb.wait_until(lambda: len(tb._in_beats[P - 1]) >= 2, 200, "frame half-way in")
    await tb.reset(cycles=1)
    tb.set_idle_generator(None)
    await tb.settle()
    tails = tb.outcomes(P - 1)
    assert len(tails) == 1, f"expected the cut frame's tail as one frame, got {len(tails)}"
    assert tails[0].outcome.drop is not None, "the tail of a cut frame must be dropped"
    tb.log.info("tail of the cut frame (%d bytes) dropped as %s", len(tails[0].data),
                tails[0].outcome.drop_name)

    # Slot 0 is empty: the last worker's frame starts a round rather than completing one.
    v2 = [tb.random_values(n, -1000, 1000) for _ in range(P)]
    expect(await tb.send_wait(P - 1, tb.data(P - 1, 0, v2[P - 1], seq=1)), action="new",
           what="first frame after reset")
    for w in range(P - 1):
        tb.send(w, tb.data(w, 0, v2[w], seq=1))
    await tb.settle()
    for p in range(P):
        check_result(tb.epoch.egress[p][-1].data, p, slot=0, bank=0, seq=1,
                     sums=column_sums(v2), what="round after reset")

    # RESULTs stuck behind stalled egress ports when reset comes: they are cut, not resumed.
    for s in tb.sinks:
        s.pause = True
    for w in range(P):
        tb.send(w, tb.data(w, 1, v2[w], seq=2))
    m_valid = [getattr(dut, f"m{p}_axis_tvalid") for p in range(P)]
    await tb.wait_until(lambda: all(bool(v.value) for v in m_valid), None, "RESULTs waiting")
    await tb.cycles(5)
    await tb.reset(cycles=3, allow_missing=True)
    for s in tb.sinks:
        s.pause = False
    await tb.settle()
    assert not any(tb.epoch.egress), "stale RESULT frames after reset"
    v3 = [tb.random_values(n, -1000, 1000) for _ in range(P)]
    expect(await tb.send_wait(0, tb.data(0, 1, v3[0], seq=3)), action="new",
           what="slot 1 after the second reset")
    for w in range(1, P - 1):
        tb.send(w, tb.data(w, 1, v3[w], seq=3))
    await tb.send_isolated(P - 1, tb.data(P - 1, 1, v3[P - 1], seq=3))
    await tb.settle()
    for p in range(P):
        check_result(tb.epoch.egress[p][-1].data, p, slot=1, bank=0, seq=3,
                     sums=column_sums(v3), what="round after the second reset")
    await finish(tb)


@cocotb.test(timeout_time=TIMEOUT_US, timeout_unit="us")
async def test_all_counts(dut):
    """count = 1 .. slot_elems, one round each: bit-exact, and the latency is the same
    documented constant for every count (deterministic latency, SPEC §9)."""
    tb = await start(dut, "test_all_counts")
    P, se, slots = tb.ports, tb.p.slot_elems, tb.p.slots
    counts = list(range(1, se + 1))
    batch = max(1, min(slots, 32))
    sums = {}
    for b0 in range(0, len(counts), batch):
        group = counts[b0:b0 + batch]
        frames = {}
        for i, c in enumerate(group):
            idx = b0 + i
            slot, bank = idx % slots, (idx // slots) % 2
            vals = [tb.random_values(c) for _ in range(P)]
            sums[c] = (slot, bank, column_sums(vals))
            frames[c] = [tb.data(w, slot, vals[w], seq=c, bank=bank) for w in range(P)]
        # all but the last worker, every port streaming
        for c in group:
            for w in range(P - 1):
                tb.send(w, frames[c][w])
        await tb.settle()
        # then each completing frame alone into the idle switch
        for c in group:
            rec = await tb.send_isolated(P - 1, frames[c][P - 1], quiet=2)
            expect(rec, completed=True, what=f"count {c}")
    await tb.settle()
    lat_by_count = {}
    for e, g, lat in tb.latencies():
        h = F.parse_frame(g.data).hdr
        lat_by_count.setdefault(h.count, set()).add(lat)
    for p in range(P):
        by_seq = {}
        for g in tb.epoch.egress[p]:
            by_seq.setdefault(F.parse_frame(g.data).hdr.seq, []).append(g)
        for c in counts:
            slot, bank, s = sums[c]
            res = by_seq.get(c, [])
            assert len(res) == 1, f"count {c}, port {p}: {len(res)} RESULTs"
            check_result(res[0].data, p, slot=slot, bank=bank, seq=c, sums=s, what=f"count {c}")
    bad = {c: sorted(l) for c, l in lat_by_count.items() if l != {tb.latency}}
    assert not bad, f"latency differs from {tb.latency} for counts {bad}"
    await finish(tb)


@cocotb.test(timeout_time=TIMEOUT_US, timeout_unit="us")
async def test_result_order(dut):
    """SPEC §10.5: on each port RESULTs leave in the order their rounds completed or their
    resends were triggered. Port 0 sends its frame of round B, then a retransmission of the
    complete round A (a resend); the other workers complete B afterwards, while port 0's
    egress is stalled so that everything queues up in the switch. Port 0 must get A's
    resend before B's RESULT."""
    tb = await start(dut, "test_result_order")
    P = tb.ports
    vals = [[w + 1, -w] for w in range(P)]
    for w in range(P):                                    # round A (slot 3): complete
        tb.send(w, tb.data(w, 3, vals[w], seq=1))
    await tb.settle()
    tb.sinks[0].pause = True                              # stall port 0's egress ...
    for k in range(8):                                    # ... behind a few more RESULTs
        for w in range(P):
            tb.send(w, tb.data(w, 10 + k, vals[w], seq=100 + k))
    await tb.wait_until(lambda: all(src.idle() for src in tb.sources), None, "rounds sent")
    await tb.cycles(tb.quiet_cycles())
    r = await tb.send_wait(0, tb.data(0, 4, vals[0], seq=2))        # round B, worker 0
    expect(r, action="new", what="round B, worker 0")
    r = await tb.send_wait(0, tb.data(0, 3, vals[0], seq=1, retx=True))  # A again
    expect(r, action="resend", what="retransmission of round A")
    for w in range(1, P):                                 # round B completes after that
        r = await tb.send_wait(w, tb.data(w, 4, vals[w], seq=2))
    expect(r, completed=True, what="round B completing frame")
    await tb.cycles(2 * tb.latency)
    tb.sinks[0].pause = False
    await tb.settle()
    seqs = [F.parse_frame(g.data).hdr.seq for g in tb.epoch.egress[0]]
    assert seqs[-2:] == [1, 2], (f"port 0 RESULT order by seq {seqs}: the resend of round A "
                                 "(seq 1) must precede round B's RESULT (seq 2)")
    await finish(tb)


@cocotb.test(timeout_time=TIMEOUT_US, timeout_unit="us")
async def test_processing_order(dut):
    """SPEC §10.3: frames are applied in the order of their tlast handshakes, whatever the
    buffering. Round R has contributions from workers 1..P-2; with the switch backed up
    (port 0's egress stalled), worker 0 joins R, worker 1 sends a frame for another slot
    and then R's frame again (a duplicate: R is not complete yet), and only then the last
    worker completes R. Applied in order, the repeat is a DUPLICATE drop, not a resend."""
    tb = await start(dut, "test_processing_order")
    P = tb.ports
    if P < 3:
        tb.log.warning("needs 3 ports: skipped")
        return
    last = P - 1
    vals = [[w + 1, 100 * w] for w in range(P)]
    for w in range(1, last):                              # round R (slot 5): workers 1..P-2
        tb.send(w, tb.data(w, 5, vals[w], seq=1))
    await tb.settle()
    tb.sinks[0].pause = True                              # back the switch up
    for k in range(8):
        for w in range(P):
            tb.send(w, tb.data(w, 10 + k, vals[w], seq=100 + k))
    await tb.wait_until(lambda: all(src.idle() for src in tb.sources), None, "rounds sent")
    await tb.cycles(tb.quiet_cycles())
    expect(await tb.send_wait(0, tb.data(0, 5, vals[0], seq=1)), action="join",
           what="worker 0 joins R")
    expect(await tb.send_wait(1, tb.data(1, 6, vals[1], seq=2)), action="new",
           what="worker 1, another slot")
    expect(await tb.send_wait(1, tb.data(1, 5, vals[1], seq=1, retx=True)),
           drop=F.DUPLICATE, what="worker 1 repeats its R frame before R completes")
    expect(await tb.send_wait(last, tb.data(last, 5, vals[last], seq=1)), completed=True,
           what="last worker completes R")
    await tb.cycles(2 * tb.latency)
    tb.sinks[0].pause = False
    await finish(tb)


@cocotb.test(timeout_time=TIMEOUT_US, timeout_unit="us")
async def test_control_plane(dut):
    """AXI4-Lite (SPEC §8, §10.1, §10.7): identification, parameters, latency, cycle
    counter, reset defaults, SLVERR on bad accesses; a new switch address takes effect
    (frames to the old AGG port are NOT_AGG, RESULTs come from the new address)."""
    tb = await start(dut, "test_control_plane")
    d = tb.driver
    if d is None:
        tb.log.warning("no register map (aggswitch.driver) in this build: skipped")
        return
    from tb.cocotb.harness import AxilError
    p = tb.p
    info = await d.identify()
    want = {"ports": p.ports, "data_width": p.data_width, "slots": p.slots,
            "slot_elems": p.slot_elems, "jobs": p.jobs, "latency": tb.latency}
    for k, v in want.items():
        assert info[k] == v, f"{k.upper()} reads {info[k]}, expected {v}"
    before = tb.cycle
    cyc = await d.read("CYCLES")
    after = tb.cycle
    assert before <= cyc <= after, f"CYCLES read {cyc}, the cycle counter was {before}..{after}"
    defaults = {"SWITCH_MAC_HI": F.DEFAULT_MAC >> 32, "SWITCH_MAC_LO": F.DEFAULT_MAC & 0xFFFFFFFF,
                "SWITCH_IP": F.DEFAULT_IP, "AGG_PORT": F.DEFAULT_AGG_PORT}
    for name, v in defaults.items():
        got = await d.read(name)
        assert got == v, f"{name} resets to {got:#x}, SPEC §10.1 says {v:#x}"
    for j in range(p.jobs):
        got = await d.job(j)
        exp = ({"enable": True, "port_mask": (1 << p.ports) - 1, "slot_base": 0,
                "slot_count": p.slots} if j == 0 else
               {"enable": False, "port_mask": 0, "slot_base": 0, "slot_count": 0})
        assert got == exp, f"job {j} resets to {got}, SPEC §10.1 says {exp}"
    for what, coro in (("read of an unmapped address", tb.bus.read(0x0FFC)),
                       ("write to a read-only register", tb.bus.write(0x000, 0x1234)),
                       ("write to an unmapped address", tb.bus.write(0x0FFC, 1))):
        try:
            await coro
        except AxilError:
            continue
        raise AssertionError(f"{what} did not answer SLVERR")

    # A new switch address: the old AGG port is no longer ours.
    n = min(8, p.slot_elems)
    vals = [tb.random_values(n, -1000, 1000) for _ in range(tb.ports)]
    stale = tb.data(0, 2, vals[0], seq=1)
    new = (0x02_11_22_33_44_55, 0x0A_09_08_07, 0x5A5A)
    await tb.set_switch_address(*new)
    for name, v in (("SWITCH_MAC_HI", new[0] >> 32), ("SWITCH_MAC_LO", new[0] & 0xFFFFFFFF),
                    ("SWITCH_IP", new[1]), ("AGG_PORT", new[2])):
        assert await d.read(name) == v, f"{name} did not take the value written"
    expect(await tb.send_wait(0, stale), drop=F.NOT_AGG, what="frame to the old AGG port")
    for w in range(tb.ports - 1):
        tb.send(w, tb.data(w, 2, vals[w], seq=1))
    await tb.send_isolated(tb.ports - 1, tb.data(tb.ports - 1, 2, vals[-1], seq=1))
    await tb.settle()
    for port in range(tb.ports):
        check_result(tb.epoch.egress[port][-1].data, port, slot=2, bank=0, seq=1,
                     sums=column_sums(vals), switch=new, what="after the address change")
    await finish(tb)


@cocotb.test(timeout_time=TIMEOUT_US, timeout_unit="us")
async def test_job_table(dut):
    """Two tenants (SPEC §5, §8, §10.7): disjoint slot ranges, job 1 on the odd ports.
    Rounds of both jobs at once with the same job-relative slot stay isolated; RESULTs go
    to each job's ports only, addressed with each job's learned addresses; job-table
    admission (slot range, port mask, worker rank); disabling a job mid-round drops its
    frames and re-enabling it resumes the round where it stood."""
    tb = await start(dut, "test_job_table")
    P, p = tb.ports, tb.p
    if tb.driver is None or p.jobs < 2 or p.slots < 2:
        tb.log.warning("needs the register map, 2 jobs and 2 slots: skipped")
        return
    half = p.slots // 2
    all_ports = (1 << P) - 1
    mask1 = sum(1 << q for q in range(1, P, 2))
    ports1 = [q for q in range(P) if mask1 >> q & 1]
    await tb.configure_job(0, port_mask=all_ports, slot_base=0, slot_count=half)
    await tb.configure_job(1, port_mask=mask1, slot_base=half, slot_count=p.slots - half)
    for j, (m, b, c) in ((0, (all_ports, 0, half)), (1, (mask1, half, p.slots - half))):
        got = await tb.driver.job(j)
        assert got == {"enable": True, "port_mask": m, "slot_base": b, "slot_count": c}, \
            f"job {j} reads back {got}"
    n = min(16, p.slot_elems)
    alt = {q: (0x02_00_00_00_20_00 + q, 0x0A_00_02_00 + q, 0xD000 + q) for q in range(P)}

    # Both jobs, job-relative slot 0 (pool slots 0 and `half`), all frames at once.
    v0 = [tb.random_values(n) for _ in range(P)]
    v1 = {q: tb.random_values(n) for q in ports1}
    for q in range(P):
        tb.send(q, tb.data(q, 0, v0[q], seq=5))
        if q in v1:
            tb.send(q, tb.data(q, 0, v1[q], seq=9, job=1, src=alt[q]))
    await tb.settle()
    for q in range(P):
        res = {(F.parse_frame(g.data).hdr.job): g.data for g in tb.epoch.egress[q]}
        assert set(res) == ({0, 1} if q in v1 else {0}), f"port {q}: RESULTs of jobs {set(res)}"
        check_result(res[0], q, slot=0, bank=0, seq=5, sums=column_sums(v0), what="job 0")
        if q in v1:
            check_result(res[1], q, job=1, slot=0, bank=0, seq=9, dst=alt[q],
                         sums=column_sums([v1[k] for k in ports1]), what="job 1")

    # Admission against the new table.
    if 0 not in ports1:
        expect(await tb.send_wait(0, tb.data(0, 1, v0[0], seq=6, job=1, worker=0)),
               drop=F.WORKER, what="job 1 from a port outside its mask")
    expect(await tb.send_wait(0, tb.data(0, half, v0[0], seq=6)), drop=F.SLOT_RANGE,
           what="job 0 slot beyond its shrunk range")
    q1 = ports1[-1]
    expect(await tb.send_wait(q1, tb.data(q1, p.slots - half, v1[q1], seq=6, job=1)),
           drop=F.SLOT_RANGE, what="job 1 slot = its slot_count")
    if len(ports1) > 1:
        expect(await tb.send_wait(q1, tb.data(q1, 1, v1[q1], seq=6, job=1, worker=0)),
               drop=F.WORKER, what="job 1 worker index of another port")

    # Disable job 1 in the middle of a round, then re-enable it: the round resumes.
    v2 = {q: tb.random_values(n) for q in ports1}
    first, rest = ports1[0], ports1[1:]
    if rest:
        expect(await tb.send_wait(first, tb.data(first, 1, v2[first], seq=7, job=1)),
               action="new", what="job 1 round, first worker")
        await tb.set_job_enable(1, False)
        expect(await tb.send_wait(rest[0], tb.data(rest[0], 1, v2[rest[0]], seq=7, job=1)),
               drop=F.JOB_DISABLED, what="job 1 disabled")
        await tb.set_job_enable(1, True)
        for q in rest:
            await tb.send_wait(q, tb.data(q, 1, v2[q], seq=7, job=1))
        await tb.settle()
        for q in ports1:
            check_result(tb.epoch.egress[q][-1].data, q, job=1, slot=1, bank=0, seq=7,
                         sums=column_sums([v2[k] for k in ports1]), what="resumed job 1 round")
    await finish(tb)


@cocotb.test(timeout_time=TIMEOUT_US, timeout_unit="us")
async def test_monitor_readback(dut):
    """The harness' monitor takes the ingress beats from the harness' own sources instead
    of reading the bus back every cycle, and reads the bus back at the tlast handshake of
    every frame: a bus that does not carry what the source drove must be reported. With a
    fault put into port 0's source (its tdata writes flip bit 0 of every beat), one frame
    (one the switch drops whatever bit 0 is: not IPv4, no RESULT) must give exactly one
    readback error; the same frame again, the fault removed, none."""
    tb = await start(dut, "test_monitor_readback")
    frame = bytes(range(1, 13)) + b"\x88\xb5" + bytes(tb.rng.getrandbits(8) for _ in range(150))
    st = tb.sources[0]._st
    write = st.w_data
    st.w_data = lambda v: write(v ^ 1)
    rec = await tb.send_wait(0, frame)
    st.w_data = write
    expect(rec, drop=F.NOT_AGG, what="faulted frame")
    found = [e for e in tb.errors if "not the beat its source drove" in e]
    assert len(found) == 1 and len(tb.errors) == 1, tb.errors
    assert f"cycle {rec.t_last}:" in found[0], (found, rec.t_last)
    tb.errors.clear()
    rec = await tb.send_wait(0, frame)
    expect(rec, drop=F.NOT_AGG, what="same frame, no fault")
    assert not tb.errors, tb.errors
    await finish(tb)
