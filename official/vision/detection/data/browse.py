"""Pictures of a COCO-format split's ground truth: every annotated box with its class name, as
the annotation file says (read as it is, so a broken file can still be looked at)."""
import collections
import os

import cv2
import megengine as mge

from ..boxes import xywh_to_xyxy
from ..utils.files import atomic_target
from ..visualize import draw_boxes, picture_name
from .check import well_formed_annotation, well_formed_category, well_formed_image
from .coco import read_annotation_file

logger = mge.get_logger(__name__)


def draw_split(ann_file, image_root, output_dir, limit=None):
    """One picture per image (the first ``limit`` of the file, or all) with its boxes, into
    ``output_dir``. Boxes take the colour their class has in detection pictures; crowd boxes
    say so, and a category id the file does not list shows as such. Entries lacking the
    fields to draw them are left out (check.py reports them). Returns (pictures written, file
    names that could not be read)."""
    data = read_annotation_file(ann_file)
    categories = {c["id"]: c["name"] for c in data["categories"] if well_formed_category(c)}
    label_of = {category_id: label for label, category_id in enumerate(sorted(categories))}
    annotations = collections.defaultdict(list)
    for ann in filter(well_formed_annotation, data["annotations"]):
        annotations[ann["image_id"]].append(ann)
    written, unreadable = [], []
    for image in list(filter(well_formed_image, data["images"]))[:limit]:
        path = os.path.join(image_root, image["file_name"])
        pixels = cv2.imread(path, cv2.IMREAD_COLOR)
        if pixels is None:
            logger.warning("cannot read %s", path)
            unreadable.append(image["file_name"])
            continue
        anns = annotations[image["id"]]
        picture = draw_boxes(pixels, [xywh_to_xyxy(a["bbox"]) for a in anns],
                             [label_of.get(a["category_id"], -1) for a in anns],
                             [_box_text(a, categories) for a in anns])
        output = os.path.join(output_dir, picture_name(path, image_root))
        with atomic_target(output) as temporary:  # keeps the .jpg suffix cv2 needs
            cv2.imwrite(temporary, picture)
        written.append(output)
    return written, unreadable


def _box_text(ann, categories):
    name = categories.get(ann["category_id"], "unknown category {}".format(ann["category_id"]))
    return name + " (crowd)" if ann.get("iscrowd", 0) else name
