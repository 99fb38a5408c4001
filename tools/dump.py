"""Write an FCOS model as a MegEngine Lite graph or an ONNX model (BN folded, any input size).

    python tools/dump.py -f official/vision/detection/configs/fcos_res18_coco_3x_800size.py \
        -w fcos_res18.pkl -o fcos_res18.mge [--layout auto]
    python tools/dump.py -f CONFIG -w WEIGHTS -o fcos_res18.onnx   # ONNX, for onnxruntime
    python tools/dump.py -f CONFIG -w WEIGHTS -o fcos_int8.onnx --precision int8 -d DATA
"""
import argparse

import megengine as mge

from official.vision.detection.benchmark.flops import count_conv_flops, count_parameters
from official.vision.detection.deploy.layout import LAYOUTS
from official.vision.detection.deploy.lite_export import dump_inference
from official.vision.detection.deploy.detector import PRECISIONS
from official.vision.detection.deploy.onnx_export import OPSET, export_onnx
from official.vision.detection.deploy.quantize import (
    CALIBRATION_IMAGES, DatasetCalibration, quantize_model
)
from official.vision.detection.errors import ConfigError
from official.vision.detection.cli import run_cli
from official.vision.detection.utils.config_file import load_config_module
from official.vision.detection.weights import build_model

logger = mge.get_logger(__name__)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-f", "--file", required=True,
                        help="config file defining Net and Cfg")
    parser.add_argument("-w", "--weights",
                        help="state_dict or checkpoint (path or URL); omit for random weights")
    parser.add_argument("-o", "--output", required=True,
                        help="the file to write: ONNX if it ends in .onnx, else a Lite .mge")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="int8: an ONNX model quantized after training, calibrated on "
                             "images of the config's train split under -d")
    parser.add_argument("-d", "--dataset-dir", help="int8: base of the config's dataset paths")
    parser.add_argument("--calibration-images", type=int, default=CALIBRATION_IMAGES,
                        help="int8: training images to calibrate on")
    parser.add_argument("--layout", choices=LAYOUTS, default="auto",
                        help="Lite only: auto: NCHW88 if this model's NCHW88 graph runs right "
                             "on this CPU (tried in a child process), else NCHW")
    parser.add_argument("--flops-size", type=int, nargs=2, metavar=("HEIGHT", "WIDTH"),
                        help="input size for the FLOP count (default: the config's test "
                             "short and max sizes)")
    return parser.parse_args(argv)


def main():
    args = parse_args()
    if args.precision == "int8" and not (args.output.endswith(".onnx") and args.dataset_dir):
        raise ConfigError("--precision int8 writes an ONNX model calibrated on your images: "
                          "give -o MODEL.onnx and -d DATA")
    if args.weights is None:
        logger.warning("no weights given (-w): dumping random weights, fit for timing only")
    model = build_model(load_config_module(args.file), args.weights)
    height, width = args.flops_size or (model.cfg.test_image_short_size,
                                        model.cfg.test_image_max_size)
    flops = count_conv_flops(model, (1, 3, height, width))
    print("conv GFLOPs (2 x MACs) at 1x3x{}x{}: {:.1f}".format(height, width, flops / 1e9))
    print("parameters: {:.2f} M".format(count_parameters(model) / 1e6))
    if args.precision == "int8":
        quantize_model(model, args.output, DatasetCalibration(
            args.dataset_dir, args.calibration_images).inputs(model.cfg))
        print("wrote {} (ONNX opset 13, int8)".format(args.output))
        return
    if args.output.endswith(".onnx"):
        export_onnx(model, args.output)
        print("wrote {} (ONNX opset {})".format(args.output, OPSET))
        return
    layout = dump_inference(model, args.output, layout=args.layout)
    print("wrote {} ({} layout)".format(args.output, layout))


if __name__ == "__main__":
    run_cli(main)
