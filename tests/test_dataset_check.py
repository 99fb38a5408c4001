"""The dataset check (data/check.py), tools/browse_dataset.py and training's pre-check, on
COCO files with one seeded defect of each kind."""
import json
import os
import shutil

import cv2
import numpy as np
import pytest

from official.vision.detection.data.check import ERROR, PROBLEMS, WARNING, check_split
from official.vision.detection.data.synthetic import make_synthetic_coco
from official.vision.detection.errors import DatasetError
from official.vision.detection.visualize import class_color

from conftest import run_tool, write_config


def image_entry(image_id, name, height=40, width=60):
    return {"id": image_id, "file_name": name, "height": height, "width": width}


def box(ann_id, image_id, bbox, category_id=1, **extra):
    return dict({"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": bbox,
                 "area": bbox[2] * bbox[3], "iscrowd": 0}, **extra)


def write_split(root, images, annotations, categories, files):
    """files: {name: bytes or an image array} under root/images; root/ann.json."""
    for name, content in files.items():
        path = os.path.join(root, "images", name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if isinstance(content, bytes):
            with open(path, "wb") as f:
                f.write(content)
        else:
            cv2.imwrite(path, content)
    ann_file = os.path.join(root, "ann.json")
    with open(ann_file, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    return ann_file, os.path.join(root, "images")


@pytest.fixture
def defective(tmp_path):
    """(annotation file, image folder): one defect of every kind the check knows."""
    pixels = np.full((40, 60, 3), 90, np.uint8)
    images = [image_entry(1, "ok.jpg"), image_entry(2, "sub/missing.jpg"),
              image_entry(3, "broken.jpg"), image_entry(4, "small.jpg"),
              image_entry(1, "again.jpg"), image_entry(5, "empty.jpg"),
              image_entry(6, "flat.jpg", height=0), {"id": 7, "file_name": "no_size.jpg"}]
    annotations = [
        box(1, 1, [5, 5, 20, 10]), box(2, 2, [5, 5, 20, 10]), box(3, 3, [5, 5, 20, 10]),
        box(4, 4, [5, 5, 20, 10]), box(5, 1, [5, 5, 20, 10], category_id=99),
        box(6, 42, [5, 5, 20, 10]), box(7, 1, [5, 5, -4, 10]), box(8, 1, [5, 5, 20, 0]),
        box(9, 1, [50, 30, 20, 20]), box(10, 1, [0, 0, 60, 40], iscrowd=1),
        box(0, 1, [30, 5, 10, 10]), box(2, 6, [5, 5, 20, 10]),
        {"id": 11, "image_id": 1, "category_id": 1, "bbox": [1, 2, 3]},
    ]
    categories = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 1, "name": "c"},
                  {"name": "nameless"}]
    files = {"ok.jpg": pixels, "broken.jpg": b"not an image", "small.jpg": pixels[:30, :30],
             "again.jpg": pixels, "empty.jpg": pixels, "flat.jpg": pixels}
    return write_split(str(tmp_path), images, annotations, categories, files)


EXPECTED = {  # kind -> examples, with decoding
    "malformed_entry": ["images[7]", "categories[3]", "annotations[12]"],
    "duplicate_image_id": [1],
    "duplicate_annotation_id": [2],
    "duplicate_category_id": [1],
    "bad_image_size": [6],
    "missing_file": ["sub/missing.jpg"],
    "unreadable_file": ["broken.jpg"],
    "size_mismatch": ["small.jpg (30x30, annotated 40x60)"],
    "unknown_image_id": ["6 (image 42)"],
    "unknown_category_id": ["5 (category 99)"],
    "negative_box_size": [7],
    "empty_box": [8],
    "box_outside_image": [9],
    "image_without_annotations": [5],
    "crowd_box": [10],
    "annotation_id_zero": [0],
}


def test_every_seeded_defect_is_found_with_its_ids(defective):
    report = check_split(*defective, decode_images=True)
    assert {f.kind: f.examples for f in report.findings} == EXPECTED
    assert [f.kind for f in report.findings] == [k for k in PROBLEMS if k in EXPECTED]
    assert report.num_images == 8 and report.num_annotations == 13
    assert {f.kind for f in report.errors} == {k for k, v in PROBLEMS.items() if v[0] == ERROR}
    assert {f.kind for f in report.warnings} == {k for k, v in PROBLEMS.items()
                                                 if v[0] == WARNING}
    with pytest.raises(DatasetError, match=r"ann.json: error: 3 entries lacking.*"
                       r"error: 1 image files missing \(files sub/missing.jpg\)"):
        report.raise_for_errors()


def test_without_decoding_files_are_only_looked_up(defective):
    found = {f.kind for f in check_split(*defective).findings}
    assert found == set(EXPECTED) - {"unreadable_file", "size_mismatch"}


def test_a_clean_split_has_nothing_to_report(tmp_path):
    pixels = np.full((40, 60, 3), 90, np.uint8)
    report = check_split(*write_split(str(tmp_path), [image_entry(1, "a.jpg")],
                                      [box(1, 1, [0, 0, 60, 40])], [{"id": 1, "name": "a"}],
                                      {"a.jpg": pixels}), decode_images=True)
    assert report.findings == []
    report.raise_for_errors()
    assert report.lines() == ["{}: 1 images, 1 annotations, 0 errors, 0 warnings".format(
        report.ann_file)]


@pytest.fixture
def shapes(tmp_path):
    """A synthetic dataset (with images without objects, a warning) and a config for it."""
    make_synthetic_coco(str(tmp_path / "data" / "shapes"), num_train=6, num_val=4,
                        image_size=64, num_classes=3, seed=2)
    return str(tmp_path / "data"), write_config(tmp_path / "cfg.py")


def test_browser_draws_the_boxes_and_passes_a_split_with_only_warnings(shapes, tmp_path):
    dataset_dir, config = shapes
    out = tmp_path / "pictures"
    result = run_tool("browse_dataset.py", "-f", config, "-d", dataset_dir, "--split", "val",
                      "-o", out, "--limit", 3, "--check")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].endswith("val.json: 4 images, {} annotations, 0 errors, 1 warnings".format(
        len(json.load(open(os.path.join(dataset_dir, "shapes", "annotations", "val.json")))
            ["annotations"])))
    assert lines[1].startswith("warning: 1 images without annotations")
    assert lines[-1] == "3 pictures -> {}".format(out)

    with open(os.path.join(dataset_dir, "shapes", "annotations", "val.json")) as f:
        data = json.load(f)
    labels = {c["id"]: k for k, c in enumerate(sorted(data["categories"], key=lambda c: c["id"]))}
    drawn = 0
    for image in data["images"][:3]:
        source = cv2.imread(os.path.join(dataset_dir, "shapes", "val", image["file_name"]))
        picture = cv2.imread(str(out / (os.path.splitext(image["file_name"])[0]
                                        .replace("/", "__") + ".jpg")))
        assert picture.shape == source.shape
        for ann in data["annotations"]:
            if ann["image_id"] == image["id"]:
                x, y, w, h = (int(v) for v in ann["bbox"])
                # the middle of the box's left edge, below any label, has the class colour
                colour = picture[y + h // 2, x].astype(int)
                assert np.abs(colour - class_color(labels[ann["category_id"]])).max() < 60
                drawn += 1
    assert drawn > 0


def test_browser_check_fails_on_errors(defective, tmp_path):
    ann_file, images = defective
    config = tmp_path / "cfg.py"
    config.write_text(open(write_config(tmp_path / "base.py")).read().replace(
        'self.test_dataset = dict(name="shapes", root="val", ann_file="annotations/val.json",',
        'self.test_dataset = dict(name="", root={!r}, ann_file={!r},'.format(images, ann_file)))
    result = run_tool("browse_dataset.py", "-f", config, "--split", "val", "--check")
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert len(lines) == 1 + len(EXPECTED)
    assert lines[1].startswith("error: 3 entries lacking")
    assert result.stderr.strip().splitlines()[-1].startswith(
        "error: {}: error: 3 entries lacking".format(ann_file))


def test_training_stops_before_any_step_on_a_dataset_error(shapes, tmp_path):
    dataset_dir, config = shapes
    train_json = os.path.join(dataset_dir, "shapes", "annotations", "train.json")
    with open(train_json) as f:
        data = json.load(f)
    data["annotations"][0]["category_id"] = 77
    with open(train_json, "w") as f:
        json.dump(data, f)
    shutil.rmtree(os.path.join(dataset_dir, "shapes", "val"))  # not checked without validation
    output_dir = tmp_path / "run"
    result = run_tool("train.py", "-f", config, "-d", dataset_dir, "-o", output_dir,
                      "--workers", "0")
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: {}: error: 1 annotations of a category id not in "
                           "categories (annotation ids {} (category 77))".format(
                               train_json, data["annotations"][0]["id"]))
    assert os.listdir(str(output_dir)) == []
