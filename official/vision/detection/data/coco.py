"""COCO-format detection datasets: any annotation file, any file names and sub-folders.

Image ids and category ids come from the annotation file; categories are mapped to contiguous
labels 0..K-1 in ascending id order (``category_ids[label]`` maps back).
"""
import json
import os

import cv2
import numpy as np
from pycocotools.coco import COCO

from ..boxes import xywh_to_xyxy, xyxy_to_xywh
from ..errors import DatasetError


def resolve_dataset_paths(dataset_cfg, dataset_dir):
    """(image folder, annotation file) of a config's ``train_dataset``/``test_dataset`` dict.

    Relative paths resolve as ``dataset_dir/<name>/<path>``; absolute paths are used as given.
    """
    missing = [key for key in ("name", "root", "ann_file") if key not in dataset_cfg]
    if missing:
        raise DatasetError("dataset config {} lacks {}".format(dataset_cfg, ", ".join(missing)))
    base = os.path.join(dataset_dir or "", dataset_cfg["name"])
    return (os.path.join(base, dataset_cfg["root"]), os.path.join(base, dataset_cfg["ann_file"]))


def read_annotation_file(ann_file):
    """The parsed JSON of a COCO-format annotation file: a dict with "images", "annotations"
    and "categories" lists; DatasetError if it is none."""
    if not os.path.isfile(ann_file):
        raise DatasetError("annotation file not found: {}".format(ann_file))
    with open(ann_file) as f:
        try:
            data = json.load(f)
        except ValueError as error:
            raise DatasetError("annotation file {} is not JSON: {}".format(ann_file, error))
    keys = ("images", "annotations", "categories")
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in keys):
        raise DatasetError("annotation file {} lacks the images, annotations or categories list "
                           "of the COCO format".format(ann_file))
    return data


def read_categories(ann_file):
    """[{"id", "name"}] of an annotation file's categories in label order (ascending id)."""
    with open(ann_file) as f:
        categories = json.load(f)["categories"]
    return [{"id": c["id"], "name": c["name"]} for c in sorted(categories, key=lambda c: c["id"])]


def read_image(path):
    """A BGR uint8 image; grayscale and 4-channel files are converted to 3 channels."""
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        reason = "missing" if not os.path.exists(path) else "unreadable or not an image"
        raise DatasetError("cannot read image {} ({})".format(path, reason))
    return image


def _clean_boxes(annotations, height, width):
    """xyxy float32 boxes and category ids of usable annotations: crowd regions are ignored,
    boxes are clipped to the image, and boxes without area are dropped."""
    boxes, category_ids = [], []
    for ann in annotations:
        if ann.get("iscrowd", 0):
            continue
        x1, y1, x2, y2 = np.clip(xywh_to_xyxy(ann["bbox"]), 0, [width, height] * 2)
        if x2 > x1 and y2 > y1:
            boxes.append([x1, y1, x2, y2])
            category_ids.append(ann["category_id"])
    return np.array(boxes, dtype=np.float32).reshape(-1, 4), category_ids


class COCODetection:
    """Images and boxes of one COCO-format annotation file.

    ``dataset[i]`` is a dict: image (BGR uint8 HxWx3), boxes [G, 4] xyxy float32, labels [G]
    int32, image_id, height, width, file_name.
    """

    def __init__(self, root, ann_file, remove_images_without_annotations=False):
        if not os.path.isfile(ann_file):
            raise DatasetError("annotation file not found: {}".format(ann_file))
        if not os.path.isdir(root):
            raise DatasetError("image folder not found: {}".format(root))
        self.root = root
        self.coco = COCO(ann_file)
        self.category_ids = sorted(self.coco.getCatIds())
        self.class_names = [self.coco.cats[i]["name"] for i in self.category_ids]
        self._label_of = {cid: label for label, cid in enumerate(self.category_ids)}
        self.records = []
        for image_id in sorted(self.coco.getImgIds()):
            info = self.coco.imgs[image_id]
            boxes, category_ids = _clean_boxes(
                self.coco.imgToAnns.get(image_id, []), info["height"], info["width"])
            if remove_images_without_annotations and len(boxes) == 0:
                continue
            labels = np.array([self._label_of[c] for c in category_ids], dtype=np.int32)
            self.records.append(dict(image_id=image_id, file_name=info["file_name"],
                                     height=info["height"], width=info["width"],
                                     boxes=boxes, labels=labels))
        self._check_files_exist()

    def _check_files_exist(self):
        missing = [r["file_name"] for r in self.records
                   if not os.path.isfile(os.path.join(self.root, r["file_name"]))]
        if missing:
            raise DatasetError("{} image(s) listed in the annotations are missing under {}, "
                               "e.g. {}".format(len(missing), self.root, missing[0]))

    @property
    def categories(self):
        """[{"id", "name"}] in label order: what a model trained on this set predicts."""
        return [{"id": i, "name": name} for i, name in zip(self.category_ids, self.class_names)]

    def __len__(self):
        return len(self.records)

    def __getitem__(self, index):
        record = self.records[index]
        image = read_image(os.path.join(self.root, record["file_name"]))
        if image.shape[:2] != (record["height"], record["width"]):
            raise DatasetError("image {} is {}x{} but the annotations say {}x{}".format(
                record["file_name"], image.shape[0], image.shape[1], record["height"],
                record["width"]))
        return dict(record, image=image)

    def image_size(self, index):
        """(height, width) of an image, from the annotations (the image is not read)."""
        record = self.records[index]
        return record["height"], record["width"]

    def max_boxes(self):
        """The most boxes any image has."""
        return max([0] + [len(record["boxes"]) for record in self.records])

    def aspect_ratio_group(self, index):
        """0 for landscape or square images, 1 for portrait (for batching similar shapes)."""
        record = self.records[index]
        return int(record["height"] > record["width"])


def coco_results(records, category_ids):
    """COCO result dicts (xywh boxes) from records {"image_id": id, "det_res": [K, 6] array};
    ``category_ids[label]`` is the annotation-file id of each label."""
    formatted = []
    for record in records:
        detections = np.asarray(record["det_res"]).reshape(-1, 6)
        for box, score, label in zip(xyxy_to_xywh(detections[:, :4]), detections[:, 4],
                                     detections[:, 5]):
            formatted.append({
                "image_id": record["image_id"],
                "bbox": [float(v) for v in box],
                "score": float(score),
                "category_id": int(category_ids[int(label)]),
            })
    return formatted
