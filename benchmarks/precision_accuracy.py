"""mAP of a trained demo model in fp32 and bf16, and how far bf16's detections are from fp32's.

    .venv/bin/python benchmarks/precision_accuracy.py -w demo_output/train -d demo_output/data \
        [--precisions fp32 bf16]

The demo model (configs/fcos_res18_synthetic_demo.py) trains with BN. In eval mode a BN is a
fixed affine map of its running statistics, which is what FrozenBN computes from the same four
tensors, so the weights are evaluated with the demo config's norm set to FrozenBN: eager in
fp32 (the official figure) and exported to ONNX (the FrozenBNs folded) for the file engines.
Each evaluation is `tools/test.py`; its COCO table is printed as it is. Agreement: the share
of the fp32 run's detections scoring at least AGREEMENT_SCORE that have a detection of the same
image and class with IoU >= AGREEMENT_IOU in the other run, and the score differences of
those pairs.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from official.vision.detection.boxes import pairwise_iou, xywh_to_xyxy  # noqa: E402

DEMO_CONFIG = "official/vision/detection/configs/fcos_res18_synthetic_demo.py"
AGREEMENT_SCORE, AGREEMENT_IOU = 0.3, 0.9
FROZEN_BN_CONFIG = """
from official.vision.detection.configs import fcos_res18_synthetic_demo as demo


class Cfg(demo.Cfg):
    def __init__(self):
        super().__init__()
        self.backbone_norm = "FrozenBN"  # BN in eval mode: the same map of the same tensors


Net = demo.Net
"""


def evaluate(config, data, results, *arguments):
    """tools/test.py's mAP; its output is printed."""
    command = [sys.executable, "tools/test.py", "-f", config, "-d", data, "-b", "4",
               "--workers", "0", "--out", results] + list(arguments)
    print("$", " ".join(command), flush=True)
    output = subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.PIPE,
                            text=True).stdout
    print(output, flush=True)
    return float(re.findall(r"^mAP=([0-9.]+)$", output, re.MULTILINE)[-1])


def agreement(reference_path, other_path):
    """(share of the reference's confident detections matched, median and largest score
    difference of the matches)."""
    with open(reference_path) as f:
        reference = [d for d in json.load(f) if d["score"] >= AGREEMENT_SCORE]
    with open(other_path) as f:
        other = json.load(f)
    by_key = {}
    for detection in other:
        by_key.setdefault((detection["image_id"], detection["category_id"]), []).append(detection)
    differences = []
    for detection in reference:
        candidates = by_key.get((detection["image_id"], detection["category_id"]), [])
        if not candidates:
            continue
        iou = pairwise_iou(np.array([xywh_to_xyxy(detection["bbox"])]),
                           np.array([xywh_to_xyxy(c["bbox"]) for c in candidates]))[0]
        best = int(np.argmax(iou))
        if iou[best] >= AGREEMENT_IOU:
            differences.append(abs(candidates[best]["score"] - detection["score"]))
    return (len(differences) / max(len(reference), 1), float(np.median(differences)),
            float(np.max(differences)), len(reference))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-w", "--weights", required=True, help="the demo's trained checkpoint")
    parser.add_argument("-d", "--dataset-dir", required=True)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--engine", default="openvino")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        config = os.path.join(directory, "demo_frozen_bn.py")
        with open(config, "w") as f:
            f.write(FROZEN_BN_CONFIG)
        eager = os.path.join(directory, "eager.json")
        rows = [("eager fp32 (BN config)", evaluate(DEMO_CONFIG, args.dataset_dir, eager, "-w",
                                                    args.weights), None)]
        for precision in args.precisions:
            results = os.path.join(directory, precision + ".json")
            mean_ap = evaluate(config, args.dataset_dir, results, "-w", args.weights,
                               "--engine", args.engine, "--precision", precision)
            rows.append(("{} {}".format(args.engine, precision), mean_ap,
                         agreement(eager, results)))
    print("run | mAP | confident eager detections matched (score >= {}, IoU >= {}) | score "
          "difference median / max".format(AGREEMENT_SCORE, AGREEMENT_IOU))
    for name, mean_ap, agreed in rows:
        if agreed is None:
            print("{} | {:.4f} | - | -".format(name, mean_ap))
        else:
            print("{} | {:.4f} | {:.1%} of {} | {:.4f} / {:.4f}".format(
                name, mean_ap, agreed[0], agreed[3], agreed[1], agreed[2]))


if __name__ == "__main__":
    sys.exit(main())
