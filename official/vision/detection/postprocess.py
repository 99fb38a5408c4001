"""From per-point class scores and boxes to final detections (NumPy, CPU).

Greedy NMS for all classes in one pass: candidates are visited from the highest score down, and
a candidate is dropped when a kept higher-scoring box of its class overlaps it too much. Because
only higher-scoring boxes can suppress a candidate, NMS on a score-ordered prefix gives exactly
the first kept boxes of NMS on everything; candidates are therefore ordered and processed in
blocks, and the pass stops once ``max_detections`` are kept (the top-k of a full per-class NMS).
Ordering block by block matters: a model with few confident points (random weights, or an image
without objects) can leave a million candidates above the threshold, whose full sort took
~175 ms where selecting the first block takes ~8 ms.
"""
import numpy as np

from .boxes import pairwise_iou
from .errors import ConfigError, NonFiniteError

# Candidates per block: the first block is small, as the top-k often needs few candidates
# (its IoU matrix is FIRST_BLOCK^2), and blocks double up to LARGEST_BLOCK.
FIRST_BLOCK, LARGEST_BLOCK = 128, 1024


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


def detect(scores, boxes, score_threshold, nms_threshold, max_detections):
    """Detections of one image.

    Args:
        scores: [P, K] per point and class.
        boxes: [P, 4] per point (class-agnostic) or [P, K, 4] per class.
    Returns:
        [D, 6] float32 rows (x1, y1, x2, y2, score, class index), score descending.
    """
    point_index, labels = np.nonzero(scores > score_threshold)
    candidate_scores = scores[point_index, labels]
    candidate_boxes = boxes[point_index] if boxes.ndim == 2 else boxes[point_index, labels]
    keep = batched_nms(candidate_boxes, candidate_scores, labels, nms_threshold, max_detections)
    return np.concatenate(
        [candidate_boxes[keep], candidate_scores[keep, None], labels[keep, None]], axis=1
    ).astype(np.float32).reshape(-1, 6)
