"""Frame builder / parser of the golden model (SPEC 3, 10.5)."""

import struct

import numpy as np
import pytest

from tb.model import frames as F


def _frame(**kw):
    args = dict(worker_mac=0x020000000102, worker_ip=0x0A000102, worker_port=0x1234,
                job=0x0102, slot=0x0304, worker=5, seq=0xA1B2C3D4, dtype=F.INT32,
                count=2, scale=-3, payload=F.int32_payload([1, -2]), bank=1)
    args.update(kw)
    return F.data_frame(**args)


def test_constants():
    assert F.DEFAULT_MAC == 0x024147000001
    assert F.DEFAULT_IP == 0x0A000001
    assert F.DEFAULT_AGG_PORT == 16711
    assert (F.INT32, F.FP32, F.BF16) == (0, 1, 2)
    assert (F.MXINT8, F.MXFP8_E4M3, F.MXFP8_E5M2) == (3, 4, 5)
    assert (F.FLAG_BANK, F.FLAG_RETX, F.FLAG_OVERFLOW, F.FLAG_NAN, F.FLAG_UNICAST) == (1, 2, 4, 8, 16)
    assert F.DROP_REASONS[F.NOT_AGG] == "not_agg"
    assert F.DROP_REASONS[F.DUPLICATE] == "duplicate"
    assert len(F.DROP_REASONS) == 7


def test_payload_len():
    assert F.payload_len(F.INT32, 3) == 12
    assert F.payload_len(F.FP32, 256) == 1024
    assert F.payload_len(F.BF16, 5) == 10
    assert F.payload_len(F.MXINT8, 32) == 96
    assert F.payload_len(F.MXFP8_E4M3, 2048) == 2112
    assert F.payload_len(F.MXFP8_E5M2, 64) == 128
    with pytest.raises(ValueError):
        F.payload_len(6, 1)


def test_ipv4_checksum_reference_vector():
    # the classic RFC-style example header; checksum 0xb861
    h = bytes.fromhex("450000730000400040110000c0a80001c0a800c7")
    assert F.ipv4_checksum(h) == 0xB861
    # the checksum field is ignored by the computation
    h2 = h[:10] + b"\xb8\x61" + h[12:]
    assert F.ipv4_checksum(h2) == 0xB861
    assert F.ipv4_checksum_valid(h2)
    assert not F.ipv4_checksum_valid(h)


def test_data_frame_bytes():
    f = _frame()
    assert len(f) == 64 + 8
    # Ethernet
    assert f[0:6] == bytes.fromhex("024147000001")
    assert f[6:12] == bytes.fromhex("020000000102")
    assert f[12:14] == b"\x08\x00"
    # IPv4
    assert f[14] == 0x45 and f[15] == 0
    assert f[16:18] == (72 - 14).to_bytes(2, "big")
    assert f[18:20] == b"\x00\x00" and f[20:22] == b"\x00\x00"
    assert f[22] == 64 and f[23] == 17
    assert f[26:30] == bytes([10, 0, 1, 2]) and f[30:34] == bytes([10, 0, 0, 1])
    assert F.ipv4_checksum(f[14:34]) == int.from_bytes(f[24:26], "big")
    # UDP
    assert f[34:36] == b"\x12\x34" and f[36:38] == b"\x41\x47"
    assert f[38:40] == (72 - 34).to_bytes(2, "big") and f[40:42] == b"\x00\x00"
    # AGG header
    assert f[42] == 0x10  # ver 1, op DATA
    assert f[43] == 0     # dtype
    assert f[44:46] == b"\x01\x02" and f[46:48] == b"\x03\x04"
    assert f[48] == 5 and f[49] == 1  # worker, flags=BANK
    assert f[50:54] == bytes.fromhex("a1b2c3d4")
    assert f[54:56] == b"\x00\x02" and f[56] == 0xFD  # count, scale -3
    assert f[57:64] == bytes(7)
    # payload
    assert f[64:] == bytes.fromhex("00000001fffffffe")


def test_retx_flag():
    f = _frame(bank=0, retx=True)
    assert f[49] == F.FLAG_RETX


def test_agg_header_roundtrip():
    h = F.AggHeader(ver=1, op=1, dtype=4, job=3, slot=65535, worker=0xFF,
                    flags=0x1D, seq=0xFFFFFFFF, count=2048, scale=-128,
                    reserved=bytes([0xDE, 0xAD, 0xBE, 0xEF, 0, 0, 0]))
    b = h.pack()
    assert len(b) == 22
    assert b[0] == 0x11 and b[14] == 0x80
    assert F.AggHeader.unpack(b) == h
    assert h.timestamp == 0xDEADBEEF
    with pytest.raises(ValueError):
        F.AggHeader(scale=128).pack()


def test_parse_frame_fields():
    f = _frame()
    p = F.parse_frame(f)
    assert p.dst_mac == F.DEFAULT_MAC and p.src_mac == 0x020000000102
    assert p.ethertype == 0x0800
    assert (p.ip_version, p.ip_ihl, p.ip_total_length, p.ip_ttl, p.ip_proto) == (4, 5, 58, 64, 17)
    assert p.checksum_ok
    assert p.src_ip == 0x0A000102 and p.dst_ip == F.DEFAULT_IP
    assert (p.src_port, p.dst_port, p.udp_length, p.udp_checksum) == (0x1234, 0x4147, 38, 0)
    h = p.hdr
    assert (h.ver, h.op, h.dtype, h.job, h.slot, h.worker, h.flags, h.seq, h.count, h.scale) == \
        (1, 0, 0, 0x0102, 0x0304, 5, 1, 0xA1B2C3D4, 2, -3)
    assert p.timestamp == 0
    assert p.payload == bytes.fromhex("00000001fffffffe")
    assert p.length == 72


def test_parse_timestamp_and_bad_checksum():
    f = bytearray(_frame())
    f[57:61] = bytes.fromhex("01020304")
    f[24] ^= 0xFF
    p = F.parse_frame(bytes(f))
    assert p.timestamp == 0x01020304
    assert not p.checksum_ok


def test_parse_short_frames_raise():
    f = _frame()
    for n in (0, 13, 14, 42, 63):
        with pytest.raises(ValueError):
            F.parse_frame(f[:n])
    F.parse_frame(f[:64])  # headers only is fine


def test_int32_payload():
    b = F.int32_payload([0, 1, -1, 2**31 - 1, -2**31])
    assert b == bytes.fromhex("00000000" "00000001" "ffffffff" "7fffffff" "80000000")
    a = F.int32_from_payload(b)
    assert a.dtype == np.int64
    assert a.tolist() == [0, 1, -1, 2**31 - 1, -2**31]
    with pytest.raises(ValueError):
        F.int32_payload([2**31])
    with pytest.raises(ValueError):
        F.int32_from_payload(b"\x00\x01")


def test_build_frame_options():
    h = F.AggHeader(op=F.OP_RESULT, worker=0xFF, count=1)
    f = F.build_frame(src_mac=1, dst_mac=2, src_ip=3, dst_ip=4, src_port=5, dst_port=6,
                      hdr=h, payload=b"\x00\x00\x00\x07", ttl=7, ip_id=0xBEEF)
    assert f[18:20] == b"\xbe\xef" and f[22] == 7
    assert F.ipv4_checksum_valid(f[14:34])
    assert struct.unpack(">H", f[38:40])[0] == 8 + 22 + 4


def test_scapy_cross_check():
    scapy_all = pytest.importorskip("scapy.all")
    Ether, IP, UDP = scapy_all.Ether, scapy_all.IP, scapy_all.UDP
    for count in (1, 7, 256):
        f = _frame(count=count, payload=F.int32_payload(range(count)))
        pkt = Ether(f)
        assert pkt[Ether].dst == "02:41:47:00:00:01"
        assert pkt[Ether].src == "02:00:00:00:01:02"
        assert pkt[Ether].type == 0x0800
        ip = pkt[IP]
        assert ip.version == 4 and ip.ihl == 5 and ip.proto == 17 and ip.ttl == 64
        assert ip.len == len(f) - 14
        assert ip.src == "10.0.1.2" and ip.dst == "10.0.0.1"
        # recompute the checksum with scapy and compare
        stored = ip.chksum
        ip2 = IP(bytes(ip))
        del ip2.chksum
        assert IP(bytes(ip2)).chksum == stored
        udp = pkt[UDP]
        assert udp.sport == 0x1234 and udp.dport == 0x4147
        assert udp.len == len(f) - 34 and udp.chksum == 0
        assert bytes(udp.payload) == f[42:]
    # and the other way round: a scapy-built header parses identically
    agg = F.AggHeader(dtype=0, job=1, slot=2, worker=3, seq=4, count=1).pack()
    sc = (Ether(dst="02:41:47:00:00:01", src="02:00:00:00:00:09")
          / IP(src="10.0.0.9", dst="10.0.0.1", ttl=64, id=0, flags=0)
          / UDP(sport=999, dport=0x4147, chksum=0) / (agg + F.int32_payload([42])))
    raw = bytes(sc)
    ours = F.build_frame(src_mac=0x020000000009, dst_mac=F.DEFAULT_MAC, src_ip=0x0A000009,
                         dst_ip=F.DEFAULT_IP, src_port=999, dst_port=0x4147,
                         hdr=F.AggHeader(dtype=0, job=1, slot=2, worker=3, seq=4, count=1),
                         payload=F.int32_payload([42]))
    assert raw == ours
