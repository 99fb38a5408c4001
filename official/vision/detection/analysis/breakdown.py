"""The COCO error breakdown of Hoiem et al. as the COCO API's ``analyze()`` defines it, from
pycocotools' COCOeval runs on changed ground truth and parameters.

Seven precision-recall curves per category, each one kind of error forgiven more than the one
before (bbox, all areas, 100 detections per image):
  C75  precision at IoU 0.75 (the COCO curve); C50  at IoU 0.5;
  Loc  at IoU 0.1: poorly placed boxes forgiven (duplicates still count as false);
  Sim  at IoU 0.1, confusion with a category of the same supercategory forgiven;
  Oth  at IoU 0.1, confusion with any other category forgiven;
  BG   every remaining false positive forgiven: 1 up to the highest recall reached;
  FN   1 everywhere: the missed objects are what is left.
A confusion is forgiven by giving the other category's ground-truth boxes the analysed
category and the ignore flag: a detection on one is then neither a hit nor a false positive.
The area under each curve (mean precision over COCO's 101 recall points) is the AP that
fixing every error of the kinds to its left would give.
"""
import contextlib
import io

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

ERROR_TYPES = ("C75", "C50", "Loc", "Sim", "Oth", "BG", "FN")
BREAKDOWN_IOUS = (0.75, 0.5, 0.1)  # the C75, C50 and Loc curves, from one COCOeval run
ALL_AREAS = [0, 1e10]
IGNORED_CONFUSION = "ignored_confusion"  # mark of a relabelled ground-truth box


class ConfusionForgivingCOCOeval(COCOeval):
    """COCOeval that ignores the ground-truth boxes marked IGNORED_CONFUSION; pycocotools'
    ``_prepare`` sets every box's ignore flag from ``iscrowd`` alone. The boxes keep their
    ordinary IoU, unlike crowd boxes, as in the COCO API's MATLAB analyze()."""

    def _prepare(self):
        super()._prepare()
        for boxes in self._gts.values():
            for box in boxes:
                box["ignore"] = box["ignore"] or box.get(IGNORED_CONFUSION, 0)


def quiet_coco(dataset):
    """A pycocotools COCO object of an annotation dict, without its printout."""
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def evaluated_precision(coco_gt, detections, image_ids, iou_thresholds, category_ids,
                        cocoeval_class=COCOeval):
    """COCOeval's accumulated precision [T, 101, K] at all areas and 100 detections of
    ``detections`` (result dicts, not empty) on ``image_ids``; -1 where a category has no
    ground truth."""
    with contextlib.redirect_stdout(io.StringIO()):
        # loadRes writes ids and areas into the dicts it gets: give it copies
        coco_dt = coco_gt.loadRes([dict(d) for d in detections])
        coco_eval = cocoeval_class(coco_gt, coco_dt, "bbox")
        params = coco_eval.params
        params.imgIds, params.catIds = list(image_ids), list(category_ids)
        params.iouThrs = np.array(iou_thresholds)
        params.areaRng, params.areaRngLbl, params.maxDets = [ALL_AREAS], ["all"], [100]
        coco_eval.evaluate()
        coco_eval.accumulate()
    return coco_eval.eval["precision"][:, :, :, 0, 0]


def similar_category_ids(coco_gt):
    """{category id: ids of its supercategory}, or None when a category lacks one."""
    categories = coco_gt.dataset["categories"]
    if not all(c.get("supercategory") for c in categories):
        return None
    return {c["id"]: {o["id"] for o in categories if o["supercategory"] == c["supercategory"]}
            for c in categories}


def confusion_forgiven_precision(coco_gt, detections, image_ids, category_id, forgiven_ids):
    """Precision [101] at IoU 0.1 of one category's detections when its confusion with the
    categories ``forgiven_ids`` is forgiven; zeros without detections."""
    own = [d for d in detections if d["category_id"] == category_id]
    if not own:
        return np.zeros(len(COCOeval(iouType="bbox").params.recThrs))
    annotations = [dict(a, category_id=category_id, **{IGNORED_CONFUSION: 1})
                   if a["category_id"] in forgiven_ids and a["category_id"] != category_id
                   else a for a in coco_gt.dataset["annotations"]]
    relabelled = quiet_coco(dict(coco_gt.dataset, annotations=annotations))
    # only images with this category's boxes or detections change its curve
    touched = {a["image_id"] for a in annotations if a["category_id"] == category_id}
    touched |= {d["image_id"] for d in own}
    images = [i for i in image_ids if i in touched]
    return evaluated_precision(relabelled, own, images, [0.1], [category_id],
                               ConfusionForgivingCOCOeval)[0, :, 0]


def error_breakdown(coco_gt, detections, image_ids):
    """(curves [7, 101, K] in ERROR_TYPES order, ``has_similar``) for the categories of
    ``coco_gt`` in ascending id order; a category without ground truth keeps -1 curves.
    Without supercategories (``has_similar`` False) the Sim curve is the Loc curve: every
    confusion counts as Oth."""
    category_ids = sorted(coco_gt.getCatIds())
    base = evaluated_precision(coco_gt, detections, image_ids, BREAKDOWN_IOUS, category_ids)
    curves = np.zeros((len(ERROR_TYPES),) + base.shape[1:])
    curves[:3] = base
    similar = similar_category_ids(coco_gt)
    all_ids = set(category_ids)
    for k, category_id in enumerate(category_ids):
        if base[0, 0, k] == -1:
            curves[:, :, k] = -1
            continue
        curves[3, :, k] = (confusion_forgiven_precision(
            coco_gt, detections, image_ids, category_id, similar[category_id])
            if similar else base[2, :, k])
        curves[4, :, k] = confusion_forgiven_precision(coco_gt, detections, image_ids,
                                                       category_id, all_ids)
        curves[5, :, k] = curves[4, :, k] > 0
        curves[6, :, k] = 1
    return curves, similar is not None


def areas_under_curves(curves):
    """(per category [K, 7], overall [7]): mean precision over the recall points of each
    curve; -1 for a category without ground truth, which the overall mean leaves out."""
    per_category = curves.mean(axis=1).T
    defined = per_category[:, 0] > -1
    overall = (per_category[defined].mean(axis=0) if defined.any()
               else np.full(len(ERROR_TYPES), -1.0))
    return per_category, overall


def overall_curves(curves):
    """Curves [7, 101] averaged over the categories with ground truth."""
    defined = curves[0, 0] > -1
    return curves[:, :, defined].mean(axis=2) if defined.any() else np.zeros(curves.shape[:2])
