"""The Wireshark dissector tools/wireshark/aggswitch.lua, run by `tshark` on captures of
simulations (tb/pcap.py): every AGG field tshark decodes, of every frame, must equal the
golden model's view of the same frame (tb/model/frames.py).

The captures come from the default parameter set, whose Verilator model the RTL regression
builds anyway: every dtype with its scale line (test_dtypes), and the static drops of SPEC
§10.2 (test_switch), whose malformed frames exercise the count check. tshark is a Debian package (`tshark`) that .ci/run
installs; the test fails without it."""

import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import pytest
from scapy.utils import PcapNgReader

from aggswitch import Params
from sim.runner import build_and_run
from tb.model import frames as F
from tests.groups import model

REPO = Path(__file__).resolve().parent.parent
DISSECTOR = REPO / "tools" / "wireshark" / "aggswitch.lua"
DEFAULT = Params()
# (module, test cases): lists, so that the output directories differ from test_rtl's
RUNS = [("tb.cocotb.test_dtypes", ["test_every_dtype", "test_dtype_mix"]),
        ("tb.cocotb.test_switch", ["test_static_drops", "test_single_round"])]
FLAG_NAMES = [(F.FLAG_BANK, "BANK"), (F.FLAG_RETX, "RETX"), (F.FLAG_OVERFLOW, "OVERFLOW"),
              (F.FLAG_NAN, "NAN"), (F.FLAG_UNICAST, "UNICAST")]
OP_NAMES = {F.OP_DATA: "DATA", F.OP_RESULT: "RESULT"}


def tshark():
    exe = shutil.which("tshark")
    assert exe, "tshark not found: install the Debian package `tshark` (see the README)"
    return exe


def dissect(pcap: Path) -> list:
    """tshark's view of every packet: (AGG tree or None, marks). The tree maps each field
    name to [(show, showname), ...]; marks lists Lua errors ("lua: ...") and "malformed"
    (a dissector, ours for a count mismatch, called the packet malformed)."""
    out = subprocess.run([tshark(), "-n", "-X", f"lua_script:{DISSECTOR}", "-r", str(pcap),
                          "-T", "pdml"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Lua: Error" not in out.stderr and "Lua: Error" not in out.stdout, out.stderr[-3000:]
    packets = []
    for pkt in ET.fromstring(out.stdout).iter("packet"):
        tree, marks = None, []
        for proto in pkt.iter("proto"):
            if proto.get("name") == "agg":
                assert tree is None, "two AGG trees in one frame"
                tree = {}
                for fld in proto.iter("field"):
                    tree.setdefault(fld.get("name"), []).append((fld.get("show"),
                                                                 fld.get("showname")))
            if proto.get("name") == "_ws.lua":
                marks.append("lua: " + ET.tostring(proto, encoding="unicode")[:300])
            if proto.get("name") == "_ws.malformed":
                marks.append("malformed")
        packets.append((tree, marks))
    return packets


def agg_expected(b: bytes) -> bool:
    """Whether Wireshark hands the frame to the AGG dissector: IPv4 without options, UDP,
    the AGG port on either side, and IP and UDP lengths that describe the frame exactly
    (other frames are the malformed ones the switch drops; they are not compared)."""
    if len(b) < 42 or b[12:14] != b"\x08\x00" or b[14] != 0x45 or b[23] != 17:
        return False
    sport, dport, ulen = (int.from_bytes(b[o:o + 2], "big") for o in (34, 36, 38))
    return (F.DEFAULT_AGG_PORT in (sport, dport) and ulen == len(b) - 34
            and int.from_bytes(b[16:18], "big") == len(b) - 14)


def model_view(b: bytes) -> dict:
    """What every decoded field must show, from the golden model's parser."""
    n = len(b) - F.AGG_OFF
    if n < F.AGG_HDR_LEN:
        return {}
    h = F.AggHeader.unpack(b[F.AGG_OFF:])
    payload = b[F.AGG_OFF + F.AGG_HDR_LEN:]
    v = {"agg.version": h.ver, "agg.op": h.op, "agg.dtype": h.dtype, "agg.job": h.job,
         "agg.slot": h.slot, "agg.worker": h.worker, "agg.flags": h.flags,
         "agg.flags.bank": h.flags & 1, "agg.flags.retx": h.flags >> 1 & 1,
         "agg.flags.overflow": h.flags >> 2 & 1, "agg.flags.nan": h.flags >> 3 & 1,
         "agg.flags.unicast": h.flags >> 4 & 1, "agg.flags.other": h.flags >> 5,
         "agg.seq": h.seq, "agg.count": h.count, "agg.scale": h.scale,
         "agg.payload_len": len(payload)}
    if h.op == F.OP_RESULT:
        v["agg.timestamp"] = h.timestamp
        v["agg.reserved"] = h.reserved[4:]
    else:
        v["agg.reserved"] = h.reserved
    elems = payload
    if h.dtype in F.DTYPES:
        want = F.payload_len(h.dtype, h.count)
        v["agg.expected_len"] = want
        v["agg.count_ok"] = int(want == len(payload))
        if F.is_mx(h.dtype) and len(payload) >= F.MX_SCALE_LINE:
            blocks = min(h.count // F.MX_BLOCK, F.MX_SCALE_LINE)
            v["agg.mx.scale"] = list(payload[:blocks])
            if blocks < F.MX_SCALE_LINE:
                v["agg.mx.padding"] = payload[blocks:F.MX_SCALE_LINE]
            elems = payload[F.MX_SCALE_LINE:]
    if elems:
        v["agg.elements"] = elems
    return v


def as_value(name: str, show: str):
    if name in ("agg.reserved", "agg.mx.padding", "agg.elements"):
        return bytes.fromhex(show.replace(":", ""))
    return int(show, 0)


def check_frame(tree: dict, b: bytes) -> list:
    """Differences between tshark's AGG tree and the model's view of frame `b`."""
    want = model_view(b)
    errs = []
    experts = {"agg.count_mismatch", "agg.short", "agg.unknown_dtype"}
    names = {n for n in tree if not n.startswith("_ws.")} - experts - \
        {"agg.payload", "agg.mx.scale_line"}
    if names != set(want):
        errs.append(f"fields {sorted(names ^ set(want))} differ (tshark {sorted(names)})")
    for name, value in want.items():
        got = [as_value(name, s) for s, _ in tree.get(name, [])]
        got = got if isinstance(value, list) else (got[0] if len(got) == 1 else got)
        if got != value:
            errs.append(f"{name}: tshark {got!r}, model {value!r}")
    want_experts = set()
    if not want:
        want_experts.add("agg.short")
    elif want["agg.dtype"] not in F.DTYPES:
        want_experts.add("agg.unknown_dtype")
    elif not want["agg.count_ok"]:
        want_experts.add("agg.count_mismatch")
    if experts & set(tree) != want_experts:
        errs.append(f"expert infos {sorted(experts & set(tree))}, expected {sorted(want_experts)}")
    if not want:  # shorter than the AGG header: nothing decoded
        return errs
    # names, as Wireshark shows them
    h = F.AggHeader.unpack(b[F.AGG_OFF:])
    shown = {k: tree[k][0][1] for k in ("agg.op", "agg.dtype", "agg.flags") if k in tree}
    if h.op in OP_NAMES and not shown["agg.op"].endswith(f"Op: {OP_NAMES[h.op]} ({h.op})"):
        errs.append(f"op shown as {shown['agg.op']!r}")
    if h.dtype in F.DTYPES:
        name = F.DTYPE_NAMES[h.dtype].upper()
        if shown["agg.dtype"] != f"Data type: {name} ({h.dtype})":
            errs.append(f"dtype shown as {shown['agg.dtype']!r}, model {name}")
    flags = [n for bit, n in FLAG_NAMES if h.flags & bit]
    want_flags = f"Flags: 0x{h.flags:02x}" + (f" ({', '.join(flags)})" if flags else "")
    if shown["agg.flags"] != want_flags:
        errs.append(f"flags shown as {shown['agg.flags']!r}, model {want_flags!r}")
    for (s, showname), scale in zip(tree.get("agg.mx.scale", []), want.get("agg.mx.scale", [])):
        text = "NaN" if scale == 0xFF else f"2^{scale - 127}"
        if not showname.endswith(text):
            errs.append(f"MX scale {scale:#x} shown as {showname!r}")
    return errs


@pytest.fixture(scope="module")
def captures():
    paths = []
    for module, tests in RUNS:
        res = build_and_run(DEFAULT, "verilator", module, testcase=tests,
                            extra_env={"AGGSWITCH_PCAP": 1})
        assert res.ok, res.summary()
        for t in tests:
            paths.append(res.out_dir / f"{t}.pcapng")
            assert paths[-1].exists(), f"no capture {paths[-1]}"
    return paths


@model(DEFAULT)
def test_dissector_matches_model(captures):
    seen = Counter()
    errors = []
    for pcap in captures:
        trees = dissect(pcap)
        with PcapNgReader(str(pcap)) as r:
            frames = [bytes(p) for p in r]
        assert len(trees) == len(frames) > 0
        for i, ((tree, marks), b) in enumerate(zip(trees, frames), 1):
            where = f"{pcap.name} frame {i}"
            if not agg_expected(b):  # Wireshark may call these malformed, rightly
                seen["not compared"] += 1
                continue
            malformed = tree is not None and ("agg.count_mismatch" in tree or "agg.short" in tree)
            if marks != (["malformed"] if malformed else []):
                errors.append(f"{where}: {marks}")
            if tree is None:
                errors.append(f"{where}: no AGG tree ({len(b)} bytes)")
                continue
            errors += [f"{where}: {e}" for e in check_frame(tree, b)]
            if len(b) < F.HDR_LEN:
                seen["short"] += 1
                continue
            h = F.AggHeader.unpack(b[F.AGG_OFF:])
            seen[OP_NAMES.get(h.op, "op?")] += 1
            seen[f"dtype {h.dtype}"] += 1
            seen["count mismatch"] += tree.get("agg.count_ok", [("1", "")])[0][0] == "0"
            for bit, name in FLAG_NAMES:
                seen[name] += bool(h.flags & bit)
    assert not errors, f"{len(errors)} differences, first:\n" + "\n".join(errors[:30])
    # the captures exercise what the dissector decodes
    for what in ["DATA", "RESULT", "count mismatch", "short"] + [n for _, n in FLAG_NAMES] + \
            [f"dtype {d}" for d in F.DTYPES]:
        assert seen[what] > 0, f"no frame with {what} in the captures: {dict(seen)}"


def test_dissector_flags_bad_count(tmp_path):
    """A frame whose count disagrees with its payload: count_ok false and an expert warning."""
    from tb.pcap import PcapNgWriter
    frame = F.data_frame(worker_mac=0x020000000001, worker_ip=0x0A000102, worker_port=49152,
                         job=0, slot=1, worker=0, seq=5, payload=bytes(64 + 64),
                         count=64, dtype=F.MXINT8, scale=-3, bank=1, retx=True)
    bad = bytearray(frame)
    bad[F.AGG_OFF + 12:F.AGG_OFF + 14] = (96).to_bytes(2, "big")  # count 96, payload for 64
    pcap = tmp_path / "bad.pcapng"
    w = PcapNgWriter(pcap)
    w.add_interface("s0_axis")
    w.packet(0, 0, frame)
    w.packet(0, 4, bytes(bad))
    w.close()
    (good_tree, good_marks), (bad_tree, bad_marks) = dissect(pcap)
    assert good_marks == [] and bad_marks == ["malformed"]
    assert check_frame(good_tree, frame) == [] and check_frame(bad_tree, bytes(bad)) == []
    assert good_tree["agg.count_ok"][0][0] == "1" and bad_tree["agg.count_ok"][0][0] == "0"
    out = subprocess.run([tshark(), "-n", "-X", f"lua_script:{DISSECTOR}", "-r", str(pcap),
                          "-z", "expert,warn", "-q"], capture_output=True, text=True, timeout=120)
    assert re.search(r"count 96 of MXINT8 needs 160 payload bytes, the payload has 128",
                     out.stdout), out.stdout
