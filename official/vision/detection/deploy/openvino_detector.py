"""Run an exported ONNX model (or an OpenVINO IR) with OpenVINO behind the ``model.inference``
interface, in fp32 or bf16.

OpenVINO compiles the graph for this CPU when it loads it (~1-2 s for FCOS-R50). The compiled
model is kept in a cache directory (OpenVINO's CACHE_DIR, keyed by the graph, its weights and
the properties), so a second detector of the same model loads it instead of compiling again.
"""
import os
import tempfile

import numpy as np

from ..utils.machine import usable_cpus
from .engine_choice import package_cache_dir
from .optional_packages import import_optional
from .trace import INPUT_NAMES, OUTPUT_NAMES

# OpenVINO's names of the precisions of deploy/precision.py. f32 is asked for explicitly: on
# CPUs with AMX OpenVINO's default is bf16, which is not the official model's output.
INFERENCE_PRECISION = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}
PURPOSE = "the openvino engine"


def openvino_cache_dir():
    """Where compiled models are kept: <package cache>/openvino."""
    return os.path.join(package_cache_dir(), "openvino")


class OpenVINODetector:
    """A ``.onnx`` file from ``export_onnx`` or a ``.xml`` IR from ``export_openvino_ir`` as a
    detector: ``DetEvaluator(OpenVINODetector(path, cfg))`` works as with the eager model.

    Runs on the CPU with ``threads`` inference threads (by default the CPUs this process may
    use: its affinity, capped by its cgroup quota). ``precision``: "fp32", or "bf16" where the
    CPU has bf16 units (``precision.check_precision``); an int8 model file runs its own
    quantized operators with the rest in fp32.
    """

    def __init__(self, model_path, cfg, threads=None, precision="fp32", cache_dir=None):
        openvino = import_optional("openvino", PURPOSE)
        if not os.path.isfile(model_path):
            raise FileNotFoundError(
                "OpenVINO model not found: {} (write one with tools/dump.py -o MODEL.onnx or "
                "MODEL.xml)".format(model_path))
        self.cfg = cfg
        self.precision = precision
        self.cache_dir = cache_dir or openvino_cache_dir()
        core = openvino.Core()
        # read first and compile the model object: its cache key is then the graph and weights,
        # not the file's path (build_detector writes a new temporary file every time)
        model = core.read_model(model_path)
        compiled = core.compile_model(model, "CPU", {
            "INFERENCE_NUM_THREADS": threads or usable_cpus(),
            "INFERENCE_PRECISION_HINT": INFERENCE_PRECISION[precision],
            "PERFORMANCE_HINT": "LATENCY",
            "CACHE_DIR": self.cache_dir,
        })
        self.loaded_from_cache = bool(compiled.get_property("LOADED_FROM_CACHE"))
        self.request = compiled.create_infer_request()

    def inference(self, image, im_info):
        """image [N, 3, H, W] float32 (BGR, 0-255), im_info [N, 4] -> numpy scores [N, P, K]
        and boxes [N, P, 4] in original-image pixels (copies). Any N, H and W."""
        feed = {name: np.ascontiguousarray(value, dtype=np.float32)
                for name, value in zip(INPUT_NAMES, (image, im_info))}
        results = self.request.infer(feed)
        return tuple(results[name] for name in OUTPUT_NAMES)


def export_openvino_ir(model, path, write_onnx):
    """Write ``model.inference`` as OpenVINO's IR: ``path`` (.xml) and its weights beside it
    (.bin), converted from the ONNX model that ``write_onnx(model, onnx_path)`` writes
    (``export_onnx``, or ``quantize.quantize_model`` with its calibration inputs), weights as in it; return ``path``."""
    with tempfile.TemporaryDirectory() as directory:
        onnx_path = write_onnx(model, os.path.join(directory, "model.onnx"))
        return write_openvino_ir(onnx_path, path)


def write_openvino_ir(onnx_path, path):
    """Convert an ONNX model to OpenVINO's IR: ``path`` (.xml) and its weights beside it
    (.bin), fp32 as in the ONNX file; return ``path``."""
    openvino = import_optional("openvino", PURPOSE)
    model = openvino.convert_model(onnx_path)
    weights_path = os.path.splitext(path)[0] + ".bin"  # OpenVINO reads the .bin of the .xml
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(path))) as directory:
        partial = os.path.join(directory, os.path.basename(path))
        # compress_to_fp16 is on by default and would round the weights
        openvino.save_model(model, partial, compress_to_fp16=False)
        # the weights first: an .xml present means its .bin is complete
        os.replace(os.path.splitext(partial)[0] + ".bin", weights_path)
        os.replace(partial, path)
    return path
