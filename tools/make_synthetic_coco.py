"""Write a small synthetic COCO-format detection dataset (shapes on textured backgrounds).

Run from the project root, e.g.
    python tools/make_synthetic_coco.py -o demo_output/data --train 200 --val 50 --size 128-192
"""
import argparse

from official.vision.detection.data.synthetic import (
    CATEGORIES, OBJECT_SCALE, make_synthetic_coco, parse_image_size,
)
from official.vision.detection.cli import run_cli


def image_size_arg(text):
    try:
        return parse_image_size(text)
    except ValueError as error:  # argparse shows the message of this error type only
        raise argparse.ArgumentTypeError(str(error))


def scale_range_arg(text):
    try:
        low, high = (float(v) for v in text.split("-"))
    except ValueError:
        raise argparse.ArgumentTypeError("expected LOW-HIGH, e.g. 0.2-0.6, got {!r}".format(text))
    return low, high


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-o", "--output-dir", required=True, help="dataset root to write")
    parser.add_argument("--train", type=int, default=200, help="number of train images")
    parser.add_argument("--val", type=int, default=50, help="number of val images")
    parser.add_argument("--size", type=image_size_arg, default=160,
                        help="image size: 160, HxW like 160x128, or a range like 128-192 "
                             "(each side drawn per image); default 160")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--max-objects", type=int, default=6,
                        help="most objects per image (default 6)")
    parser.add_argument("--object-scale", type=scale_range_arg, default=OBJECT_SCALE,
                        help="object extent as a fraction of the short image side, LOW-HIGH "
                             "(default {}-{})".format(*OBJECT_SCALE))
    parser.add_argument("--classes", type=int, default=len(CATEGORIES),
                        help="number of shape classes, 1-{} (default {})".format(
                            len(CATEGORIES), len(CATEGORIES)))
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    summary = make_synthetic_coco(args.output_dir, num_train=args.train, num_val=args.val,
                                  image_size=args.size, seed=args.seed, num_classes=args.classes,
                                  max_objects=args.max_objects, object_scale=args.object_scale)
    for split, info in summary.items():
        print("{}: {} images ({} without objects), {} boxes -> {}, {}".format(
            split, info.num_images, info.num_empty, info.num_annotations, info.image_dir,
            info.annotation_file))


if __name__ == "__main__":
    run_cli(main)
