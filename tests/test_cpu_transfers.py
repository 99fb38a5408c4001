"""The convolutions' copies into oneDNN's layouts on the calling thread (cpu/custom_ops/conv.cpp:
ChannelBlockCopy, SmallReorder), float32 and into bfloat16, held byte for byte to oneDNN's own
reorder of the same tensor. Through the library's test entry, so the bfloat16 copies are checked
on every CPU, with or without bf16 units (only those run bf16 convolutions)."""
import ctypes

import numpy as np
import pytest

from official.vision.detection.cpu.custom_ops import library


def transfer_into(plain, layout, bf16, onednn):
    """``plain`` in oneDNN's ``layout`` (its bytes), the route that wrote it, and (float32) the
    layout copied back into a plain tensor the way an output is."""
    handle = library.load()
    assert handle is not None, library.unavailable_reason()
    handle.fcos_onednn_transfer_into.restype = ctypes.c_char_p
    plain = np.ascontiguousarray(plain, dtype=np.float32)
    dims = (ctypes.c_int64 * plain.ndim)(*plain.shape)
    out = np.full(plain.size * 4 * 8, 0xA5, dtype=np.uint8)  # room for padded blocks
    size = ctypes.c_int64(out.size)  # the layout's size, after
    back = np.full_like(plain, np.nan)
    route = handle.fcos_onednn_transfer_into(
        plain.ctypes.data_as(ctypes.c_void_p), dims, plain.ndim, layout.encode(), int(bf16),
        int(onednn), out.ctypes.data_as(ctypes.c_void_p), ctypes.byref(size),
        back.ctypes.data_as(ctypes.c_void_p)).decode()
    assert route, "unknown layout or too little room: {} {}".format(layout, plain.shape)
    return out[:size.value], route, None if bf16 else back


def special_values(count, rng):
    """Normal values of several scales, with ties, NaNs, infinities, zeros and subnormals."""
    values = (rng.randn(count) * 10.0 ** rng.randint(-6, 6, count)).astype(np.float32)
    bits = values.view(np.uint32)
    bits[0::7] = (bits[0::7] & 0xFFFF0000) | 0x8000  # ties: to the even neighbour
    bits[1::11] = (bits[1::11] & 0xFFFE0000) | 0x18000  # ties with an odd upper half
    specials = np.array([0x7FC00000, 0x7F800001, 0xFFA00001, 0x7F800000, 0xFF800000,
                         0x00000000, 0x80000000, 0x00000001, 0x807FFFFF, 0x7F7FFFFF,
                         0x3F7FFFFF, 0x00800000], dtype=np.uint32)
    bits[3:3 + len(specials)] = specials
    return values


def assert_same_bfloat16(mine, theirs):
    """Equal bytes, but for a NaN's payload and a zero's sign: oneDNN's reorder keeps the sign
    of a zero (and of a subnormal, made zero) on some CPUs and not on others (not on an AVX2
    AMD EPYC 25/1), which changes no sum."""
    mine, theirs = mine.view(np.uint16), theirs.view(np.uint16)
    nan_mine = ((mine & 0x7F80) == 0x7F80) & ((mine & 0x7F) != 0)
    nan_theirs = ((theirs & 0x7F80) == 0x7F80) & ((theirs & 0x7F) != 0)
    np.testing.assert_array_equal(nan_mine, nan_theirs)
    zero_mine, zero_theirs = (mine & 0x7FFF) == 0, (theirs & 0x7FFF) == 0
    np.testing.assert_array_equal(zero_mine, zero_theirs)
    other = ~(nan_mine | zero_mine)
    np.testing.assert_array_equal(mine[other], theirs[other])


# activations in channel blocks (whole and a padded last block, positions not a multiple of
# 8), an NHWC activation and weights in oneDNN's blocked layouts (bf16's pairs of inputs too)
CASES = [
    ((8, 64, 12, 16), "aBcd16b", "channel_blocks"),
    ((8, 64, 12, 16), "aBcd8b", "channel_blocks"),
    ((2, 20, 5, 7), "aBcd16b", "channel_blocks"),
    ((2, 20, 5, 7), "acdb", "small"),  # NHWC of channels not a multiple of 8
    ((2, 24, 5, 7), "acdb", "channel_blocks"),
    ((8, 128, 8, 16), "acdb", "channel_blocks"),
    ((8, 128, 12, 16), "acdb", "onednn"),  # above the NHWC copy's limit
    ((64, 64, 3, 3), "ABcd8b16a2b", "small"),  # OIhw8i16o2i
    ((64, 64, 3, 3), "ABcd16b16a", "small"),  # OIhw16i16o
    ((16, 3, 7, 7), "ABcd8b8a", "small"),  # OIhw8i8o
    ((8, 64, 48, 64), "aBcd16b", "onednn"),  # above the copies' limit: oneDNN's threads
]


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
@pytest.mark.parametrize("shape, layout, route", CASES,
                         ids=["{}-{}".format("x".join(map(str, c[0])), c[1]) for c in CASES])
def test_copies_write_what_onednns_reorder_writes(shape, layout, route, bf16):
    values = special_values(int(np.prod(shape)), np.random.RandomState(0)).reshape(shape)
    if not bf16:
        values[np.isnan(values)] = 1.0  # float32 copies move bits: no NaN payload question
    mine, my_route, back = transfer_into(values, layout, bf16, onednn=False)
    theirs, _, _ = transfer_into(values, layout, bf16, onednn=True)
    assert my_route == route
    if bf16:
        assert_same_bfloat16(mine, theirs)
    else:
        np.testing.assert_array_equal(mine, theirs)
        np.testing.assert_array_equal(back, values)  # and back, as a convolution's output


def test_bfloat16_rounding_by_hand():
    """Independent of oneDNN: ties to even, subnormals to signed zero, NaN quiet, the largest
    float to infinity."""
    values = np.array([1.0, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 1 + 2 ** -8 + 2 ** -20, -0.0, 1e-40,
                       -1e-40, np.inf, 3.4028235e38, np.nan], dtype=np.float32)
    plain = np.zeros((1, 16, 1, 1), np.float32)
    plain[0, :len(values), 0, 0] = values
    out, route, _ = transfer_into(plain, "aBcd16b", True, onednn=False)
    assert route == "channel_blocks"
    expected = [0x3F80, 0x3F80, 0x3F82, 0x3F81, 0x8000, 0x0000, 0x8000, 0x7F80, 0x7F80]
    assert list(out.view(np.uint16)[:9]) == expected
    assert out.view(np.uint16)[9] & 0x7FC0 == 0x7FC0  # a quiet NaN
