"""The arithmetic precision a detector runs in (``--precision``), decided in one place.

- fp32: every engine; the official model's outputs.
- bf16: the convolutions in bfloat16, on CPUs with bf16 units (AMX-BF16 or AVX512-BF16,
  /proc/cpuinfo flags ``amx_bf16`` / ``avx512_bf16``), through OpenVINO's inference precision
  hint. Elsewhere it is refused: without the units bf16 would be slow emulation or an fp32
  run under the bf16 name.
  onnxruntime has no bf16 path on x86 CPUs (its CPU provider's bf16 GEMM is for ARM64 only).
- int8: a post-training quantized ONNX model (QDQ), run by onnxruntime or OpenVINO;
  deploy/quantize.py writes it, calibrated on the user's images, and caches it.
"""
from ..errors import ConfigError
from ..utils.machine import BF16_FLAGS, require_bf16_units

PRECISIONS = ("fp32", "bf16", "int8")
# the tools' --precision help
PRECISION_HELP = ("fp32: the official model's outputs; bf16: on CPUs with AMX-BF16 or "
                  "AVX512-BF16, with --engine openvino or auto; int8: post-training quantized")
# the engines that run each precision
PRECISION_ENGINES = {
    "fp32": ("eager", "traced", "lite", "onnxruntime", "openvino"),
    "bf16": ("openvino",),
    "int8": ("onnxruntime", "openvino"),
}

def check_precision(precision, engine, cpuinfo="/proc/cpuinfo"):
    """Raise a one-line ``ConfigError`` unless ``engine`` ("auto" for any) can run
    ``precision`` on this CPU."""
    if precision not in PRECISIONS:
        raise ConfigError("precision must be one of {}, got {!r}".format(PRECISIONS, precision))
    if engine != "auto" and engine not in PRECISION_ENGINES[precision]:
        raise ConfigError("the {} engine runs {} only, not {}: use --engine {}".format(
            engine, "fp32", precision, " or ".join(PRECISION_ENGINES[precision])))
    if precision == "bf16":
        require_bf16_units(cpuinfo)
