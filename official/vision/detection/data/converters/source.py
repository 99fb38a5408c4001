"""What every format's reader yields: image files with their sizes and xyxy pixel boxes named
by class, and the one-line error that names the bad file and line."""
import dataclasses
import os

import cv2

from ...errors import DatasetError


@dataclasses.dataclass
class SourceBox:
    name: str  # the class name
    xyxy: tuple  # pixel coordinates, (0, 0) the top-left corner of the top-left pixel
    where: str  # the file and line (or entry) that gives it, for error messages
    ignored: bool = False  # a region neither to learn nor to count (VOC's "difficult")


@dataclasses.dataclass
class SourceImage:
    path: str  # the image file
    height: int
    width: int
    boxes: list  # SourceBox


@dataclasses.dataclass
class SourceSplit:
    images: list  # SourceImage, in the order of the source
    # {id: name} when the source numbers its classes (YOLO); else the ids are given later
    categories: dict = None


def source_error(where, message):
    """The DatasetError of a bad source entry: ``where`` names the file and line (or entry)."""
    return DatasetError("{}: {}".format(where, message))


def at_line(path, line):
    return "{}, line {}".format(path, line)


def image_size(path, where):
    """(height, width) of an image file as training reads it (cv2, EXIF orientation applied);
    the error names ``where`` the file is referred to."""
    if not os.path.isfile(path):
        raise source_error(where, "image {} not found".format(path))
    pixels = cv2.imread(path, cv2.IMREAD_COLOR)
    if pixels is None:
        raise source_error(where, "image {} is not readable as an image".format(path))
    return pixels.shape[:2]


def check_box_order(xyxy, where):
    """A box whose far edge lies before its near edge is a broken annotation."""
    x1, y1, x2, y2 = xyxy
    if x2 < x1 or y2 < y1:
        raise source_error(where, "box {} ends before it starts".format(
            [round(v, 2) for v in xyxy]))
