"""Detect objects in an image, a folder or a glob (pictures and one JSON file), or in a video
(an annotated video and one JSON line per frame).

    python tools/inference.py -f official/vision/detection/configs/fcos_res50_coco_3x_800size.py \
        --pretrained -i cat.jpg -o outputs [--engine lite]
    python tools/inference.py -f CONFIG --model fcos_res50.mge --engine lite -i images/
    python tools/inference.py -f CONFIG --model fcos_res50.onnx --engine onnxruntime -i images/
    python tools/inference.py -f CONFIG -w WEIGHTS --engine openvino --precision bf16 -i images/
    python tools/inference.py -f CONFIG -w WEIGHTS -i street.mp4 -o outputs -b 4

A video is recognized by its extension (.mp4, .m4v, .mov, .mkv, .avi): outputs/street.mp4 gets
its frames with the detections drawn, at the same frame rate and size, and outputs/street.jsonl
one line per frame, {"frame", "time" (seconds), "detections"}; -b frames go through the model
together. Each detection has its class name and the category id of its training set: those a
training checkpoint keeps, COCO's for the released models, or else those of the config's test
annotations under -d.
"""
import argparse
import os

from official.vision.detection.deploy.detector import build_detector
from official.vision.detection.deploy.quantize import DatasetCalibration
from official.vision.detection.engine.file_inference import (
    detect_files, image_paths, label_categories
)
from official.vision.detection.engine.video_inference import (
    detect_video, is_video, require_video, video_outputs
)
from official.vision.detection.cli import add_detector_arguments, run_cli, weight_source
from official.vision.detection.utils.config_file import load_config_module


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_detector_arguments(parser, default_engine="eager")
    parser.add_argument("-i", "--input", required=True,
                        help="image file, folder or glob, or a video file")
    parser.add_argument("-o", "--output-dir", default="outputs")
    parser.add_argument("--thresh", type=float, help="score threshold (default: the config's "
                        "test_vis_threshold)")
    parser.add_argument("-b", "--batch-size", type=int, default=1,
                        help="images (or video frames) per forward")
    parser.add_argument("--tta", action="store_true", help="flip and extra scales, merged")
    parser.add_argument("-d", "--dataset-dir", default="",
                        help="where the config's test annotations are, for the class names of "
                        "weights that do not keep them (a training checkpoint keeps them); "
                        "int8: its train split calibrates the quantization")
    return parser.parse_args(argv)


def detector_of(args):
    """(detector, label categories, picture score threshold) of the arguments."""
    weights = weight_source(args)
    calibration = DatasetCalibration(args.dataset_dir) if args.dataset_dir else None
    detector = build_detector(load_config_module(args.file), weights, args.engine, args.model,
                              precision=args.precision, calibration=calibration)
    cfg = detector.cfg
    thresh = cfg.test_vis_threshold if args.thresh is None else args.thresh
    return detector, label_categories(cfg, weights, args.dataset_dir), thresh


def main():
    args = parse_args()
    # the input is checked before the model is built, which may download weights
    if is_video(args.input):
        require_video(args.input)
        detector, categories, thresh = detector_of(args)
        frames = detect_video(detector, args.input, args.output_dir, categories, thresh,
                              args.batch_size, args.tta)
        print("{} frames -> {}, {}".format(frames, *video_outputs(args.input, args.output_dir)))
        return
    paths = image_paths(args.input)
    detector, categories, thresh = detector_of(args)
    root = args.input if os.path.isdir(args.input) else None
    records, skipped = detect_files(detector, paths, args.output_dir, categories, thresh,
                                    args.batch_size, args.tta, root)
    found = sum(len(r["detections"]) for r in records)
    print("{} images, {} detections -> {}{}".format(
        len(records), found, os.path.join(args.output_dir, "detections.json"),
        "; {} skipped (not readable as images)".format(len(skipped)) if skipped else ""))


if __name__ == "__main__":
    run_cli(main)
