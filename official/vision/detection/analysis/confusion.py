"""A confusion matrix with background: each detection above a score threshold is matched to at
most one ground-truth box (IoU at least the threshold), and the pair counts in the row of the
box's class and the column of the detection's class. An unmatched detection counts in the
background row (a false box), an unmatched box in the background column (a missed object).

Matching, by descending score in two passes: first each detection takes the free box of its own
class with the highest IoU, so that a correct detection keeps its object; then each detection
left takes the free box of any class with the highest IoU (a wrong class). Detections left
then are false unless they lie on a crowd region (the intersection covering the threshold of
the detection), which COCO ignores."""
import numpy as np

from ..boxes import pairwise_iou


def match_image(gt_boxes, gt_labels, det_boxes, det_labels, iou_threshold, crowd_boxes=None):
    """(ground-truth label or None, detected label or None) per matched pair, missed box and
    false detection of one image; detections in descending score order."""
    gt_labels, det_labels = np.asarray(gt_labels), np.asarray(det_labels)
    ious = pairwise_iou(np.asarray(det_boxes, np.float64).reshape(-1, 4),
                        np.asarray(gt_boxes, np.float64).reshape(-1, 4))
    free = np.ones(len(gt_labels), bool)
    matched = np.full(len(det_labels), -1)
    for same_class in (True, False):
        for d in np.flatnonzero(matched < 0):
            candidates = free & (ious[d] >= iou_threshold)
            if same_class:
                candidates &= gt_labels == det_labels[d]
            if candidates.any():
                matched[d] = int(np.argmax(np.where(candidates, ious[d], -1)))
                free[matched[d]] = False
    pairs = [(int(gt_labels[g]), int(label)) for g, label in zip(matched, det_labels) if g >= 0]
    pairs += [(None, int(det_labels[d])) for d in np.flatnonzero(matched < 0)
              if not _on_crowd(det_boxes[d], crowd_boxes, iou_threshold)]
    pairs += [(int(label), None) for label in gt_labels[free]]
    return pairs


def _on_crowd(box, crowd_boxes, iou_threshold):
    if crowd_boxes is None or not len(crowd_boxes):
        return False
    lt = np.maximum(box[:2], crowd_boxes[:, :2])
    rb = np.minimum(box[2:4], crowd_boxes[:, 2:4])
    inter = np.prod(np.maximum(rb - lt, 0), axis=1)
    area = max(float(np.prod(box[2:4] - box[:2])), 1e-5)
    return bool((inter / area >= iou_threshold).any())


def confusion_matrix(pairs_per_image, num_classes):
    """Counts [K + 1, K + 1]: rows ground truth, columns detections, index K background."""
    matrix = np.zeros((num_classes + 1, num_classes + 1), np.int64)
    for pairs in pairs_per_image:
        for gt_label, det_label in pairs:
            matrix[num_classes if gt_label is None else gt_label,
                   num_classes if det_label is None else det_label] += 1
    return matrix


def image_errors(pairs):
    """(missed, false) boxes of one image's pairs: a box not found with its class is missed,
    a detection not on a box of its class is false (a wrong class counts as both)."""
    missed = sum(1 for gt, det in pairs if gt is not None and gt != det)
    false = sum(1 for gt, det in pairs if det is not None and gt != det)
    return missed, false
