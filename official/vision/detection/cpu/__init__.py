"""Workarounds for MegEngine 1.13 on the CPU, each in its own module.

The model code is plain MegEngine; ``engine/trainer.py`` turns these on for a run on the CPU
(``prepare_training``), and the tools call ``use_mkl_avx2_kernels`` before their first
convolution. What they work around, measured on 2-core AMD EPYC machines:

- custom_ops/: MegEngine's CPU convolutions run at a fraction of the CPU's peak: training
  runs them on oneDNN instead (fp32 or bf16), and the traced step updates each parameter in
  one pass, as MegEngine custom operators built by ``make setup``.
- conv.py: where oneDNN is not available, the convolution gradients: MegEngine's CPU kernels
  for them are 5-15x (weight) and ~1.5x (input) slower than the forward convolution and
  matrix products that compute the same values.
- batch_norm.py: the CPU BatchNorm kernels take 2-4x as long as the same statistics from
  reductions and elementwise ops (and custom_ops/batch_norm.cpp computes them in fewer passes).
- relu.py: ReLU's gradient kernel runs at a fraction of other elementwise kernels' speed.
- sgd.py: ``megengine.optimizer.SGD`` builds five new tensors per parameter and step; the
  in-place update cut the demo's optimizer phase from ~35 to ~12 ms.
- mkl.py: the bundled MKL 2019 runs generic SSE code on AMD CPUs unless told otherwise.
- device.py: at MegEngine's async levels 2 (its default) and 1, identical eager trainings
  now and then computed a step wrong or ended an epoch with NaN weights, with MegEngine's
  operators too; the trainer runs at level 0 (``CPU_TRAINING_ASYNC_LEVEL``), where none did.
  Also CPU device names with a thread count.
- guard.py: an epoch that ends in NaN/Inf is repeated from the last checkpoint, a guard kept
  for such corruption.
- sync_thread.py: MegEngine's event-polling thread takes up to a quarter of a core for as long
  as the process lives and slows every engine that runs after it; it is moved to idle priority.
- traced_step.py: the training step as one static graph (forward, backward, SGD): the
  interpreter runs one operator per step, so level 0 costs little and the step is sound and
  close to the eager one at level 2.
- step_plan.py: which step a single-process CPU run takes (traced where its graphs pay for
  their compilation, else eager), and the few batch sizes its graphs are compiled for.
"""
import megengine as mge
import megengine.module as M

from ..errors import ConfigError
from ..layers.conv import Conv2d
from ..utils.machine import require_bf16_units
from ..utils.modules import replace_modules
from .batch_norm import FastBatchNorm2d
from .conv import FastGradientConv2d
from .device import (
    CPU_TRAINING_ASYNC_LEVEL, async_level, cpu_device, default_cpu_threads, on_cpu_device
)
from .guard import RepeatNonFiniteEpoch
from .mkl import use_mkl_avx2_kernels
from .relu import SignGradientReLU
from .custom_ops import library as custom_ops_library
from .custom_ops.batch_norm import FusedBatchNorm2d
from .custom_ops.conv import OneDNNConv2d
from .custom_ops.group_norm import FusedGroupNorm
from .custom_ops.pool import FastMaxPool2d
from .sgd import InplaceSGD
from .step_plan import StepPlan, plan_cpu_step
from .sync_thread import idle_sync_thread
from .traced_step import TracedStep

__all__ = [
    "BF16_MIN_CHANNELS", "CONVOLUTIONS", "CPU_TRAINING_ASYNC_LEVEL", "FastBatchNorm2d",
    "FastGradientConv2d", "FastMaxPool2d", "FusedBatchNorm2d", "FusedGroupNorm", "InplaceSGD",
    "OneDNNConv2d", "RepeatNonFiniteEpoch", "SignGradientReLU", "StepPlan", "TRAINING_PRECISIONS",
    "async_level", "cpu_device", "custom_operators_available", "default_cpu_threads",
    "fast_training_modules", "idle_sync_thread", "on_cpu_device", "plan_cpu_step",
    "prepare_cpu_process", "prepare_training", "TracedStep", "training_convolutions",
    "use_mkl_avx2_kernels",
]

logger = mge.get_logger(__name__)

# what runs the convolutions of CPU training: "auto" is oneDNN where it is built and loads
CONVOLUTIONS = ("auto", "onednn", "megengine")
# fp32, or bf16 convolutions (oneDNN's, on CPUs with bf16 units) with float32 weights, gradients
# and optimizer state
TRAINING_PRECISIONS = ("fp32", "bf16")
# in bf16, convolutions with fewer input or output channels stay fp32: the stem's 3 colours and
# the prediction layers' 1-4 outputs, first and last layers as mixed-precision recipes keep
# them; the demo's mAP over three seeds: 1.23 points below fp32 with every convolution in
# bf16, 0.84 with these in fp32 (docs/precision.md, "Training in bf16")
BF16_MIN_CHANNELS = 16


def prepare_cpu_process(quiet_workers=False):
    """What a process does before its first MegEngine operator: let MKL run the kernels this
    CPU supports (mkl.py; MKL reads its switch at its first call); with ``quiet_workers`` (a
    traced training step whose operators may run on oneDNN), keep MegEngine's idle workers
    from spinning (custom_ops/library.py, ``quiet_megengine_workers``); then start MegEngine's
    runtime with its polling thread at idle priority (sync_thread.py)."""
    use_mkl_avx2_kernels()
    if quiet_workers:
        custom_ops_library.quiet_megengine_workers()
    idle_sync_thread()


def custom_operators_available():
    """Whether the package's CPU operators (custom_ops/) load in this process."""
    return custom_ops_library.unavailable_reason() is None


def training_convolutions(requested="auto", precision="fp32"):
    """"onednn" or "megengine": what runs the convolutions of a CPU training. "auto" takes
    oneDNN where its operators are built and load here, else MegEngine's with one log line
    saying why; "onednn" (and bf16, which only oneDNN runs) then stops with that line."""
    if requested not in CONVOLUTIONS:
        raise ConfigError("convolutions must be one of {}, got {!r}".format(
            CONVOLUTIONS, requested))
    if precision not in TRAINING_PRECISIONS:
        raise ConfigError("training precision must be one of {}, got {!r}".format(
            TRAINING_PRECISIONS, precision))
    if precision == "bf16":
        require_bf16_units()
    if requested == "megengine":
        if precision != "fp32":
            raise ConfigError("--precision {} trains with the oneDNN convolutions: drop "
                              "--convolutions megengine".format(precision))
        return "megengine"
    reason = custom_ops_library.unavailable_reason()
    if reason is None:
        return "onednn"
    if requested == "onednn" or precision != "fp32":
        raise ConfigError("{}; {} needs them".format(
            reason, "--convolutions onednn" if requested == "onednn" else
            "--precision " + precision))
    logger.info("%s: MegEngine's convolutions train this run", reason)
    return "megengine"


def fast_training_modules(model, convolutions="megengine", precision="fp32"):
    """Give ``model``, in place, the fast CPU training step of its convolutions,
    BatchNorms, GroupNorms, ReLUs and max pooling: each is replaced by a module sharing its
    tensors (same state_dict, same forward values): convolutions on oneDNN in ``precision``
    (bf16 but those of fewer than BF16_MIN_CHANNELS channels), BatchNorms, GroupNorms and
    pooling with the package's operators (``convolutions`` "onednn"), or the gradients of
    conv.py and BatchNorms by reductions ("megengine"). Returns ``model``."""

    def replacement(module):
        kind = type(module)  # exactly: a subclass may compute otherwise
        if kind in (M.Conv2d, Conv2d) and (module.padding_mode, module.conv_mode,
                                           module.compute_mode) == (
                                               "zeros", "cross_correlation", "default"):
            if convolutions == "onednn":
                few = min(module.in_channels, module.out_channels) < BF16_MIN_CHANNELS
                return OneDNNConv2d.of(module, "fp32" if few else precision)
            return FastGradientConv2d.of(module)
        if kind is M.BatchNorm2d:
            return (FusedBatchNorm2d if convolutions == "onednn" else FastBatchNorm2d).of(module)
        if kind is M.ReLU:
            return SignGradientReLU()
        if kind is M.MaxPool2d and convolutions == "onednn":  # the operators are loaded
            return FastMaxPool2d.of(module)
        if kind is M.GroupNorm and module.affine and convolutions == "onednn":
            return FusedGroupNorm.of(module)
        return None

    replace_modules(model, replacement)
    return model


def prepare_training(model, convolutions="auto", precision="fp32", threads=None):
    """Give ``model`` its fast CPU training modules (in place), the convolutions of
    ``training_convolutions`` in ``precision`` on ``threads`` threads; returns the optimizer
    class to train it with."""
    chosen = training_convolutions(convolutions, precision)
    if chosen == "onednn" and threads:
        custom_ops_library.load().fcos_onednn_set_threads(threads)
    fast_training_modules(model, chosen, precision)
    return InplaceSGD
