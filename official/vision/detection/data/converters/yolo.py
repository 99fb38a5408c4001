"""YOLO text labels as Ultralytics lays them out: a ``data.yaml`` naming the classes (``names``,
a list or an {index: name} mapping) and each split's images (``train: images/train``: a folder,
a .txt list of image paths, or a list of these), relative to its ``path`` entry or else to the
yaml's folder. An image's labels are the .txt file at its path with the last ``images`` folder
replaced by ``labels``; one line per box, ``class x_center y_center width height``, the four
numbers normalized to 0..1 by the image's width and height. An image without a label file is
an image without objects.

Class ids are the YOLO class indices. Ultralytics resolves a relative ``path`` against its own
datasets folder; here it is relative to the yaml, as in a dataset folder that was downloaded.
"""
import glob
import os

import yaml

from ...images import IMAGE_EXTENSIONS
from .source import SourceBox, SourceImage, SourceSplit, at_line, image_size, source_error


def read_yolo(yaml_path, split):
    """The SourceSplit of the ``split`` entry of a data.yaml."""
    data, lines = _read_yaml(yaml_path)
    categories = _categories(data, yaml_path, lines)
    if data.get(split) in (None, ""):
        raise source_error(yaml_path, "no {!r} entry (its splits: {})".format(split, ", ".join(
            k for k in data if k not in ("path", "names", "nc", "download"))))
    where = at_line(yaml_path, lines.get(split, 1))
    base = os.path.join(os.path.dirname(yaml_path), str(data.get("path") or ""))
    entries = data[split] if isinstance(data[split], list) else [data[split]]
    paths = [path for entry in entries for path in _image_paths(base, str(entry), where)]
    if not paths:
        raise source_error(where, "{!r} holds no images".format(split))
    images = []
    for path, listed_at in paths:
        height, width = image_size(path, listed_at)
        images.append(SourceImage(path, height, width,
                                  _read_labels(label_path(path), categories, height, width)))
    return SourceSplit(images, categories)


def _read_yaml(path):
    """(the mapping of a data.yaml, {top-level key: its line})."""
    if not os.path.isfile(path):
        raise FileNotFoundError("no data.yaml at {}".format(path))
    with open(path) as f:
        text = f.read()
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        raise source_error(at_line(path, mark.line + 1) if mark else path,
                           "broken YAML ({})".format(getattr(error, "problem", error)))
    if not isinstance(data, dict) or not isinstance(node, yaml.MappingNode):
        raise source_error(path, "not a mapping of names and splits")
    return data, {key.value: key.start_mark.line + 1 for key, _ in node.value}


def _categories(data, yaml_path, lines):
    names = data.get("names")
    where = at_line(yaml_path, lines.get("names", 1))
    if isinstance(names, list):
        names = dict(enumerate(names))
    if not isinstance(names, dict) or not names or not all(
            isinstance(k, int) and isinstance(v, (str, int)) for k, v in names.items()):
        raise source_error(where, "'names' must list the class names or map class indices to "
                                  "them")
    names = {index: str(name) for index, name in names.items()}
    if len(set(names.values())) < len(names):
        raise source_error(where, "'names' names a class twice")
    return names


def _image_paths(base, entry, where):
    """(image path, where it is listed) of a split entry: a folder or a .txt list."""
    path = os.path.join(base, entry)
    if not os.path.exists(path) and entry.startswith("../"):
        # Roboflow's exports write "../train/images" for the train folder beside data.yaml
        path = os.path.join(base, entry[3:])
    if os.path.isdir(path):
        found = glob.glob(os.path.join(path, "**", "*"), recursive=True)
        return [(p, p) for p in sorted(found) if p.lower().endswith(IMAGE_EXTENSIONS)]
    if os.path.isfile(path):
        with open(path) as f:
            return [(os.path.join(os.path.dirname(path), line.strip()), at_line(path, number))
                    for number, line in enumerate(f, 1) if line.strip()]
    raise source_error(where, "no folder or image list {}".format(path))


def label_path(image_path):
    """The label file of an image: the last ``images`` folder becomes ``labels``."""
    parts = os.path.normpath(image_path).split(os.sep)
    if "images" in parts[:-1]:
        index = len(parts) - 2 - parts[:-1][::-1].index("images")
        parts[index] = "labels"
    return os.path.splitext(os.sep.join(parts))[0] + ".txt"


def _read_labels(path, categories, height, width):
    if not os.path.isfile(path):
        return []
    boxes = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if line.split():
                boxes.append(_read_box(line.split(), categories, height, width,
                                       at_line(path, number)))
    return boxes


def _read_box(fields, categories, height, width, where):
    if len(fields) != 5:
        raise source_error(where, "{} fields; a box line has 5: class x_center y_center width "
                                  "height (polygon lines of segmentation labels are not "
                                  "boxes)".format(len(fields)))
    try:
        index = int(fields[0])
        cx, cy, w, h = (float(v) for v in fields[1:])
    except ValueError:
        raise source_error(where, "not a class index and four numbers: {}".format(
            " ".join(fields)))
    if index not in categories:
        raise source_error(where, "class index {} is out of range (data.yaml names {})".format(
            index, ", ".join(str(i) for i in sorted(categories))))
    if not all(0 <= v <= 1 for v in (cx, cy, w, h)):
        raise source_error(where, "coordinates must be normalized to 0..1: {}".format(
            " ".join(fields[1:])))
    return SourceBox(categories[index], ((cx - w / 2) * width, (cy - h / 2) * height,
                                         (cx + w / 2) * width, (cy + h / 2) * height), where)
