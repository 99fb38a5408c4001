import numpy as np
import pytest

from official.vision.detection.boxes import pairwise_iou
from official.vision.detection.postprocess import batched_nms, descending_blocks, detect


def reference_nms(boxes, scores, labels, threshold):
    """Per-class greedy NMS written the slow, obvious way."""
    kept = []
    for cls in np.unique(labels):
        idx = [i for i in np.argsort(-scores, kind="stable") if labels[i] == cls]
        while idx:
            best = idx.pop(0)
            kept.append(best)
            idx = [i for i in idx
                   if pairwise_iou(boxes[best:best + 1], boxes[i:i + 1])[0, 0] <= threshold]
    return sorted(kept, key=lambda i: -scores[i])


def sorted_then_suppressed(boxes, scores, labels, threshold):
    """Greedy per-class NMS over one full stable sort, a kept box suppressing at once."""
    suppressed = np.zeros(len(scores), dtype=bool)
    kept = []
    for i in np.argsort(-scores, kind="stable"):
        if not suppressed[i]:
            kept.append(i)
            suppressed |= (labels == labels[i]) & (pairwise_iou(boxes[i:i + 1], boxes)[0] > threshold)
    return kept


def random_boxes(rng, n, size=100):
    xy = rng.uniform(0, size, (n, 2))
    wh = rng.uniform(1, size / 2, (n, 2))
    return np.concatenate([xy, xy + wh], axis=1).astype(np.float32)


def test_iou_of_known_boxes():
    a = np.array([[0, 0, 10, 10]], np.float32)
    b = np.array([[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10]], np.float32)
    np.testing.assert_allclose(pairwise_iou(a, b), [[50 / 150, 0, 1]])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nms_matches_brute_force_per_class_reference(seed):
    rng = np.random.default_rng(seed)
    boxes = random_boxes(rng, 300)
    scores = rng.random(300).astype(np.float32)
    labels = rng.integers(0, 3, 300)
    expected = reference_nms(boxes, scores, labels, 0.5)
    np.testing.assert_array_equal(batched_nms(boxes, scores, labels, 0.5), expected)


def test_nms_stopped_at_k_equals_the_top_k_of_full_nms():
    rng = np.random.default_rng(3)
    boxes = random_boxes(rng, 3000, size=200)
    scores = rng.random(3000).astype(np.float32)
    labels = rng.integers(0, 5, 3000)
    full = batched_nms(boxes, scores, labels, 0.6)
    np.testing.assert_array_equal(batched_nms(boxes, scores, labels, 0.6, 100), full[:100])


def test_boxes_of_different_classes_do_not_suppress_each_other():
    boxes = np.array([[0, 0, 10, 10]] * 2, np.float32)
    keep = batched_nms(boxes, np.array([0.9, 0.8], np.float32), np.array([0, 1]), 0.5)
    np.testing.assert_array_equal(keep, [0, 1])


def test_iou_equal_to_threshold_is_kept():
    boxes = np.array([[0, 0, 10, 10], [5, 0, 15, 10]], np.float32)  # IoU 1/3
    keep = batched_nms(boxes, np.array([0.9, 0.8], np.float32), np.array([0, 0]), 1 / 3)
    assert len(keep) == 2


def test_nms_threshold_minus_one_only_sorts():
    boxes = np.array([[0, 0, 10, 10]] * 3, np.float32)
    keep = batched_nms(boxes, np.array([0.1, 0.9, 0.5], np.float32), np.zeros(3, int), -1)
    np.testing.assert_array_equal(keep, [1, 2, 0])


def test_invalid_nms_threshold_is_rejected():
    with pytest.raises(ValueError, match="test_nms"):
        batched_nms(np.zeros((1, 4), np.float32), np.ones(1, np.float32), np.zeros(1, int), 1.5)


def test_detect_applies_threshold_nms_and_top_k():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], np.float32)
    scores = np.array([[0.9, 0.01], [0.8, 0.7], [0.04, 0.3]], np.float32)
    dets = detect(scores, boxes, 0.05, 0.6, 100)
    # (1, class 0) is suppressed by (0, class 0); (2, class 0) is under the threshold
    np.testing.assert_allclose(dets, [[0, 0, 10, 10, 0.9, 0], [1, 0, 11, 10, 0.7, 1],
                                      [50, 50, 60, 60, 0.3, 1]])
    assert detect(scores, boxes, 0.05, 0.6, 2).shape == (2, 6)


def test_detect_with_no_candidates_returns_an_empty_array():
    dets = detect(np.zeros((4, 3), np.float32), np.zeros((4, 4), np.float32), 0.05, 0.6, 100)
    assert dets.shape == (0, 6) and dets.dtype == np.float32


def test_descending_blocks_concatenate_to_the_stable_sort_with_ties_across_blocks():
    rng = np.random.default_rng(4)
    scores = rng.integers(0, 7, 5000).astype(np.float32)  # ~700 copies of every value
    blocks = list(descending_blocks(scores, 1024))
    assert len(blocks) > 1
    np.testing.assert_array_equal(np.concatenate(blocks), np.argsort(-scores, kind="stable"))


def test_nms_over_blocks_with_tied_scores_equals_nms_over_one_full_sort():
    rng = np.random.default_rng(5)
    boxes = random_boxes(rng, 4000, size=400)
    scores = (rng.integers(1, 40, 4000) / 40).astype(np.float32)
    labels = rng.integers(0, 3, 4000)
    expected = sorted_then_suppressed(boxes, scores, labels, 0.6)
    assert len(expected) > 1024  # the kept boxes span several blocks
    np.testing.assert_array_equal(batched_nms(boxes, scores, labels, 0.6), expected)
    np.testing.assert_array_equal(batched_nms(boxes, scores, labels, 0.6, 1500), expected[:1500])


def test_a_million_candidates_give_the_top_k_of_the_full_sort():
    # random weights put every point of every class above the threshold
    rng = np.random.default_rng(6)
    scores = rng.uniform(0.06, 0.08, (12000, 80)).astype(np.float32)
    boxes = random_boxes(rng, 12000, size=1000)
    point, label = np.nonzero(scores > 0.05)
    order = np.argsort(-scores[point, label], kind="stable")
    detections = detect(scores, boxes, 0.05, -1, 100)
    np.testing.assert_array_equal(detections[:, 4], scores[point, label][order[:100]])
    np.testing.assert_array_equal(detections[:, 5], label[order[:100]])


def test_nan_scores_are_refused():
    with pytest.raises(ValueError, match="NaN"):
        batched_nms(np.zeros((2, 4), np.float32), np.array([0.5, np.nan], np.float32),
                    np.zeros(2, int), 0.5)
