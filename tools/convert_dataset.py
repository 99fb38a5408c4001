"""Convert a dataset in Pascal VOC, YOLO or LabelMe form into a COCO-format dataset folder.

    python tools/convert_dataset.py --from voc VOCdevkit/VOC2007 -o data/voc07 --split train
    python tools/convert_dataset.py --from yolo my_set/data.yaml -o data/my_set --split val
    python tools/convert_dataset.py --from labelme labelme_jsons/ -o data/parts --split train \
        --classes classes.txt

It writes OUT/annotations/SPLIT.json and the split's images under OUT/SPLIT/; several splits go
into one OUT with the same category ids. The dataset check (browse_dataset.py --check) runs on
the result and its report is printed. A bad source ends with one error line naming the file
and line, and leaves OUT as it was. docs/datasets.md describes each format.
"""
import argparse

from official.vision.detection.cli import run_cli
from official.vision.detection.data.converters.convert import READERS, convert_dataset


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="source_format", required=True, choices=list(READERS),
                        help="the source's format")
    parser.add_argument("source", help="voc: a year folder (Annotations/, JPEGImages/, "
                        "ImageSets/Main/); yolo: its data.yaml; labelme: a folder of its JSON "
                        "files")
    parser.add_argument("-o", "--output-dir", required=True,
                        help="the dataset folder to write (or add a split to)")
    parser.add_argument("--split", required=True, help="the split's name: its VOC image set, "
                        "its data.yaml entry, or for LabelMe just the name to write")
    parser.add_argument("--classes", help="voc, labelme: a file of class names, one a line, "
                        "fixing the classes and their ids 1..K (default: the names found, "
                        "sorted, after those already in OUT)")
    return parser.parse_args(argv)


def main():
    args = parse_args()
    conversion = convert_dataset(args.source_format, args.source, args.output_dir, args.split,
                                 args.classes)
    print("\n".join(conversion.lines()), flush=True)
    conversion.report.raise_for_errors()


if __name__ == "__main__":
    run_cli(main)
