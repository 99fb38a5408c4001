"""Where the detections of a COCO result file go wrong: pictures and a short summary.

    python tools/test.py -f CONFIG -w WEIGHTS -d DATASET_DIR --out results.json
    python tools/analyze_results.py -f CONFIG -d DATASET_DIR --results results.json -o OUT_DIR

The ground truth is the config's test_dataset (--split val) or train_dataset (--split train),
found under -d as tools/test.py finds it. OUT_DIR receives:
  pr_curves.png         precision against recall per category at IoU 0.5 and 0.75
  error_breakdown.png   the COCO error breakdown (C75, C50, Loc, Sim, Oth, BG, FN), overall and
                        per category; Sim needs the categories' supercategory field
  confusion_matrix.png  ground truth against detected class, with background, at --iou and
                        --score
  worst_images/         the images with the most missed and false boxes: ground truth on the
                        left, detections above --score on the right
  analysis.json, summary.txt  the numbers; the summary is printed too
"""
import argparse

from official.vision.detection.analysis.report import AnalysisOptions, run_analysis
from official.vision.detection.cli import run_cli


def parse_args(argv=None):
    defaults = AnalysisOptions(dataset_dir="", results_path="", out_dir="")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-f", "--file", required=True, help="config file exposing Net and Cfg")
    parser.add_argument("-d", "--dataset-dir", default="", help="base of relative dataset paths")
    parser.add_argument("--split", choices=("val", "train"), default=defaults.split,
                        help="the config's test_dataset (val) or train_dataset (train)")
    parser.add_argument("--results", required=True, help="COCO result file (tools/test.py --out)")
    parser.add_argument("-o", "--output-dir", required=True, help="folder for the analysis")
    parser.add_argument("--iou", type=float, default=defaults.iou_threshold,
                        help="IoU of a match in the confusion matrix and the worst images")
    parser.add_argument("--score", type=float,
                        help="detections below this score are left out of the confusion "
                        "matrix and the worst images (default: the config's "
                        "test_vis_threshold)")
    parser.add_argument("--worst", type=int, default=defaults.worst_images,
                        help="how many worst images to draw")
    return parser.parse_args(argv)


def main():
    args = parse_args()
    print(run_analysis(args.file, AnalysisOptions(
        dataset_dir=args.dataset_dir, results_path=args.results, out_dir=args.output_dir,
        split=args.split, iou_threshold=args.iou, score_threshold=args.score,
        worst_images=args.worst)), end="")


if __name__ == "__main__":
    run_cli(main)
