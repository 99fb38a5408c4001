"""An uploaded image: its format by its first bytes, its size from its header before any pixel
is decoded, then its pixels.

A server meets files that are not images, images cut short in transfer and decompression bombs
(a few kilobytes whose header promises 100000 x 100000 pixels). Each is refused with a
``RequestRefused`` carrying its HTTP status: 415 for a file that is none of the formats below
(judged by its bytes, never by a name or a declared type), 413 for a header over the pixel limit
(read before decoding, so a bomb costs nothing), 400 for an empty, truncated or corrupt file.
Only the four formats reach OpenCV's decoders.
"""
import struct

import cv2
import numpy as np

from ..errors import DetectionError

# the media types a raw body may declare, by format (the page and the docs list them)
MEDIA_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp",
               "bmp": "image/bmp"}
# JPEG frame headers (SOF0-SOF15 but DHT, JPG and DAC), which hold the image size
JPEG_FRAME_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE,
                      0xCF}
JPEG_START_OF_SCAN, JPEG_END = 0xDA, b"\xff\xd9"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class RequestRefused(DetectionError, ValueError):
    """A request the server refuses: ``status`` is the HTTP status to answer with, the
    message one line saying what to fix; ``headers`` go into the response (Retry-After)."""

    def __init__(self, status, message, headers=None):
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


def image_format(data):
    """"jpeg", "png", "webp" or "bmp" by the file's first bytes, else None."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == PNG_SIGNATURE:
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:2] == b"BM":
        return "bmp"
    return None


def decode_upload(data, max_pixels):
    """The BGR uint8 image of an uploaded file, as ``cv2.imread`` reads the same file (so the
    detections are those of tools/inference.py), or RequestRefused."""
    if not data:
        raise RequestRefused(400, "the image is empty: send the file's bytes")
    kind = image_format(data)
    if kind is None:
        raise RequestRefused(415, "not a JPEG, PNG, WebP or BMP image (judged by its first bytes)")
    width, height = HEADER_SIZE[kind](data)
    if width <= 0 or height <= 0:
        raise RequestRefused(400, "corrupt {}: its header gives a size of {} x {} pixels".format(
            kind.upper(), width, height))
    if width * height > max_pixels:
        raise RequestRefused(413, "the image has {} x {} = {} pixels, over this server's limit of "
                          "{} (--max-pixels)".format(width, height, width * height, max_pixels))
    COMPLETE[kind](data)
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:
        image = None
    if image is None:
        raise RequestRefused(400, "corrupt {}: it cannot be decoded".format(kind.upper()))
    return image


def _truncated(kind, what):
    return RequestRefused(400, "truncated or corrupt {}: {}".format(kind, what))


def _jpeg_scan_start(data):
    """((width, height), offset of the first scan's data): the marker segments up to the
    first start of scan are walked by their lengths."""
    position, size = 2, None
    while True:
        if position >= len(data) or data[position] != 0xFF:
            raise _truncated("JPEG", "its header breaks off")
        while position < len(data) and data[position] == 0xFF:  # fill bytes
            position += 1
        if position + 3 > len(data):
            raise _truncated("JPEG", "its header breaks off")
        marker = data[position]
        position += 1
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # segments without a length
            continue
        length = int.from_bytes(data[position:position + 2], "big")
        if length < 2 or position + length > len(data):
            raise _truncated("JPEG", "its header breaks off")
        if marker in JPEG_FRAME_MARKERS:
            if length < 7:
                raise _truncated("JPEG", "its frame header is too short")
            if size is not None:  # libjpeg refuses it too; the size checked is the one decoded
                raise RequestRefused(400, "corrupt JPEG: two frame headers")
            height, width = struct.unpack(">HH", data[position + 3:position + 7])
            size = (width, height)
        if marker == JPEG_START_OF_SCAN:
            if size is None:
                raise RequestRefused(400, "corrupt JPEG: no frame header before its image data")
            return size, position + length
        position += length


def _jpeg_size(data):
    return _jpeg_scan_start(data)[0]


def _jpeg_complete(data):
    # libjpeg decodes a file cut short with gray where the data is missing, and says so only
    # as a warning: the end marker after the first scan tells a complete file
    if data.find(JPEG_END, _jpeg_scan_start(data)[1]) < 0:
        raise _truncated("JPEG", "it ends before its end marker")


def _png_size(data):
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise _truncated("PNG", "it ends before its IHDR header")
    return struct.unpack(">II", data[16:24])


def _png_complete(data):
    """The chunks are walked by their lengths up to IEND."""
    position = len(PNG_SIGNATURE)
    while position + 8 <= len(data):
        length = int.from_bytes(data[position:position + 4], "big")
        kind = data[position + 4:position + 8]
        position += 12 + length  # length, type, data, CRC
        if kind == b"IEND" and position <= len(data):
            return
    raise _truncated("PNG", "it ends before its IEND chunk")


def _webp_size(data):
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:  # extended: the canvas size, 24 bits each
        return (1 + int.from_bytes(data[24:27], "little"),
                1 + int.from_bytes(data[27:30], "little"))
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":  # lossy
        return (int.from_bytes(data[26:28], "little") & 0x3FFF,
                int.from_bytes(data[28:30], "little") & 0x3FFF)
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:  # lossless: 14 bits each
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    raise _truncated("WebP", "its header breaks off")


def _webp_complete(data):
    if 8 + int.from_bytes(data[4:8], "little") > len(data):  # the RIFF size
        raise _truncated("WebP", "it is shorter than its RIFF header says")


def _bmp_header(data):
    """(width, height, bits per pixel, compression, pixel data offset)."""
    if len(data) < 26:
        raise _truncated("BMP", "its header breaks off")
    offset, header_size = struct.unpack("<II", data[10:18])
    if header_size == 12:  # OS/2 BITMAPCOREHEADER
        width, height, _, bits = struct.unpack("<HHHH", data[18:26])
        return width, height, bits, 0, offset
    if header_size < 40 or len(data) < 34:
        raise _truncated("BMP", "its header breaks off")
    width, height, _, bits, compression = struct.unpack("<iiHHI", data[18:34])
    return width, abs(height), bits, compression, offset  # a negative height: top-down rows


def _bmp_size(data):
    return _bmp_header(data)[:2]


def _bmp_complete(data):
    width, height, bits, compression, offset = _bmp_header(data)
    if compression in (0, 3):  # uncompressed rows (BI_RGB, BI_BITFIELDS), 4-byte aligned
        row_bytes = (bits * width + 31) // 32 * 4
        if offset + row_bytes * height > len(data):
            raise _truncated("BMP", "it ends before its last row of pixels")


HEADER_SIZE = {"jpeg": _jpeg_size, "png": _png_size, "webp": _webp_size, "bmp": _bmp_size}
COMPLETE = {"jpeg": _jpeg_complete, "png": _png_complete, "webp": _webp_complete,
            "bmp": _bmp_complete}
