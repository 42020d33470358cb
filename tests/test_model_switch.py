"""Switch-level golden model: admission (SPEC 10.2), aggregation (5),
RESULT frames (6, 10.4, 10.5) and counters (8). Expected values are
hand-derived from the spec."""

import itertools
import struct

import pytest

from tb.model import frames as F
from tb.model.frames import (DUPLICATE, JOB_DISABLED, MALFORMED, MISMATCH, NOT_AGG,
                             SLOT_RANGE, WORKER)
from tb.model.switch import Job, SwitchModel, tkeep_valid


def wmac(p):
    return 0x020000000100 + p


def wip(p):
    return 0x0A000100 + p


def wport(p):
    return 5000 + p


def dframe(port, values, *, job=0, slot=0, worker=None, seq=1, bank=0, dtype=F.INT32,
           scale=0, count=None, payload=None, mac=None, ip=None, udp=None, retx=False):
    if worker is None:
        worker = port
    if payload is None:
        payload = F.int32_payload(values)
    if count is None:
        count = len(values)
    return F.data_frame(worker_mac=wmac(port) if mac is None else mac,
                        worker_ip=wip(port) if ip is None else ip,
                        worker_port=wport(port) if udp is None else udp,
                        job=job, slot=slot, worker=worker, seq=seq, dtype=dtype,
                        count=count, scale=scale, payload=payload, bank=bank, retx=retx)


def fix_ip_checksum(f):
    f = bytearray(f)
    f[24:26] = b"\x00\x00"
    f[24:26] = F.ipv4_checksum(bytes(f[14:34])).to_bytes(2, "big")
    return bytes(f)


def set_lengths(f):
    """Make IPv4 total length and UDP length agree with len(f)."""
    f = bytearray(f)
    f[16:18] = (len(f) - 14).to_bytes(2, "big")
    f[38:40] = (len(f) - 34).to_bytes(2, "big")
    return fix_ip_checksum(f)


def patch(f, off, data, checksum=True):
    f = bytearray(f)
    f[off:off + len(data)] = data
    return fix_ip_checksum(f) if checksum else bytes(f)


def snapshot(m):
    return m.snapshot()


def values_of(result_frame):
    return F.int32_from_payload(F.parse_frame(result_frame).payload).tolist()


# ---------------------------------------------------------------- defaults
def test_reset_defaults():
    m = SwitchModel()
    assert m.switch_mac == 0x024147000001 and m.switch_ip == 0x0A000001
    assert m.agg_port == 0x4147
    assert m.job_table[0] == Job(True, 0b1111, 0, 64)
    assert all(j == Job(False, 0, 0, 0) for j in m.job_table[1:])
    assert len(m.job_table) == 4
    m8 = SwitchModel(ports=8, slots=16, jobs=2)
    assert m8.job_table[0] == Job(True, 0xFF, 0, 16) and len(m8.job_table) == 2
    assert m8.learned[1][7] == (0, 0, 0)


def test_reset_restores_everything():
    m = SwitchModel()
    m.switch_mac = 5
    m.job_table[1] = Job(True, 1, 0, 1)
    m.process(0, dframe(0, [1]), 0)
    m.reset()
    assert m.switch_mac == F.DEFAULT_MAC and m.job_table[1] == Job(False, 0, 0, 0)
    assert m.counters.rx == [0, 0, 0, 0] and m.learned[0][0] == (0, 0, 0)
    assert m.slot_state(0, 0).bitmap == 0
    # a frame after reset starts a new round again
    assert m.process(0, dframe(0, [1]), 0).action == "new"


# ---------------------------------------------------------- round life cycle
def test_new_join_complete_multicast():
    m = SwitchModel()
    vals = [[1, -2, 3], [10, 20, -30], [100, 200, 300], [-1000, 0, 7]]
    o = m.process(0, dframe(0, vals[0], seq=77, slot=5), t_last=100)
    assert (o.drop, o.action, o.completed, o.results) == (None, "new", False, [])
    st = m.slot_state(5, 0)
    assert st.bitmap == 0b0001 and not st.complete
    o = m.process(2, dframe(2, vals[2], seq=77, slot=5), t_last=101)
    assert (o.action, o.completed) == ("join", False)
    o = m.process(1, dframe(1, vals[1], seq=77, slot=5), t_last=102)
    assert (o.action, o.completed) == ("join", False)
    assert m.slot_state(5, 0).bitmap == 0b0111
    o = m.process(3, dframe(3, vals[3], seq=77, slot=5), t_last=0x1_2345_6789)
    assert (o.drop, o.action, o.completed) == (None, "join", True)
    assert [p for p, _ in o.results] == [0, 1, 2, 3]
    for port, fr in o.results:
        p = F.parse_frame(fr)
        assert p.dst_mac == wmac(port) and p.src_mac == F.DEFAULT_MAC
        assert p.ethertype == 0x0800
        assert (p.ip_version, p.ip_ihl, p.ip_tos, p.ip_id, p.ip_flags_frag) == (4, 5, 0, 0, 0)
        assert p.ip_ttl == 64 and p.ip_proto == 17 and p.checksum_ok
        assert p.ip_total_length == len(fr) - 14
        assert p.src_ip == F.DEFAULT_IP and p.dst_ip == wip(port)
        assert p.src_port == 0x4147 and p.dst_port == wport(port)
        assert p.udp_length == len(fr) - 34 and p.udp_checksum == 0
        assert fr[42] == 0x11
        h = p.hdr
        assert (h.dtype, h.job, h.slot, h.worker, h.flags, h.seq, h.count, h.scale) == \
            (0, 0, 5, 0xFF, 0, 77, 3, 0)
        assert fr[57:61] == bytes.fromhex("23456789")  # t_last & 0xffffffff
        assert fr[61:64] == b"\x00\x00\x00"
        assert p.timestamp == 0x23456789
        assert values_of(fr) == [-889, 218, 280]
        assert len(fr) == 64 + 12
    st = m.slot_state(5, 0)
    assert st.complete and st.bitmap == 0b1111
    c = m.counters
    assert c.rx == [1, 1, 1, 1] and c.accepted == [1, 1, 1, 1]
    assert c.tx == [1, 1, 1, 1] and c.resent == [0, 0, 0, 0]
    assert (c.results, c.overflows, c.nans) == (1, 0, 0)


def complete_round(m, values, *, slot=0, bank=0, seq=1, t=1000, ports=None, job=0,
                   scale=0):
    ports = range(m.ports) if ports is None else ports
    out = None
    for i, p in enumerate(ports):
        out = m.process(p, dframe(p, values[i], slot=slot, bank=bank, seq=seq, job=job,
                                  worker=i, scale=scale), t + i)
    assert out.completed
    return out


def test_bank_flag_echoed_and_scale_echoed():
    m = SwitchModel()
    o = complete_round(m, [[1]] * 4, bank=1, scale=-5, seq=0xFFFFFFFF)
    for _, fr in o.results:
        h = F.parse_frame(fr).hdr
        assert h.flags == F.FLAG_BANK and h.scale == -5 and h.seq == 0xFFFFFFFF
        assert values_of(fr) == [4]


def test_resend_unicast():
    m = SwitchModel()
    orig = complete_round(m, [[1, 2], [3, 4], [5, 6], [7, 8]], slot=3, t=500)
    # port 2 retransmits (RETX set, informational)
    o = m.process(2, dframe(2, [5, 6], slot=3, retx=True), t_last=9999)
    assert (o.drop, o.action, o.completed) == (None, "resend", False)
    assert len(o.results) == 1 and o.results[0][0] == 2
    fr = o.results[0][1]
    p = F.parse_frame(fr)
    assert p.hdr.flags == F.FLAG_UNICAST
    assert p.timestamp == 503  # the original completion time
    assert values_of(fr) == [16, 20]
    # identical to the original result except the flags byte and checksum-free parts
    orig2 = dict(orig.results)[2]
    assert fr[:49] == orig2[:49] and fr[50:] == orig2[50:]
    assert fr[49] == orig2[49] | F.FLAG_UNICAST
    c = m.counters
    assert c.tx == [1, 1, 2, 1] and c.resent == [0, 0, 1, 0]
    assert c.accepted == [1, 1, 2, 1] and c.results == 1
    # the round stays complete: a second resend works too
    assert m.process(2, dframe(2, [5, 6], slot=3), 1).action == "resend"


def test_resend_ignores_frame_fields():
    """Rule 2 is not a join: the stored result is resent whatever the
    retransmitted frame's dtype/count/scale/seq."""
    m = SwitchModel()
    complete_round(m, [[1]] * 4, seq=5)
    o = m.process(1, dframe(1, [9, 9], seq=6, scale=3), 0)
    assert o.action == "resend"
    h = F.parse_frame(o.results[0][1]).hdr
    assert (h.seq, h.count, h.scale) == (5, 1, 0)


def test_resend_overflow_nan_flags_kept():
    m = SwitchModel()
    complete_round(m, [[2**31 - 1], [1], [0], [0]], bank=1)
    o = m.process(0, dframe(0, [2**31 - 1], bank=1), 0)
    assert F.parse_frame(o.results[0][1]).hdr.flags == \
        F.FLAG_BANK | F.FLAG_OVERFLOW | F.FLAG_UNICAST


def test_duplicate():
    m = SwitchModel()
    m.process(0, dframe(0, [5]), 0)
    m.process(1, dframe(1, [6]), 1)
    snap = snapshot(m)
    o = m.process(0, dframe(0, [5], retx=True, mac=0x0200000000AA), 2)
    assert (o.drop, o.action, o.completed, o.results) == (DUPLICATE, None, False, [])
    assert snapshot(m) == snap  # no state, no learned address change
    assert m.counters.drops[DUPLICATE] == [1, 0, 0, 0]
    assert m.counters.drops["duplicate"] == [1, 0, 0, 0]
    assert m.counters.accepted == [1, 1, 0, 0]
    o = m.process(2, dframe(2, [7]), 3)
    o = m.process(3, dframe(3, [8]), 4)
    assert o.completed and values_of(o.results[0][1]) == [26]
    assert F.parse_frame(o.results[0][1]).dst_mac == wmac(0)


@pytest.mark.parametrize("what", ["dtype", "count", "scale", "seq"])
def test_mismatch(what):
    m = SwitchModel(supported_dtypes=(0, 1))
    m.process(0, dframe(0, [1, 2], seq=10, scale=2), 0)
    kw = dict(seq=10, scale=2)
    vals = [3, 4]
    if what == "dtype":
        kw["dtype"] = F.FP32
        kw["payload"] = bytes.fromhex("3f800000" "40000000")
    elif what == "count":
        vals = [3, 4, 5]
    elif what == "scale":
        kw["scale"] = 3
    else:
        kw["seq"] = 11
    snap = snapshot(m)
    o = m.process(1, dframe(1, vals, **kw), 1)
    assert (o.drop, o.action, o.results) == (MISMATCH, None, [])
    assert snapshot(m) == snap
    assert m.counters.drops["mismatch"] == [0, 1, 0, 0]
    # the round goes on with matching frames
    for p in (1, 2, 3):
        o = m.process(p, dframe(p, [10 * p, 1], seq=10, scale=2), 2 + p)
    assert o.completed and values_of(o.results[0][1]) == [61, 5]


def test_set_bit_is_duplicate_whatever_the_fields():
    """SPEC §5 rule 3: a frame whose bit is set never joins, so it is never a
    mismatch; a frame with its bit clear and other fields is."""
    m = SwitchModel()
    m.process(0, dframe(0, [1], seq=1), 0)
    assert m.process(0, dframe(0, [1], seq=2), 1).drop == DUPLICATE
    assert m.process(0, dframe(0, [1], seq=1), 2).drop == DUPLICATE
    assert m.process(1, dframe(1, [1], seq=2), 3).drop == MISMATCH
    assert m.slot_state(0, 0).bitmap == 0b0001


def test_new_round_on_complete_bank_is_not_a_mismatch():
    """A different seq on a bank whose round is complete starts a new round
    (bit clear) -- only rounds in progress are checked."""
    m = SwitchModel()
    complete_round(m, [[1]] * 4, seq=1, bank=0)
    for p in range(4):  # everyone moves to bank 1: clears their bank-0 bits
        m.process(p, dframe(p, [2], seq=2, bank=1), 10 + p)
    assert m.slot_state(0, 0).bitmap == 0 and m.slot_state(0, 0).complete
    o = m.process(2, dframe(2, [5, 5, 5], seq=3, bank=0), 20)
    assert o.action == "new"
    st = m.slot_state(0, 0)
    assert st.bitmap == 0b0100 and not st.complete and (st.seq, st.count) == (3, 3)
    assert st.acc.tolist() == [5, 5, 5]


def test_bank_alternation_clears_other_bank_bit():
    m = SwitchModel()
    complete_round(m, [[1]] * 4, bank=0, seq=1)
    # worker 1 sends its next chunk on bank 1: its bank-0 bit is cleared
    o = m.process(1, dframe(1, [100], bank=1, seq=2), 10)
    assert o.action == "new"
    assert m.slot_state(0, 0).bitmap == 0b1101
    assert m.slot_state(0, 1).bitmap == 0b0010
    # worker 0 can still get a resend of bank 0 ...
    assert m.process(0, dframe(0, [1], bank=0, seq=1), 11).action == "resend"
    # ... but worker 1's bank-0 retransmission now starts a new round (its bit
    # is clear and bank 0's last round is complete)
    o = m.process(1, dframe(1, [1], bank=0, seq=1), 12)
    assert (o.action, o.results) == ("new", [])
    assert m.slot_state(0, 0).bitmap == 0b0010
    assert not m.slot_state(0, 0).complete
    # and that cleared its bank-1 bit in turn
    assert m.slot_state(0, 1).bitmap == 0


def test_join_clears_other_bank_bit_of_round_in_progress():
    """Rule 1 clears w's bit in bank 1-b whatever the state of that bank."""
    m = SwitchModel()
    m.process(0, dframe(0, [1], bank=0), 0)
    m.process(1, dframe(1, [1], bank=0), 1)
    m.process(0, dframe(0, [2], bank=1, seq=9), 2)
    assert m.slot_state(0, 0).bitmap == 0b0010
    # worker 0 may contribute to bank 0's round again
    assert m.process(0, dframe(0, [1], bank=0), 3).action == "join"
    assert m.slot_state(0, 0).acc.tolist() == [3]


def test_two_banks_independent():
    m = SwitchModel()
    for p in range(4):
        m.process(p, dframe(p, [p], bank=0, seq=1), p)
        if p < 3:
            m.process(p, dframe(p, [10 * p], bank=1, seq=2), 10 + p)
    # p=0: bank 0 new {0}; its bank-1 frame starts bank 1 {0} and clears
    # bank-0 bit 0, leaving bank 0 empty. So each later bank-0 frame starts
    # a new round (empty bitmap) and each bank-1 frame joins and clears it.
    st0 = m.slot_state(0, 0)
    assert st0.bitmap == 0b1000 and not st0.complete and st0.acc.tolist() == [3]
    assert m.slot_state(0, 1).bitmap == 0b0111


def test_round_restart_replaces_accumulators():
    m = SwitchModel()
    complete_round(m, [[10, 10]] * 4, bank=0, seq=1)
    complete_round(m, [[1, 1]] * 4, bank=1, seq=2, t=2000)
    o = complete_round(m, [[1, 2], [3, 4], [5, 6], [7, 8]], bank=0, seq=3, t=3000)
    assert values_of(o.results[3][1]) == [16, 20]
    assert F.parse_frame(o.results[0][1]).hdr.seq == 3
    assert m.counters.results == 3


def test_overflow_saturation_int32():
    m = SwitchModel()
    o = complete_round(m, [[2**31 - 1, -2**31, 5], [1, -1, 6], [0, 0, 7], [0, 0, 8]])
    fr = o.results[0][1]
    assert values_of(fr) == [2**31 - 1, -2**31, 26]
    assert F.parse_frame(fr).hdr.flags == F.FLAG_OVERFLOW
    assert m.counters.overflows == 1
    # exact accumulation: no wrap, positive and negative excursions cancel
    m2 = SwitchModel()
    o = complete_round(m2, [[2**31 - 1], [2**31 - 1], [-2**31], [-2**31 + 1]])
    assert values_of(o.results[0][1]) == [-1]
    assert F.parse_frame(o.results[0][1]).hdr.flags == 0
    o = complete_round(m2, [[2**31 - 1]] * 4, slot=1)
    assert values_of(o.results[0][1]) == [2**31 - 1]  # 4*(2^31-1) saturates
    assert m2.counters.overflows == 1


def test_order_independence_all_permutations():
    vals = {0: [2**31 - 1, -7, 3], 1: [2**31 - 1, 11, -2**31], 2: [-2**31, -5, -2**31],
            3: [-2**31, 1, 12]}
    expect = [-2, 0, -2**31]  # exact sums, last saturates (-2^32+15)
    seen = set()
    for perm in itertools.permutations(range(4)):
        m = SwitchModel()
        for i, p in enumerate(perm):
            o = m.process(p, dframe(p, vals[p], slot=9), t_last=42 if i == 3 else i)
        assert o.completed
        assert [p for p, _ in o.results] == [0, 1, 2, 3]
        for _, fr in o.results:
            assert values_of(fr) == expect
            assert F.parse_frame(fr).hdr.flags == F.FLAG_OVERFLOW
        seen.add(tuple(fr for _, fr in o.results))
    assert len(seen) == 1


# --------------------------------------------------------- learned addresses
def test_learned_address_latest_accepted_frame():
    m = SwitchModel()
    m.process(0, dframe(0, [1], mac=0xAA, ip=0xBB, udp=0xCC), 0)
    m.process(1, dframe(1, [1]), 1)
    m.process(2, dframe(2, [1]), 2)
    assert m.learned[0][0] == (0xAA, 0xBB, 0xCC)
    # a dropped frame (duplicate) does not change it
    m.process(0, dframe(0, [1], mac=0xDD, ip=0xEE, udp=0xFF), 3)
    assert m.learned[0][0] == (0xAA, 0xBB, 0xCC)
    o = m.process(3, dframe(3, [1], mac=0x33, ip=0x44, udp=0x55), 4)
    r = {p: F.parse_frame(fr) for p, fr in o.results}
    assert (r[0].dst_mac, r[0].dst_ip, r[0].dst_port) == (0xAA, 0xBB, 0xCC)
    # the completing frame's own address is used ("after processing")
    assert (r[3].dst_mac, r[3].dst_ip, r[3].dst_port) == (0x33, 0x44, 0x55)
    # a resend-triggering frame is accepted: it updates the address first
    o = m.process(0, dframe(0, [1], mac=0x66, ip=0x77, udp=0x88), 5)
    p = F.parse_frame(o.results[0][1])
    assert (p.dst_mac, p.dst_ip, p.dst_port) == (0x66, 0x77, 0x88)
    assert m.learned[0][0] == (0x66, 0x77, 0x88)


def test_learned_address_per_job():
    m = SwitchModel()
    m.job_table[1] = Job(True, 0b0011, 10, 4)
    m.process(0, dframe(0, [1], mac=0x10), 0)
    m.process(0, dframe(0, [1], job=1, mac=0x11), 1)
    assert m.learned[0][0][0] == 0x10 and m.learned[1][0][0] == 0x11
    o = m.process(1, dframe(1, [2], job=1, mac=0x12), 2)
    assert o.completed and [p for p, _ in o.results] == [0, 1]
    assert F.parse_frame(o.results[0][1]).dst_mac == 0x11


def test_switch_address_change_applies_to_results():
    m = SwitchModel()
    m.switch_mac, m.switch_ip, m.agg_port = 0x02AABBCCDDEE, 0xC0A80001, 9000
    o = None
    for p in range(4):
        f = F.data_frame(worker_mac=wmac(p), worker_ip=wip(p), worker_port=wport(p), job=0,
                         slot=0, worker=p, seq=0, dtype=0, count=1, scale=0,
                         payload=F.int32_payload([1]), switch_mac=0x02AABBCCDDEE,
                         switch_ip=0xC0A80001, agg_port=9000)
        o = m.process(p, f, p)
    p = F.parse_frame(o.results[1][1])
    assert (p.src_mac, p.src_ip, p.src_port) == (0x02AABBCCDDEE, 0xC0A80001, 9000)
    # the old AGG port is now NOT_AGG
    assert m.process(0, dframe(0, [1]), 9).drop == NOT_AGG


# ------------------------------------------------------------ jobs and slots
def test_job_slot_mapping_and_echo():
    m = SwitchModel()
    m.job_table[2] = Job(True, 0b1010, 60, 4)  # global slots 60..63, ports 1 and 3
    a = m.process(1, dframe(1, [5], job=2, slot=3, worker=0), 0)
    assert a.action == "new"
    assert m.slot_state(63, 0).bitmap == 0b0010
    # job 0 slot 63 is the same pool entry: different seq -> mismatch
    assert m.process(0, dframe(0, [1], job=0, slot=63, seq=99), 1).drop == MISMATCH
    o = m.process(3, dframe(3, [6], job=2, slot=3, worker=1), 2)
    assert o.completed and [p for p, _ in o.results] == [1, 3]
    h = F.parse_frame(o.results[0][1]).hdr
    assert (h.job, h.slot) == (2, 3)  # job-relative slot
    assert values_of(o.results[0][1]) == [11]
    assert m.counters.tx == [0, 1, 0, 1]


def test_single_port_job_completes_immediately():
    m = SwitchModel()
    m.job_table[1] = Job(True, 0b0100, 0, 1)
    o = m.process(2, dframe(2, [7, -7], job=1, worker=0), 5)
    assert (o.action, o.completed) == ("new", True)
    assert [p for p, _ in o.results] == [2]
    assert values_of(o.results[0][1]) == [7, -7]
    assert m.process(2, dframe(2, [7, -7], job=1, worker=0), 6).action == "resend"


def test_two_port_instance():
    m = SwitchModel(ports=2, slots=4, slot_elems=32, jobs=1)
    assert m.process(0, dframe(0, [1], slot=4), 0).drop == SLOT_RANGE
    assert m.process(0, dframe(0, [1], job=1), 0).drop == JOB_DISABLED
    assert m.process(0, dframe(0, [1] * 33), 0).drop == MALFORMED
    m.process(0, dframe(0, [1] * 32, slot=3), 0)
    o = m.process(1, dframe(1, [2] * 32, slot=3), 1)
    assert [p for p, _ in o.results] == [0, 1] and values_of(o.results[0][1]) == [3] * 32


# ------------------------------------------------------------ static drops
def base():
    return dframe(1, [1, 2, 3], slot=2)


def check(frame, reason, port=1, tkeep_ok=True, model=None):
    m = model or SwitchModel()
    snap = snapshot(m)
    assert m.admit(port, frame, tkeep_ok) == reason
    o = m.process(port, frame, 0, tkeep_ok)
    assert o.drop == reason
    if reason is not None:
        assert o.action is None and o.results == [] and not o.completed
        assert snapshot(m) == snap
        assert m.counters.drops[reason][port] == 1
        assert m.counters.accepted[port] == 0
    assert m.counters.rx[port] == 1
    return m


def test_base_frame_accepted():
    m = check(base(), None)
    assert m.counters.accepted == [0, 1, 0, 0]


def test_rule1_tkeep_and_short():
    check(base(), MALFORMED, tkeep_ok=False)
    # tkeep violation beats every later rule, e.g. a non-IPv4 frame
    check(patch(base(), 12, b"\x86\xdd", False), MALFORMED, tkeep_ok=False)
    for n in (0, 1, 13):
        check(base()[:n], MALFORMED)
    # L = 14 with a non-IPv4 EtherType is NOT_AGG (rule 2 before rule 3)
    check(patch(base(), 12, b"\x08\x06", False)[:14], NOT_AGG)


def test_tkeep_helper():
    assert tkeep_valid([0xFFFF, 0xFFFF, 0x00FF], 128)
    assert tkeep_valid([0x0001], 128)
    assert not tkeep_valid([0xFFFF, 0x0000], 128)
    assert not tkeep_valid([0xFFFF, 0x00F0], 128)
    assert not tkeep_valid([0x7FFF, 0x0001], 128)
    assert not tkeep_valid([0xFFFF, 0x0101], 128)


def test_rule2_ethertype():
    check(patch(base(), 12, b"\x86\xdd", False), NOT_AGG)
    check(patch(base(), 12, b"\x81\x00", False), NOT_AGG)  # VLAN tag: not AGG
    # not IPv4 and too short for IPv4: rule 2 before rule 3
    check(patch(base(), 12, b"\x08\x06", False)[:20], NOT_AGG)


def test_rule3_ipv4_header():
    check(base()[:14], MALFORMED)
    check(base()[:33], MALFORMED)
    f = bytearray(base())
    f[14] = 0x65  # version 6
    check(fix_ip_checksum(f), MALFORMED)
    f = bytearray(base())
    f[14] = 0x46  # IHL 6
    check(fix_ip_checksum(f), MALFORMED)
    f = bytearray(base())
    f[24] ^= 0x01  # bad checksum
    check(bytes(f), MALFORMED)
    # a bad checksum beats a non-UDP protocol (rule 3 before rule 4)
    f = bytearray(base())
    f[23] = 6
    check(bytes(f), MALFORMED)


def test_rule4_protocol():
    check(patch(base(), 23, b"\x06"), NOT_AGG)
    # L = 34 (IPv4 header only) with TCP: rule 4 before rule 5
    check(patch(base(), 23, b"\x06")[:34], NOT_AGG)
    check(patch(base(), 23, b"\x01")[:40], NOT_AGG)


def test_rule5_udp_length():
    check(base()[:34], MALFORMED)
    check(base()[:41], MALFORMED)


def test_rule6_agg_port():
    check(patch(base(), 36, b"\x41\x48"), NOT_AGG)
    # L = 42: UDP header only, wrong port -> NOT_AGG (rule 6 before 7)
    check(patch(base(), 36, b"\x00\x35")[:42], NOT_AGG)
    # wrong port beats a bad AGG header / bad lengths
    f = patch(base(), 36, b"\x00\x35")
    f = patch(f, 42, b"\x21")
    check(f + b"\x00", NOT_AGG)
    # right port, L = 42 -> rule 7
    check(base()[:42], MALFORMED)


def test_rule7_lengths():
    b = base()
    check(b[:63], MALFORMED)
    check(set_lengths(b[:63]), MALFORMED)
    check(b[:64], MALFORMED)                          # lengths disagree
    check(b + b"\x00", MALFORMED)                     # oversized, lengths disagree
    check(b[:-1], MALFORMED)                          # truncated
    check(set_lengths(b + b"\x00\x00\x00\x00"), MALFORMED)  # lengths agree, payload too long
    check(set_lengths(b[:-4]), MALFORMED)             # lengths agree, payload too short
    check(set_lengths(b[:64]), MALFORMED)             # no payload
    # IPv4 total length alone off by one
    n = len(b)
    check(patch(b, 16, (n - 13).to_bytes(2, "big")), MALFORMED)
    # UDP length alone off by one
    check(patch(b, 38, (n - 33).to_bytes(2, "big")), MALFORMED)


def test_rule7_header_fields():
    b = base()
    check(patch(b, 42, b"\x20"), MALFORMED)   # ver 2
    check(patch(b, 42, b"\x00"), MALFORMED)   # ver 0
    check(patch(b, 42, b"\x11"), MALFORMED)   # op RESULT
    check(patch(b, 42, b"\x12"), MALFORMED)   # op 2
    check(dframe(1, [], count=0, payload=b"", slot=2), MALFORMED)
    # count above slot_elems (256) but consistent lengths
    check(dframe(1, [0] * 257, slot=2), MALFORMED)
    check(dframe(1, [0] * 256, slot=2), None)
    # dtype unsupported by this build
    for dt, pl in ((F.FP32, bytes(12)), (F.BF16, bytes(6))):
        check(dframe(1, None, count=3, payload=pl, dtype=dt, slot=2), MALFORMED)
    check(dframe(1, None, count=32, payload=bytes(96), dtype=F.MXINT8, slot=2), MALFORMED)
    # unknown dtype code
    check(patch(b, 43, b"\x06"), MALFORMED)
    check(patch(b, 43, b"\xff"), MALFORMED)
    # an unknown code stays MALFORMED even if listed as supported
    check(patch(b, 43, b"\x07"), MALFORMED, model=SwitchModel(supported_dtypes=(0, 7)))


def test_rule7_dtype_lengths_when_supported():
    m = SwitchModel(supported_dtypes=range(6), slot_elems=2048)
    check(dframe(1, None, count=3, payload=bytes(12), dtype=F.FP32, slot=2), None, model=m)
    mm = SwitchModel(supported_dtypes=range(6))
    check(dframe(1, None, count=3, payload=bytes(6), dtype=F.BF16, slot=2), None, model=mm)
    mm = SwitchModel(supported_dtypes=range(6))
    check(dframe(1, None, count=3, payload=bytes(12), dtype=F.BF16, slot=2), MALFORMED, model=mm)
    mm = SwitchModel(supported_dtypes=range(6))
    check(dframe(1, None, count=3, payload=bytes(6), dtype=F.FP32, slot=2), MALFORMED, model=mm)
    for dt in (F.MXINT8, F.MXFP8_E4M3, F.MXFP8_E5M2):
        mm = SwitchModel(supported_dtypes=range(6), slot_elems=2048)
        check(dframe(1, None, count=64, payload=bytes(128), dtype=dt, slot=2), None, model=mm)
        mm = SwitchModel(supported_dtypes=range(6), slot_elems=2048)
        # not a multiple of 32
        check(dframe(1, None, count=40, payload=bytes(104), dtype=dt, slot=2), MALFORMED,
              model=mm)
        mm = SwitchModel(supported_dtypes=range(6), slot_elems=2048)
        # INT32-sized payload for an MX dtype
        check(dframe(1, None, count=32, payload=bytes(128), dtype=dt, slot=2), MALFORMED,
              model=mm)
    mm = SwitchModel(supported_dtypes=range(6), slot_elems=4096)
    check(dframe(1, None, count=2048, payload=bytes(2112), dtype=F.MXINT8, slot=2), None,
          model=mm)
    mm = SwitchModel(supported_dtypes=range(6), slot_elems=4096)
    check(dframe(1, None, count=2080, payload=bytes(2144), dtype=F.MXINT8, slot=2), MALFORMED,
          model=mm)
    mm = SwitchModel(supported_dtypes=range(6), slot_elems=256)
    check(dframe(1, None, count=288, payload=bytes(352), dtype=F.MXINT8, slot=2), MALFORMED,
          model=mm)


def test_rule7_before_rule8():
    # disabled job, and malformed: MALFORMED
    check(patch(dframe(1, [1], job=1), 42, b"\x20"), MALFORMED)
    check(dframe(1, [0] * 257, job=3), MALFORMED)


def test_rule8_job():
    check(dframe(1, [1], job=1), JOB_DISABLED)
    check(dframe(1, [1], job=3), JOB_DISABLED)
    check(dframe(1, [1], job=4), JOB_DISABLED)        # >= jobs
    check(dframe(1, [1], job=0xFFFF), JOB_DISABLED)
    m = SwitchModel()
    m.job_table[0] = Job(False, 0b1111, 0, 64)
    check(dframe(1, [1]), JOB_DISABLED, model=m)
    # disabled job with an out-of-range slot and wrong worker: rule 8 first
    check(dframe(1, [1], job=1, slot=1000, worker=9), JOB_DISABLED)


def test_rule9_slot():
    check(dframe(1, [1], slot=64), SLOT_RANGE)
    check(dframe(1, [1], slot=0xFFFF), SLOT_RANGE)
    check(dframe(1, [1], slot=63), None)
    m = SwitchModel()
    m.job_table[1] = Job(True, 0b0010, 8, 4)
    check(dframe(1, [1], job=1, slot=4, worker=0), SLOT_RANGE, model=m)
    m = SwitchModel()
    m.job_table[1] = Job(True, 0b0010, 8, 4)
    check(dframe(1, [1], job=1, slot=3, worker=0), None, model=m)
    # rule 9 before rule 10
    m = SwitchModel()
    m.job_table[1] = Job(True, 0b0001, 8, 4)
    check(dframe(1, [1], job=1, slot=4, worker=7), SLOT_RANGE, model=m)
    # enabled job with slot_count 0
    m = SwitchModel()
    m.job_table[1] = Job(True, 0b0010, 0, 0)
    check(dframe(1, [1], job=1, slot=0, worker=0), SLOT_RANGE, model=m)


def test_rule9_pool_bound():
    """Project choice: a job range running past the pool drops as SLOT_RANGE."""
    m = SwitchModel()
    m.job_table[1] = Job(True, 0b0010, 62, 4)
    check(dframe(1, [1], job=1, slot=1, worker=0), None, model=m)
    m = SwitchModel()
    m.job_table[1] = Job(True, 0b0010, 62, 4)
    check(dframe(1, [1], job=1, slot=2, worker=0), SLOT_RANGE, model=m)


def test_rule10_worker():
    check(dframe(1, [1], worker=0), WORKER)
    check(dframe(1, [1], worker=2), WORKER)
    check(dframe(1, [1], worker=0xFF), WORKER)
    m = SwitchModel()
    m.job_table[1] = Job(True, 0b1010, 0, 8)  # port 1 -> worker 0, port 3 -> worker 1
    check(dframe(1, [1], job=1, worker=0), None, model=m)
    m = SwitchModel()
    m.job_table[1] = Job(True, 0b1010, 0, 8)
    check(dframe(3, [1], job=1, worker=1), None, port=3, model=m)
    m = SwitchModel()
    m.job_table[1] = Job(True, 0b1010, 0, 8)
    check(dframe(3, [1], job=1, worker=3), WORKER, port=3, model=m)
    m = SwitchModel()
    m.job_table[1] = Job(True, 0b1010, 0, 8)
    check(dframe(2, [1], job=1, worker=0), WORKER, port=2, model=m)  # port not in mask
    m = SwitchModel()
    m.job_table[1] = Job(True, 0, 0, 8)  # enabled, empty mask
    check(dframe(0, [1], job=1, worker=0), WORKER, port=0, model=m)
    # the same frame on another port is judged by that port's rank
    m = SwitchModel()
    check(dframe(1, [1]), WORKER, port=2, model=m)


def test_rule10_before_rule11():
    m = SwitchModel()
    m.process(0, dframe(0, [1], seq=1), 0)
    assert m.process(1, dframe(1, [1], seq=2, worker=3), 1).drop == WORKER
    assert m.process(1, dframe(1, [1], seq=2), 2).drop == MISMATCH


def test_unchecked_fields_accepted():
    b = base()
    check(patch(b, 0, bytes.fromhex("ffffffffffff"), False), None)   # dst MAC
    check(patch(b, 30, bytes([1, 2, 3, 4])), None)                  # dst IP
    check(patch(b, 22, b"\x01"), None)                              # TTL
    check(patch(b, 18, b"\x12\x34\x40\x00"), None)                  # id, DF flag
    check(patch(b, 15, b"\xb8"), None)                              # DSCP/ECN
    check(patch(b, 40, b"\xde\xad", False), None)                   # UDP checksum
    check(patch(b, 49, bytes([0xFE])), None)                        # flags (bit0 -> bank 0)
    check(patch(b, 57, b"\x01\x02\x03\x04\x05\x06\x07", False), None)  # reserved


def test_flags_other_bits_ignored_bank_used():
    m = SwitchModel()
    f = patch(dframe(0, [1], bank=1), 49, bytes([0xFF]), False)
    assert m.process(0, f, 0).action == "new"
    assert m.slot_state(0, 1).bitmap == 1 and m.slot_state(0, 0).bitmap == 0


def test_dropped_frames_change_no_state_mid_round():
    m = SwitchModel()
    m.job_table[1] = Job(True, 0b0011, 4, 2)
    m.process(0, dframe(0, [1, 1], slot=1, bank=1), 0)
    m.process(1, dframe(1, [1, 1], slot=1, bank=1), 1)
    complete_round(m, [[1]] * 4, slot=2, bank=0)
    snap = snapshot(m)
    bad = [
        (0, dframe(0, [5, 5], slot=1, bank=0), False),          # tkeep
        (0, patch(dframe(0, [5, 5], slot=1), 23, b"\x06"), True),
        (2, dframe(2, [5, 5], slot=1, bank=1, seq=3), True),    # mismatch
        (1, dframe(1, [5, 5], slot=1, bank=1), True),           # duplicate
        (2, dframe(2, [5, 5], slot=1, worker=1), True),         # worker
        (0, dframe(0, [5, 5], job=1, slot=2), True),            # slot range
        (0, dframe(0, [5, 5], job=2), True),                    # job disabled
    ]
    for port, f, ok in bad:
        o = m.process(port, f, 77, tkeep_ok=ok)
        assert o.drop is not None and o.results == []
    assert snapshot(m) == snap
    # the rounds go on as if the drops never happened
    o = m.process(2, dframe(2, [2, 3], slot=1, bank=1), 80)
    o = m.process(3, dframe(3, [4, 5], slot=1, bank=1), 81)
    assert o.completed and values_of(o.results[0][1]) == [8, 10]


# ---------------------------------------------------------------- counters
def test_counters():
    m = SwitchModel()
    m.process(0, b"\x00" * 10, 0)                                # malformed
    m.process(1, patch(base(), 12, b"\x86\xdd", False), 0)       # not_agg
    m.process(2, dframe(2, [1], job=1), 0)                       # job_disabled
    m.process(3, dframe(3, [1], slot=99), 0)                     # slot_range
    m.process(0, dframe(0, [1], worker=1), 0)                    # worker
    m.process(0, dframe(0, [1]), 0)
    m.process(1, dframe(1, [1], seq=5), 0)                       # mismatch
    m.process(0, dframe(0, [1]), 0)                              # duplicate
    for p in (1, 2, 3):
        m.process(p, dframe(p, [1]), 0)
    m.process(3, dframe(3, [1]), 0)                              # resend
    m.process(3, dframe(3, [1]), 0)                              # resend
    c = m.counters
    assert c.rx == [4, 3, 2, 4]
    assert c.accepted == [1, 1, 1, 3]
    assert c.tx == [1, 1, 1, 3]
    assert c.resent == [0, 0, 0, 2]
    expect = {"not_agg": [0, 1, 0, 0], "malformed": [1, 0, 0, 0],
              "job_disabled": [0, 0, 1, 0], "slot_range": [0, 0, 0, 1],
              "worker": [1, 0, 0, 0], "mismatch": [0, 1, 0, 0], "duplicate": [1, 0, 0, 0]}
    for code, name in enumerate(F.DROP_REASONS):
        assert c.drops[name] == expect[name]
        assert c.drops[code] == expect[name]
    for p in range(4):
        assert c.rx[p] == c.accepted[p] + c.drops_total(p)
    assert (c.results, c.overflows, c.nans) == (1, 0, 0)
    assert c["rx"] == c.rx
    d = c.as_dict()
    assert d["drops"]["worker"] == [1, 0, 0, 0] and d["results"] == 1


def test_nan_counter_and_flag_fp32():
    m = SwitchModel(supported_dtypes=(0, 1))
    one = bytes.fromhex("3f800000")
    nan = bytes.fromhex("7fc00000")
    o = None
    for p in range(4):
        o = m.process(p, dframe(p, None, dtype=F.FP32, count=1,
                                payload=nan if p == 2 else one), p)
    fr = o.results[0][1]
    p = F.parse_frame(fr)
    assert p.hdr.flags == F.FLAG_NAN and p.hdr.dtype == F.FP32
    assert p.payload == bytes.fromhex("40400000")  # 1+1+0+1 = 3.0
    assert (m.counters.nans, m.counters.overflows, m.counters.results) == (1, 0, 1)


def test_timestamp_wraps_to_32_bits():
    m = SwitchModel()
    for p in range(3):
        m.process(p, dframe(p, [1]), p)
    o = m.process(3, dframe(3, [1]), (5 << 32) | 0xFFFFFFFE)
    assert all(F.parse_frame(fr).timestamp == 0xFFFFFFFE for _, fr in o.results)


def test_outcome_drop_name():
    m = SwitchModel()
    assert m.process(0, dframe(0, [1], job=1), 0).drop_name == "job_disabled"
    assert m.process(0, dframe(0, [1]), 0).drop_name is None


def test_result_frame_layout_bytes():
    """RESULT byte layout for one hand-built case."""
    m = SwitchModel(ports=2, jobs=1)
    m.process(0, dframe(0, [0x01020304], slot=1, seq=0x0A0B0C0D, bank=1, scale=-1), 10)
    o = m.process(1, dframe(1, [1], slot=1, seq=0x0A0B0C0D, bank=1, scale=-1), 0x11223344)
    fr = dict(o.results)[1]
    assert fr[0:6] == wmac(1).to_bytes(6, "big")
    assert fr[6:12] == bytes.fromhex("024147000001")
    assert fr[12:14] == b"\x08\x00"
    assert fr[14:16] == b"\x45\x00" and fr[16:18] == (64 + 4 - 14).to_bytes(2, "big")
    assert fr[18:22] == bytes(4) and fr[22:24] == b"\x40\x11"
    assert F.ipv4_checksum(fr[14:34]) == struct.unpack(">H", fr[24:26])[0]
    assert fr[26:30] == bytes([10, 0, 0, 1]) and fr[30:34] == wip(1).to_bytes(4, "big")
    assert fr[34:36] == b"\x41\x47" and fr[36:38] == wport(1).to_bytes(2, "big")
    assert fr[38:40] == (64 + 4 - 34).to_bytes(2, "big") and fr[40:42] == b"\x00\x00"
    assert fr[42:64] == bytes.fromhex("11" "00" "0000" "0001" "ff" "01" "0a0b0c0d" "0001"
                                      "ff" "11223344" "000000")
    assert fr[64:] == bytes.fromhex("01020305")


def test_mxint8_round_through_switch():
    """Each worker sends one MXINT8 block: scale byte 127, element 0x40 = 1.0,
    element 1 = 0x20 (0.5 -> RNE 0), scale 0. Sum of q: element 0 = 4,
    element 1 = 0. Egress: max 4 -> X = 2 -> byte 129; code = 4 * 2^(6-2) = 64."""
    m = SwitchModel(supported_dtypes=(0, 3))
    pay = bytes([127]) + bytes(63) + bytes([0x40, 0x20]) + bytes(30)
    o = None
    for p in range(4):
        o = m.process(p, dframe(p, None, dtype=F.MXINT8, count=32, payload=pay), p)
    assert o.completed
    fr = o.results[0][1]
    assert F.parse_frame(fr).hdr.dtype == F.MXINT8
    assert fr[64:] == bytes([129]) + bytes(63) + bytes([0x40]) + bytes(31)
    assert len(fr) == 64 + 96


def test_bf16_round_through_switch_scale():
    """BF16 with scale 2: 1.5 (0x3FC0) -> 6, 0.375 (0x3EC0) -> 1.5 -> 2;
    sums over 4 workers: 24 and 8; egress: 24/4 = 6.0 (0x40C0), 8/4 = 2.0 (0x4000)."""
    m = SwitchModel(supported_dtypes=(2,))
    pay = bytes.fromhex("3fc03ec0")
    o = None
    for p in range(4):
        o = m.process(p, dframe(p, None, dtype=F.BF16, count=2, payload=pay, scale=2), p)
    fr = o.results[0][1]
    assert fr[64:] == bytes.fromhex("40c04000")
    assert F.parse_frame(fr).hdr.flags == 0
