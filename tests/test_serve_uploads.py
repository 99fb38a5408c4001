"""Uploaded files: format by their bytes, size from their header before decoding, truncation."""
import struct
import zlib

import cv2
import numpy as np
import pytest

from official.vision.detection.serve.uploads import RequestRefused, decode_upload, image_format

from serving import image_bytes

LIMIT = 10 ** 6  # pixels
FORMATS = {".jpg": "jpeg", ".png": "png", ".bmp": "bmp", ".webp": "webp"}
# (extension, encoder parameters): WebP lossy (VP8) and lossless (VP8L)
ENCODINGS = [(".jpg", ()), (".png", ()), (".bmp", ()), (".webp", (cv2.IMWRITE_WEBP_QUALITY, 80)),
             (".webp", (cv2.IMWRITE_WEBP_QUALITY, 101))]


def refusal(data, max_pixels=LIMIT):
    with pytest.raises(RequestRefused) as refused:
        decode_upload(data, max_pixels)
    assert "\n" not in str(refused.value)
    return refused.value.status, str(refused.value)


@pytest.mark.parametrize("ext, params", ENCODINGS)
def test_each_format_decodes_as_imread_reads_the_file(tmp_path, ext, params):
    data = image_bytes(37, 53, ext, params=params)
    assert image_format(data) == FORMATS[ext]
    path = tmp_path / ("image" + ext)
    path.write_bytes(data)
    np.testing.assert_array_equal(decode_upload(data, LIMIT),
                                  cv2.imread(str(path), cv2.IMREAD_COLOR))


@pytest.mark.parametrize("ext, params", ENCODINGS)
def test_a_file_cut_short_is_400_wherever_it_is_cut(ext, params):
    data = image_bytes(37, 53, ext, params=params)
    for length in (len(data) - 1, len(data) // 2, 40, 12):
        status, message = refusal(data[:length])
        assert status == 400 and "truncated or corrupt" in message, (length, message)


@pytest.mark.parametrize("ext, params", ENCODINGS)
def test_more_pixels_than_the_limit_is_413_from_the_header(ext, params):
    data = image_bytes(37, 53, ext, params=params)
    status, message = refusal(data, max_pixels=37 * 53 - 1)
    assert status == 413
    assert message == ("the image has 53 x 37 = 1961 pixels, over this server's limit of 1960 "
                       "(--max-pixels)")


def png_bomb(width, height):
    """A small complete PNG whose header promises width x height pixels."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\0" * 4096)) + chunk(b"IEND", b""))


def jpeg_bomb(width, height):
    """A real JPEG whose frame header is rewritten to width x height."""
    data = bytearray(image_bytes(16, 16, ".jpg"))
    frame = data.index(b"\xff\xc0")
    data[frame + 5:frame + 9] = struct.pack(">HH", height, width)
    return bytes(data)


@pytest.mark.parametrize("bomb", [png_bomb(100000, 100000), jpeg_bomb(65000, 65000)],
                         ids=["png", "jpeg"])
def test_decompression_bombs_are_413_before_decoding(bomb):
    status, message = refusal(bomb)
    assert status == 413 and "pixels, over this server's limit" in message


@pytest.mark.parametrize("data", [
    b"GIF89a" + b"\0" * 64, b"%PDF-1.7\n", b"<html></html>", b"II*\0" + b"\0" * 64,
    bytes(np.random.RandomState(0).randint(0, 256, 500, dtype=np.uint8))],
    ids=["gif", "pdf", "html", "tiff", "random"])
def test_other_files_are_415_by_their_bytes(data):
    assert refusal(data) == (415, "not a JPEG, PNG, WebP or BMP image (judged by its first "
                                  "bytes)")


def test_an_empty_file_is_400():
    assert refusal(b"") == (400, "the image is empty: send the file's bytes")


def test_a_jpeg_with_a_second_frame_header_is_400():
    data = image_bytes(16, 16, ".jpg")
    frame = data.index(b"\xff\xc0")
    length = int.from_bytes(data[frame + 2:frame + 4], "big")
    header = data[frame:frame + 2 + length]
    assert refusal(data[:frame] + header + header + data[frame + 2 + length:]) == (
        400, "corrupt JPEG: two frame headers")


def test_a_complete_file_with_corrupt_data_is_400():
    data = bytearray(image_bytes(37, 53, ".png"))
    idat = data.index(b"IDAT")
    data[idat + 4:idat + 40] = b"\xff" * 36  # the compressed pixels, now garbage
    assert refusal(bytes(data)) == (400, "corrupt PNG: it cannot be decoded")
