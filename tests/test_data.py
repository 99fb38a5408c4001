import json
import os

import cv2
import numpy as np
import pytest

from official.vision.detection.boxes import padded_hw, scale_boxes
from official.vision.detection.data.coco import (
    COCODetection, DatasetError, read_image, resolve_dataset_paths
)
from official.vision.detection.data.collate import collate_train, pad_images
from official.vision.detection.data.loader import BatchLoader
from official.vision.detection.data.samplers import (
    GroupedBatchSampler, inference_batches
)
from official.vision.detection.data.transforms import TrainTransform, hflip, resize


def write_dataset(root, images, annotations, categories):
    """images: {file_name: array}; writes them and annotations/instances.json under root."""
    records = []
    for image_id, (name, array) in zip([101, 205, 309, 413], images.items()):
        path = os.path.join(root, "images", name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        cv2.imwrite(path, array)
        records.append({"id": image_id, "file_name": name, "height": array.shape[0],
                        "width": array.shape[1]})
    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    ann_file = os.path.join(root, "annotations", "instances.json")
    with open(ann_file, "w") as f:
        json.dump({"images": records, "annotations": annotations, "categories": categories}, f)
    return os.path.join(root, "images"), ann_file


@pytest.fixture
def small_dataset(tmp_path):
    images = {
        "a/first.jpg": np.full((40, 60, 3), 50, np.uint8),
        "second.png": np.full((50, 30), 120, np.uint8),  # grayscale file
        "b/c/third.png": np.full((30, 30, 4), 200, np.uint8),  # 4-channel file
    }
    annotations = [
        {"id": 1, "image_id": 101, "category_id": 7, "bbox": [5, 5, 20, 10], "iscrowd": 0},
        {"id": 2, "image_id": 101, "category_id": 3, "bbox": [0, 0, 60, 40], "iscrowd": 1},
        {"id": 3, "image_id": 101, "category_id": 3, "bbox": [10, 10, 0, 5], "iscrowd": 0},
        {"id": 4, "image_id": 205, "category_id": 3, "bbox": [20, 30, 20, 30], "iscrowd": 0},
    ]
    categories = [{"id": 7, "name": "seven"}, {"id": 3, "name": "three"}]
    return write_dataset(str(tmp_path), images, annotations, categories)


def test_ids_come_from_the_annotation_file(small_dataset):
    dataset = COCODetection(*small_dataset)
    assert dataset.category_ids == [3, 7] and dataset.class_names == ["three", "seven"]
    assert [r["image_id"] for r in dataset.records] == [101, 205, 309]
    first = dataset[0]
    np.testing.assert_array_equal(first["boxes"], [[5, 5, 25, 15]])  # crowd and empty dropped
    np.testing.assert_array_equal(first["labels"], [1])


def test_sizes_and_box_counts_come_from_the_annotations(small_dataset):
    dataset = COCODetection(*small_dataset)
    assert [dataset.image_size(i) for i in range(3)] == [(40, 60), (50, 30), (30, 30)]
    assert dataset.max_boxes() == 1  # the crowd and the empty box are not boxes


def test_boxes_are_clipped_to_the_image(small_dataset):
    second = COCODetection(*small_dataset)[1]
    np.testing.assert_array_equal(second["boxes"], [[20, 30, 30, 50]])


def test_images_without_objects_are_skipped_only_when_asked(small_dataset):
    assert len(COCODetection(*small_dataset)) == 3
    kept = COCODetection(*small_dataset, remove_images_without_annotations=True)
    assert [r["image_id"] for r in kept.records] == [101, 205]


def test_grayscale_and_four_channel_files_load_as_bgr(small_dataset):
    dataset = COCODetection(*small_dataset)
    assert dataset[1]["image"].shape == (50, 30, 3) and dataset[2]["image"].shape == (30, 30, 3)


def test_missing_image_is_named(small_dataset):
    os.remove(os.path.join(small_dataset[0], "b", "c", "third.png"))
    with pytest.raises(DatasetError, match="third.png"):
        COCODetection(*small_dataset)


def test_unreadable_image_is_named(tmp_path):
    path = tmp_path / "broken.jpg"
    path.write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError, match="broken.jpg.*unreadable"):
        read_image(str(path))


def test_missing_annotation_file_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="annotation file not found"):
        COCODetection(str(tmp_path), str(tmp_path / "none.json"))


def test_dataset_paths_resolve_like_the_official_configs():
    cfg = {"name": "coco", "root": "val2017", "ann_file": "annotations/instances_val2017.json"}
    assert resolve_dataset_paths(cfg, "/data/datasets") == (
        "/data/datasets/coco/val2017", "/data/datasets/coco/annotations/instances_val2017.json")
    absolute = dict(cfg, root="/imgs", ann_file="/ann/x.json")
    assert resolve_dataset_paths(absolute, "/data/datasets") == ("/imgs", "/ann/x.json")


def test_resize_and_flip_move_boxes_with_the_image():
    image = np.zeros((40, 80, 3), np.uint8)
    resized, hw = resize(image, 20, 1000)
    assert resized.shape == (20, 40, 3) and hw == (20, 40)
    boxes = scale_boxes(np.array([[10, 4, 30, 20]], np.float32), (40, 80), hw)
    np.testing.assert_array_equal(boxes, [[5, 2, 15, 10]])
    _, flipped = hflip(resized, boxes)
    np.testing.assert_array_equal(flipped, [[25, 2, 35, 10]])


def test_train_transform_uses_one_of_the_short_sizes_and_the_cap():
    sample = {"image": np.zeros((100, 400, 3), np.uint8),
              "boxes": np.array([[0, 0, 100, 50]], np.float32), "labels": np.array([0])}
    transform = TrainTransform((50, 60), max_size=220, flip_prob=0.0)
    heights = {transform(sample, np.random.default_rng(s))["im_info"][0] for s in range(20)}
    assert heights == {50, 55}  # 60 would make the long side 240 > 220, so it is capped


def test_collate_pads_images_and_boxes():
    samples = [
        {"image": np.ones((4, 6, 3), np.uint8), "boxes": np.array([[0, 0, 2, 2]], np.float32),
         "labels": np.array([1]), "im_info": (4, 6, 8, 12)},
        {"image": np.ones((5, 3, 3), np.uint8), "boxes": np.zeros((0, 4), np.float32),
         "labels": np.zeros(0, int), "im_info": (5, 3, 5, 3)},
    ]
    batch = collate_train(samples)
    assert batch["image"].shape == (2, 3, 5, 6)
    assert batch["image"][0, :, 4].sum() == 0 and batch["image"][1, :, :, 3:].sum() == 0
    assert batch["gt_boxes"].shape == (2, 1, 5)
    np.testing.assert_array_equal(batch["gt_boxes"][0, 0], [0, 0, 2, 2, 1])
    np.testing.assert_array_equal(batch["im_info"][:, 4], [1, 0])
    assert pad_images([np.zeros((2, 2, 3))]).dtype == np.float32


def test_grouped_batches_are_homogeneous_deterministic_and_split_across_ranks():
    groups = [0, 1] * 10
    sampler = GroupedBatchSampler(groups, batch_size=3, seed=5)
    batches = sampler.epoch_batches(epoch=2, num_batches=8)
    assert all(len({groups[i] for i in b}) == 1 and len(b) == 3 for b in batches)
    assert batches == GroupedBatchSampler(groups, 3, seed=5).epoch_batches(2, 8)
    assert batches != sampler.epoch_batches(3, 8)
    rank0 = GroupedBatchSampler(groups, 2, 1, world_size=2, rank=0).epoch_batches(0, 4)
    rank1 = GroupedBatchSampler(groups, 2, 1, world_size=2, rank=1).epoch_batches(0, 4)
    assert not set(sum(rank0[:2], [])) & set(sum(rank1[:2], []))


def test_inference_batches_share_a_padded_shape_and_cover_every_image_once():
    sizes = [(480, 640), (480, 640), (500, 640), (640, 480), (480, 640), (300, 300)]
    batches = inference_batches(sizes, 2, 800, 1333)
    assert sorted(sum(batches, [])) == list(range(6))
    for batch in batches:
        assert len({padded_hw(*sizes[i], 800, 1333) for i in batch}) == 1
    assert max(map(len, batches)) == 2
    assert sorted(sum(inference_batches(sizes, 4, 800, 1333, world_size=2, rank=1), [])) == [1, 3, 5]


def square(x):
    if x == 3:
        raise DatasetError("cannot read image three.jpg (missing)")
    return x * x


def test_loader_keeps_order_and_reports_worker_errors():
    with BatchLoader(square, num_workers=2) as loader:
        assert list(loader.iterate(range(3))) == [0, 1, 4]
        with pytest.raises(DatasetError, match="three.jpg"):
            list(loader.iterate(range(5)))
    with BatchLoader(square, num_workers=0) as loader:
        assert list(loader.iterate([2])) == [4]
