"""A source split in VOC, YOLO or LabelMe form into a COCO-format dataset folder ``OUT``:
``OUT/annotations/<split>.json`` and the images under ``OUT/<split>/``, file names relative to
it. So ``-d`` (OUT's parent) with ``dict(name=<OUT's name>, root=<split>,
ann_file="annotations/<split>.json")`` trains on it.

Several splits go into one OUT and share one category list: a class keeps the id it has in the
splits already there, and a class new to OUT is added to their files too, so every split has
the categories (and ``num_classes``) of all. Nothing is written before the whole source has
been read: the new files are put together in a folder beside OUT and moved in at the end, so
a bad source leaves OUT as it was.
"""
import dataclasses
import glob
import json
import os
import shutil
import tempfile

from ...errors import ConfigError, DatasetError
from ...utils.files import current_umask
from ..check import SplitReport, check_split
from ..coco import read_annotation_file
from .labelme import read_labelme
from .source import at_line, source_error
from .voc import read_voc
from .yolo import read_yolo

READERS = {"voc": read_voc, "yolo": read_yolo, "labelme": read_labelme}


@dataclasses.dataclass
class Conversion:
    ann_file: str
    image_root: str
    num_images: int
    num_boxes: int
    num_ignored: int  # of num_boxes, written as crowd (ignored) regions
    categories: list  # {"id", "name"} of every category of OUT, ascending ids
    report: SplitReport  # data/check.py's check of the written split

    def lines(self):
        """A summary line, then the dataset check's report."""
        return ["{} images, {} boxes ({} ignored), {} categories ({}) -> {}, {}".format(
            self.num_images, self.num_boxes, self.num_ignored, len(self.categories),
            ", ".join("{} {}".format(c["id"], c["name"]) for c in self.categories),
            self.ann_file, self.image_root)] + self.report.lines()


def convert_dataset(source_format, source, output_dir, split, classes_file=None):
    """Convert ``source`` (a VOC year folder, a YOLO data.yaml or a LabelMe folder) into the
    split ``split`` of ``output_dir``; ``classes_file`` (one name per line) fixes the classes
    and their ids 1..K for VOC and LabelMe. Returns the Conversion, checked."""
    if source_format not in READERS:
        raise ConfigError("unknown source format {!r}; one of {}".format(
            source_format, ", ".join(READERS)))
    if classes_file and source_format == "yolo":
        raise ConfigError("--classes is for voc and labelme: a data.yaml names its classes")
    if not split or split == "annotations" or split.startswith(".") or \
            any(sep in split for sep in "/\\"):
        raise ConfigError("--split {!r} must be a plain folder name such as train or val (not "
                          "'annotations')".format(split))
    class_names = read_classes(classes_file) if classes_file else None
    source_split = READERS[source_format](source, split)
    others = _other_splits(output_dir, split)
    categories = _category_ids(source_split, class_names, others)
    coco, copies = _coco_split(source_split, categories)
    category_list = coco["categories"]
    rewritten = {name: dict(data, categories=category_list) for name, data in others.items()
                 if data["categories"] != category_list}
    _publish(output_dir, split, dict(rewritten, **{split + ".json": coco}), copies)
    ann_file = os.path.join(output_dir, "annotations", split + ".json")
    image_root = os.path.join(output_dir, split)
    boxes = coco["annotations"]
    # the image sizes were read from the decoded files above: the check need not decode them
    return Conversion(ann_file, image_root, len(coco["images"]), len(boxes),
                      sum(a["iscrowd"] for a in boxes), category_list,
                      check_split(ann_file, image_root))


def _other_splits(output_dir, split):
    """{file name: annotation data} of the other splits already in OUT/annotations."""
    paths = glob.glob(os.path.join(output_dir, "annotations", "*.json"))
    return {os.path.basename(p): read_annotation_file(p) for p in sorted(paths)
            if os.path.basename(p) != split + ".json"}


def _category_ids(source_split, class_names, others):
    """{class name: category id} of OUT after this conversion: ids 1..K in the order of
    ``class_names`` (a --classes file), or the source's indices (YOLO), or the ids OUT has,
    new names after them in sorted order."""
    existing = {}  # name -> (id, file saying so)
    for name, data in others.items():
        for category in data["categories"]:
            _agree(existing, category["name"], category["id"], name)
    if class_names:
        ids = {name: i for i, name in enumerate(class_names, 1)}
    elif source_split.categories:
        ids = {name: i for i, name in source_split.categories.items()}
    else:
        ids = {name: i for name, (i, _) in existing.items()}
        for name in sorted({b.name for image in source_split.images for b in image.boxes}):
            ids.setdefault(name, max(ids.values(), default=0) + 1)
    for image in source_split.images:
        for box in image.boxes:
            if box.name not in ids:
                raise source_error(box.where, "class {!r} is not in --classes ({})".format(
                    box.name, ", ".join(class_names)))
    for name, category_id in ids.items():
        _agree(existing, name, category_id, "this conversion")
    return {name: i for name, (i, _) in existing.items()}


def _agree(known, name, category_id, said_by):
    """Add (name, id) to ``known`` {name: (id, said_by)}; DatasetError if a name has two ids
    or an id two names."""
    for other, (other_id, other_said_by) in known.items():
        if (other == name) != (other_id == category_id):
            raise DatasetError(
                "category id {} is {!r} in {} but {} has {!r} with id {}: the splits of one "
                "dataset need the same classes; convert every split with the same --classes "
                "file, or into another folder".format(other_id, other, other_said_by, said_by,
                                                      name, category_id))
    known.setdefault(name, (category_id, said_by))


def read_classes(path):
    """Class names, one per line (blank lines skipped), in the order of their ids."""
    with open(path) as f:
        names = [(number, line.strip()) for number, line in enumerate(f, 1) if line.strip()]
    seen = set()
    for number, name in names:
        if name in seen:
            raise source_error(at_line(path, number), "class {!r} is named twice".format(name))
        seen.add(name)
    if not names:
        raise source_error(path, "names no classes")
    return [name for _, name in names]


def _coco_split(source_split, categories):
    """(COCO annotation data, [(image file, its name under the split folder)]). Names are
    relative to the folder all images share, so sub-folders stay apart."""
    paths = [os.path.abspath(image.path) for image in source_split.images]
    root = os.path.commonpath([os.path.dirname(p) for p in paths])
    names = [os.path.relpath(p, root).replace(os.sep, "/") for p in paths]
    images, annotations, seen = [], [], set()
    for image_id, (image, name) in enumerate(zip(source_split.images, names), 1):
        if name in seen:
            raise DatasetError("image {} is listed twice in the source".format(image.path))
        seen.add(name)
        images.append({"id": image_id, "file_name": name, "height": image.height,
                       "width": image.width})
        for box in image.boxes:
            x1, y1, x2, y2 = box.xyxy
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": categories[box.name],
                                "bbox": [x1, y1, x2 - x1, y2 - y1],
                                "area": (x2 - x1) * (y2 - y1), "iscrowd": int(box.ignored)})
    category_list = [{"id": i, "name": name} for name, i in sorted(categories.items(),
                                                                   key=lambda c: c[1])]
    return (dict(images=images, annotations=annotations, categories=category_list),
            list(zip(paths, names)))


def _publish(output_dir, split, annotation_files, copies):
    """Write the split's images and the annotation files ({file name: data}) into a folder
    beside ``output_dir``, then move them in: a failure on the way leaves OUT as it was."""
    output_dir = os.path.abspath(output_dir)
    os.makedirs(os.path.dirname(output_dir), exist_ok=True)
    stage = tempfile.mkdtemp(prefix=".tmp-convert-", dir=os.path.dirname(output_dir))
    try:
        for source, name in copies:
            target = os.path.join(stage, split, name)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copyfile(source, target)
        os.makedirs(os.path.join(stage, "annotations"))
        for name, data in annotation_files.items():
            with open(os.path.join(stage, "annotations", name), "w") as f:
                json.dump(data, f)
        if not os.path.exists(output_dir):
            os.chmod(stage, 0o777 & ~current_umask())  # mkdtemp's folders are private
            os.rename(stage, output_dir)
            return
        _move_split_in(stage, output_dir, split)
        os.makedirs(os.path.join(output_dir, "annotations"), exist_ok=True)
        for name in annotation_files:
            os.replace(os.path.join(stage, "annotations", name),
                       os.path.join(output_dir, "annotations", name))
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _move_split_in(stage, output_dir, split):
    """The staged image folder replaces OUT/<split>; the old one (a split converted again)
    moves into the stage, deleted with it, or back if the new one cannot move in."""
    target, old = os.path.join(output_dir, split), os.path.join(stage, ".replaced")
    had_old = os.path.exists(target)
    if had_old:
        os.rename(target, old)
    try:
        os.rename(os.path.join(stage, split), target)
    except OSError:
        if had_old:
            os.rename(old, target)
        raise
