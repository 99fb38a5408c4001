"""mAP of int8 quantization settings against fp32 on a trained model, and their detections'
agreement with fp32's.

    .venv/bin/python benchmarks/int8_accuracy.py -f CONFIG -w WEIGHTS -d DATA \
        [--counts 16 64 128] [--methods MinMax Entropy Percentile] [--keep-fp32 none head stem]

Exports the model to ONNX once, evaluates it in fp32 on onnxruntime over the config's test
split, then for every setting (calibration image count, calibration method, per-channel or
per-tensor weights, layers kept in fp32) quantizes it with deploy/quantize.py and evaluates the
int8 file on onnxruntime (and on OpenVINO when it is installed). One Markdown row per setting:
AP, AP50, the fraction of fp32's detections that the int8 run also has (same image and class,
IoU >= 0.5) and the largest score difference between such pairs.
"""
import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from official.vision.detection.data.build import build_test_dataset  # noqa: E402
from official.vision.detection.deploy.onnx_export import export_onnx  # noqa: E402
from official.vision.detection.deploy.onnxruntime_detector import (  # noqa: E402
    OnnxRuntimeDetector
)
from official.vision.detection.deploy.quantize import (  # noqa: E402
    KEEP_FP32, QuantizerSettings, calibration_inputs, quantize_onnx
)
from official.vision.detection.engine.coco_evaluation import (  # noqa: E402
    detect_dataset, score_records
)
from official.vision.detection.predictor import Predictor  # noqa: E402
from official.vision.detection.utils.config_file import load_config_module  # noqa: E402
from official.vision.detection.weights import build_model  # noqa: E402
from tests.detection_matching import agreement  # noqa: E402


def evaluate(detector, dataset, results_path):
    records = detect_dataset(Predictor(detector), dataset, batch_size=1, num_workers=0)
    metrics, _ = score_records(dataset, records, results_path)
    return metrics, [record["det_res"] for record in records]


def openvino_detector(path, cfg):
    """The OpenVINO engine of the other branch when it is there; None otherwise."""
    try:
        from official.vision.detection.deploy.openvino_detector import OpenVINODetector
    except ImportError:
        return None
    return OpenVINODetector(path, cfg)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-f", "--file", required=True)
    parser.add_argument("-w", "--weights", required=True)
    parser.add_argument("-d", "--dataset-dir", required=True)
    parser.add_argument("--counts", type=int, nargs="+", default=[16, 64, 128])
    parser.add_argument("--methods", nargs="+", default=["MinMax"])
    parser.add_argument("--per-tensor", action="store_true", help="also per-tensor weights")
    parser.add_argument("--keep-fp32", nargs="+", default=["none"], choices=sorted(KEEP_FP32))
    args = parser.parse_args()
    module = load_config_module(args.file)
    model = build_model(module, args.weights)
    dataset = build_test_dataset(model.cfg, args.dataset_dir)
    with tempfile.TemporaryDirectory() as directory:
        fp32_path = export_onnx(model, os.path.join(directory, "fp32.onnx"))
        fp32, fp32_dets = evaluate(OnnxRuntimeDetector(fp32_path, model.cfg), dataset,
                                   os.path.join(directory, "fp32.json"))
        print("| setting | engine | AP | AP50 | matched | max score diff |")
        print("| --- | --- | --- | --- | --- | --- |")
        print("| fp32 | onnxruntime | {:.3f} | {:.3f} | 1 | 0 |".format(fp32["AP"], fp32["AP50"]),
              flush=True)
        for count in args.counts:
            inputs = calibration_inputs(model.cfg, args.dataset_dir, count)
            for method in args.methods:
                for per_channel in [True] + ([False] if args.per_tensor else []):
                    for keep in args.keep_fp32:
                        settings = QuantizerSettings(method, per_channel, KEEP_FP32[keep])
                        int8_path = quantize_onnx(fp32_path, os.path.join(directory, "int8.onnx"),
                                                  inputs, settings)
                        name = "{} images, {}, {}, fp32: {}".format(
                            count, method, "per channel" if per_channel else "per tensor", keep)
                        engines = {"onnxruntime": OnnxRuntimeDetector(int8_path, model.cfg),
                                   "openvino": openvino_detector(int8_path, model.cfg)}
                        for engine, detector in engines.items():
                            if detector is None:
                                continue
                            metrics, dets = evaluate(detector, dataset,
                                                     os.path.join(directory, "int8.json"))
                            matched, score_diff = agreement(dets, fp32_dets)
                            print("| {} | {} | {:.3f} | {:.3f} | {:.3f} | {:.3f} |".format(
                                name, engine, metrics["AP"], metrics["AP50"], matched,
                                score_diff), flush=True)
    print("fp32 mAP={:.4f} on {} images".format(fp32["AP"], len(dataset)))


if __name__ == "__main__":
    main()
