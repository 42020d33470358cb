"""Frame layout of aggswitch (SPEC sections 3 and 10.5): builders and a parser.

All multi-byte fields are big-endian. A frame is Ethernet II (14 bytes) +
IPv4 without options (20 bytes) + UDP (8 bytes) + the 22-byte AGG header +
payload, without FCS. The first 64 bytes are the headers, so the payload
starts at byte 64.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

# --- defaults (SPEC 10.1) ----------------------------------------------------
DEFAULT_MAC = 0x024147000001
DEFAULT_IP = 0x0A000001
DEFAULT_AGG_PORT = 0x4147

ETHERTYPE_IPV4 = 0x0800
IPPROTO_UDP = 17

ETH_LEN = 14
IP_OFF = 14
UDP_OFF = 34
AGG_OFF = 42
AGG_HDR_LEN = 22
HDR_LEN = 64  # L2..L4 + AGG header

# --- AGG header ----------------------------------------------------------------
AGG_VER = 1
OP_DATA = 0
OP_RESULT = 1
RESULT_WORKER = 0xFF

# dtype codes (SPEC 4)
INT32 = 0
FP32 = 1
BF16 = 2
MXINT8 = 3
MXFP8_E4M3 = 4
MXFP8_E5M2 = 5
DTYPES = (INT32, FP32, BF16, MXINT8, MXFP8_E4M3, MXFP8_E5M2)
DTYPE_NAMES = ("int32", "fp32", "bf16", "mxint8", "mxfp8_e4m3", "mxfp8_e5m2")
MX_DTYPES = (MXINT8, MXFP8_E4M3, MXFP8_E5M2)
MX_BLOCK = 32
MX_SCALE_LINE = 64
MX_MAX_COUNT = 2048  # 64 scale bytes of 32-element blocks

# flag bits
FLAG_BANK = 1
FLAG_RETX = 2
FLAG_OVERFLOW = 4
FLAG_NAN = 8
FLAG_UNICAST = 16

# drop reason codes (SPEC 10.2)
NOT_AGG = 0
MALFORMED = 1
JOB_DISABLED = 2
SLOT_RANGE = 3
WORKER = 4
MISMATCH = 5
DUPLICATE = 6
DROP_REASONS = ("not_agg", "malformed", "job_disabled", "slot_range", "worker",
                "mismatch", "duplicate")


def is_mx(dtype: int) -> bool:
    return dtype in MX_DTYPES


def payload_len(dtype: int, count: int) -> int:
    """Payload bytes for `count` elements of `dtype` (SPEC 3 / 10.2)."""
    if dtype in (INT32, FP32):
        return 4 * count
    if dtype == BF16:
        return 2 * count
    if dtype in MX_DTYPES:
        return MX_SCALE_LINE + count
    raise ValueError(f"unknown dtype {dtype}")


@dataclass
class AggHeader:
    """The 22-byte AGG header (SPEC 3). `scale` is signed (-128..127)."""

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
        if len(self.reserved) != 7:
            raise ValueError("reserved must be 7 bytes")
        if not -128 <= self.scale <= 127:
            raise ValueError("scale must be a signed int8")
        return struct.pack(
            ">BBHHBBIHb",
            ((self.ver & 0xF) << 4) | (self.op & 0xF),
            self.dtype & 0xFF,
            self.job & 0xFFFF,
            self.slot & 0xFFFF,
            self.worker & 0xFF,
            self.flags & 0xFF,
            self.seq & 0xFFFFFFFF,
            self.count & 0xFFFF,
            self.scale,
        ) + bytes(self.reserved)

    @classmethod
    def unpack(cls, b: bytes) -> "AggHeader":
        if len(b) < AGG_HDR_LEN:
            raise ValueError("AGG header needs 22 bytes")
        vo, dtype, job, slot, worker, flags, seq, count, scale = struct.unpack(
            ">BBHHBBIHb", bytes(b[:15]))
        return cls(ver=vo >> 4, op=vo & 0xF, dtype=dtype, job=job, slot=slot,
                   worker=worker, flags=flags, seq=seq, count=count, scale=scale,
                   reserved=bytes(b[15:22]))

    @property
    def timestamp(self) -> int:
        """Bytes 15-18 (RESULT completion timestamp), big-endian."""
        return int.from_bytes(self.reserved[:4], "big")


def ipv4_checksum(header20: bytes) -> int:
    """RFC 791 header checksum of a 20-byte header, computed with the
    checksum field (bytes 10-11) taken as zero."""
    h = bytearray(header20[:20])
    if len(h) != 20:
        raise ValueError("IPv4 header must be 20 bytes")
    h[10] = h[11] = 0
    s = sum(struct.unpack(">10H", bytes(h)))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def ipv4_checksum_valid(header20: bytes) -> bool:
    """RFC 1071 verification: the one's-complement sum of all ten 16-bit
    words, checksum field included, is 0xFFFF."""
    s = sum(struct.unpack(">10H", bytes(header20[:20])))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s == 0xFFFF


def build_frame(*, src_mac: int, dst_mac: int, src_ip: int, dst_ip: int,
                src_port: int, dst_port: int, hdr: AggHeader, payload: bytes,
                ttl: int = 64, ip_id: int = 0) -> bytes:
    """Ethernet II + IPv4 (IHL 5, valid checksum) + UDP (checksum 0) + AGG
    header + payload. No FCS."""
    payload = bytes(payload)
    udp_len = 8 + AGG_HDR_LEN + len(payload)
    ip_len = 20 + udp_len
    eth = dst_mac.to_bytes(6, "big") + src_mac.to_bytes(6, "big") + \
        ETHERTYPE_IPV4.to_bytes(2, "big")
    ip = bytearray(struct.pack(">BBHHHBBHII", 0x45, 0, ip_len, ip_id & 0xFFFF, 0,
                               ttl & 0xFF, IPPROTO_UDP, 0, src_ip, dst_ip))
    ip[10:12] = ipv4_checksum(bytes(ip)).to_bytes(2, "big")
    udp = struct.pack(">HHHH", src_port, dst_port, udp_len, 0)
    return eth + bytes(ip) + udp + hdr.pack() + payload


def data_frame(*, worker_mac: int, worker_ip: int, worker_port: int, job: int,
               slot: int, worker: int, seq: int, dtype: int, count: int,
               scale: int, payload: bytes, bank: int = 0, retx: bool = False,
               switch_mac: int = DEFAULT_MAC, switch_ip: int = DEFAULT_IP,
               agg_port: int = DEFAULT_AGG_PORT) -> bytes:
    """A DATA frame from a worker to the switch."""
    flags = (FLAG_BANK if bank & 1 else 0) | (FLAG_RETX if retx else 0)
    hdr = AggHeader(ver=AGG_VER, op=OP_DATA, dtype=dtype, job=job, slot=slot,
                    worker=worker, flags=flags, seq=seq, count=count, scale=scale)
    return build_frame(src_mac=worker_mac, dst_mac=switch_mac, src_ip=worker_ip,
                       dst_ip=switch_ip, src_port=worker_port, dst_port=agg_port,
                       hdr=hdr, payload=payload)


def int32_payload(values) -> bytes:
    """Big-endian two's complement int32 payload."""
    a = np.asarray(values, dtype=np.int64).reshape(-1)
    if a.size and (a.min() < -(1 << 31) or a.max() > (1 << 31) - 1):
        raise ValueError("value out of int32 range")
    return a.astype(">i4").tobytes()


def int32_from_payload(b: bytes) -> np.ndarray:
    """Inverse of :func:`int32_payload` (returns int64)."""
    if len(b) % 4:
        raise ValueError("INT32 payload length must be a multiple of 4")
    return np.frombuffer(bytes(b), dtype=">i4").astype(np.int64)


@dataclass
class ParsedFrame:
    """Every field of a frame, parsed without validation (see
    :func:`parse_frame`)."""

    dst_mac: int
    src_mac: int
    ethertype: int
    ip_version: int
    ip_ihl: int
    ip_tos: int
    ip_total_length: int
    ip_id: int
    ip_flags_frag: int
    ip_ttl: int
    ip_proto: int
    ip_checksum: int
    checksum_ok: bool
    src_ip: int
    dst_ip: int
    src_port: int
    dst_port: int
    udp_length: int
    udp_checksum: int
    hdr: AggHeader
    timestamp: int
    payload: bytes
    length: int

    @property
    def bank(self) -> int:
        return self.hdr.flags & FLAG_BANK


def parse_frame(frame: bytes) -> ParsedFrame:
    """Parse all L2/L3/L4/AGG fields. Fields are taken at their fixed
    offsets whatever their values (no validation); `checksum_ok` reports the
    IPv4 header checksum. Raises ValueError if the frame is shorter than the
    64 header bytes."""
    frame = bytes(frame)
    if len(frame) < HDR_LEN:
        raise ValueError(f"frame too short ({len(frame)} < {HDR_LEN} bytes)")
    dst_mac = int.from_bytes(frame[0:6], "big")
    src_mac = int.from_bytes(frame[6:12], "big")
    ethertype = int.from_bytes(frame[12:14], "big")
    iph = frame[IP_OFF:IP_OFF + 20]
    vihl, tos, tot, ip_id, ff, ttl, proto, csum, sip, dip = struct.unpack(
        ">BBHHHBBHII", iph)
    sport, dport, ulen, ucsum = struct.unpack(">HHHH", frame[UDP_OFF:UDP_OFF + 8])
    hdr = AggHeader.unpack(frame[AGG_OFF:AGG_OFF + AGG_HDR_LEN])
    return ParsedFrame(
        dst_mac=dst_mac, src_mac=src_mac, ethertype=ethertype,
        ip_version=vihl >> 4, ip_ihl=vihl & 0xF, ip_tos=tos, ip_total_length=tot,
        ip_id=ip_id, ip_flags_frag=ff, ip_ttl=ttl, ip_proto=proto,
        ip_checksum=csum, checksum_ok=ipv4_checksum_valid(iph),
        src_ip=sip, dst_ip=dip, src_port=sport, dst_port=dport,
        udp_length=ulen, udp_checksum=ucsum, hdr=hdr, timestamp=hdr.timestamp,
        payload=frame[HDR_LEN:], length=len(frame))


def mac_str(mac: int) -> str:
    return ":".join(f"{b:02x}" for b in mac.to_bytes(6, "big"))


def ip_str(ip: int) -> str:
    return ".".join(str(b) for b in ip.to_bytes(4, "big"))
