"""A config's detector run by one engine: the eager model, its traced graph, MegEngine Lite or
onnxruntime.

Every one has ``cfg`` and ``inference(image, im_info)``, so ``DetEvaluator``, the COCO evaluation
and the inference over image files take any of them.
"""
import os
import tempfile

from ..cpu import use_mkl_avx2_kernels
from ..errors import ConfigError
from ..weights import build_model
from .fold import fold_frozen_bn
from .lite_detector import DEFAULT_THREADS, LiteDetector
from .lite_export import dump_inference
from .onnx_export import export_onnx
from .onnxruntime_detector import OnnxRuntimeDetector
from .trace import TracedDetector

ENGINES = ("eager", "traced", "lite", "onnxruntime")
# the engines that run a file, and the file each one writes and reads
FILE_ENGINES = {"lite": (dump_inference, ".mge"), "onnxruntime": (export_onnx, ".onnx")}


def build_detector(config_module, weights=None, engine="eager", model_path=None,
                   threads=None, profile_path=None):
    """The detector of a config module on ``engine``.

    With ``model_path`` (a .mge from ``dump_inference`` for the lite engine, a .onnx from
    ``export_onnx`` for onnxruntime) ``weights`` are not used. Otherwise the model gets
    ``weights`` (random without them) and the lite and onnxruntime engines run it from a
    temporary file (Lite's in the layout ``dump_inference`` chooses for this CPU). ``threads``:
    Lite's (default 2) or onnxruntime's (default all cores); ``profile_path``: Lite's (see
    ``LiteDetector``).
    """
    if engine not in ENGINES:
        raise ConfigError("engine must be one of {}, got {!r}".format(ENGINES, engine))
    use_mkl_avx2_kernels()  # before the first convolution of the process
    if model_path is not None:
        return _file_detector(config_module.Cfg(), engine, model_path, threads, profile_path)
    model = build_model(config_module, weights)
    if engine == "eager":
        return model
    if engine == "traced":
        return TracedDetector(fold_frozen_bn(model))
    write, suffix = FILE_ENGINES[engine]
    # both engines read the whole file when they load it
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "model" + suffix)
        write(model, path)
        return _file_detector(model.cfg, engine, path, threads, profile_path)


def _file_detector(cfg, engine, model_path, threads, profile_path):
    if engine not in FILE_ENGINES:
        raise ConfigError("a dumped model (--model) runs on the lite or onnxruntime engine: add "
                          "--engine lite for a .mge file, --engine onnxruntime for a .onnx file")
    for other, (_, suffix) in FILE_ENGINES.items():
        if other != engine and model_path.endswith(suffix):
            raise ConfigError("{} is a {} file, which the {} engine runs: use --engine {}".format(
                model_path, suffix, other, other))
    if engine == "onnxruntime":
        return OnnxRuntimeDetector(model_path, cfg, threads)
    return LiteDetector(model_path, cfg, threads or DEFAULT_THREADS, profile_path)
