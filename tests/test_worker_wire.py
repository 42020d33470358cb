"""The worker library's own protocol and payload conversions (aggswitch.worker.wire and
.payload, written from docs/SPEC.md §3/§4) against the golden model (tb/model/frames.py,
tb/model/numerics.py), bit for bit: every BF16 and 8-bit MX element code, random and
edge-case FP32 codes and accumulators (ties, saturation, subnormals, NaN blocks) at
scales across the whole int8 range, headers and frames. And the installed package needs
nothing from the testbench tree."""

import os
import subprocess
import sys

import numpy as np
import pytest

from aggswitch.worker import payload as P
from aggswitch.worker import wire as W
from sim.runner import REPO
from tb.model import frames as F
from tb.model import numerics as N

SCALES = (-128, -100, -31, -1, 0, 1, 6, 16, 24, 31, 64, 100, 127)
MX = (W.MXINT8, W.MXFP8_E4M3, W.MXFP8_E5M2)


def assert_decode_same(dtype, payload, count, scale):
    q, nan = P.decode(dtype, payload, count, scale)
    q_ref, nan_ref = N.decode(dtype, payload, count, scale)
    assert q.dtype == np.int64
    np.testing.assert_array_equal(q, q_ref, err_msg=f"dtype {dtype} scale {scale}")
    assert nan == nan_ref


def assert_encode_same(dtype, acc, scale):
    count = len(acc)
    got = P.encode(dtype, acc, count, scale)
    want = N.encode(dtype, acc, count, scale)
    if got != want:
        g, w = np.frombuffer(got[0], np.uint8), np.frombuffer(want[0], np.uint8)
        bad = np.nonzero(g != w)[0][:4] if len(g) == len(w) else "length"
        raise AssertionError(f"dtype {dtype} scale {scale}: bytes {bad} differ, overflow "
                             f"{got[1]} vs {want[1]}")


@pytest.mark.parametrize("scale", SCALES)
def test_decode_every_bf16_code(scale):
    codes = np.arange(1 << 16, dtype=">u2").tobytes()
    assert_decode_same(W.BF16, codes, 1 << 16, scale)


@pytest.mark.parametrize("dtype", MX)
def test_decode_every_mx_code(dtype):
    """Every element code under block scales from 2^-127 to 2^127 and NaN (0xFF)."""
    for sbyte in (0, 1, 2, 50, 100, 119, 126, 127, 128, 140, 200, 253, 254, 255):
        for scale in SCALES:
            payload = bytes([sbyte] * 8) + bytes(56) + bytes(range(256))
            assert_decode_same(dtype, payload, 256, scale)


@pytest.mark.parametrize("scale", SCALES)
def test_decode_fp32_codes(scale):
    rng = np.random.default_rng(scale + 200)
    special = np.array([0, 0x80000000, 1, 0x80000001, 0x007FFFFF, 0x00800000, 0x3F800000,
                        0x3F800001, 0x4F000000, 0xCF000000, 0x4EFFFFFF, 0x7F7FFFFF, 0xFF7FFFFF,
                        0x7F800000, 0xFF800000, 0x7FC00000, 0x7F800001, 0xFFFFFFFF], dtype=np.uint32)
    # random exponents around the values that land near the fixed-point grid
    exp = rng.integers(127 - scale - 40, 127 - scale + 40, 2000).clip(0, 255).astype(np.uint32)
    rand = rng.integers(0, 1 << 32, 2000, dtype=np.uint64).astype(np.uint32) & 0x807FFFFF | exp << 23
    codes = np.concatenate([special, rand, rng.integers(0, 1 << 32, 500, dtype=np.uint64).astype(np.uint32)])
    assert_decode_same(W.FP32, codes.astype(">u4").tobytes(), codes.size, scale)


def accumulators(rng, n: int) -> np.ndarray:
    """int64 accumulators of every magnitude, each 32-element block with its own range,
    with exact round-half ties for every element width, zero blocks and the int32 ends."""
    bits = np.repeat(rng.integers(0, 33, n // 32), 32) - rng.integers(0, 4, n)
    mag = rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.int64) >> (32 - bits.clip(0, 31))
    a = mag * rng.choice([-1, 1], n)
    # ties: m.1000..0 in binary for significands of 2, 3, 4, 8 and 24 bits
    k = rng.integers(1, 20, n // 4)
    m = rng.integers(1 << 1, 1 << 9, n // 4)
    a[: n // 4] = ((m << k) | (1 << (k - 1))) * rng.choice([-1, 1], n // 4)
    a[n // 4: n // 4 + 32] = 0                                          # an all-zero block
    a[-6:] = [0, 1, -1, (1 << 31) - 1, -(1 << 31), 1 << 30]
    return np.clip(a, -(1 << 31), (1 << 31) - 1)


@pytest.mark.parametrize("dtype", W.DTYPES)
def test_encode_matches_golden(dtype):
    rng = np.random.default_rng(dtype)
    for scale in SCALES:
        assert_encode_same(dtype, accumulators(rng, 1024), scale)


@pytest.mark.parametrize("dtype", W.DTYPES)
def test_encode_saturates_exact_sums(dtype):
    """Sums beyond int32 (Python ints, and int64) saturate and set OVERFLOW as in the model."""
    rng = np.random.default_rng(10 + dtype)
    acc = [int(v) * 3 for v in accumulators(rng, 64)]
    acc[0], acc[1] = (1 << 40), -(1 << 40)
    for scale in (-128, 0, 16, 127):
        assert_encode_same(dtype, np.array(acc, dtype=object), scale)
        assert_encode_same(dtype, np.array(acc, dtype=np.int64), scale)
    assert P.encode(dtype, np.array(acc, dtype=object), 64, 0)[1]


def test_header_and_frame_layout():
    rng = np.random.default_rng(7)
    for _ in range(200):
        fields = dict(ver=int(rng.integers(0, 16)), op=int(rng.integers(0, 16)),
                      dtype=int(rng.integers(0, 256)), job=int(rng.integers(0, 1 << 16)),
                      slot=int(rng.integers(0, 1 << 16)), worker=int(rng.integers(0, 256)),
                      flags=int(rng.integers(0, 256)), seq=int(rng.integers(0, 1 << 32)),
                      count=int(rng.integers(0, 1 << 16)), scale=int(rng.integers(-128, 128)),
                      reserved=bytes(rng.integers(0, 256, 7).astype(np.uint8)))
        raw = F.AggHeader(**fields).pack()
        assert W.AggHeader(**fields).pack() == raw
        assert W.AggHeader.unpack(raw) == W.AggHeader(**fields)
        assert W.AggHeader.unpack(raw).timestamp == int.from_bytes(fields["reserved"][:4], "big")
        payload = bytes(rng.integers(0, 256, int(rng.integers(0, 600))).astype(np.uint8))
        addr = dict(src_mac=int(rng.integers(0, 1 << 48)), dst_mac=int(rng.integers(0, 1 << 48)),
                    src_ip=int(rng.integers(0, 1 << 32)), dst_ip=int(rng.integers(0, 1 << 32)),
                    src_port=int(rng.integers(0, 1 << 16)), dst_port=int(rng.integers(0, 1 << 16)))
        assert W.udp_frame(raw + payload, **addr) == F.build_frame(
            **addr, hdr=F.AggHeader(**fields), payload=payload)
    for name in ("IP_OFF", "UDP_OFF", "AGG_OFF", "AGG_HDR_LEN", "HDR_LEN", "AGG_VER", "OP_DATA",
                 "OP_RESULT", "FLAG_BANK", "FLAG_RETX", "FLAG_OVERFLOW", "FLAG_NAN",
                 "FLAG_UNICAST", "DTYPES", "DTYPE_NAMES", "MX_BLOCK", "MX_SCALE_LINE",
                 "MX_MAX_COUNT", "DEFAULT_MAC", "DEFAULT_IP", "DEFAULT_AGG_PORT"):
        assert getattr(W, name) == getattr(F, name), name
    for d in W.DTYPES:
        assert W.is_mx(d) == F.is_mx(d)
        assert [W.payload_len(d, c) for c in (32, 64, 2048)] == [F.payload_len(d, c) for c in (32, 64, 2048)]


def test_worker_package_needs_no_testbench():
    """With only hw/ on the path (as installed), the worker library, its DDP-free parts and
    the bridge import without tb/, cocotb or Amaranth."""
    probe = ("import sys, aggswitch.worker, aggswitch.worker.bridge, aggswitch.worker.convert; "
             "bad = [m for m in sys.modules if m.split('.')[0] in ('tb', 'cocotb', 'amaranth')]; "
             "sys.exit(f'imported {bad}' if bad else 0)")
    run = subprocess.run([sys.executable, "-c", probe], cwd=os.sep, capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(REPO / "hw")), timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
