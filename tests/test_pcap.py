"""The pcapng capture of a simulation (tb/pcap.py, `make sim PCAP=1`), read back with scapy's
pcapng reader (an independent implementation of the format)."""

import re

import pytest
from scapy.utils import PcapNgReader

from aggswitch import Params
from sim.runner import build_and_run
from tb.cocotb.harness import CLK_PERIOD_NS
from tb.model.switch import SwitchModel
from tb.pcap import INBOUND, OUTBOUND, PcapNgWriter
from tests.groups import model

SMALL = Params(ports=2, data_width=128, slots=8, slot_elems=32, jobs=2)


def read(path):
    with PcapNgReader(str(path)) as r:
        return list(r)


def test_writer_blocks(tmp_path):
    path = tmp_path / "t.pcapng"
    w = PcapNgWriter(path)
    a = w.add_interface("s0_axis", "in")
    b = w.add_interface("m0_axis", "out")
    frames = [bytes(range(60)), bytes(range(61)) * 3, b"\xff" * 63]  # lengths 60, 183, 63
    w.packet(a, 12, frames[0], comment="first", direction=INBOUND)
    w.packet(b, 2**33 + 5, frames[1], direction=OUTBOUND)
    w.packet(a, 40, frames[2])
    w.close()
    pkts = read(path)
    assert [bytes(p) for p in pkts] == frames
    assert [p.sniffed_on for p in pkts] == ["s0_axis", "m0_axis", "s0_axis"]
    assert [round(p.time * 10**9) for p in pkts] == [12, 2**33 + 5, 40]
    assert pkts[0].comments == [b"first"] and pkts[0].direction == INBOUND
    assert pkts[1].direction == OUTBOUND
    with pytest.raises(ValueError):
        PcapNgWriter(tmp_path / "u.pcapng").packet(0, 0, b"")


@model(SMALL)
def test_capture_of_an_allreduce():
    """Capture `make sim`'s scenario; the ingress frames of the capture, replayed into the
    golden model in capture order, must produce exactly the captured egress frames of
    every port, and every timestamp is the tlast cycle times the clock period."""
    res = build_and_run(SMALL, "verilator", "tb.cocotb.test_allreduce", testcase="test_allreduce",
                        extra_env={"AGGSWITCH_PCAP": 1, "AGGSWITCH_ELEMS": 1024})
    assert res.ok, res.summary()
    path = res.out_dir / "test_allreduce.pcapng"
    pkts = read(path)
    P = SMALL.ports
    chunks = 1024 // SMALL.slot_elems
    names = {f"s{p}_axis" for p in range(P)} | {f"m{p}_axis" for p in range(P)}
    assert {p.sniffed_on for p in pkts} == names
    assert len(pkts) == 2 * P * chunks  # every DATA in, every RESULT out

    model = SwitchModel(ports=P, slots=SMALL.slots, slot_elems=SMALL.slot_elems, jobs=SMALL.jobs)
    expected = {p: [] for p in range(P)}
    got = {p: [] for p in range(P)}
    offsets = set()
    last_ts = 0
    for pkt in pkts:
        ts = round(pkt.time * 10**9)
        assert ts % CLK_PERIOD_NS == 0 and ts >= last_ts, "timestamps: cycles x period, in order"
        last_ts = ts
        first, last = map(int, re.fullmatch(rb"cycles (\d+)\.\.(\d+)", pkt.comments[0]).groups())
        assert first <= last
        offsets.add(ts // CLK_PERIOD_NS - last)  # one reset, at the start: a fixed offset
        port = int(pkt.sniffed_on[1:-5])
        data = bytes(pkt)
        if pkt.sniffed_on.startswith("s"):
            assert pkt.direction == INBOUND
            outcome = model.process(port, data, last)
            assert outcome.drop is None, outcome
            for q, frame in outcome.results:
                expected[q].append(frame)
        else:
            assert pkt.direction == OUTBOUND
            got[port].append(data)
    assert len(offsets) == 1, offsets
    for p in range(P):
        assert len(got[p]) == chunks
        assert got[p] == expected[p], f"port {p}: captured RESULT frames differ from the model"
