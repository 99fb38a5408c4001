"""Compiled inference: fold frozen BN, trace and dump for MegEngine Lite, run and time it.

    model = fold_frozen_bn(model)                   # optional: dump_inference folds by default
    dump_inference(model, "fcos.mge", layout=choose_layout("auto"))  # any image and batch size
    detector = LiteDetector("fcos.mge", model.cfg)  # .inference(image, im_info) -> numpy
    detections = DetEvaluator(detector).predict(image=data, im_info=im_info)

``build_detector(config_module, weights, engine, model_path)`` does this for the tools.
"""
from .benchmark import benchmark, machine_peak_gflops, median_ms, use_eager_threads
from .compile import TracedDetector, dump_inference, trace_inference
from .detector import ENGINES, build_detector
from .flops import count_conv_flops, count_parameters
from .fold import fold_frozen_bn
from .layout import LAYOUTS, choose_layout, nchw88_runs_here
from .lite import LiteDetector

__all__ = [
    "ENGINES", "LAYOUTS", "LiteDetector", "TracedDetector", "benchmark", "build_detector",
    "choose_layout", "count_conv_flops", "count_parameters", "dump_inference", "fold_frozen_bn",
    "machine_peak_gflops", "median_ms", "nchw88_runs_here", "trace_inference",
    "use_eager_threads",
]
