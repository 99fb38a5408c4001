"""LabelMe: a folder (searched recursively) of its JSON files, one per image, each naming its
image (``imagePath``, relative to the JSON file) and its size, with a list of ``shapes``.
A ``rectangle`` is a box from its two corner points (in pixel coordinates, either diagonal);
a ``polygon`` gives the box around its points. Other shapes (circles, lines, points) are no
boxes and are refused. Embedded ``imageData`` is not used: the image file must be there.
"""
import glob
import json
import os

from .source import SourceBox, SourceImage, SourceSplit, at_line, image_size, source_error

BOX_SHAPES = ("rectangle", "polygon")


def read_labelme(folder, split=None):
    """The SourceSplit of every LabelMe JSON file under ``folder`` (``split`` only names the
    output: a LabelMe folder is one split)."""
    if not os.path.isdir(folder):
        raise FileNotFoundError("no LabelMe folder {}".format(folder))
    files = sorted(glob.glob(os.path.join(folder, "**", "*.json"), recursive=True))
    if not files:
        raise source_error(folder, "holds no LabelMe .json files")
    return SourceSplit([_read_file(path) for path in files])


def _read_file(path):
    with open(path) as f:
        text = f.read()
    try:
        data = json.loads(text)
    except ValueError as error:
        raise source_error(at_line(path, getattr(error, "lineno", 1)), "broken JSON ({})".format(
            getattr(error, "msg", error)))
    if not isinstance(data, dict) or not isinstance(data.get("imagePath"), str) or \
            not isinstance(data.get("shapes"), list):
        raise source_error(path, "not a LabelMe file (it has no imagePath and shapes)")
    # files written on Windows separate folders by backslashes
    image = os.path.join(os.path.dirname(path), data["imagePath"].replace("\\", "/"))
    height, width = image_size(image, at_line(path, _line_of(text, '"imagePath"')))
    boxes = [_read_shape(shape, "{}, shapes[{}]".format(path, index))
             for index, shape in enumerate(data["shapes"])]
    return SourceImage(image, height, width, boxes)


def _line_of(text, key):
    """The line of the first occurrence of ``key`` in ``text`` (1 if it is not there)."""
    return text.count("\n", 0, max(text.find(key), 0)) + 1


def _read_shape(shape, where):
    label = shape.get("label") if isinstance(shape, dict) else None
    if not isinstance(label, str) or not label.strip():
        raise source_error(where, "a shape without a label")
    kind = shape.get("shape_type") or "polygon"  # LabelMe's files before 3.0 have no type
    if kind not in BOX_SHAPES:
        raise source_error(where, "{!r} is a {}; only {} shapes are boxes".format(
            label, kind, " and ".join(BOX_SHAPES)))
    try:
        xs, ys = zip(*((float(x), float(y)) for x, y in shape["points"]))
    except (KeyError, TypeError, ValueError):
        raise source_error(where, "{!r} has no list of [x, y] points".format(label))
    if kind == "rectangle" and len(xs) != 2:
        raise source_error(where, "rectangle {!r} has {} points, not 2".format(label, len(xs)))
    return SourceBox(label.strip(), (min(xs), min(ys), max(xs), max(ys)), where)
