"""Numeric semantics of the golden model (SPEC 4). Every expected value is
derived by hand from the spec; the derivation is in the comments."""

import numpy as np
import pytest

from tb.model import numerics as N
from tb.model.frames import BF16, FP32, INT32, MXFP8_E4M3, MXFP8_E5M2, MXINT8

MAX = 2**31 - 1
MIN = -2**31


def h(s):
    return bytes.fromhex(s.replace(" ", ""))


def u32(*words):
    return b"".join(w.to_bytes(4, "big") for w in words)


def u16(*words):
    return b"".join(w.to_bytes(2, "big") for w in words)


def dec(dtype, payload, count, scale):
    q, nan = N.decode(dtype, payload, count, scale)
    assert q.dtype == np.int64 and q.shape == (count,)
    return q.tolist(), nan


def mx_payload(scales, elems):
    """scale line (block scales then zeros to 64 bytes) + element bytes."""
    return bytes(scales) + bytes(64 - len(scales)) + bytes(elems)


def block(*head, fill=0, n=32):
    return list(head) + [fill] * (n - len(head))


# ------------------------------------------------------------------ helpers
def test_rne_shift():
    # 5 * 2^-1 = 2.5 -> 2; 7/2 = 3.5 -> 4; 6/4 = 1.5 -> 2; 5/4 = 1.25 -> 1;
    # 3/4 = 0.75 -> 1; 1/2 -> 0; 3 * 2^3 = 24
    m = [5, 7, 6, 5, 3, 1, 3, 2**31, 1]
    k = [-1, -1, -2, -2, -2, -1, 3, -100, 100]
    r = N.rne_shift(m, k).tolist()
    assert r[:8] == [2, 4, 2, 1, 1, 0, 24, 0]
    assert r[8] >= 2**31  # saturating region


def test_bit_length():
    assert N.bit_length([0, 1, 2, 3, 255, 256, 2**31]).tolist() == [0, 1, 2, 2, 8, 9, 32]


# ------------------------------------------------------------------- INT32
def test_int32_decode():
    q, nan = dec(INT32, h("80000000 00000001 ffffffff 7fffffff 00000000"), 5, 0)
    assert q == [MIN, 1, -1, MAX, 0] and nan is False
    # scale is ignored for INT32
    assert dec(INT32, h("00000003"), 1, 5)[0] == [3]


def test_int32_encode():
    out, ovf = N.encode(INT32, np.array([1, -1, MAX, MIN], dtype=np.int64), 4, 0)
    assert out == h("00000001 ffffffff 7fffffff 80000000") and ovf is False
    out, ovf = N.encode(INT32, np.array([2**31, -2**31 - 1, 5], dtype=object), 3, 0)
    assert out == h("7fffffff 80000000 00000005") and ovf is True
    out, ovf = N.encode(INT32, np.array([4 * MAX, 4 * MIN], dtype=np.int64), 2, 7)
    assert out == h("7fffffff 80000000") and ovf is True
    # huge Python ints
    out, ovf = N.encode(INT32, np.array([2**100, -2**100], dtype=object), 2, 0)
    assert out == h("7fffffff 80000000") and ovf is True


def test_length_checks():
    with pytest.raises(ValueError):
        N.decode(INT32, bytes(7), 2, 0)
    with pytest.raises(ValueError):
        N.encode(INT32, [1, 2], 3, 0)
    with pytest.raises(ValueError):
        N.decode(MXINT8, bytes(64 + 31), 32, 0)


# -------------------------------------------------------------- FP32 ingress
def test_fp32_decode_round_half_even():
    # 1.5->2, 2.5->2, 0.5->0, -1.5->-2, -2.5->-2, 3.5->4, 1.0->1, -0.0->0, 0.75->1
    p = u32(0x3FC00000, 0x40200000, 0x3F000000, 0xBFC00000, 0xC0200000, 0x40600000,
            0x3F800000, 0x80000000, 0x3F400000)
    q, nan = dec(FP32, p, 9, 0)
    assert q == [2, 2, 0, -2, -2, 4, 1, 0, 1] and nan is False


def test_fp32_decode_scale():
    # 1.25 * 2 = 2.5 -> 2; 1.75 * 2 = 3.5 -> 4; 3.0 * 2^-1 = 1.5 -> 2;
    # 2^23+1 = 8388609 (0x4B000001) * 2^-1 = 4194304.5 -> 4194304 (even)
    # 2^23+3 = 8388611 (0x4B000003) * 2^-1 = 4194305.5 -> 4194306
    q, _ = dec(FP32, u32(0x3FA00000, 0x3FE00000), 2, 1)
    assert q == [2, 4]
    q, _ = dec(FP32, u32(0x40400000, 0x4B000001, 0x4B000003, 0xCB000003), 4, -1)
    assert q == [2, 4194304, 4194306, -4194306]


def test_fp32_decode_saturation_and_specials():
    # 2^31 -> MAX; -2^31 -> MIN (exact); 2^30 -> 2^30;
    # 0x4EFFFFFF = (2^24-1)*2^7 = 2147483520 fits; with scale 1 it saturates
    # +Inf -> MAX, -Inf -> MIN; NaN (quiet and signalling, either sign) -> 0
    p = u32(0x4F000000, 0xCF000000, 0x4E800000, 0x4EFFFFFF, 0x7F800000, 0xFF800000)
    q, nan = dec(FP32, p, 6, 0)
    assert q == [MAX, MIN, 2**30, 2147483520, MAX, MIN] and nan is False
    q, _ = dec(FP32, u32(0x4EFFFFFF, 0xCEFFFFFF), 2, 1)
    assert q == [MAX, MIN]
    q, nan = dec(FP32, u32(0x3F800000, 0x7FC00000, 0xFF800001, 0x7F800001), 4, 0)
    assert q == [1, 0, 0, 0] and nan is True
    # max float and scale -128: (2^24-1)*2^104 * 2^-128 = 1 - 2^-24 -> 1
    # 2^127 * 2^-128 = 0.5 -> 0; 1.5*2^127 * 2^-128 = 0.75 -> 1
    q, _ = dec(FP32, u32(0x7F7FFFFF, 0x7F000000, 0x7F400000, 0x00000001), 4, -128)
    assert q == [1, 0, 1, 0]
    # max float with scale 127 saturates
    assert dec(FP32, u32(0x7F7FFFFF, 0xFF7FFFFF), 2, 127)[0] == [MAX, MIN]


def test_fp32_decode_subnormals():
    # scale 127: 0x00400000 = 2^-127 -> 1; 0x00600000 = 1.5*2^-127 -> 2;
    # 0x00200000 = 2^-128 -> 0.5 -> 0; 0x007FFFFF = (2^23-1)*2^-149 -> ~2 -> 2;
    # 0x00000001 = 2^-149 -> 2^-22 -> 0; 0x00A00000 = 1.25*2^-126 -> 2.5 -> 2
    # 0x80600000 = -1.5*2^-127 -> -2
    p = u32(0x00400000, 0x00600000, 0x00200000, 0x007FFFFF, 0x00000001, 0x00A00000,
            0x80600000)
    assert dec(FP32, p, 7, 127)[0] == [1, 2, 0, 2, 0, 2, -2]


# -------------------------------------------------------------- BF16 ingress
def test_bf16_decode():
    # 1.5->2, 2.5->2, -3.5->-4, +Inf, -Inf, 1.0, 2^31 -> MAX, -2^31 -> MIN,
    # 0x4EFF = 1.9921875*2^30 = 255*2^23 = 2139095040
    p = u16(0x3FC0, 0x4020, 0xC060, 0x7F80, 0xFF80, 0x3F80, 0x4F00, 0xCF00, 0x4EFF)
    q, nan = dec(BF16, p, 9, 0)
    assert q == [2, 2, -4, MAX, MIN, 1, MAX, MIN, 2139095040] and nan is False
    q, nan = dec(BF16, u16(0x7FC0, 0x3F80, 0xFF81), 3, 0)
    assert q == [0, 1, 0] and nan is True
    # subnormals with scale 127: 0x0040 = 2^-127 -> 1; 0x0001 = 2^-133 -> 2^-6 -> 0;
    # 0x0060 = 1.5 * 2^-127 -> 2; 0x0020 = 2^-128 -> 0.5 -> 0
    assert dec(BF16, u16(0x0040, 0x0001, 0x0060, 0x0020), 4, 127)[0] == [1, 0, 2, 0]
    # scale: 1.25 (0x3FA0) * 2^3 = 10
    assert dec(BF16, u16(0x3FA0), 1, 3)[0] == [10]


# --------------------------------------------------------------- FP32 egress
def test_fp32_encode():
    out, ovf = N.encode(FP32, [1, -1, 3, 0], 4, 0)
    assert out == u32(0x3F800000, 0xBF800000, 0x40400000, 0x00000000) and ovf is False
    # scale 1: 3 -> 1.5; scale 2: 1 -> 0.25
    assert N.encode(FP32, [3], 1, 1)[0] == u32(0x3FC00000)
    assert N.encode(FP32, [1], 1, 2)[0] == u32(0x3E800000)
    # RNE to 24 bits: 2^24+1 -> 2^24 (tie, even); 2^24+3 -> 2^24+4 (tie, even)
    # 2^31-1 -> 2^31; -2^31 exact
    out, ovf = N.encode(FP32, [2**24 + 1, 2**24 + 3, MAX, MIN], 4, 0)
    assert out == u32(0x4B800000, 0x4B800002, 0x4F000000, 0xCF000000) and ovf is False
    # 2^24+2^-... not representable: 2^25+3 -> quantum 4: 33554435 -> 33554436
    assert N.encode(FP32, [2**25 + 3], 1, 0)[0] == u32(0x4C000001)
    # accumulator saturation sets OVERFLOW, then converts 2^31-1 -> 2^31
    out, ovf = N.encode(FP32, np.array([2**31, 5], dtype=object), 2, 0)
    assert out == u32(0x4F000000, 0x40A00000) and ovf is True


def test_fp32_encode_range_limits():
    # 2^-127 is subnormal: 0x00400000; 3*2^-127 = 1.5*2^-126: 0x00C00000
    assert N.encode(FP32, [1, 3, -1], 3, 127)[0] == u32(0x00400000, 0x00C00000, 0x80400000)
    # 2^127 = 0x7F000000; 2^128 overflows to +Inf (IEEE RNE), no OVERFLOW flag
    assert N.encode(FP32, [1], 1, -127) == (u32(0x7F000000), False)
    assert N.encode(FP32, [1, -1], 2, -128) == (u32(0x7F800000, 0xFF800000), False)
    # max float (2^24-1)*2^104 = a * 2^128 with a = (2^24-1)*2^-24: not an
    # integer; use scale -104: a = 2^24-1 -> max float exactly
    assert N.encode(FP32, [2**24 - 1], 1, -104)[0] == u32(0x7F7FFFFF)
    # a = 2^25-1 at scale -103 = (2^25-1)*2^103: halfway above the max
    # (max + half ulp = (2^25-1)*2^103) -> tie -> even -> 2^128 -> Inf
    assert N.encode(FP32, [2**25 - 1], 1, -103)[0] == u32(0x7F800000)
    # a = 2^25-2 at scale -103 = max float exactly
    assert N.encode(FP32, [2**25 - 2], 1, -103)[0] == u32(0x7F7FFFFF)


def test_bf16_encode():
    # 3 -> 0x4040; 257 -> tie between 256 and 258 -> 256 (even) 0x4380;
    # 259 -> tie between 258 (mant 1) and 260 (mant 2) -> 260 = 0x4382
    # -255 exact = 0xC37F; 2^31-1 -> 2^31 = 0x4F00
    out, ovf = N.encode(BF16, [3, 257, 259, -255, MAX], 5, 0)
    assert out == u16(0x4040, 0x4380, 0x4382, 0xC37F, 0x4F00) and ovf is False
    # max bf16 = 255*2^120: a = 255*2^23, scale -97
    assert N.encode(BF16, [255 * 2**23], 1, -97)[0] == u16(0x7F7F)
    # 511*2^119 is the tie between max and 2^128: even -> Inf
    assert N.encode(BF16, [511 * 2**22], 1, -97)[0] == u16(0x7F80)
    assert N.encode(BF16, [511 * 2**22 - 1], 1, -97)[0] == u16(0x7F7F)
    assert N.encode(BF16, [-1], 1, -128) == (u16(0xFF80), False)
    # 2^-127 subnormal 0x0040; 0.5 with scale 1 -> 0x3F00
    assert N.encode(BF16, [1], 1, 127)[0] == u16(0x0040)
    assert N.encode(BF16, [1], 1, 1)[0] == u16(0x3F00)
    out, ovf = N.encode(BF16, np.array([-2**40], dtype=object), 1, 0)
    assert out == u16(0xCF00) and ovf is True


# ---------------------------------------------------------------- MX ingress
def test_mxint8_decode():
    # scale byte 127 -> 2^0; elements are k * 2^-6
    # 0x40 = 64 -> 1.0 -> 1; 0x20 -> 0.5 -> 0; 0x60 -> 1.5 -> 2; 0xA0 = -96 -> -2;
    # 0x80 = -128 -> -2.0 -> -2; 0x7F -> 1.984375 -> 2; 0xC0 = -64 -> -1
    e = block(0x40, 0x20, 0x60, 0xA0, 0x80, 0x7F, 0xC0)
    q, nan = dec(MXINT8, mx_payload([127], e), 32, 0)
    assert q == block(1, 0, 2, -2, -2, 2, -1) and nan is False
    # scale 6: q = the element integer itself
    q, _ = dec(MXINT8, mx_payload([127], e), 32, 6)
    assert q == block(64, 32, 96, -96, -128, 127, -64)
    # scale byte 0 -> 2^-127: 64 * 2^-6 * 2^-127 * 2^127 = 1
    assert dec(MXINT8, mx_payload([0], block(0x40)), 32, 127)[0] == block(1)
    # scale byte 254 -> 2^127: 127*2^-6*2^127 saturates; with scale -128:
    # 127 * 2^-7 = 0.99 -> 1; -128 * 2^-7 = -1
    assert dec(MXINT8, mx_payload([254], block(0x7F, 0x80)), 32, 0)[0] == block(MAX, MIN)
    assert dec(MXINT8, mx_payload([254], block(0x7F, 0x80)), 32, -128)[0] == block(1, -1)


def test_mx_nan_block_decode():
    for dt in (MXINT8, MXFP8_E4M3, MXFP8_E5M2):
        e = block(0x38, 0x38, fill=0x38) + block(0x38, fill=0x38)
        q, nan = dec(dt, mx_payload([127, 0xFF], e), 64, 0)
        assert q[32:] == [0] * 32 and nan is True
        q, nan = dec(dt, mx_payload([127, 127], e), 64, 0)
        assert nan is False and q[32:] == q[:32]


def test_mx_scale_line_padding_ignored():
    p = bytearray(mx_payload([127], block(0x40)))
    p[1:64] = b"\xff" * 63  # bytes after the block scales are not scales
    assert dec(MXINT8, bytes(p), 32, 0) == (block(1), False)


def test_e4m3_decode():
    # 0x38 = exp 7 mant 0 = 1.0; 0x7E = exp 15 mant 6 = 1.75*2^8 = 448;
    # 0x3C = 1.5 -> 2; 0x42 = 2.5 -> 2; 0xC2 = -2.5 -> -2; 0x44 = 3.0;
    # 0x78 = 256 (exp 15 mant 0 is a normal number, not Inf); 0xFE = -448
    e = block(0x38, 0x7E, 0x3C, 0x42, 0xC2, 0x44, 0x78, 0xFE)
    q, nan = dec(MXFP8_E4M3, mx_payload([127], e), 32, 0)
    assert q == block(1, 448, 2, 2, -2, 3, 256, -448) and nan is False
    # only S.1111.111 is NaN
    q, nan = dec(MXFP8_E4M3, mx_payload([127], block(0x7F, 0x38, 0xFF)), 32, 0)
    assert q == block(0, 1, 0) and nan is True
    # subnormals: 0x01 = 2^-9, 0x04 = 2^-7, 0x07 = 7*2^-9, 0x08 = 2^-6 (min normal)
    # scale byte 136 (2^9): 1, 4, 7, 8; scale byte 127 and scale 8: 0x01 -> 0.5 -> 0,
    # 0x03 -> 1.5 -> 2, 0x05 -> 2.5 -> 2
    q, _ = dec(MXFP8_E4M3, mx_payload([136], block(0x01, 0x04, 0x07, 0x08, 0x81)), 32, 0)
    assert q == block(1, 4, 7, 8, -1)
    q, _ = dec(MXFP8_E4M3, mx_payload([127], block(0x01, 0x03, 0x05)), 32, 8)
    assert q == block(0, 2, 2)
    # 448 * 2^127 saturates
    assert dec(MXFP8_E4M3, mx_payload([254], block(0x7E, 0xFE)), 32, 0)[0] == block(MAX, MIN)


def test_e5m2_decode():
    # 0x3C = exp 15 = 1.0; 0x7B = 1.75*2^15 = 57344; 0x3E = 1.5 -> 2; 0x3D = 1.25 -> 1;
    # 0x7C = +Inf -> MAX; 0xFC = -Inf -> MIN
    e = block(0x3C, 0x7B, 0x3E, 0x3D, 0x7C, 0xFC)
    q, nan = dec(MXFP8_E5M2, mx_payload([127], e), 32, 0)
    assert q == block(1, 57344, 2, 1, MAX, MIN) and nan is False
    # scale 1: 1.25*2 = 2.5 -> 2; 1.75*2 = 3.5 -> 4 (0x3F)
    assert dec(MXFP8_E5M2, mx_payload([127], block(0x3D, 0x3F)), 32, 1)[0] == block(2, 4)
    # NaN: exp 31 mant != 0
    q, nan = dec(MXFP8_E5M2, mx_payload([127], block(0x7D, 0xFF, 0x7E, 0x3C)), 32, 0)
    assert q == block(0, 0, 0, 1) and nan is True
    # subnormal 0x01 = 2^-16; scale byte 143 (2^16) -> 1; 0x03 -> 3; 0x04 = 2^-14 -> 4
    q, _ = dec(MXFP8_E5M2, mx_payload([143], block(0x01, 0x03, 0x04, 0x83)), 32, 0)
    assert q == block(1, 3, 4, -3)


def test_mx_inf_in_nan_block_is_nan():
    q, nan = dec(MXFP8_E5M2, mx_payload([0xFF], block(0x7C)), 32, 0)
    assert q == block(0) and nan is True


# ----------------------------------------------------------------- MX egress
def enc_mx(dt, acc, scale):
    out, ovf = N.encode(dt, np.array(acc, dtype=object), len(acc), scale)
    nblk = len(acc) // 32
    assert out[nblk:64] == bytes(64 - nblk)
    return list(out[:nblk]), list(out[64:]), ovf


def test_mxint8_encode():
    # max 64 -> floor(log2) = 6, X = 6 - 0 = 6 -> scale byte 133;
    # element code = RNE(a * 2^(6-6)) = a
    s, e, ovf = enc_mx(MXINT8, block(64, 1, -1, 3), 0)
    assert s == [133] and e == block(64, 1, 0xFF, 3) and ovf is False
    # max 1023 -> floor(log2) 9, X = 9 -> byte 136; code = RNE(a / 8):
    # 1023 -> 127.875 -> 128 -> saturates to 127; 4 -> 0.5 -> 0; 12 -> 1.5 -> 2;
    # -12 -> -2 (0xFE); 20 -> 2.5 -> 2; 1000 -> 125; -1023 -> -127 (0x81)
    s, e, ovf = enc_mx(MXINT8, block(1023, 4, 12, -12, 20, 1000, -1023), 0)
    assert s == [136] and e == block(127, 0, 2, 0xFE, 2, 125, 0x81) and ovf is False
    # scale 3: v = a/8, max 1023/8 -> floor(log2) = 6, X = 6, byte 133: same codes
    s, e, _ = enc_mx(MXINT8, block(1023, 4, 12, -12, 20, 1000, -1023), 3)
    assert s == [133] and e == block(127, 0, 2, 0xFE, 2, 125, 0x81)


def test_mx_all_zero_block():
    # m = 2^-126: X = -126 - emax; INT8: -126 -> byte 1; E4M3 -134 and E5M2 -141
    # clamp to -127 -> byte 0
    for dt, byte in ((MXINT8, 1), (MXFP8_E4M3, 0), (MXFP8_E5M2, 0)):
        for scale in (-128, 0, 127):
            s, e, ovf = enc_mx(dt, [0] * 32, scale)
            assert s == [byte] and e == [0] * 32 and ovf is False


def test_mx_shared_exponent_low_clamp():
    # INT8, scale 127, a = 1: v = 2^-127, X = -127 -> byte 0, code = 2^0 * 64 = 64
    assert enc_mx(MXINT8, block(1), 127)[:2] == ([0], block(64))
    # INT8, scale 127, a = 3: v = 1.5*2^-126, X = -126 -> byte 1, code 1.5*64 = 96
    assert enc_mx(MXINT8, block(3), 127)[:2] == ([1], block(96))
    # E4M3, scale 127, block (3, 1): floor(log2) = -126, X = -134 -> -127 (byte 0);
    # u = a: 3.0 = 0x44, 1.0 = 0x38
    assert enc_mx(MXFP8_E4M3, block(3, 1, -1), 127)[:2] == ([0], block(0x44, 0x38, 0xB8))
    # E5M2, scale 127, a = 2^20: floor(log2) = -107, X = -122 -> byte 5; u = 2^15 = 0x78;
    # a = 1: u = 2^(-127+122) = 2^-5 -> exp field 10 = 0x28
    assert enc_mx(MXFP8_E5M2, block(2**20, 1), 127)[:2] == ([5], block(0x78, 0x28))


def test_mx_shared_exponent_high_nan():
    # INT8, scale -127, a = 1: v = 2^127, X = 127 -> byte 254, code 64
    assert enc_mx(MXINT8, block(1), -127) == ([254], block(0x40), False)
    # INT8, scale -128: X = 128 > 127 -> NaN block, OVERFLOW, elements zero
    assert enc_mx(MXINT8, block(1, 5), -128) == ([0xFF], [0] * 32, True)
    # E4M3, scale -128, a = 255: floor(log2) = 7 + 128 = 135, X = 127 -> byte 254;
    # u = 255 * 2^128 / 2^127 = 510 -> saturates to 448 (0x7E)
    assert enc_mx(MXFP8_E4M3, block(255), -128) == ([254], block(0x7E), False)
    # E4M3, scale -128, a = 256: X = 128 -> NaN
    assert enc_mx(MXFP8_E4M3, block(256), -128) == ([0xFF], [0] * 32, True)
    # E5M2: X = floor(log2) - 15; a = 2^14, scale -128: 142 - 15 = 127 -> byte 254,
    # u = 2^142 / 2^127 = 2^15 = 0x78; a = 2^15: NaN
    assert enc_mx(MXFP8_E5M2, block(2**14), -128) == ([254], block(0x78), False)
    assert enc_mx(MXFP8_E5M2, block(2**15), -128) == ([0xFF], [0] * 32, True)


def test_mx_two_blocks_one_nan():
    s, e, ovf = enc_mx(MXINT8, block(64) + block(2**20), -107)
    # block 0: floor(log2(64 * 2^107)) = 113, X = 113 -> byte 240, code 64
    # block 1: floor(log2(2^20 * 2^107)) = 127, X = 127 -> byte 254, code 64
    assert s == [240, 254] and e == block(64) + block(64) and ovf is False
    s, e, ovf = enc_mx(MXINT8, block(64) + block(2**21), -107)
    assert s == [240, 0xFF] and e == block(64) + [0] * 32 and ovf is True


def test_e4m3_encode_subnormals_and_ties():
    # max 2^18, scale 0: X = 18 - 8 = 10, byte 137, u = a * 2^-10
    # 2^18 -> 256 = 0x78; 1 -> 2^-10 = half the subnormal quantum 2^-9 -> 0 (even)
    # 2 -> 2^-9 = 0x01; 3 -> 1.5 q -> 2 q = 0x02; 5 -> 2.5 q -> 0x02; -3 -> 0x82
    # -1 -> -0 -> 0x80; 15 -> 7.5 q -> 8 q = 2^-6 = min normal 0x08
    # 17*2^6 = 1088 -> u = 1.0625 = 17/16 -> 3 mantissa bits: tie between 1.0 and
    # 1.125 -> 1.0 = 0x38; 19*2^6 -> u = 1.1875 -> tie between 1.125 and 1.25 ->
    # 1.25 (mantissa 2, even) = 0x3A
    acc = block(2**18, 1, 2, 3, 5, -3, -1, 15, 17 * 64, 19 * 64)
    s, e, ovf = enc_mx(MXFP8_E4M3, acc, 0)
    assert s == [137]
    assert e == block(0x78, 0x00, 0x01, 0x02, 0x02, 0x82, 0x80, 0x08, 0x38, 0x3A)
    assert ovf is False


def test_e4m3_encode_saturation():
    # block max 511, scale 0: floor(log2) = 8, X = 0, byte 127, u = a
    # top binade quantum 32: 511 -> 512 -> saturate 448 (0x7E); 464 = 14.5 q ->
    # 14 q = 448 (0x7E); 460 -> 14.375 -> 448; 440 -> 13.75 -> 448; 432 = 13.5 q ->
    # 14 (even) -> 448; 400 = 12.5 q -> 12 -> 384 = 1.5*256 (0x7C);
    # -300 -> 9.375 -> 9 -> 288 = 1.125*256 (0xF9); 470 -> 15 q = 480 -> 448
    acc = block(511, 464, 460, 440, 432, 400, -300, 470, -511)
    s, e, ovf = enc_mx(MXFP8_E4M3, acc, 0)
    assert s == [127]
    assert e == block(0x7E, 0x7E, 0x7E, 0x7E, 0x7E, 0x7C, 0xF9, 0x7E, 0xFE)
    assert ovf is False  # element saturation is not OVERFLOW


def test_e5m2_encode():
    # block max 65535, scale 0: floor(log2) = 15, X = 0, byte 127, u = a
    # quantum at 2^15 is 2^13 = 8192: 65535 -> 8 q = 65536 -> saturate 57344 (0x7B)
    # 61440 = 7.5 q -> 8 (even) -> saturate 0x7B; 40000 -> 4.88 q -> 5 q = 40960
    # = 1.25*2^15 (0x79); 57344 = 0x7B; -49152 = -1.5*2^15 = 0xFA;
    # 1 = 2^0 (exp 15) = 0x3C; 3 = 1.5*2 = 0x42; 5 = 1.25*4 = 0x45; 7 = 1.75*4 = 0x47;
    # 9 = 1.125*8 -> tie between 1.0 and 1.25 -> 1.0*8 = 0x48
    acc = block(65535, 61440, 40000, 57344, -49152, 1, 3, 5, 7, 9)
    s, e, ovf = enc_mx(MXFP8_E5M2, acc, 0)
    assert s == [127]
    assert e == block(0x7B, 0x7B, 0x79, 0x7B, 0xFA, 0x3C, 0x42, 0x45, 0x47, 0x48)
    assert ovf is False


def test_e5m2_encode_subnormals():
    # block max 2^30, scale 0: X = 30 - 15 = 15 (byte 142), u = a * 2^-15
    # 2^30 -> 2^15 = 0x78; 1 -> 2^-15 = 2 subnormal quanta (2^-16) = 0x02;
    # 3 -> 6 q -> 1.5*2^-14 = min-normal binade: exp 1 mant 2 = 0x06;
    # 2 -> 2^-14 = min normal 0x04; -1 -> 0x82
    s, e, ovf = enc_mx(MXFP8_E5M2, block(2**30, 1, 3, 2, -1), 0)
    assert s == [142] and e == block(0x78, 0x02, 0x06, 0x04, 0x82)


def test_mx_encode_single_outlier():
    # one big element flushes the small ones: INT8, max 2^20 -> X = 20,
    # codes = RNE(a * 2^(6-20)) = RNE(a / 16384): 2^20 -> 64; 8192 -> 0.5 -> 0;
    # 24576 -> 1.5 -> 2; 1000 -> 0; -40960 -> -2.5 -> -2 (0xFE)
    s, e, _ = enc_mx(MXINT8, block(2**20, 8192, 24576, 1000, -40960), 0)
    assert s == [147] and e == block(64, 0, 2, 0, 0xFE)


def test_mx_encode_int32_saturation_overflow():
    # acc 2^32 saturates to 2^31-1 (OVERFLOW); floor(log2) = 30, X = 30,
    # byte 157; code = RNE((2^31-1) * 2^-24) = 127.99.. -> 128 -> 127; 5 -> 0
    s, e, ovf = enc_mx(MXINT8, block(2**32, 5), 0)
    assert s == [157] and e == block(127, 0) and ovf is True
    # with -2^32 in the block: saturates to -2^31, max |a| = 2^31, X = 31, byte 158;
    # codes RNE(a * 2^-25): (2^31-1) -> 63.99.. -> 64; -2^31 -> -64 (0xC0)
    s, e, ovf = enc_mx(MXINT8, block(2**32, -2**32), 0)
    assert s == [158] and e == block(64, 0xC0) and ovf is True


def test_mx_roundtrip_representable_values():
    # values already on the MX grid survive decode -> encode unchanged
    # INT8: byte 127+6 means codes are integers: q = code
    e = list(range(-127, 128, 8))
    pay = mx_payload([133], [x & 0xFF for x in e])
    q, nan = N.decode(MXINT8, pay, 32, 0)
    assert q.tolist() == e
    out, ovf = N.encode(MXINT8, q, 32, 0)
    assert out == pay and ovf is False


# --------------------------------------------------------------------------
# Randomised cross-checks against independent references: float64 / float32
# hardware arithmetic where it is provably exact, and a value-table
# nearest-code search with exact fractions for the 8- and 16-bit formats.
# --------------------------------------------------------------------------
from bisect import bisect_left  # noqa: E402
from fractions import Fraction  # noqa: E402

RNG_SEED = 20240601


def _ref_fixed(values, scale):
    """RNE(v * 2^scale) saturated to int32; values exact float64 (finite)."""
    x = np.rint(np.ldexp(values, scale))  # exact product; rint is RNE
    return np.clip(x, MIN, MAX).astype(np.int64).tolist()


def test_fp32_decode_random_vs_float64():
    rng = np.random.default_rng(RNG_SEED)
    bits = rng.integers(0, 2**32, size=4096, dtype=np.uint64).astype(np.uint32)
    # bias towards interesting exponents: around 2^-scale and the int32 edge
    f32 = bits.view(np.float32)
    finite = np.isfinite(f32)
    for scale in (-128, -100, -31, -1, 0, 1, 30, 100, 127):
        q, nan = N.decode(FP32, bits.astype(">u4").tobytes(), bits.size, scale)
        ref = _ref_fixed(f32[finite].astype(np.float64), scale)
        assert q[finite].tolist() == ref
        assert nan == bool(np.isnan(f32).any())


def test_fp32_decode_near_integers_vs_float64():
    rng = np.random.default_rng(RNG_SEED + 1)
    # values k + {0, .25, .5, .75} for random k, scaled by powers of two
    k = rng.integers(-2**22, 2**22, size=2000)
    frac = rng.integers(0, 4, size=2000) / 4
    v = (k + frac).astype(np.float32)
    for scale in (-3, -1, 0, 2, 9):
        q, _ = N.decode(FP32, v.astype(">f4").tobytes(), v.size, scale)
        assert q.tolist() == _ref_fixed(v.astype(np.float64), scale)


def test_bf16_decode_all_codes_vs_float64():
    codes = np.arange(2**16, dtype=np.uint32)
    f = (codes << 16).view(np.float32)
    finite = np.isfinite(f)
    for scale in (-128, -7, 0, 5, 127):
        q, nan = N.decode(BF16, codes.astype(">u2").tobytes(), codes.size, scale)
        assert nan is True
        assert q[finite].tolist() == _ref_fixed(f[finite].astype(np.float64), scale)
        inf = np.isinf(f)
        assert set(q[inf & (f > 0)].tolist()) == {MAX}
        assert set(q[inf & (f < 0)].tolist()) == {MIN}
        assert set(q[np.isnan(f)].tolist()) == {0}


def test_fp32_encode_random_vs_float32_cast():
    """float64(a) * 2^-scale is exact; the float64 -> float32 cast is one IEEE
    RNE rounding (with overflow to Inf and subnormals)."""
    rng = np.random.default_rng(RNG_SEED + 2)
    a = np.concatenate([rng.integers(MIN, MAX, size=3000, endpoint=True),
                        rng.integers(-2**26, 2**26, size=1000),
                        np.arange(-300, 300)])
    for scale in (-128, -104, -103, -40, -1, 0, 1, 7, 31, 100, 127):
        out, ovf = N.encode(FP32, a, a.size, scale)
        with np.errstate(over="ignore"):
            ref = np.ldexp(a.astype(np.float64), -scale).astype(np.float32)
        assert out == ref.astype(">f4").tobytes()
        assert ovf is False


def _float_table(ebits, mbits, bias, kind):
    """(sorted positive finite values as Fractions, their codes)."""
    vals = []
    for code in range(1 << (ebits + mbits)):
        e, m = code >> mbits, code & ((1 << mbits) - 1)
        if kind == "ieee" and e == (1 << ebits) - 1:
            continue
        if kind == "e4m3" and e == (1 << ebits) - 1 and m == (1 << mbits) - 1:
            continue
        if e == 0:
            v = Fraction(m, 1 << mbits) * Fraction(2) ** (1 - bias)
        else:
            v = (1 + Fraction(m, 1 << mbits)) * Fraction(2) ** (e - bias)
        vals.append((v, code))
    vals.sort()
    return [v for v, _ in vals], [c for _, c in vals]


def _nearest_even(table, x):
    """Nearest table entry to x >= 0, ties to the even code; beyond the
    largest entry: the largest (saturation)."""
    vals, codes = table
    i = bisect_left(vals, x)
    if i == len(vals):
        return codes[-1]
    if vals[i] == x or i == 0:
        return codes[i]
    lo, hi = vals[i - 1], vals[i]
    if x - lo < hi - x:
        return codes[i - 1]
    if hi - x < x - lo:
        return codes[i]
    return codes[i - 1] if codes[i - 1] % 2 == 0 else codes[i]


def _floor_log2(x: Fraction) -> int:
    n = x.numerator.bit_length() - x.denominator.bit_length()
    if Fraction(2) ** n > x:
        n -= 1
    elif Fraction(2) ** (n + 1) <= x:
        n += 1
    return n


_TABLES = {
    MXFP8_E4M3: (_float_table(4, 3, 7, "e4m3"), 8, 7),
    MXFP8_E5M2: (_float_table(5, 2, 15, "ieee"), 15, 7),
    MXINT8: (([Fraction(k, 64) for k in range(128)], list(range(128))), 0, 7),
}


def _ref_mx_encode(dt, acc, scale):
    table, emax, sbit = _TABLES[dt]
    sat = [min(max(int(x), MIN), MAX) for x in acc]
    ovf = sat != [int(x) for x in acc]
    scales, elems = [], []
    for b in range(0, len(sat), 32):
        blk = [Fraction(x) * Fraction(2) ** (-scale) for x in sat[b:b + 32]]
        m = max(abs(v) for v in blk)
        if m == 0:
            m = Fraction(2) ** -126
        x = _floor_log2(m) - emax
        x = max(x, -127)
        if x > 127:
            scales.append(0xFF)
            elems += [0] * 32
            ovf = True
            continue
        scales.append(x + 127)
        for v in blk:
            u = v / Fraction(2) ** x
            c = _nearest_even(table, abs(u))
            if dt == MXINT8:
                elems.append((-c) & 0xFF if u < 0 else c)
            else:
                elems.append(c | (0x80 if u < 0 else 0))
    line = bytes(scales) + bytes(64 - len(scales))
    return line + bytes(elems), ovf


@pytest.mark.parametrize("dt", [MXINT8, MXFP8_E4M3, MXFP8_E5M2])
def test_mx_encode_random_vs_fraction_reference(dt):
    rng = np.random.default_rng(RNG_SEED + dt)
    for trial in range(40):
        n = 32 * int(rng.integers(1, 5))
        mag = rng.integers(0, 33, size=n)           # per-element bit width
        a = [int(rng.integers(-(1 << int(k)), (1 << int(k)) + 1)) for k in mag]
        if trial % 5 == 0:
            a[:32] = [0] * 32                       # an all-zero block
        if trial % 7 == 0:
            a[0] = 4 * MAX                          # int32 saturation
        scale = int(rng.choice([-128, -127, -100, -20, -1, 0, 1, 6, 20, 100, 127]))
        got = N.encode(dt, np.array(a, dtype=object), n, scale)
        assert got == _ref_mx_encode(dt, a, scale), (trial, scale)


@pytest.mark.parametrize("dt", [MXFP8_E4M3, MXFP8_E5M2])
def test_mx_decode_all_codes_vs_fraction_reference(dt):
    table, _, _ = _TABLES[dt]
    value = {c: v for v, c in zip(*table)}
    codes = list(range(256))
    for sb in (0, 1, 100, 127, 140, 200, 254):
        for scale in (-128, -9, 0, 3, 127):
            pay = mx_payload([sb] * 8, codes)
            q, nan = N.decode(dt, pay, 256, scale)
            assert nan is True
            for c in codes:
                mag = c & 0x7F
                if mag not in value:
                    if dt == MXFP8_E5M2 and mag == 0x7C:   # Inf
                        assert q[c] == (MIN if c & 0x80 else MAX)
                    else:
                        assert q[c] == 0
                    continue
                v = value[mag] * Fraction(2) ** (sb - 127 + scale)
                r = round(v)                         # Fraction round: half to even
                r = -r if c & 0x80 else r
                assert q[c] == min(max(r, MIN), MAX), (sb, scale, c)
