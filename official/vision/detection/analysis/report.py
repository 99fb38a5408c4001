"""tools/analyze_results.py: a COCO result file (tools/test.py --out) against its split's ground
truth -> pictures of where the detections go wrong and a short text summary."""
import dataclasses
import os

import cv2
import numpy as np

from ..boxes import xywh_to_xyxy
from ..data.build import build_dataset
from ..errors import ConfigError
from ..utils.config_file import load_config_module
from ..utils.files import atomic_target, write_json_atomic
from ..visualize import draw_boxes, draw_detections, picture_name
from .breakdown import ERROR_TYPES, areas_under_curves, error_breakdown, overall_curves
from .confusion import confusion_matrix, image_errors, match_image
from .plots import plot_breakdown, plot_confusion_matrix, plot_pr_curves
from .results import read_results


@dataclasses.dataclass
class AnalysisOptions:
    dataset_dir: str
    results_path: str
    out_dir: str
    split: str = "val"  # "val": the config's test_dataset; "train": its train_dataset
    iou_threshold: float = 0.5  # of the confusion matrix and the worst images
    # detections below it are left out of both; None: the config's test_vis_threshold, the
    # score above which tools/inference.py draws boxes
    score_threshold: float = None
    worst_images: int = 6


PAIR_MIN_SIDE = 256  # small images are drawn enlarged, so that their labels stay readable
HEADER_HEIGHT = 22


def split_dataset(cfg, dataset_dir, split):
    """The dataset of ``split`` with every image, with objects or not."""
    if split not in ("val", "train"):
        raise ConfigError("--split is val (the config's test_dataset) or train, not {}".format(
            split))
    dataset_cfg = dict(cfg.test_dataset if split == "val" else cfg.train_dataset,
                       remove_images_without_annotations=False)
    return build_dataset(dataset_cfg, dataset_dir, cfg.num_classes, False)


def image_pairs(dataset, detections, options):
    """Per dataset record: the matched (ground-truth label, detected label) pairs
    (confusion.match_image) of its detections above the score threshold."""
    label_of = {cid: label for label, cid in enumerate(dataset.category_ids)}
    by_image = {}
    for d in detections:
        if d["score"] >= options.score_threshold:
            by_image.setdefault(d["image_id"], []).append(d)
    pairs = []
    for record in dataset.records:
        found = sorted(by_image.get(record["image_id"], []), key=lambda d: -d["score"])
        boxes = xywh_to_xyxy(np.array([d["bbox"] for d in found], np.float64).reshape(-1, 4))
        crowd = [a["bbox"] for a in dataset.coco.imgToAnns.get(record["image_id"], [])
                 if a.get("iscrowd", 0)]
        pairs.append(match_image(record["boxes"], record["labels"], boxes,
                                 [label_of[d["category_id"]] for d in found],
                                 options.iou_threshold,
                                 xywh_to_xyxy(np.array(crowd, np.float64).reshape(-1, 4))))
    return pairs


def detections_array(detections, image_id, category_ids):
    """[K, 6] (x1, y1, x2, y2, score, label) of one image's result dicts, as drawn."""
    rows = [list(xywh_to_xyxy(d["bbox"])) + [d["score"], category_ids.index(d["category_id"])]
            for d in detections if d["image_id"] == image_id]
    return np.array(rows, np.float32).reshape(-1, 6)


def side_by_side(dataset, index, detections, score_threshold, errors):
    """Ground truth (left) and the detections above ``score_threshold`` (right) of one image,
    enlarged to PAIR_MIN_SIDE pixels when smaller, under a line naming its (missed, false)."""
    item = dataset[index]
    scale = max(1.0, PAIR_MIN_SIDE / min(item["image"].shape[:2]))
    image = cv2.resize(item["image"], None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    found = detections_array(detections, item["image_id"], dataset.category_ids)
    found[:, :4] *= scale
    names = dataset.class_names
    truth = draw_boxes(image, item["boxes"] * scale, item["labels"],
                       [names[label] for label in item["labels"]])
    drawn = draw_detections(image, found, names, score_threshold)
    gap = np.full((image.shape[0], 4, 3), 255, np.uint8)
    pair = np.hstack([truth, gap, drawn])
    header = np.full((HEADER_HEIGHT, pair.shape[1], 3), 255, np.uint8)
    text = "left: ground truth; right: detections >= {:g}; {} missed, {} false".format(
        score_threshold, *errors)
    cv2.putText(header, text, (4, HEADER_HEIGHT - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([header, pair])


def write_worst_images(dataset, detections, errors, options):
    """The images with the most missed and false boxes, drawn side by side into
    ``out_dir/worst_images/``; their [(file name, missed, false)], worst first."""
    ranked = sorted(range(len(errors)), key=lambda i: (-sum(errors[i]), i))
    worst = [i for i in ranked if sum(errors[i])][:options.worst_images]
    folder = os.path.join(options.out_dir, "worst_images")
    os.makedirs(folder, exist_ok=True)
    listed = []
    for rank, index in enumerate(worst):
        record = dataset.records[index]
        name = "{:02d}_{}".format(rank + 1, picture_name(
            os.path.join(dataset.root, record["file_name"]), dataset.root))
        with atomic_target(os.path.join(folder, name)) as temporary:  # keeps the .jpg suffix
            cv2.imwrite(temporary, side_by_side(dataset, index, detections,
                                                options.score_threshold, errors[index]))
        listed.append((record["file_name"],) + tuple(errors[index]))
    return listed


def breakdown_table(names, per_category, overall):
    """Text table: the area under each error curve, overall and per category."""
    width = max([len("overall")] + [len(n) for n in names])
    lines = ["{:<{w}} ".format("", w=width) + " ".join("{:>5}".format(t) for t in ERROR_TYPES)]
    for name, row in [("overall", overall)] + list(zip(names, per_category)):
        cells = (" ".join("{:5.3f}".format(v) for v in row) if row[0] > -1
                 else "no ground truth")
        lines.append("{:<{w}} {}".format(name, cells, w=width))
    return "\n".join(lines)


def summary_text(summary):
    """The short report written to summary.txt and printed."""
    overall = dict(zip(ERROR_TYPES, summary["breakdown"]["overall"]))
    matrix = np.array(summary["confusion_matrix"])
    k = len(matrix) - 1
    correct = int(np.trace(matrix[:k, :k]))
    wrong_class = int(matrix[:k, :k].sum()) - correct
    lines = [
        "{} detections of {} on {} images of the {} split".format(
            summary["detections"], summary["results"], summary["images"], summary["split"]),
        "",
        "COCO error breakdown: area under each precision-recall curve (bbox, all areas, "
        "100 detections per image); each column forgives one more kind of error",
        breakdown_table(summary["category_names"], summary["breakdown"]["per_category"],
                        summary["breakdown"]["overall"]),
        "",
        "AP50 {:.3f}; forgiving poor localization gives {:.3f} (+{:.3f}), class confusion "
        "{:.3f} (+{:.3f}), false positives on background {:.3f} (+{:.3f}); the missed objects "
        "cost the remaining {:.3f}".format(
            overall["C50"], overall["Loc"], overall["Loc"] - overall["C50"], overall["Oth"],
            overall["Oth"] - overall["Loc"], overall["BG"], overall["BG"] - overall["Oth"],
            1 - overall["BG"]),
    ]
    if not summary["breakdown"]["has_supercategories"]:
        lines.append("Sim unavailable: a category lacks a supercategory in the annotation file, "
                     "so every class confusion counts as Oth (the Sim curve equals Loc)")
    lines += [
        "",
        "At IoU {:g} and score >= {:g}: {} boxes found with their class, {} with a wrong class, "
        "{} missed, {} false detections on background (confusion_matrix.png)".format(
            summary["iou_threshold"], summary["score_threshold"], correct, wrong_class,
            int(matrix[:k, k].sum()), int(matrix[k, :k].sum())),
        "Worst images (missed, false boxes) in worst_images/: " + (", ".join(
            "{} ({}, {})".format(*w) for w in summary["worst_images"]) or "none"),
    ]
    return "\n".join(lines) + "\n"


def run_analysis(config_file, options):
    """Write pr_curves.png, error_breakdown.png, confusion_matrix.png, worst_images/,
    analysis.json and summary.txt into ``options.out_dir``; return the summary text."""
    cfg = load_config_module(config_file).Cfg()
    if options.score_threshold is None:
        options = dataclasses.replace(options, score_threshold=cfg.test_vis_threshold)
    dataset = split_dataset(cfg, options.dataset_dir, options.split)
    image_ids = [r["image_id"] for r in dataset.records]
    detections = read_results(options.results_path, image_ids, dataset.category_ids)
    curves, has_similar = error_breakdown(dataset.coco, detections, image_ids)
    per_category, overall = areas_under_curves(curves)
    pairs = image_pairs(dataset, detections, options)
    matrix = confusion_matrix(pairs, len(dataset.category_ids))
    os.makedirs(options.out_dir, exist_ok=True)
    recall = np.linspace(0, 1, curves.shape[1])
    names = dataset.class_names
    plot_pr_curves(recall, curves, names, os.path.join(options.out_dir, "pr_curves.png"))
    plot_breakdown(recall, overall_curves(curves), curves, names,
                   os.path.join(options.out_dir, "error_breakdown.png"))
    plot_confusion_matrix(matrix, names, options.iou_threshold, options.score_threshold,
                          os.path.join(options.out_dir, "confusion_matrix.png"))
    worst = write_worst_images(dataset, detections, [image_errors(p) for p in pairs], options)
    summary = dict(
        results=options.results_path, split=options.split, images=len(image_ids),
        detections=len(detections), category_names=names, error_types=list(ERROR_TYPES),
        breakdown=dict(overall=overall.tolist(), per_category=per_category.tolist(),
                       has_supercategories=has_similar),
        iou_threshold=options.iou_threshold, score_threshold=options.score_threshold,
        confusion_matrix=matrix.tolist(), worst_images=worst)
    write_json_atomic(summary, os.path.join(options.out_dir, "analysis.json"))
    text = summary_text(summary)
    with atomic_target(os.path.join(options.out_dir, "summary.txt")) as temporary:
        with open(temporary, "w") as f:
            f.write(text)
    return text
