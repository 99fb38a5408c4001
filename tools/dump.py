"""Write an FCOS model as a MegEngine Lite graph, an ONNX model or an OpenVINO IR (BN folded,
any input size).

    python tools/dump.py -f official/vision/detection/configs/fcos_res18_coco_3x_800size.py \
        -w fcos_res18.pkl -o fcos_res18.mge [--layout auto]
    python tools/dump.py -f CONFIG -w WEIGHTS -o fcos_res18.onnx   # for onnxruntime, openvino
    python tools/dump.py -f CONFIG -w WEIGHTS -o fcos_res18.xml    # OpenVINO IR (+ .bin)
    python tools/dump.py -f CONFIG -w WEIGHTS -o fcos_int8.onnx --precision int8 -d DATA
"""
import argparse
import functools

import megengine as mge

from official.vision.detection.benchmark.flops import count_conv_flops, count_parameters
from official.vision.detection.deploy.layout import LAYOUTS
from official.vision.detection.deploy.lite_export import dump_inference
from official.vision.detection.deploy.onnx_export import OPSET, export_onnx
from official.vision.detection.deploy.openvino_detector import export_openvino_ir
from official.vision.detection.deploy.precision import PRECISIONS
from official.vision.detection.deploy.quantize import (
    CALIBRATION_IMAGES, DatasetCalibration, quantize_model
)
from official.vision.detection.errors import ConfigError
from official.vision.detection.cli import run_cli
from official.vision.detection.utils.config_file import load_config_module
from official.vision.detection.weights import build_model

logger = mge.get_logger(__name__)
INT8_NOTE = {"fp32": "", "int8": ", int8"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-f", "--file", required=True,
                        help="config file defining Net and Cfg")
    parser.add_argument("-w", "--weights",
                        help="state_dict or checkpoint (path or URL); omit for random weights")
    parser.add_argument("-o", "--output", required=True,
                        help="the file to write: ONNX if it ends in .onnx, an OpenVINO IR if "
                             "it ends in .xml (weights in the .bin beside it), else a Lite .mge")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="int8: the post-training quantized ONNX model or IR; bf16 is "
                             "chosen where the model runs (--precision bf16 of test.py, "
                             "inference.py, benchmark.py), its file is the fp32 one")
    parser.add_argument("-d", "--dataset-dir",
                        help="int8: base of the config's dataset paths; its train split's "
                             "images calibrate the quantization")
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
    if args.precision == "bf16":
        raise ConfigError("bf16 is chosen where the model runs: dump it in fp32 and run it with "
                          "--engine openvino --precision bf16")
    if args.precision == "int8" and not args.output.endswith((".onnx", ".xml")):
        raise ConfigError("an int8 model is an ONNX model or OpenVINO IR: give -o MODEL.onnx or "
                          "MODEL.xml")
    if args.precision == "int8" and not args.dataset_dir:
        raise ConfigError("int8 is calibrated on your images: give -d DATA (the config's train "
                          "split is used)")
    if args.weights is None:
        logger.warning("no weights given (-w): dumping random weights, fit for timing only")
    model = build_model(load_config_module(args.file), args.weights)
    height, width = args.flops_size or (model.cfg.test_image_short_size,
                                        model.cfg.test_image_max_size)
    flops = count_conv_flops(model, (1, 3, height, width))
    print("conv GFLOPs (2 x MACs) at 1x3x{}x{}: {:.1f}".format(height, width, flops / 1e9))
    print("parameters: {:.2f} M".format(count_parameters(model) / 1e6))
    write_onnx = export_onnx
    if args.precision == "int8":
        write_onnx = functools.partial(quantize_model, inputs=DatasetCalibration(
            args.dataset_dir, args.calibration_images).inputs(model.cfg))
    if args.output.endswith(".onnx"):
        write_onnx(model, args.output)
        print("wrote {} (ONNX opset {}{})".format(args.output, OPSET, INT8_NOTE[args.precision]))
        return
    if args.output.endswith(".xml"):
        export_openvino_ir(model, args.output, write_onnx)
        print("wrote {} and its .bin (OpenVINO IR{})".format(args.output,
                                                            INT8_NOTE[args.precision]))
        return
    layout = dump_inference(model, args.output, layout=args.layout)
    print("wrote {} ({} layout)".format(args.output, layout))


if __name__ == "__main__":
    run_cli(main)
