"""From per-point class scores and boxes to final detections (NumPy, CPU).

Greedy NMS for all classes in one pass: candidates are visited from the highest score down, and
a candidate is dropped when a kept higher-scoring box of its class overlaps it too much. Because
only higher-scoring boxes can suppress a candidate, NMS on a score-ordered prefix gives exactly
the first kept boxes of NMS on everything; candidates are therefore processed in blocks and the
pass stops once ``max_detections`` are kept (the top-k of a full per-class NMS).
"""
import numpy as np

_BLOCK = 1024  # candidates per block; the IoU matrix of a block is _BLOCK x _BLOCK


def pairwise_iou(boxes_a, boxes_b):
    """IoU [A, B] = inter / max(union, 1e-5), box areas without the +1 convention."""
    lt = np.maximum(boxes_a[:, None, :2], boxes_b[None, :, :2])
    rb = np.minimum(boxes_a[:, None, 2:], boxes_b[None, :, 2:])
    wh = np.maximum(rb - lt, 0)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (boxes_a[:, 2] - boxes_a[:, 0]) * (boxes_a[:, 3] - boxes_a[:, 1])
    area_b = (boxes_b[:, 2] - boxes_b[:, 0]) * (boxes_b[:, 3] - boxes_b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-5)


def _overlaps(boxes_a, labels_a, boxes_b, labels_b, iou_threshold):
    """[A, B] bool: same class and IoU above the threshold."""
    same_class = labels_a[:, None] == labels_b[None, :]
    return same_class & (pairwise_iou(boxes_a, boxes_b) > iou_threshold)


def batched_nms(boxes, scores, labels, iou_threshold, max_detections=None):
    """Indices of the boxes kept by per-class greedy NMS, highest score first.

    ``iou_threshold`` -1 disables NMS (the highest scores are kept).
    """
    order = np.argsort(-scores, kind="stable")
    if iou_threshold == -1:
        return order[:max_detections]
    if not 0 < iou_threshold <= 1:
        raise ValueError("test_nms must be in (0, 1] or -1, got {}".format(iou_threshold))
    limit = len(order) if max_detections is None else max_detections
    keep = []
    for start in range(0, len(order), _BLOCK):
        if len(keep) >= limit:
            break
        block = order[start:start + _BLOCK]
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
