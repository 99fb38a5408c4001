"""A COCO-format split checked for what training or evaluation would trip on or silently
ignore. The annotation JSON is read as it is: pycocotools' ``COCO()`` keeps one of two entries
with the same id without a word, so it cannot show duplicates.

Errors are problems that stop training part-way, or make it learn from other data than the
file says:
- image files missing, or (``decode_images``) unreadable or of another size than annotated:
  training stops at the first batch holding one, possibly hours in;
- duplicate image, annotation or category ids: pycocotools keeps one entry per id, so boxes
  land on the wrong image or count twice in evaluation;
- annotations of an image id the file does not list (never trained on or evaluated) or of a
  category id it does not list (training stops with a KeyError);
- boxes with a negative width or height (a broken conversion; training drops them without a
  word), images without a positive size, and entries lacking the fields training reads.
Warnings are handled as documented, and a user may still want to know about them:
- boxes without area: dropped in training. COCO's train2017 has two (height 0), so they cannot
  be errors;
- boxes reaching past the image: clipped in training;
- images without annotations: skipped in training, kept in evaluation;
- crowd boxes: ignored in training, "ignore" regions in evaluation;
- annotation id 0: COCOeval takes a match with ground-truth id 0 for no match, so a detection
  of that object counts as a false positive.
"""
import collections
import dataclasses
import os

import cv2

from ..errors import DatasetError
from .coco import read_annotation_file

ERROR, WARNING = "error", "warning"
EXAMPLES = 5  # ids listed per kind of problem
# kind -> (severity, description, what the examples are); the order of the report
PROBLEMS = {
    "malformed_entry": (ERROR, "entries lacking fields training reads (images: id, file_name, "
                               "height, width; annotations: id, image_id, category_id, a bbox "
                               "of 4 numbers; categories: id, name)", "entries"),
    "duplicate_image_id": (ERROR, "duplicate image ids", "ids"),
    "duplicate_annotation_id": (ERROR, "duplicate annotation ids", "ids"),
    "duplicate_category_id": (ERROR, "duplicate category ids", "ids"),
    "bad_image_size": (ERROR, "images without a positive height and width", "image ids"),
    "missing_file": (ERROR, "image files missing", "files"),
    "unreadable_file": (ERROR, "image files unreadable", "files"),
    "size_mismatch": (ERROR, "image files of another size than annotated", "files"),
    "unknown_image_id": (ERROR, "annotations of an image id not in images", "annotation ids"),
    "unknown_category_id": (ERROR, "annotations of a category id not in categories",
                            "annotation ids"),
    "negative_box_size": (ERROR, "boxes with a negative width or height", "annotation ids"),
    "empty_box": (WARNING, "boxes without area, dropped in training", "annotation ids"),
    "box_outside_image": (WARNING, "boxes reaching past the image, clipped in training",
                          "annotation ids"),
    "image_without_annotations": (WARNING, "images without annotations, skipped in training "
                                           "and kept in evaluation", "image ids"),
    "crowd_box": (WARNING, "crowd boxes, ignored in training", "annotation ids"),
    "annotation_id_zero": (WARNING, "annotations with id 0, which COCOeval cannot match",
                           "ids"),
}


@dataclasses.dataclass
class Finding:
    kind: str  # a key of PROBLEMS
    count: int
    examples: list  # the first EXAMPLES affected entries, as ids or file names

    @property
    def severity(self):
        return PROBLEMS[self.kind][0]

    def line(self):
        _, description, unit = PROBLEMS[self.kind]
        return "{}: {} {} ({} {}{})".format(
            self.severity, self.count, description, unit,
            ", ".join(str(e) for e in self.examples),
            ", ..." if self.count > len(self.examples) else "")


@dataclasses.dataclass
class SplitReport:
    ann_file: str
    num_images: int
    num_annotations: int
    findings: list  # Finding, in the order of PROBLEMS

    @property
    def errors(self):
        return [f for f in self.findings if f.severity == ERROR]

    @property
    def warnings(self):
        return [f for f in self.findings if f.severity == WARNING]

    def lines(self):
        """The report: a header line, then one line per kind of problem found."""
        header = "{}: {} images, {} annotations, {} errors, {} warnings".format(
            self.ann_file, self.num_images, self.num_annotations, len(self.errors),
            len(self.warnings))
        return [header] + [f.line() for f in self.findings]

    def raise_for_errors(self):
        """DatasetError with every error on one line, if there is any."""
        if self.errors:
            raise DatasetError("{}: {}; fix the annotation file or the images (tools/"
                               "browse_dataset.py --check lists the problems)".format(
                                   self.ann_file, "; ".join(f.line() for f in self.errors)))


def check_split(ann_file, image_root, decode_images=False):
    """The SplitReport of a COCO-format annotation file and its image folder. File existence is
    always checked; ``decode_images`` also reads every image (slow on large sets)."""
    data = read_annotation_file(ann_file)
    found = collections.defaultdict(list)  # kind -> every affected entry
    images = _check_images(data["images"], image_root, decode_images, found)
    category_ids = _check_categories(data["categories"], found)
    annotated = _check_annotations(data["annotations"], images, category_ids, found)
    found["image_without_annotations"] += [i for i in images if i not in annotated]
    findings = [Finding(kind, len(found[kind]), _first_distinct(found[kind]))
                for kind in PROBLEMS if found[kind]]
    return SplitReport(ann_file, len(data["images"]), len(data["annotations"]), findings)


def _first_distinct(entries):
    return list(dict.fromkeys(entries))[:EXAMPLES]


def _is_id(value):
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def well_formed_image(image):
    return (isinstance(image, dict) and _is_id(image.get("id"))
            and isinstance(image.get("file_name"), str)
            and _is_number(image.get("height")) and _is_number(image.get("width")))


def well_formed_annotation(ann):
    return (isinstance(ann, dict) and all(_is_id(ann.get(key))
                                          for key in ("id", "image_id", "category_id"))
            and isinstance(ann.get("bbox"), list) and len(ann["bbox"]) == 4
            and all(_is_number(v) for v in ann["bbox"]))


def well_formed_category(category):
    return (isinstance(category, dict) and _is_id(category.get("id"))
            and isinstance(category.get("name"), str))


def _has_size(image):
    """Whether the image's size can be compared with (an error is reported otherwise)."""
    return image["height"] > 0 and image["width"] > 0


def _check_images(images, image_root, decode_images, found):
    """{id: image entry} of the well-formed images, first entry of each id."""
    kept = {}
    for index, image in enumerate(images):
        if not well_formed_image(image):
            found["malformed_entry"].append("images[{}]".format(index))
            continue
        if image["id"] in kept:
            found["duplicate_image_id"].append(image["id"])
            continue
        kept[image["id"]] = image
        if not _has_size(image):
            found["bad_image_size"].append(image["id"])
        path = os.path.join(image_root, image["file_name"])
        if not os.path.isfile(path):
            found["missing_file"].append(image["file_name"])
        elif decode_images:
            _check_image_file(path, image, found)
    return kept


def _check_image_file(path, image, found):
    pixels = cv2.imread(path, cv2.IMREAD_COLOR)  # as training reads it (data/coco.py)
    if pixels is None:
        found["unreadable_file"].append(image["file_name"])
    elif _has_size(image) and pixels.shape[:2] != (image["height"], image["width"]):
        found["size_mismatch"].append("{} ({}x{}, annotated {}x{})".format(
            image["file_name"], pixels.shape[0], pixels.shape[1], image["height"],
            image["width"]))


def _check_categories(categories, found):
    ids = set()
    for index, category in enumerate(categories):
        if not well_formed_category(category):
            found["malformed_entry"].append("categories[{}]".format(index))
        elif category["id"] in ids:
            found["duplicate_category_id"].append(category["id"])
        else:
            ids.add(category["id"])
    return ids


def _check_annotations(annotations, images, category_ids, found):
    """The ids of the images that have annotations."""
    seen, annotated = set(), set()
    for index, ann in enumerate(annotations):
        if not well_formed_annotation(ann):
            found["malformed_entry"].append("annotations[{}]".format(index))
            continue
        if ann["id"] in seen:
            found["duplicate_annotation_id"].append(ann["id"])
        seen.add(ann["id"])
        if ann["id"] == 0:
            found["annotation_id_zero"].append(0)
        if ann["category_id"] not in category_ids:
            found["unknown_category_id"].append("{} (category {})".format(ann["id"],
                                                                          ann["category_id"]))
        image = images.get(ann["image_id"])
        if image is None:
            found["unknown_image_id"].append("{} (image {})".format(ann["id"], ann["image_id"]))
            continue
        annotated.add(ann["image_id"])
        if ann.get("iscrowd", 0):
            found["crowd_box"].append(ann["id"])
        else:
            _check_box(ann, image, found)
    return annotated


def _check_box(ann, image, found):
    x, y, width, height = ann["bbox"]
    if width < 0 or height < 0:
        found["negative_box_size"].append(ann["id"])
    elif width == 0 or height == 0:
        found["empty_box"].append(ann["id"])
    elif _has_size(image) and (x < 0 or y < 0 or x + width > image["width"]
                               or y + height > image["height"]):
        found["box_outside_image"].append(ann["id"])
