"""Compare COCO result files of one test set in a single table (the official test_in_table).

    python tools/compare_results.py -a annotations/instances_val2017.json a.json b.json
"""
import argparse

from official.vision.detection.engine.coco_evaluation import (
    evaluate_result_files, metrics_table
)
from official.vision.detection.cli import run_cli


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-a", "--annotations", required=True, help="COCO annotation file")
    parser.add_argument("results", nargs="+", help="COCO result files (from tools/test.py)")
    return parser.parse_args(argv)


def main():
    args = parse_args()
    print(metrics_table(evaluate_result_files(args.annotations, args.results)))


if __name__ == "__main__":
    run_cli(main)
