"""NNCF's post-training quantization of the fp32 ONNX export, through OpenVINO: mAP and
agreement with fp32, as benchmarks/int8_accuracy.py prints them for deploy/quantize.py.

    pip install nncf==3.4.0   # not a dependency of the package: measured, not chosen
    .venv/bin/python benchmarks/int8_nncf.py -f CONFIG -w WEIGHTS -d DATA [--count 64] \
        [--convolutions-only]

Calibrates ``nncf.quantize`` on the same images as deploy/quantize.py (the train split at the
config's test size); with --convolutions-only every other operator type is in its ignored
scope. The quantized model runs on the openvino engine.
"""
import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.int8_accuracy import evaluate  # noqa: E402
from official.vision.detection.data.build import build_test_dataset  # noqa: E402
from official.vision.detection.deploy.onnx_export import export_onnx  # noqa: E402
from official.vision.detection.deploy.onnxruntime_detector import (  # noqa: E402
    OnnxRuntimeDetector
)
from official.vision.detection.deploy.openvino_detector import OpenVINODetector  # noqa: E402
from official.vision.detection.deploy.quantize import calibration_inputs  # noqa: E402
from official.vision.detection.deploy.trace import INPUT_NAMES  # noqa: E402
from official.vision.detection.utils.config_file import load_config_module  # noqa: E402
from official.vision.detection.weights import build_model  # noqa: E402
from tests.detection_matching import agreement  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-f", "--file", required=True)
    parser.add_argument("-w", "--weights", required=True)
    parser.add_argument("-d", "--dataset-dir", required=True)
    parser.add_argument("--count", type=int, default=64)
    parser.add_argument("--convolutions-only", action="store_true")
    args = parser.parse_args()
    import nncf
    import openvino
    model = build_model(load_config_module(args.file), args.weights)
    dataset = build_test_dataset(model.cfg, args.dataset_dir)
    with tempfile.TemporaryDirectory() as directory:
        fp32_path = export_onnx(model, os.path.join(directory, "fp32.onnx"))
        fp32, fp32_dets = evaluate(OnnxRuntimeDetector(fp32_path, model.cfg), dataset,
                                   os.path.join(directory, "fp32.json"))
        network = openvino.Core().read_model(fp32_path)
        ignored = None
        if args.convolutions_only:
            types = {op.get_type_name() for op in network.get_ops()} - {
                "Convolution", "Parameter", "Result", "Constant"}
            ignored = nncf.IgnoredScope(types=sorted(types), validate=False)
        inputs = calibration_inputs(model.cfg, args.dataset_dir, args.count)
        quantized = nncf.quantize(network, nncf.Dataset(inputs, lambda pair: dict(
            zip(INPUT_NAMES, pair))), subset_size=len(inputs), ignored_scope=ignored)
        path = os.path.join(directory, "nncf.xml")
        openvino.save_model(quantized, path)
        metrics, dets = evaluate(OpenVINODetector(path, model.cfg), dataset,
                                 os.path.join(directory, "nncf.json"))
    matched, score_diff = agreement(dets, fp32_dets)
    print("| fp32 | onnxruntime | {:.3f} | {:.3f} | 1 | 0 |".format(fp32["AP"], fp32["AP50"]))
    print("| {} images, NNCF {}{} | openvino | {:.3f} | {:.3f} | {:.3f} | {:.3f} |".format(
        args.count, nncf.__version__, ", convolutions only" if args.convolutions_only else "",
        metrics["AP"], metrics["AP50"], matched, score_diff))


if __name__ == "__main__":
    main()
