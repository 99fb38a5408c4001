"""A config's detector run by one engine: the eager model, its traced graph, MegEngine Lite,
onnxruntime or OpenVINO, in a precision (deploy/precision.py).

Every one has ``cfg`` and ``inference(image, im_info)``, so ``DetEvaluator``, the COCO evaluation
and the inference over image files take any of them.
"""
import os
import tempfile

import megengine as mge

from ..cpu import prepare_cpu_process
from ..errors import ConfigError
from ..utils.machine import usable_cpus
from ..weights import build_model
from .engine_choice import choice_key, fastest_detector
from .fold import fold_batch_norms
from .lite_detector import LiteDetector
from .lite_export import dump_inference
from .onnx_export import export_onnx
from .onnxruntime_detector import OnnxRuntimeDetector
from .openvino_detector import OpenVINODetector
from .precision import PRECISION_ENGINES, check_precision
from .quantize import int8_model, is_quantized
from .trace import TracedDetector

logger = mge.get_logger(__name__)

# the engines that run a file, and the suffixes of the files each one reads (the first: the
# file build_detector writes for it)
FILE_ENGINES = {"lite": (".mge",), "onnxruntime": (".onnx",), "openvino": (".onnx", ".xml")}
# "auto" chooses among FILE_ENGINES
ENGINES = ("eager", "traced", *FILE_ENGINES, "auto")
ENGINE_HELP = ("eager: the MegEngine model; traced: its compiled graph; lite: MegEngine Lite, "
               "onnxruntime / openvino: the ONNX export, all on the CPU, the weights written to a "
               "temporary file unless --model is given; auto: the fastest of them that can run "
               "the model here in --precision (timed once per model and CPU)")


def build_detector(config_module, weights=None, engine="eager", model_path=None,
                   threads=None, profile_path=None, layout="auto", precision="fp32",
                   calibration=None, spin=True):
    """The detector of a config module on ``engine`` in ``precision`` ("fp32", "bf16" or
    "int8": see ``precision.py``; refused with one line where the engine or the CPU cannot).
    int8 without ``model_path`` is the model quantized on ``calibration``'s images
    (``quantize.DatasetCalibration`` or ``ImageCalibration``): once, then read from the cache.

    With ``model_path`` (a .mge from ``dump_inference`` for the lite engine, a .onnx from
    ``export_onnx`` for onnxruntime or openvino, a .xml IR for openvino) ``weights`` are not
    used. Otherwise the model gets ``weights`` (random without them) and the file engines run
    it from a temporary file (Lite's in ``layout``, by default the one ``dump_inference``
    chooses for this CPU). "auto" is the fastest here of the file engines that run
    ``precision`` and can run the model (and that file, with ``model_path``;
    ``engine_choice.py``). ``threads``: of the file engines, by default the CPUs this process
    may use; ``profile_path``: Lite's (see ``LiteDetector``); ``spin``: whether onnxruntime's
    threads spin between runs, as they do by default (faster alone; a server turns it off, so
    its HTTP and decoding threads get the cores: docs/benchmarks.md, "Serving").
    """
    if engine not in ENGINES:
        raise ConfigError("engine must be one of {}, got {!r}".format(ENGINES, engine))
    check_precision(precision, engine)
    prepare_cpu_process()  # before the first convolution of the process
    threads = threads or usable_cpus()
    if precision == "int8" and model_path is None and calibration is None:
        # before "auto" tries the engines: every one of them would stop here
        raise ConfigError("int8 is calibrated on your images: give -d DATA (the config's train "
                          "split is used) or --model MODEL.onnx from tools/dump.py --precision "
                          "int8")
    if engine == "auto":
        return _fastest_detector(config_module, weights, model_path, threads, profile_path,
                                 precision, calibration, spin)
    if model_path is None and precision == "int8":
        model_path = int8_model(config_module, weights, calibration)
    if model_path is not None:
        return _file_detector(config_module.Cfg(), engine, model_path, threads, profile_path,
                              precision, spin)
    model = build_model(config_module, weights)
    if engine == "eager":
        return model
    if engine == "traced":
        return TracedDetector(fold_batch_norms(model))
    # the engines read the whole file when they load it
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "model" + FILE_ENGINES[engine][0])
        if engine == "lite":
            dump_inference(model, path, layout=layout)
        else:
            export_onnx(model, path)
        return _file_detector(model.cfg, engine, path, threads, profile_path, precision, spin)


def _fastest_detector(config_module, weights, model_path, threads, profile_path, precision,
                      calibration, spin):
    """"auto": the fastest of the file engines that run ``precision`` (and ``model_path``);
    the others are named in the log with the reason."""
    reasons = {}
    for engine, suffixes in FILE_ENGINES.items():
        if engine not in PRECISION_ENGINES[precision]:
            reasons[engine] = "it does not run " + precision
        elif model_path is not None and not model_path.endswith(suffixes):
            reasons[engine] = "it does not read " + os.path.basename(model_path)
    for engine, reason in reasons.items():
        logger.info("engine auto: not %s: %s", engine, reason)
    engines = [engine for engine in FILE_ENGINES if engine not in reasons]
    if not engines:
        raise ConfigError("no engine runs {} in {}: use --precision fp32".format(
            os.path.basename(model_path), precision))
    if len(engines) == 1:
        return build_detector(config_module, weights, engines[0], model_path, threads,
                              profile_path, precision=precision, calibration=calibration,
                              spin=spin)
    return fastest_detector(
        lambda chosen, layout: build_detector(config_module, weights, chosen, model_path,
                                              threads, profile_path, layout, precision,
                                              calibration, spin),
        engines, choice_key(config_module.__file__, model_path or weights, threads, precision))


def file_detector(config_module, engine, model_path, threads=None, precision="fp32", spin=True):
    """A dumped model (tools/dump.py) on a file engine, built without running a MegEngine
    operator: the detector a thread other than a process's main one can build, as a Ray Serve
    replica's (MegEngine's imperative runtime runs on the main thread only,
    serve/engine_worker.py). ``spin`` as for ``build_detector``."""
    check_precision(precision, engine)
    return _file_detector(config_module.Cfg(), engine, model_path, threads or usable_cpus(),
                          None, precision, spin)


def engine_of(detector):
    """The name in ENGINES of the engine running ``detector`` (what "auto" chose)."""
    kinds = {LiteDetector: "lite", OnnxRuntimeDetector: "onnxruntime",
             OpenVINODetector: "openvino", TracedDetector: "traced"}
    return kinds.get(type(detector), "eager")


def _file_detector(cfg, engine, model_path, threads, profile_path, precision, spin=True):
    if engine not in FILE_ENGINES:
        raise ConfigError("a dumped model (--model) runs on a file engine: add --engine lite "
                          "for a .mge file, onnxruntime or openvino for a .onnx file, openvino "
                          "for a .xml file")
    if not model_path.endswith(FILE_ENGINES[engine]):
        readers = [other for other, suffixes in FILE_ENGINES.items()
                   if model_path.endswith(suffixes)]
        raise ConfigError("the {} engine reads {} files, not {}: {}".format(
            engine, " or ".join(FILE_ENGINES[engine]), model_path,
            "use --engine " + " or ".join(readers) if readers else "write one with tools/dump.py"))
    if precision == "int8" and model_path.endswith(".onnx") and not is_quantized(model_path):
        raise ConfigError("{} is not quantized: write an int8 model with tools/dump.py "
                          "--precision int8 -d DATA, or give -w WEIGHTS and -d DATA".format(
                              model_path))
    if engine == "openvino":
        return OpenVINODetector(model_path, cfg, threads, precision)
    if engine == "onnxruntime":
        return OnnxRuntimeDetector(model_path, cfg, threads, spin)
    return LiteDetector(model_path, cfg, threads, profile_path)
