"""Order-free comparison of the detections of two engines, two batch sizes or two merges.

Two runs whose scores differ in the last bits (Lite's NCHW88 kernels differ from eager by
~3e-7) may list two near-tied detections in either order, so rows are not compared by
position: within each image and class, detections are paired by box and score, and then the
boxes of the pairs are compared coordinate by coordinate.

Detections are given either as [K, 6] NumPy rows (x1, y1, x2, y2, score, class): one array
for one image or a list of arrays, one per image (the image is its index), as
``DetEvaluator.predict`` and ``predict_images`` return them; or as COCO result dicts
(image_id, category_id, bbox as x, y, w, h, score), as the evaluation writes them.
"""
import numpy as np

from official.vision.detection.boxes import pairwise_iou, xywh_to_xyxy

# Boxes that overlap this much are paired even when they are further apart than the pixel
# tolerance, so that a moved box is reported as moved rather than as one missing and one
# extra detection. NMS (test_nms 0.6) leaves detections of one class that overlap up to
# 0.6, hence the closest box is paired first (see pair_detections).
PAIRING_IOU = 0.5
SHOWN = 5  # detections listed per kind of mismatch in a failure message
IMAGE, CLASS, BOX, SCORE = 0, 1, slice(2, 6), 6  # columns of a detection table


def detection_table(detections):
    """[N, 7] float64 rows (image, class, x1, y1, x2, y2, score) of either input form."""
    if isinstance(detections, np.ndarray) and detections.ndim == 2:
        detections = [detections]
    detections = list(detections)
    if detections and isinstance(detections[0], dict):
        rows = [[d["image_id"], d["category_id"], *xywh_to_xyxy(d["bbox"]), d["score"]]
                for d in detections]
    else:
        rows = [[image, row[5], *row[:4], row[4]] for image, rows_of_image in
                enumerate(detections) for row in np.asarray(rows_of_image).reshape(-1, 6)]
    return np.array(rows, np.float64).reshape(-1, 7)


def box_distance(found, expected):
    """[F, E] largest coordinate difference (pixels) between the boxes of two tables."""
    return np.abs(found[:, None, BOX] - expected[None, :, BOX]).max(axis=-1)


def pair_detections(found, expected, box_atol, score_atol):
    """(i, j) pairs of rows of two detection tables: the same image and class, scores within
    ``score_atol``, boxes within ``box_atol`` or overlapping by PAIRING_IOU. Each row is used
    once; the closest boxes are paired first, so that of two overlapping detections of one
    class each finds its own partner whatever the order of the rows."""
    if not len(found) or not len(expected):
        return []
    same_key = (found[:, None, [IMAGE, CLASS]] == expected[None, :, [IMAGE, CLASS]]).all(-1)
    close_score = np.abs(found[:, None, SCORE] - expected[None, :, SCORE]) <= score_atol
    distance = box_distance(found, expected)
    overlapping = (distance <= box_atol) | (
        pairwise_iou(found[:, BOX], expected[:, BOX]) >= PAIRING_IOU)
    candidates = np.argwhere(same_key & close_score & overlapping)
    candidates = candidates[np.argsort(distance[tuple(candidates.T)], kind="stable")]
    pairs, used_found, used_expected = [], set(), set()
    for i, j in candidates:
        if i not in used_found and j not in used_expected:
            pairs.append((i, j))
            used_found.add(i)
            used_expected.add(j)
    return pairs


def describe(row):
    return "image {:g} class {:g} box ({:.3f}, {:.3f}, {:.3f}, {:.3f}) score {:.7g}".format(
        row[IMAGE], row[CLASS], *row[BOX], row[SCORE])


def listed(title, lines):
    more = ["  ... and {} more".format(len(lines) - SHOWN)] if len(lines) > SHOWN else []
    return ["{} ({}):".format(title, len(lines))] + ["  " + line for line in lines[:SHOWN]] + more


def assert_same_detections(found, expected, box_atol, score_atol, min_iou=None):
    """``found`` holds the detections of ``expected`` in any order: every detection has a
    partner of the same image and class whose score is within ``score_atol`` and whose box
    coordinates are within ``box_atol`` pixels or, with ``min_iou``, whose box overlaps it by
    that IoU at least; and there is no detection left over. ``expected`` must hold some
    detections, or the comparison proves nothing."""
    found, expected = detection_table(found), detection_table(expected)
    assert len(expected) > 0, "no expected detections to compare with"
    pairs = pair_detections(found, expected, box_atol, score_atol)
    missing = sorted(set(range(len(expected))) - {j for _, j in pairs})
    extra = sorted(set(range(len(found))) - {i for i, _ in pairs})
    moved = [(i, j) for i, j in pairs
             if box_distance(found[i:i + 1], expected[j:j + 1])[0, 0] > box_atol and (
                 min_iou is None or pairwise_iou(
                     found[i:i + 1, BOX], expected[j:j + 1, BOX])[0, 0] < min_iou)]
    problems = []
    if missing:
        problems += listed("expected but not found", [describe(expected[j]) for j in missing])
    if extra:
        problems += listed("found but not expected", [describe(found[i]) for i in extra])
    if moved:
        below = " and overlaps by less than IoU {}".format(min_iou) if min_iou else ""
        problems += listed("paired, but the box moved by more than {} px{}".format(
            box_atol, below), [
            "found {} / expected {}".format(describe(found[i]), describe(expected[j]))
            for i, j in moved])
    if problems:
        raise AssertionError("{} found and {} expected detections differ (score tolerance {}):"
                             "\n".format(len(found), len(expected), score_atol)
                             + "\n".join(problems))


def agreement(found, expected):
    """How far two runs' detections agree where their numbers differ by design (int8 against
    fp32): (the fraction of ``expected`` rows paired in ``found`` by image, class and IoU >=
    PAIRING_IOU, whatever their scores; the largest score difference of those pairs)."""
    found, expected = detection_table(found), detection_table(expected)
    pairs = pair_detections(found, expected, box_atol=0.0, score_atol=1.0)
    score_diff = max((abs(found[i, SCORE] - expected[j, SCORE]) for i, j in pairs), default=0.0)
    return len(pairs) / max(len(expected), 1), float(score_diff)
