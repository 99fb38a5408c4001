"""A config's detector run by one engine: the eager model, its traced graph, or one of the
engines that run a file (MegEngine Lite, onnxruntime).

Every one has ``cfg`` and ``inference(image, im_info)``, so ``DetEvaluator``, the COCO evaluation
and the inference over image files take any of them.
"""
import os
import tempfile

from ..cpu import use_mkl_avx2_kernels
from ..errors import ConfigError
from ..utils.machine import usable_cpus
from ..weights import build_model
from .engine_choice import choice_key, fastest_detector
from .fold import fold_batch_norms
from .lite_detector import LiteDetector
from .lite_export import dump_inference
from .onnx_export import export_onnx
from .onnxruntime_detector import OnnxRuntimeDetector
from .trace import TracedDetector

# the engines that run a file, and the suffix of the file each one reads
FILE_ENGINES = {"lite": ".mge", "onnxruntime": ".onnx"}
# "auto" chooses among FILE_ENGINES
ENGINES = ("eager", "traced", *FILE_ENGINES, "auto")


def build_detector(config_module, weights=None, engine="eager", model_path=None,
                   threads=None, profile_path=None, layout="auto"):
    """The detector of a config module on ``engine``.

    With ``model_path`` (a .mge from ``dump_inference`` for the lite engine, a .onnx from
    ``export_onnx`` for onnxruntime) ``weights`` are not used. Otherwise the model gets
    ``weights`` (random without them) and the lite and onnxruntime engines run it from a
    temporary file (Lite's in ``layout``, by default the one ``dump_inference`` chooses for this
    CPU); "auto" is the fastest of the FILE_ENGINES that can run the model here
    (``engine_choice.py``; with ``model_path``, the one that runs that kind of file).
    ``threads``: of Lite and onnxruntime, by default the CPUs this process may use;
    ``profile_path``: Lite's (see ``LiteDetector``).
    """
    if engine not in ENGINES:
        raise ConfigError("engine must be one of {}, got {!r}".format(ENGINES, engine))
    use_mkl_avx2_kernels()  # before the first convolution of the process
    threads = threads or usable_cpus()
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
        return TracedDetector(fold_batch_norms(model))
    # both engines read the whole file when they load it
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "model" + FILE_ENGINES[engine])
        if engine == "lite":
            dump_inference(model, path, layout=layout)
        else:
            export_onnx(model, path)
        return _file_detector(model.cfg, engine, path, threads, profile_path)


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
