"""Compiled inference: fold frozen BN, trace and dump for MegEngine Lite or export to ONNX,
run and time it.

    dump_inference(model, "fcos.mge")               # any image and batch size; NCHW88 if it
                                                    # runs right on this CPU (layout="auto")
    detector = LiteDetector("fcos.mge", model.cfg)  # .inference(image, im_info) -> numpy
    detections = DetEvaluator(detector).predict(image=data, im_info=im_info)

    export_onnx(model, "fcos.onnx")                 # any image and batch size, opset 12
    detector = OnnxRuntimeDetector("fcos.onnx", model.cfg)

``build_detector(config_module, weights, engine, model_path)`` does this for the tools.
"""
from .benchmark import benchmark, machine_peak_gflops, median_ms, use_eager_threads
from .compile import TracedDetector, dump_inference, trace_inference
from .detector import ENGINES, build_detector, build_model
from .flops import count_conv_flops, count_parameters
from .fold import fold_frozen_bn
from .group_norm import PooledGroupNorm, pool_group_norms
from .layout import LAYOUTS, blocked_layout_misuse, nchw88_kernels_run_here
from .lite import LiteDetector
from .onnx_export import OPSET, export_onnx
from .onnxruntime_detector import OnnxRuntimeDetector
from .optional_packages import MissingPackageError

__all__ = [
    "ENGINES", "LAYOUTS", "LiteDetector", "MissingPackageError", "OPSET", "OnnxRuntimeDetector",
    "PooledGroupNorm", "TracedDetector", "benchmark", "blocked_layout_misuse", "build_detector",
    "build_model", "count_conv_flops", "count_parameters", "dump_inference", "export_onnx",
    "fold_frozen_bn", "machine_peak_gflops", "median_ms", "nchw88_kernels_run_here",
    "pool_group_norms", "trace_inference", "use_eager_threads",
]
