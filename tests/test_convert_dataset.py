"""tools/convert_dataset.py and data/converters/: VOC, YOLO and LabelMe sources, written from one
known truth, convert to COCO files whose boxes match it; the result trains; bad sources end in
one line naming the file and line and leave the output folder as it was."""
import json
import os

import cv2
import numpy as np
import pytest

from official.vision.detection.data.converters.convert import convert_dataset
from official.vision.detection.errors import ConfigError, DatasetError

from conftest import run_tool

CLASSES = ["circle", "square", "triangle"]
# (file stem, height, width, [(class, x1, y1, x2, y2 in pixel coordinates, difficult)]);
# "empty" has no objects, and a YOLO source gives it no label file
TRUTH = {
    "train": [
        ("a", 60, 80, [("square", 4, 6, 30, 40, False), ("circle", 40, 10, 80, 60, False)]),
        ("b", 72, 64, [("triangle", 0, 0, 20, 24, False), ("square", 10, 30, 50, 70, True)]),
        ("empty", 50, 50, []),
        ("c", 64, 96, [("circle", 50, 2, 95, 40, False), ("triangle", 5, 20, 45, 63, False)]),
    ],
    "val": [
        ("d", 64, 64, [("triangle", 8, 8, 40, 48, False)]),
        ("e", 48, 80, [("circle", 30, 4, 70, 44, False), ("square", 2, 2, 20, 20, False)]),
    ],
}


def write_image(path, height, width, seed):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.RandomState(seed)
    cv2.imwrite(path, rng.randint(0, 255, (height, width, 3)).astype(np.uint8))


def write_voc(year):
    """A VOC year folder of TRUTH: 1-based inclusive pixel indices, as VOC's files have."""
    for split, images in TRUTH.items():
        (year / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
        (year / "ImageSets" / "Main" / (split + ".txt")).write_text(
            "".join(stem + "\n" for stem, _, _, _ in images))
        for seed, (stem, height, width, boxes) in enumerate(images):
            write_image(str(year / "JPEGImages" / (stem + ".jpg")), height, width, seed)
            objects = "".join(
                "  <object>\n    <name>{}</name>\n    <difficult>{}</difficult>\n"
                "    <bndbox><xmin>{}</xmin><ymin>{}</ymin><xmax>{}</xmax><ymax>{}</ymax>"
                "</bndbox>\n  </object>\n".format(name, int(difficult), x1 + 1, y1 + 1, x2, y2)
                for name, x1, y1, x2, y2, difficult in boxes)
            (year / "Annotations").mkdir(exist_ok=True)
            (year / "Annotations" / (stem + ".xml")).write_text(
                "<annotation>\n  <filename>{}.jpg</filename>\n  <size><width>{}</width>"
                "<height>{}</height><depth>3</depth></size>\n{}</annotation>\n".format(
                    stem, width, height, objects))
    return year


def write_yolo(root):
    """An Ultralytics layout of TRUTH: images/<split>/, labels/<split>/, data.yaml with the
    names as a mapping; difficult boxes are ordinary boxes in YOLO."""
    for split, images in TRUTH.items():
        for seed, (stem, height, width, boxes) in enumerate(images):
            write_image(str(root / "images" / split / (stem + ".jpg")), height, width, seed)
            if not boxes:
                continue
            (root / "labels" / split).mkdir(parents=True, exist_ok=True)
            (root / "labels" / split / (stem + ".txt")).write_text("".join(
                "{} {:.6f} {:.6f} {:.6f} {:.6f}\n".format(
                    CLASSES.index(name), (x1 + x2) / 2 / width, (y1 + y2) / 2 / height,
                    (x2 - x1) / width, (y2 - y1) / height)
                for name, x1, y1, x2, y2, _ in boxes))
    (root / "data.yaml").write_text(
        "path: .\ntrain: images/train\nval: images/val\nnames:\n" +
        "".join("  {}: {}\n".format(i, name) for i, name in enumerate(CLASSES)))
    return root / "data.yaml"


def write_labelme(folder, split):
    """LabelMe files of TRUTH's split, images beside them; rectangles drawn from the bottom
    right corner to the top left for one of them."""
    for seed, (stem, height, width, boxes) in enumerate(TRUTH[split]):
        write_image(str(folder / (stem + ".jpg")), height, width, seed)
        shapes = [{"label": name, "shape_type": "rectangle", "flags": {}, "group_id": None,
                   "points": [[x2, y2], [x1, y1]] if i == 0 else [[x1, y1], [x2, y2]]}
                  for i, (name, x1, y1, x2, y2, _) in enumerate(boxes)]
        (folder / (stem + ".json")).write_text(json.dumps(
            {"version": "5.4.1", "flags": {}, "shapes": shapes, "imagePath": stem + ".jpg",
             "imageData": None, "imageHeight": height, "imageWidth": width}, indent=2))
    return folder


def converted_boxes(out, split):
    """{file stem: [(class, x1, y1, x2, y2, iscrowd)]} of a converted split, and its data."""
    with open(os.path.join(out, "annotations", split + ".json")) as f:
        data = json.load(f)
    names = {c["id"]: c["name"] for c in data["categories"]}
    found = {os.path.splitext(image["file_name"])[0]: [] for image in data["images"]}
    stems = {image["id"]: os.path.splitext(image["file_name"])[0] for image in data["images"]}
    for ann in data["annotations"]:
        x, y, w, h = ann["bbox"]
        found[stems[ann["image_id"]]].append((names[ann["category_id"]], x, y, x + w, y + h,
                                               bool(ann["iscrowd"])))
    return found, data


def assert_matches_truth(out, split, difficult_kept):
    found, data = converted_boxes(out, split)
    assert sorted(found) == sorted(stem for stem, _, _, _ in TRUTH[split])  # unlabelled kept
    for stem, height, width, boxes in TRUTH[split]:
        image = next(i for i in data["images"] if i["file_name"] == stem + ".jpg")
        assert (image["height"], image["width"]) == (height, width)
        assert os.path.isfile(os.path.join(out, split, image["file_name"]))
        assert len(found[stem]) == len(boxes)
        for truth, box in zip(boxes, found[stem]):
            assert box[0] == truth[0]
            assert np.abs(np.subtract(box[1:5], truth[1:5])).max() <= 1.0, (truth, box)
            assert box[5] == (truth[5] and difficult_kept)


def test_voc_boxes_names_and_difficult_objects_convert_exactly(tmp_path):
    year = write_voc(tmp_path / "VOC2007")
    out = tmp_path / "data" / "voc07"
    for split in TRUTH:
        conversion = convert_dataset("voc", str(year), str(out), split)
        assert not conversion.report.errors
        assert_matches_truth(str(out), split, difficult_kept=True)
    _, train = converted_boxes(str(out), "train")
    _, val = converted_boxes(str(out), "val")
    assert train["categories"] == val["categories"] == [
        {"id": i, "name": name} for i, name in enumerate(CLASSES, 1)]
    kinds = {f.kind for f in convert_dataset("voc", str(year), str(out), "train").report.findings}
    assert kinds == {"crowd_box", "image_without_annotations"}


def test_yolo_centre_boxes_become_pixel_boxes_and_images_without_labels_are_kept(tmp_path):
    data_yaml = write_yolo(tmp_path / "yolo")
    out = tmp_path / "data" / "shapes"
    for split in TRUTH:
        convert_dataset("yolo", str(data_yaml), str(out), split)
        assert_matches_truth(str(out), split, difficult_kept=False)
    _, train = converted_boxes(str(out), "train")
    assert train["categories"] == [{"id": i, "name": name} for i, name in enumerate(CLASSES)]


def test_labelme_rectangles_convert_in_either_corner_order(tmp_path):
    out = tmp_path / "data" / "parts"
    for split in TRUTH:
        convert_dataset("labelme", str(write_labelme(tmp_path / split, split)), str(out), split)
        assert_matches_truth(str(out), split, difficult_kept=False)
