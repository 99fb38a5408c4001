"""A config's detector run by one engine: the eager model, its traced graph, MegEngine Lite or
onnxruntime.

Every one has ``cfg`` and ``inference(image, im_info)``, so ``DetEvaluator``, the COCO evaluation
and the inference over image files take any of them.
"""
import os
import tempfile

from ..cpu import prepare_cpu_process
from ..errors import ConfigError
from ..utils.machine import usable_cpus
from ..weights import build_model
from .engine_choice import choice_key, fastest_detector
from .fold import fold_frozen_bn
from .lite_detector import LiteDetector
from .lite_export import dump_inference
from .onnx_export import export_onnx
from .onnxruntime_detector import OnnxRuntimeDetector
from .quantize import int8_model
from .trace import TracedDetector

ENGINES = ("eager", "traced", "lite", "onnxruntime", "auto")
PRECISIONS = ("fp32", "int8")
# the engines that run a file, and the suffix of the file each one reads
FILE_ENGINES = {"lite": ".mge", "onnxruntime": ".onnx"}


def build_detector(config_module, weights=None, engine="eager", model_path=None,
                   threads=None, profile_path=None, layout="auto", precision="fp32",
                   calibration=None):
    """The detector of a config module on ``engine`` in ``precision`` (PRECISIONS; int8: see
    ``_int8_detector``).

    With ``model_path`` (a .mge from ``dump_inference`` for the lite engine, a .onnx from
    ``export_onnx`` for onnxruntime) ``weights`` are not used. Otherwise the model gets
    ``weights`` (random without them) and the lite and onnxruntime engines run it from a
    temporary file (Lite's in ``layout``, by default the one ``dump_inference`` chooses for this
    CPU); "auto" is the faster of these two here (``engine_choice.py``; with ``model_path``, the
    one that runs that kind of file). ``threads``: of Lite and onnxruntime, by default the CPUs this process
    may use; ``profile_path``: Lite's (see ``LiteDetector``).
    """
    if engine not in ENGINES:
        raise ConfigError("engine must be one of {}, got {!r}".format(ENGINES, engine))
    if precision not in PRECISIONS:
        raise ConfigError("precision must be one of {}, got {!r}".format(PRECISIONS, precision))
    prepare_cpu_process()  # before the first convolution of the process
    threads = threads or usable_cpus()
    if precision == "int8":
        return _int8_detector(config_module, weights, engine, model_path, threads, calibration)
    if engine == "auto" and model_path is not None:  # the file's kind decides
        engine = next((name for name, suffix in FILE_ENGINES.items()
                       if model_path.endswith(suffix)), "lite")
    if model_path is not None:
        return _file_detector(config_module.Cfg(), engine, model_path, threads, profile_path)
    if engine == "auto":
        return fastest_detector(
            lambda chosen, layout: build_detector(config_module, weights, chosen, threads=threads,
                                                  profile_path=profile_path, layout=layout),
            list(FILE_ENGINES), choice_key(config_module.__file__, weights, threads))
    model = build_model(config_module, weights)
    if engine == "eager":
        return model
    if engine == "traced":
        return TracedDetector(fold_frozen_bn(model))
    # both engines read the whole file when they load it
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "model" + FILE_ENGINES[engine])
        if engine == "lite":
            dump_inference(model, path, layout=layout)
        else:
            export_onnx(model, path)
        return _file_detector(model.cfg, engine, path, threads, profile_path)


def _int8_detector(config_module, weights, engine, model_path, threads, calibration):
    """The int8 model on onnxruntime ("auto" too: OpenVINO ran the same file in 0.84-1.02x
    its time for FCOS-R50, docs/precision.md): ``model_path`` (from ``tools/dump.py
    --precision int8``) or the model quantized with ``calibration`` (``deploy/quantize.py``;
    calibrated once, then read from the cache)."""
    if engine not in ("onnxruntime", "auto"):
        raise ConfigError("int8 runs on the onnxruntime engine: use --engine onnxruntime or "
                          "auto, not {}".format(engine))
    if model_path is None:
        if calibration is None:
            raise ConfigError("int8 is calibrated on your images: give -d DATA (the config's "
                              "train split is used) or --model MODEL.onnx from tools/dump.py "
                              "--precision int8")
        model_path = int8_model(config_module, weights, calibration)
    elif not model_path.endswith(".onnx"):
        raise ConfigError("an int8 model is an ONNX file from tools/dump.py --precision int8, "
                          "not {}".format(model_path))
    return OnnxRuntimeDetector(model_path, config_module.Cfg(), threads)


def engine_of(detector):
    """The name in ENGINES of the engine running ``detector`` (what "auto" chose)."""
    kinds = {LiteDetector: "lite", OnnxRuntimeDetector: "onnxruntime", TracedDetector: "traced"}
    return kinds.get(type(detector), "eager")


def _file_detector(cfg, engine, model_path, threads, profile_path):
    if engine not in FILE_ENGINES:
        raise ConfigError("a dumped model (--model) runs on the lite or onnxruntime engine: add "
                          "--engine lite for a .mge file, --engine onnxruntime for a .onnx file")
    for other, suffix in FILE_ENGINES.items():
        if other != engine and model_path.endswith(suffix):
            raise ConfigError("{} is a {} file, which the {} engine runs: use --engine {}".format(
                model_path, suffix, other, other))
    if engine == "onnxruntime":
        return OnnxRuntimeDetector(model_path, cfg, threads)
    return LiteDetector(model_path, cfg, threads, profile_path)
