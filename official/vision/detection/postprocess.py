"""From per-point class scores and boxes to final detections (NumPy, CPU).

Greedy NMS for all classes in one pass: candidates are visited from the highest score down, and
a candidate is dropped when a kept higher-scoring box of its class overlaps it too much. Because
only higher-scoring boxes can suppress a candidate, NMS on a score-ordered prefix gives exactly
the first kept boxes of NMS on everything; candidates are therefore ordered and processed in
blocks, and the pass stops once ``max_detections`` are kept (the top-k of a full per-class NMS).
Ordering block by block matters: a model with few confident points (random weights, or an image
without objects) can leave a million candidates above the threshold, whose full sort took
~175 ms where selecting the first block takes ~8 ms.

For the same reason ``detect`` does not list every candidate above the threshold (listing and
gathering the 1.7 million of FCOS-R50 with random weights took ~70 ms): it takes the leading
candidates by score, an exact prefix of the order NMS visits, found from each point's highest
score, and takes a longer prefix only when NMS on it kept fewer than ``max_detections``.
"""
import numpy as np

from .boxes import pairwise_iou
from .errors import ConfigError, NonFiniteError

# Candidates per block: the first block is small, as the top-k often needs few candidates
# (its IoU matrix is FIRST_BLOCK^2), and blocks double up to LARGEST_BLOCK.
FIRST_BLOCK, LARGEST_BLOCK = 128, 1024
# Candidates per max_detections that ``detect`` first hands to NMS; 4x more each time NMS kept
# too few.
LEADING_PER_DETECTION = 8


def _overlaps(boxes_a, labels_a, boxes_b, labels_b, iou_threshold):
    """[A, B] bool: same class and IoU above the threshold."""
    same_class = labels_a[:, None] == labels_b[None, :]
    return same_class & (pairwise_iou(boxes_a, boxes_b) > iou_threshold)


def descending_blocks(scores, block_size, largest_block=None):
    """Indices of ``scores`` from the highest score down, ties in index order (a stable sort of
    ``-scores``), yielded in blocks of about ``block_size``, doubling up to ``largest_block``.

    Each block holds every index scoring at least the block's lowest score, so the blocks
    concatenate to the full sort without sorting everything up front.
    """
    largest_block = largest_block or block_size
    remaining = np.arange(len(scores))
    while len(remaining) > block_size:
        values = scores[remaining]
        lowest = np.partition(values, len(values) - block_size)[len(values) - block_size]
        taken = values >= lowest
        block = remaining[taken]
        yield block[np.argsort(-scores[block], kind="stable")]
        remaining = remaining[~taken]
        block_size = min(2 * block_size, largest_block)
    if len(remaining):
        yield remaining[np.argsort(-scores[remaining], kind="stable")]


def batched_nms(boxes, scores, labels, iou_threshold, max_detections=None):
    """Indices of the boxes kept by per-class greedy NMS, highest score first.

    ``iou_threshold`` -1 disables NMS (the highest scores are kept).
    """
    if iou_threshold != -1 and not 0 < iou_threshold <= 1:
        raise ConfigError("test_nms must be in (0, 1] or -1, got {}".format(iou_threshold))
    if np.isnan(scores).any():
        raise NonFiniteError("scores contain NaN; the model's outputs are not finite")
    limit = len(scores) if max_detections is None else max_detections
    keep = []
    for block in descending_blocks(scores, FIRST_BLOCK, LARGEST_BLOCK):
        if len(keep) >= limit:
            break
        if iou_threshold == -1:
            keep.extend(block[:limit - len(keep)])
            continue
        block_boxes, block_labels = boxes[block], labels[block]
        suppressed = np.zeros(len(block), dtype=bool)
        if keep:
            suppressed |= _overlaps(boxes[keep], labels[keep], block_boxes, block_labels,
                                    iou_threshold).any(axis=0)
        within = _overlaps(block_boxes, block_labels, block_boxes, block_labels, iou_threshold)
        for j in range(len(block)):
            if suppressed[j]:
                continue
            keep.append(block[j])
            if len(keep) >= limit:
                break
            suppressed[j + 1:] |= within[j, j + 1:]
    return np.array(keep, dtype=np.int64)


def leading_candidates(scores, score_threshold, count):
    """(point index, class) of the ``count`` highest scores above ``score_threshold`` of
    [P, K] ``scores``, with every score tied with the last one, in the order of
    ``np.nonzero(scores > score_threshold)``; and whether that is every score above it.

    A point holding one of the ``count`` highest scores has one of the ``count`` highest
    per-point maxima (or a tied one), so only those points' rows are searched: every score
    elsewhere is below the ``count``-th highest maximum, hence below the ``count``-th score.
    """
    point_max = scores.max(axis=1, initial=-np.inf)
    points = np.arange(len(point_max))
    if len(points) > count:
        floor = np.partition(point_max, len(points) - count)[len(points) - count]
        points = np.flatnonzero(point_max >= floor)
    rows = scores[points].ravel()
    lowest = -np.inf  # fewer than count scores: all are taken
    if len(rows) >= count:
        lowest = np.partition(rows, len(rows) - count)[len(rows) - count]
    taken = (rows >= lowest) & (rows > score_threshold)
    row, labels = np.divmod(np.flatnonzero(taken), scores.shape[1])
    return points[row], labels, lowest <= score_threshold


def detect(scores, boxes, score_threshold, nms_threshold, max_detections):
    """Detections of one image: greedy NMS over the scores above ``score_threshold``, stopped
    at ``max_detections`` (None: all).

    Args:
        scores: [P, K] per point and class.
        boxes: [P, 4] per point (class-agnostic) or [P, K, 4] per class.
    Returns:
        [D, 6] float32 rows (x1, y1, x2, y2, score, class index), score descending.
    """
    if max_detections is None:
        return _detections(scores, boxes, *np.nonzero(scores > score_threshold), nms_threshold,
                           None)
    if np.isnan(scores.max(axis=1, initial=-np.inf)).any():  # NaN is above no threshold
        scores = np.where(np.isnan(scores), -np.inf, scores)
    count = LEADING_PER_DETECTION * max(max_detections, 1)
    while True:
        point_index, labels, complete = leading_candidates(scores, score_threshold, count)
        detections = _detections(scores, boxes, point_index, labels, nms_threshold,
                                 max_detections)
        # NMS on a prefix of its visiting order keeps the first boxes of NMS on everything
        if complete or len(detections) == max_detections:
            return detections
        count *= 4


def _detections(scores, boxes, point_index, labels, nms_threshold, max_detections):
    """[D, 6] rows of batched NMS over the candidates (point_index, labels)."""
    candidate_scores = scores[point_index, labels]
    candidate_boxes = boxes[point_index] if boxes.ndim == 2 else boxes[point_index, labels]
    keep = batched_nms(candidate_boxes, candidate_scores, labels, nms_threshold, max_detections)
    return np.concatenate(
        [candidate_boxes[keep], candidate_scores[keep, None], labels[keep, None]], axis=1
    ).astype(np.float32).reshape(-1, 6)
