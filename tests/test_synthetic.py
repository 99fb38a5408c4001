"""The synthetic COCO-format dataset: file layout, ids, tight boxes, determinism, the tool."""
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from conftest import PROJECT_ROOT
from official.vision.detection.data.synthetic import (
    make_synthetic_coco, parse_image_size, synthesize_split, tight_box,
)

# Small, varied images keep the module fast; both sides drawn per image.
ARGS = dict(num_train=8, num_val=4, image_size=((64, 112), (64, 112)), seed=3)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("synthetic"))
    return root, make_synthetic_coco(root, **ARGS)


def load(root, split):
    return COCO(os.path.join(root, "annotations", split + ".json"))


def relative_files(root):
    return sorted(os.path.relpath(os.path.join(d, f), root)
                  for d, _, files in os.walk(root) for f in files)


def test_files_load_with_pycocotools_and_ids_are_as_documented(dataset):
    root, summary = dataset
    cocos = {split: load(root, split) for split in ("train", "val")}
    image_ids = [img["id"] for split in ("train", "val") for img in cocos[split].dataset["images"]]
    assert image_ids == [1000 + 7 * i for i in range(12)]
    ann_ids = [a["id"] for split in ("train", "val") for a in cocos[split].dataset["annotations"]]
    assert ann_ids == list(range(1, len(ann_ids) + 1))
    for split, coco in cocos.items():
        assert sorted(coco.getCatIds()) == [2, 5, 9, 11]
        assert [c["name"] for c in coco.loadCats([2, 5, 9, 11])] == [
            "circle", "rectangle", "triangle", "cross"]
        assert summary[split].num_images == len(coco.getImgIds())
        assert summary[split].num_annotations == len(coco.getAnnIds())
        assert any(img["file_name"].startswith("part1/") for img in coco.dataset["images"])
        for img in coco.dataset["images"]:
            pixels = cv2.imread(os.path.join(root, split, img["file_name"]))
            assert pixels.shape == (img["height"], img["width"], 3)


def test_sizes_vary_within_the_range(dataset):
    root, _ = dataset
    images = load(root, "train").dataset["images"]
    assert all(64 <= img["height"] <= 112 and 64 <= img["width"] <= 112 for img in images)
    aspect_ratios = [img["width"] / img["height"] for img in images]
    assert min(aspect_ratios) < 1 < max(aspect_ratios)


def test_both_splits_contain_images_without_objects(dataset):
    root, summary = dataset
    for split, expected in (("train", 2), ("val", 1)):
        coco = load(root, split)
        empty = [i for i in coco.getImgIds() if not coco.getAnnIds(imgIds=i)]
        assert len(empty) == expected == summary[split].num_empty
        assert all(1 <= len(coco.getAnnIds(imgIds=i)) <= 6
                   for i in coco.getImgIds() if i not in empty)


@pytest.mark.parametrize("split", ["train", "val"])
def test_boxes_are_tight_around_the_drawn_shapes(dataset, split):
    root, _ = dataset
    coco = load(root, split)
    samples = synthesize_split(split, len(coco.getImgIds()), 2 if split == "train" else 1,
                               ARGS["image_size"], ARGS["seed"])
    for img, sample in zip(coco.dataset["images"], samples):
        # the re-rendered sample is the image in the file; JPEG drops much of the pixel
        # noise, so compare local means
        pixels = cv2.imread(os.path.join(root, split, img["file_name"])).astype(np.float32)
        rendered = sample.image.astype(np.float32)
        assert np.abs(cv2.blur(pixels, (5, 5)) - cv2.blur(rendered, (5, 5))).mean() < 3
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))
        assert [a["category_id"] for a in annotations] == sample.category_ids
        for k, ann in enumerate(annotations, start=1):
            mask = sample.label_map == k
            x, y, w, h = map(int, ann["bbox"])
            assert ann["bbox"] == [x, y, w, h] and ann["iscrowd"] == 0
            assert 0 <= x and 0 <= y and x + w <= img["width"] and y + h <= img["height"]
            assert ann["area"] == mask.sum() == mask[y:y + h, x:x + w].sum()
            # the shape touches all four edges of its box
            assert mask[y, x:x + w].any() and mask[y + h - 1, x:x + w].any()
            assert mask[y:y + h, x].any() and mask[y:y + h, x + w - 1].any()
            # sizes stay within the documented range (occlusion may trim a box a little)
            assert 0.05 <= max(w, h) / min(img["height"], img["width"]) <= 0.62


def test_every_class_appears(dataset):
    root, _ = dataset
    coco = load(root, "train")
    assert {a["category_id"] for a in coco.dataset["annotations"]} == {2, 5, 9, 11}


def test_tight_box_of_a_known_mask():
    mask = np.zeros((10, 12), bool)
    mask[2, 5] = mask[7, 3] = mask[4, 9] = True
    assert tight_box(mask) == (3, 2, 7, 6)


def test_same_seed_gives_identical_bytes(dataset, tmp_path):
    root, _ = dataset
    again = str(tmp_path / "again")
    make_synthetic_coco(again, **ARGS)
    files = relative_files(root)
    assert files == relative_files(again)
    for name in files:
        with open(os.path.join(root, name), "rb") as a, open(os.path.join(again, name), "rb") as b:
            assert a.read() == b.read(), name

    other = str(tmp_path / "other")
    make_synthetic_coco(other, **dict(ARGS, seed=4))
    with open(os.path.join(root, "annotations", "val.json")) as a, \
            open(os.path.join(other, "annotations", "val.json")) as b:
        assert a.read() != b.read()


def test_bad_arguments_write_nothing(tmp_path):
    root = str(tmp_path / "data")
    with pytest.raises(ValueError, match="empty images"):
        make_synthetic_coco(root, num_train=1)
    with pytest.raises(ValueError, match="num_classes"):
        make_synthetic_coco(root, num_classes=5)
    assert not os.path.exists(root)


@pytest.mark.parametrize("text, expected", [
    ("160", (160, 160)), ("160x128", (160, 128)),
    ("128-192", ((128, 192), (128, 192))), ("128-192x160", ((128, 192), 160)),
])
def test_parse_image_size(text, expected):
    assert parse_image_size(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "160x", "1x2x3", "192-128", "16"])
def test_parse_image_size_rejects_bad_text(text):
    with pytest.raises(ValueError):
        parse_image_size(text)


def test_tool_runs_end_to_end(tmp_path):
    out = str(tmp_path / "tool")
    result = subprocess.run(
        [sys.executable, "tools/make_synthetic_coco.py", "-o", out, "--train", "3", "--val", "2",
         "--size", "64-96x80", "--seed", "1", "--classes", "3"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["train", "val"]
    assert lines[0].startswith("train: 3 images (2 without objects)")
    assert lines[1].startswith("val: 2 images (1 without objects)")
    coco = load(out, "val")
    assert sorted(coco.getCatIds()) == [2, 5, 9]
    assert all(img["width"] == 80 for img in coco.dataset["images"])
