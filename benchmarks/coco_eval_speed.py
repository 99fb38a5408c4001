"""COCO bbox evaluation of a COCO-val-sized result file: faster-coco-eval against pycocotools
(docs/benchmarks.md, "COCO evaluation").

    .venv/bin/python benchmarks/coco_eval_speed.py make -o /tmp/cocoeval    # gt.json, results.json
    .venv/bin/python benchmarks/coco_eval_speed.py eval --library pycocotools /tmp/cocoeval
    .venv/bin/python benchmarks/coco_eval_speed.py eval --library faster /tmp/cocoeval
    .venv/bin/python benchmarks/coco_eval_speed.py compare /tmp/cocoeval

make: synthetic ground truth shaped like COCO val2017 (5000 images, 80 categories, ~7.3 boxes
an image of every size, 1% crowd regions) and 100 detections an image: near a box (its class
or another, shifted by up to a third of its size) or anywhere, with random scores (higher on
the right class near a box), so that matches happen at every IoU threshold and the
100-detection cut matters.
eval: one whole evaluation as the package runs it (load both files, evaluate, accumulate,
summarize), timed from outside for the whole process; prints the 12 numbers.
compare: both libraries on the file, the 12 numbers and every category's AP side by side.
Runs with the project's .venv and faster-coco-eval.
"""
import argparse
import contextlib
import io
import json
import os

import numpy as np

from official.vision.detection.engine.coco_evaluation import COCO_METRICS, per_class_metrics


def random_boxes(rng, count, width, height):
    """[count, 4] xywh boxes inside a width x height image, sides from 4 px to the image's."""
    sides = np.exp(rng.uniform(np.log(4), np.log([width, height]), (count, 2)))
    corners = rng.uniform(0, 1, (count, 2)) * ([width, height] - sides)
    return np.concatenate([corners, sides], axis=1)


def synthetic_split(num_images, detections_per_image, num_categories, seed):
    """(annotation dict, result list) of the benchmark."""
    rng = np.random.RandomState(seed)
    categories = [{"id": i + 1, "name": "class{}".format(i + 1), "supercategory": "all"}
                  for i in range(num_categories)]
    images, annotations, results = [], [], []
    for image_id in range(1, num_images + 1):
        width, height = int(rng.randint(320, 641)), int(rng.randint(240, 481))
        images.append({"id": image_id, "file_name": "{}.jpg".format(image_id),
                       "width": width, "height": height})
        boxes = random_boxes(rng, rng.poisson(7.3), width, height)
        labels = rng.randint(1, num_categories + 1, len(boxes))
        for box, label in zip(boxes, labels):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": int(label), "bbox": box.round(2).tolist(),
                                "area": float(box[2] * box[3]),
                                "iscrowd": int(rng.uniform() < 0.01)})
        near = min(len(boxes) * 3, detections_per_image // 2)
        picked = rng.randint(0, max(len(boxes), 1), near)
        moved = boxes[picked] + rng.uniform(-1 / 3, 1 / 3, (near, 4)) * boxes[picked][:, [2, 3,
                                                                                         2, 3]]
        moved[:, 2:] = np.maximum(moved[:, 2:], 1)
        kept_label = rng.uniform(size=near) < 0.8
        near_labels = np.where(kept_label, labels[picked] if len(boxes) else 1,
                               rng.randint(1, num_categories + 1, near))
        anywhere = random_boxes(rng, detections_per_image - near, width, height)
        # a detector scores its good guesses higher: AP lands near a real model's
        scores = np.concatenate([np.where(kept_label, rng.uniform(0.3, 1, near),
                                          rng.uniform(0.05, 0.6, near)),
                                 rng.uniform(0.01, 0.5, len(anywhere))])
        for box, label, score in zip(np.concatenate([moved, anywhere]), np.concatenate(
                [near_labels, rng.randint(1, num_categories + 1, len(anywhere))]), scores):
            results.append({"image_id": image_id, "category_id": int(label),
                            "bbox": box.round(2).tolist(), "score": round(float(score), 5)})
    return {"images": images, "annotations": annotations, "categories": categories}, results


def evaluate(library, gt_file, results_file):
    """(the 12 numbers, COCOeval object, ground-truth COCO) of one library's whole run. Both
    load the files with pycocotools' COCO, as the package does; only the COCOeval differs."""
    from pycocotools.coco import COCO
    if library == "pycocotools":
        from pycocotools.cocoeval import COCOeval
    else:
        from faster_coco_eval import COCOeval_faster as COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(gt_file)
        with open(results_file) as f:
            coco_eval = COCOeval(coco, coco.loadRes(json.load(f)), "bbox")
        coco_eval.params.imgIds = sorted(coco.getImgIds())
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return [float(v) for v in coco_eval.stats[:12]], coco_eval, coco


def compare(gt_file, results_file):
    """Print both libraries' numbers; return the largest absolute difference."""
    runs = {library: evaluate(library, gt_file, results_file)
            for library in ("pycocotools", "faster")}
    worst = 0.0
    for n, name in enumerate(COCO_METRICS):
        a, b = runs["pycocotools"][0][n], runs["faster"][0][n]
        worst = max(worst, abs(a - b))
        print("{:6} pycocotools {:.12f} faster-coco-eval {:.12f}".format(name, a, b))
    classes = {library: per_class_metrics(coco, coco_eval, sorted(coco.getImgIds()))
               for library, (_, coco_eval, coco) in runs.items()}
    class_diff = max(abs(a[key] - b[key]) for a, b in zip(classes["pycocotools"],
                                                         classes["faster"])
                     for key in ("AP", "AP50"))
    print("per-class AP and AP50 of {} categories: largest difference {:.3g}".format(
        len(classes["faster"]), class_diff))
    return max(worst, class_diff)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("make")
    make.add_argument("-o", "--out", required=True)
    make.add_argument("--images", type=int, default=5000)
    make.add_argument("--per-image", type=int, default=100)
    make.add_argument("--categories", type=int, default=80)
    make.add_argument("--seed", type=int, default=0)
    run = commands.add_parser("eval")
    run.add_argument("--library", choices=("pycocotools", "faster"), required=True)
    run.add_argument("dir")
    both = commands.add_parser("compare")
    both.add_argument("dir")
    args = parser.parse_args()
    if args.command == "make":
        os.makedirs(args.out, exist_ok=True)
        gt, results = synthetic_split(args.images, args.per_image, args.categories, args.seed)
        for name, obj in (("gt.json", gt), ("results.json", results)):
            with open(os.path.join(args.out, name), "w") as f:
                json.dump(obj, f)
        print("{} images, {} boxes, {} detections -> {}".format(
            len(gt["images"]), len(gt["annotations"]), len(results), args.out))
        return
    files = (os.path.join(args.dir, "gt.json"), os.path.join(args.dir, "results.json"))
    if args.command == "eval":
        print(" ".join("{:.6f}".format(v) for v in evaluate(args.library, *files)[0]))
    else:
        print("largest difference {:.3g}".format(compare(*files)))


if __name__ == "__main__":
    main()
