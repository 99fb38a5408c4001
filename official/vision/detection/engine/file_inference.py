"""Detections on image files: pictures with boxes and one JSON file of everything found."""
import glob
import os

import cv2
import megengine as mge

from ..data.coco import read_categories, read_image, resolve_dataset_paths
from ..data.coco_categories import COCO_CATEGORY_IDS, COCO_CLASS_NAMES
from ..errors import DatasetError
from ..images import IMAGE_EXTENSIONS
from ..predictor import Predictor
from .checkpoint import checkpoint_categories
from ..utils.files import atomic_target, write_json_atomic
from ..visualize import draw_detections, picture_name

logger = mge.get_logger(__name__)


def image_paths(spec):
    """Image files named by a file, a folder (searched recursively) or a glob pattern."""
    if os.path.isfile(spec):
        return [spec]
    if os.path.isdir(spec):
        found = glob.glob(os.path.join(spec, "**", "*"), recursive=True)
    else:
        found = glob.glob(spec, recursive=True)
    found = sorted(p for p in found if os.path.isfile(p)
                   and (p.lower().endswith(IMAGE_EXTENSIONS) or not os.path.isdir(spec)))
    if not found:
        raise FileNotFoundError("no image files at {}".format(spec))
    return found


def label_categories(cfg, weights=None, dataset_dir=None):
    """[{"id", "name"}] of the model's labels in label order: those its training checkpoint
    ``weights`` keeps (checkpoint.py); else COCO's for 80-class models (the released ones);
    else the categories of the config's test annotation file when it can be found under
    ``dataset_dir``; else the label numbers as names, without ids."""
    kept = checkpoint_categories(weights) if weights else None
    if kept and len(kept) == cfg.num_classes:
        return kept
    if cfg.num_classes == len(COCO_CLASS_NAMES):
        return [{"id": i, "name": name} for i, name in zip(COCO_CATEGORY_IDS, COCO_CLASS_NAMES)]
    try:
        categories = read_categories(resolve_dataset_paths(cfg.test_dataset, dataset_dir)[1])
    except (DatasetError, OSError, KeyError, ValueError):
        categories = []
    if len(categories) != cfg.num_classes:
        categories = [{"id": None, "name": str(label)} for label in range(cfg.num_classes)]
    return categories


def detect_files(detector, paths, output_dir, categories, thresh, batch_size=1, tta=False,
                 input_root=None):
    """Write one picture per readable image into output_dir and detections.json beside them;
    ``categories`` (``label_categories``) name the labels and give their dataset ids.

    An unreadable file is reported and skipped; when no file is readable, nothing is written
    and DatasetError is raised. Returns (records, skipped) where records hold the file, the
    image size and its detections above ``thresh``.
    """
    predictor = Predictor(detector)
    os.makedirs(output_dir, exist_ok=True)
    records, skipped = [], []
    for start in range(0, len(paths), batch_size):
        batch_paths, images = [], []
        for path in paths[start:start + batch_size]:
            try:
                images.append(read_image(path))
                batch_paths.append(path)
            except DatasetError as error:
                logger.warning("skipped %s", error)
                skipped.append(path)
        if not images:
            continue
        for path, image, dets in zip(batch_paths, images, predictor.predict_images(images, tta)):
            dets = dets[dets[:, 4] >= thresh]
            picture = os.path.join(output_dir, picture_name(path, input_root))
            with atomic_target(picture) as temporary:  # keeps the .jpg suffix cv2 needs
                cv2.imwrite(temporary, draw_detections(image, dets, names_of(categories),
                                                       thresh))
            records.append({"file": path, "height": image.shape[0], "width": image.shape[1],
                            "detections": [detection_dict(row, categories) for row in dets]})
    if skipped and not records:
        raise DatasetError("none of the {} input file(s) is a readable image (first: {})".format(
            len(skipped), skipped[0]))
    write_json_atomic(records, os.path.join(output_dir, "detections.json"))
    return records, skipped


def names_of(categories):
    return [category["name"] for category in categories]


def detection_dict(row, categories):
    """A detection row (x1, y1, x2, y2, score, label) as the JSON outputs write it: with the
    class name and the category id the training set gives it (None when unknown)."""
    x1, y1, x2, y2, score, label = (float(v) for v in row)
    category = categories[int(label)]
    return {"bbox": [x1, y1, x2, y2], "score": score, "label": int(label),
            "class": category["name"], "category_id": category["id"]}
