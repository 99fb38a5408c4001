"""int8 post-training quantization of the ONNX export, calibrated on the user's own images.

The fp32 ONNX file of ``export_onnx`` is quantized by onnxruntime's ``quantize_static``: QDQ
format (QuantizeLinear/DequantizeLinear pairs around each quantized Conv, which onnxruntime and
OpenVINO both fuse into int8 convolutions), weights int8 per output channel, activations uint8
per tensor with ranges observed on calibration images. Only convolutions are quantized (they
are nearly all the arithmetic); the layers that ``KEEP_FP32`` names stay fp32.

Calibration images are the config's training split under the dataset folder, resized exactly
as inference resizes them (``predictor.process_inputs`` at the config's test size). The file
is written once per (config, weights, calibration set, settings) under the cache folder
(``int8_model``), so later runs load it instead of calibrating again.
"""
import dataclasses
import hashlib
import json
import os
import tempfile

import megengine as mge
import numpy as np
from tqdm import tqdm

from ..data.build import build_train_dataset
from ..data.coco import read_image, resolve_dataset_paths
from ..errors import DatasetError
from ..predictor import process_inputs
from ..utils.files import atomic_target, write_json_atomic
from ..utils.machine import cpu_vendor_and_flags
from ..weights import build_model
from .engine_choice import file_identity, package_cache_dir, weights_identity
from .onnx_export import export_onnx
from .optional_packages import import_optional
from .trace import INPUT_NAMES

logger = mge.get_logger(__name__)

PURPOSE = "int8 quantization"
QDQ_OPSET = 13
CALIBRATION_IMAGES = 64  # mAP at 16, 64 and 128 images: docs/precision.md
# convolutions that may stay fp32, by the module that writes their output (the ONNX tensor
# names of export_onnx): the head's last ones, whose outputs are the scores and boxes, and the
# first one, which reads the image
HEAD_OUTPUT_CONVS = ("head.cls_score.", "head.bbox_pred.", "head.ctrness.")
STEM_CONV = ("backbone.bottom_up.conv1.",)
KEEP_FP32 = {"none": (), "head": HEAD_OUTPUT_CONVS, "stem": STEM_CONV,
             "head+stem": HEAD_OUTPUT_CONVS + STEM_CONV}


def cpu_has_vnni(cpuinfo="/proc/cpuinfo"):
    """Whether the CPU multiplies uint8 by int8 with 32-bit sums (AVX512-VNNI, AVX-VNNI or
    AMX-INT8). Without, x86 int8 kernels add pairs of products in 16 bits (VPMADDUBSW), which
    can saturate: onnxruntime advises weights of 7 bits there (``reduce_range``)."""
    _, flags = cpu_vendor_and_flags(cpuinfo)
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & flags)


@dataclasses.dataclass(frozen=True)
class QuantizerSettings:
    """What ``quantize_static`` is asked for; part of the cache key."""
    # onnxruntime's CalibrationMethod. Its Entropy and Percentile (1.23.2) stack all images'
    # activations into one array and fail on images of different sizes: MinMax
    method: str = "MinMax"
    per_channel: bool = True
    # convolutions left in fp32: starts of their output's names (see KEEP_FP32)
    keep_fp32: tuple = ()
    reduce_range: bool = dataclasses.field(default_factory=lambda: not cpu_has_vnni())


DEFAULT_SETTINGS = QuantizerSettings()


def calibration_inputs(cfg, dataset_dir, count=CALIBRATION_IMAGES):
    """(image [1, 3, h, w], im_info [1, 4]) of up to ``count`` training images spread evenly
    over the config's train split, as inference feeds them to the network."""
    dataset = build_train_dataset(cfg, dataset_dir)
    if len(dataset) == 0:
        _, ann_file = resolve_dataset_paths(cfg.train_dataset, dataset_dir)
        raise DatasetError("{} lists no images with objects to calibrate int8 on: give -d a "
                           "dataset whose train split has images".format(ann_file))
    indices = np.unique(np.linspace(0, len(dataset) - 1, min(count, len(dataset))).round())
    return [process_inputs(dataset[int(i)]["image"], cfg.test_image_short_size,
                           cfg.test_image_max_size) for i in indices]


class _CalibrationReader:
    """onnxruntime's CalibrationDataReader over (image, im_info) pairs, with a progress bar."""

    def __init__(self, inputs):
        self.progress = tqdm(total=len(inputs), desc="int8 calibration", unit="img",
                             dynamic_ncols=True)
        self.inputs = iter(inputs)

    def get_next(self):
        pair = next(self.inputs, None)
        if pair is None:
            self.progress.close()
            return None
        self.progress.update(1)
        return dict(zip(INPUT_NAMES, pair))


def quantize_onnx(fp32_path, int8_path, inputs, settings=DEFAULT_SETTINGS):
    """Write the int8 QDQ model of the fp32 ONNX file ``fp32_path`` to ``int8_path``
    (atomically), calibrated on ``inputs`` (see ``calibration_inputs``)."""
    quantization = import_optional("onnxruntime.quantization", PURPOSE)
    onnx = import_optional("onnx", PURPOSE)
    # per-channel DequantizeLinear (its axis attribute) needs opset 13; the export is 12
    model = onnx.version_converter.convert_version(onnx.load(fp32_path), QDQ_OPSET)
    for node in model.graph.node:  # the quantizer excludes nodes by name; export names none
        node.name = node.name or node.output[0]
    excluded = [node.name for node in model.graph.node
                if node.op_type == "Conv" and node.output[0].startswith(settings.keep_fp32)]
    reader = _CalibrationReader(inputs)
    with atomic_target(int8_path) as partial:
        quantization.quantize_static(
            model, partial, reader, quant_format=quantization.QuantFormat.QDQ,
            op_types_to_quantize=["Conv"], per_channel=settings.per_channel,
            reduce_range=settings.reduce_range,
            activation_type=quantization.QuantType.QUInt8,
            weight_type=quantization.QuantType.QInt8, nodes_to_exclude=excluded,
            calibrate_method=getattr(quantization.CalibrationMethod, settings.method),
            extra_options={"CalibTensorRangeSymmetric": False},
            calibration_providers=["CPUExecutionProvider"])
    return int8_path


def is_quantized(onnx_path):
    """Whether an ONNX file holds quantized operators (an fp32 export holds none)."""
    onnx = import_optional("onnx", PURPOSE)
    return any(node.op_type in ("DequantizeLinear", "QLinearConv", "ConvInteger")
               for node in onnx.load(onnx_path, load_external_data=False).graph.node)


def quantize_model(model, int8_path, inputs, settings=DEFAULT_SETTINGS):
    """Export ``model`` to ONNX and write its int8 model to ``int8_path``."""
    with tempfile.TemporaryDirectory() as directory:
        fp32_path = export_onnx(model, os.path.join(directory, "fp32.onnx"))
        return quantize_onnx(fp32_path, int8_path, inputs, settings)


class DatasetCalibration:
    """``count`` images of a config's train split under ``dataset_dir`` (the tools' ``-d``)."""

    def __init__(self, dataset_dir, count=CALIBRATION_IMAGES):
        self.dataset_dir, self.count = dataset_dir, count

    def identity(self, cfg):
        """What names these images in the cache key: the annotation file (path, size, time of
        change) and the count."""
        _, ann_file = resolve_dataset_paths(cfg.train_dataset, self.dataset_dir)
        named = file_identity(ann_file) if os.path.isfile(ann_file) else ann_file
        return "{} images of {}".format(self.count, named)

    def inputs(self, cfg):
        return calibration_inputs(cfg, self.dataset_dir, self.count)


class ImageCalibration:
    """Image files: what ``benchmark.py`` times, when it is given no dataset."""

    def __init__(self, paths):
        self.paths = list(paths)

    def identity(self, cfg):
        return "images " + ", ".join(file_identity(path) for path in self.paths)

    def inputs(self, cfg):
        return [process_inputs(read_image(path), cfg.test_image_short_size,
                               cfg.test_image_max_size) for path in self.paths]


def int8_model(config_module, weights, calibration, settings=DEFAULT_SETTINGS, cache=None):
    """The path of the int8 ONNX model of a config module with ``weights`` (random without),
    calibrated on ``calibration`` (``DatasetCalibration`` or ``ImageCalibration``): written
    under ``cache`` (default ``package_cache_dir()/int8``) the first time, read from there later."""
    cfg = config_module.Cfg()
    key = [os.path.abspath(config_module.__file__), weights_identity(weights),
           calibration.identity(cfg), [cfg.test_image_short_size, cfg.test_image_max_size],
           dataclasses.asdict(settings), "onnxruntime " + _onnxruntime_version()]
    directory = cache or os.path.join(package_cache_dir(), "int8")
    name = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:24]
    path = os.path.join(directory, name + ".onnx")
    if os.path.isfile(path):
        logger.info("int8 model calibrated before: %s", path)
        return path
    inputs = calibration.inputs(cfg)
    logger.info("int8: calibrating on %d image(s) (%s)", len(inputs), calibration.identity(cfg))
    quantize_model(build_model(config_module, weights), path, inputs, settings)
    write_json_atomic(key, os.path.join(directory, name + ".json"))  # what the file is
    logger.info("int8 model written to %s", path)
    return path


def _onnxruntime_version():
    return import_optional("onnxruntime", PURPOSE).__version__
