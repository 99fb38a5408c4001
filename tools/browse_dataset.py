"""Look at a COCO-format split of a config: pictures of its ground-truth boxes and class names,
and a check of what training would trip on or silently ignore.

    python tools/browse_dataset.py -f CONFIG -d DATASET_DIR [--split train|val] -o OUT_DIR \
        [--limit N]
    python tools/browse_dataset.py -f CONFIG -d DATASET_DIR --split val --check [-o OUT_DIR]

The split is the config's train_dataset (train) or test_dataset (val), found under -d as
training finds it. -o writes one JPEG per image (the first --limit images of the annotation
file, or all): each box in its class's colour with the class name, "(crowd)" on crowd boxes.
--check reads every image and prints one line per kind of problem, with its count and first
ids; the tool then exits with status 1 and an error line if any is an error, 0 if there are
only warnings (official/vision/detection/data/check.py says which are which, and why).
Training runs the same check without decoding the images.
"""
import argparse

from official.vision.detection.data.browse import draw_split
from official.vision.detection.data.build import check_dataset
from official.vision.detection.data.coco import resolve_dataset_paths
from official.vision.detection.errors import ConfigError
from official.vision.detection.cli import run_cli
from official.vision.detection.utils.config_file import load_config_module


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-f", "--file", required=True, help="config file exposing Net and Cfg")
    parser.add_argument("-d", "--dataset-dir", default="", help="base of relative dataset paths")
    parser.add_argument("--split", choices=("train", "val"), default="train",
                        help="the config's train_dataset or test_dataset")
    parser.add_argument("-o", "--output-dir", help="folder for the pictures")
    parser.add_argument("--limit", type=int, help="pictures of the first N images only")
    parser.add_argument("--check", action="store_true",
                        help="report problems (exit status 1 on errors)")
    return parser.parse_args(argv)


def main():
    args = parse_args()
    if not args.output_dir and not args.check:
        raise ConfigError("give -o OUT_DIR for pictures, --check for a report, or both")
    cfg = load_config_module(args.file).Cfg()
    split = cfg.train_dataset if args.split == "train" else cfg.test_dataset
    report = None
    if args.check:
        report = check_dataset(split, args.dataset_dir, decode_images=True)
        print("\n".join(report.lines()), flush=True)
    if args.output_dir:
        root, ann_file = resolve_dataset_paths(split, args.dataset_dir)
        written, unreadable = draw_split(ann_file, root, args.output_dir, args.limit)
        print("{} pictures -> {}{}".format(len(written), args.output_dir, "; {} images could "
                                           "not be read".format(len(unreadable))
                                           if unreadable else ""))
    if report is not None:
        report.raise_for_errors()


if __name__ == "__main__":
    run_cli(main)
