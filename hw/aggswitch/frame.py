"""Byte-level view of the 64-byte L2..AGG header (SPEC §3) and the records passed between stages."""

from amaranth import *
from amaranth.lib import data

from .params import Params

__all__ = [
    "OFF_DST_MAC",
    "OFF_SRC_MAC",
    "OFF_ETHERTYPE",
    "OFF_IP",
    "OFF_IP_TOTAL_LEN",
    "OFF_IP_PROTO",
    "OFF_IP_SRC",
    "OFF_IP_DST",
    "OFF_UDP",
    "OFF_UDP_SRC",
    "OFF_UDP_DST",
    "OFF_UDP_LEN",
    "OFF_AGG",
    "OFF_VER_OP",
    "OFF_DTYPE",
    "OFF_JOB",
    "OFF_SLOT",
    "OFF_WORKER",
    "OFF_FLAGS",
    "OFF_SEQ",
    "OFF_COUNT",
    "OFF_SCALE",
    "OFF_TSTAMP",
    "header_byte",
    "get_be",
    "put_be",
    "ones_complement_fold",
    "job_bits",
    "slot_bits",
    "beats_bits",
    "count_bits",
    "buf_addr_bits",
    "frame_descriptor",
    "result_descriptor",
    "slot_meta",
    "learned_address",
]

# Byte offsets in the frame (SPEC §3); AGG fields are at 42 + their header offset.
OFF_DST_MAC = 0
OFF_SRC_MAC = 6
OFF_ETHERTYPE = 12
OFF_IP = 14
OFF_IP_TOTAL_LEN = 16
OFF_IP_PROTO = 23
OFF_IP_SRC = 26
OFF_IP_DST = 30
OFF_UDP = 34
OFF_UDP_SRC = 34
OFF_UDP_DST = 36
OFF_UDP_LEN = 38
OFF_AGG = 42
OFF_VER_OP = OFF_AGG + 0
OFF_DTYPE = OFF_AGG + 1
OFF_JOB = OFF_AGG + 2
OFF_SLOT = OFF_AGG + 4
OFF_WORKER = OFF_AGG + 6
OFF_FLAGS = OFF_AGG + 7
OFF_SEQ = OFF_AGG + 8
OFF_COUNT = OFF_AGG + 12
OFF_SCALE = OFF_AGG + 14
OFF_TSTAMP = OFF_AGG + 15


def header_byte(hdr, i):
    """Byte i of a little-endian-packed byte vector (byte 0 is bits 7..0, as on tdata)."""
    return hdr[8 * i: 8 * i + 8]


def get_be(hdr, off, n):
    """Big-endian field of n bytes at byte offset off."""
    return Cat(*[header_byte(hdr, off + n - 1 - j) for j in range(n)])


def put_be(value, n):
    """Bytes of an n-byte big-endian field, in wire order (a list of 8-bit values)."""
    value = Value.cast(value)
    return [value.word_select(n - 1 - j, 8) for j in range(n)]


def ones_complement_fold(total, width):
    """Fold a wide sum of 16-bit words into 16 bits with end-around carry."""
    for _ in range((width + 15) // 16):
        total = total[:16] + total[16:]
    return total[:16]


def job_bits(p: Params):
    return max(1, (p.jobs - 1).bit_length())


def slot_bits(p: Params):
    return max(1, (p.slots - 1).bit_length())


def beats_bits(p: Params):
    return (p.max_payload_beats).bit_length()


def count_bits(p: Params):
    return p.slot_elems.bit_length()


def buf_addr_bits(p: Params):
    return (p.buffer_beats - 1).bit_length()


def frame_descriptor(p: Params):
    """What the ingress parser hands the engine for a frame that passed rules 1-10 (§10.2)."""
    return data.StructLayout({
        "job": job_bits(p),
        "gslot": slot_bits(p),          # slot_base + slot: index into the shared pool
        "slot": 16,                     # job-relative slot, echoed in the RESULT
        "bank": 1,
        "dtype": 3,
        "count": count_bits(p),
        "scale": 8,
        "seq": 32,
        "src_mac": 48,
        "src_ip": 32,
        "src_port": 16,
        "start": buf_addr_bits(p),      # first payload beat in the ingress buffer
        "beats": beats_bits(p),         # payload beats held in the ingress buffer
        "nan": 1,                       # a NaN among the frame's elements or block scales
        "t_last": 32,                   # cycle of the tlast handshake
        # MX: the block scales of the payload's scale line (block i in byte i), captured
        # as the line streams in, so that the engine needs no extra read for them
        "scales": 8 * p.mx_blocks if p.mx_ok else 0,
    })


def result_descriptor(p: Params):
    """What the engine hands each egress deparser for one RESULT frame."""
    return data.StructLayout({
        "job": job_bits(p),
        "slot": 16,
        "flags": 8,                     # BANK and UNICAST; OVERFLOW and NAN follow the payload
        "dtype": 3,
        "mx": 1,                        # an MX dtype: the payload starts with block scales
        "count": count_bits(p),
        "scale": 8,
        "seq": 32,
        "dst_mac": 48,
        "dst_ip": 32,
        "dst_port": 16,
        "tstamp": 32,                   # completion cycle, carried in AGG bytes 15..18
        "t_ref": 32,                    # cycle the fixed latency counts from
        "payload_bytes": 14,
    })


def slot_meta(p: Params):
    """Per (slot, bank) state of SPEC §5."""
    return data.StructLayout({
        "bitmap": p.ports,              # contributors, by port
        "complete": 1,
        "nan": 1,
        "dtype": 3,
        "count": count_bits(p),
        "scale": 8,
        "seq": 32,
        "slot": 16,
        "tstamp": 32,
        # start of the slot's last pass (period, phase) in this bank: the schedule starts
        # the next one at least passes.RMW_GAP cycles later (docs/engine-v2.md)
        "last_e": 32,
        "last_r": range(p.ports),
        # last_r + the last pass's beats + RMW_GAP: where a new round in a denser dtype
        # may start (cycles after (last_e, phase 0); RMW_GAP is 2)
        "last_x": range(p.ports + p.slot_lines + 2),
    })


def learned_address():
    return data.StructLayout({"mac": 48, "ip": 32, "port": 16})
