"""The AGG protocol as a worker puts it on the wire, written from docs/SPEC.md §3, §4 and
§10.1: header layout, dtype codes, flags, payload lengths and the Ethernet/IPv4/UDP
headers a UDP/IP stack adds (the bridge of `make serve` builds them here).

This is the worker library's own copy of the protocol, so the package needs nothing from
the testbench tree; tests/test_worker_wire.py checks it byte for byte against the golden
model (tb/model/frames.py).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

# --- frame layout (§3) ------------------------------------------------------------------
ETHERTYPE_IPV4 = 0x0800
IPPROTO_UDP = 17
IP_OFF = 14            # IPv4 header, no options (20 bytes)
UDP_OFF = 34           # UDP header (8 bytes)
AGG_OFF = 42           # AGG header (22 bytes): a datagram's first byte
AGG_HDR_LEN = 22
HDR_LEN = 64           # the payload starts here

# --- switch address at reset (§10.1) -----------------------------------------------------
DEFAULT_MAC = 0x02_41_47_00_00_01
DEFAULT_IP = 0x0A_00_00_01          # 10.0.0.1
DEFAULT_AGG_PORT = 0x4147           # 16711

# --- AGG header fields (§3) -----------------------------------------------------------
AGG_VER = 1
OP_DATA = 0
OP_RESULT = 1
FLAG_BANK = 1 << 0
FLAG_RETX = 1 << 1
FLAG_OVERFLOW = 1 << 2
FLAG_NAN = 1 << 3
FLAG_UNICAST = 1 << 4

# --- dtypes (§4) ------------------------------------------------------------------------
INT32, FP32, BF16, MXINT8, MXFP8_E4M3, MXFP8_E5M2 = range(6)
DTYPES = (INT32, FP32, BF16, MXINT8, MXFP8_E4M3, MXFP8_E5M2)
DTYPE_NAMES = ("int32", "fp32", "bf16", "mxint8", "mxfp8_e4m3", "mxfp8_e5m2")
MX_BLOCK = 32          # elements per E8M0 block scale
MX_SCALE_LINE = 64     # bytes of block scales ahead of an MX payload's elements
MX_MAX_COUNT = MX_SCALE_LINE * MX_BLOCK   # one scale byte per block: 2048 elements


def is_mx(dtype: int) -> bool:
    return dtype in (MXINT8, MXFP8_E4M3, MXFP8_E5M2)


def payload_len(dtype: int, count: int) -> int:
    """Bytes of a payload of `count` elements of `dtype` (§3)."""
    if dtype in (INT32, FP32):
        return 4 * count
    if dtype == BF16:
        return 2 * count
    if is_mx(dtype):
        return MX_SCALE_LINE + count
    raise ValueError(f"unknown dtype {dtype}")


_AGG = struct.Struct(">BBHHBBIHb7s")


@dataclass
class AggHeader:
    """The 22-byte AGG header (§3). `reserved` is bytes 15..21: zero in DATA; in a RESULT
    bytes 15..18 are the switch's cycle counter at completion (:attr:`timestamp`)."""

    ver: int = AGG_VER
    op: int = OP_DATA
    dtype: int = INT32
    job: int = 0
    slot: int = 0
    worker: int = 0
    flags: int = 0
    seq: int = 0
    count: int = 0
    scale: int = 0
    reserved: bytes = field(default=bytes(7))

    def pack(self) -> bytes:
        if not -128 <= self.scale <= 127:
            raise ValueError("scale must be a signed int8")
        if len(self.reserved) != 7:
            raise ValueError("reserved must be 7 bytes")
        return _AGG.pack((self.ver & 0xF) << 4 | (self.op & 0xF), self.dtype & 0xFF,
                         self.job & 0xFFFF, self.slot & 0xFFFF, self.worker & 0xFF,
                         self.flags & 0xFF, self.seq & 0xFFFFFFFF, self.count & 0xFFFF,
                         self.scale, bytes(self.reserved))

    @classmethod
    def unpack(cls, b: bytes) -> "AggHeader":
        if len(b) < AGG_HDR_LEN:
            raise ValueError(f"an AGG header needs {AGG_HDR_LEN} bytes, not {len(b)}")
        vo, dtype, job, slot, worker, flags, seq, count, scale, rsv = _AGG.unpack(bytes(b[:AGG_HDR_LEN]))
        return cls(vo >> 4, vo & 0xF, dtype, job, slot, worker, flags, seq, count, scale, rsv)

    @property
    def timestamp(self) -> int:
        return int.from_bytes(self.reserved[:4], "big")


def ipv4_checksum(header20: bytes) -> int:
    """RFC 791 checksum of a 20-byte IPv4 header, its checksum field taken as zero."""
    words = struct.unpack(">10H", bytes(header20[:10]) + b"\0\0" + bytes(header20[12:20]))
    s = sum(words)
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def udp_frame(datagram: bytes, *, src_mac: int, dst_mac: int, src_ip: int, dst_ip: int,
              src_port: int, dst_port: int, ttl: int = 64) -> bytes:
    """Ethernet II + IPv4 (no options, identification 0, DF clear, valid checksum) + UDP
    (checksum 0) around `datagram`, without FCS: what a host's UDP/IP stack and MAC send."""
    datagram = bytes(datagram)
    udp_len = 8 + len(datagram)
    ip = bytearray(struct.pack(">BBHHHBBHII", 0x45, 0, 20 + udp_len, 0, 0, ttl & 0xFF,
                               IPPROTO_UDP, 0, src_ip, dst_ip))
    ip[10:12] = ipv4_checksum(ip).to_bytes(2, "big")
    eth = dst_mac.to_bytes(6, "big") + src_mac.to_bytes(6, "big") + ETHERTYPE_IPV4.to_bytes(2, "big")
    return eth + bytes(ip) + struct.pack(">HHHH", src_port, dst_port, udp_len, 0) + datagram
