"""Workarounds for MegEngine 1.13 on the CPU, each in its own module.

The model code is plain MegEngine; ``engine/trainer.py`` turns these on for a run on the CPU
(``prepare_training``), and the tools call ``use_mkl_avx2_kernels`` before their first
convolution. What they work around, measured on 2-core AMD EPYC machines:

- conv.py: the CPU kernels of the convolution gradients are 5-15x (weight) and ~1.5x (input)
  slower than the forward convolution and matrix products that compute the same values.
- batch_norm.py: the CPU BatchNorm kernels take 2-4x as long as the same statistics from
  reductions and elementwise ops.
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
import megengine.module as M

from ..layers.conv import Conv2d
from ..utils.modules import replace_modules
from .batch_norm import FastBatchNorm2d
from .conv import FastGradientConv2d
from .device import (
    CPU_TRAINING_ASYNC_LEVEL, async_level, cpu_device, default_cpu_threads, on_cpu_device
)
from .guard import RepeatNonFiniteEpoch
from .mkl import use_mkl_avx2_kernels
from .sgd import InplaceSGD
from .step_plan import StepPlan, plan_cpu_step
from .sync_thread import idle_sync_thread
from .traced_step import TracedStep

__all__ = [
    "CPU_TRAINING_ASYNC_LEVEL", "FastBatchNorm2d", "FastGradientConv2d", "InplaceSGD",
    "RepeatNonFiniteEpoch", "async_level", "cpu_device", "default_cpu_threads",
    "fast_training_modules", "idle_sync_thread", "on_cpu_device", "plan_cpu_step",
    "prepare_cpu_process", "prepare_training", "StepPlan", "TracedStep", "use_mkl_avx2_kernels",
]


def prepare_cpu_process():
    """What a process does before its first convolution: let MKL run the kernels this CPU
    supports (mkl.py; MKL reads its switch at its first call), then start MegEngine's runtime
    with its polling thread at idle priority (sync_thread.py)."""
    use_mkl_avx2_kernels()
    idle_sync_thread()


def fast_training_modules(model):
    """Give ``model``, in place, the fast CPU training step of its convolutions and
    BatchNorms: each is replaced by a module sharing its tensors (same state_dict, same
    results). Returns ``model``."""

    def replacement(module):
        if type(module) in (M.Conv2d, Conv2d) and (  # pylint: disable=unidiomatic-typecheck
                module.padding_mode, module.conv_mode, module.compute_mode) == (
                    "zeros", "cross_correlation", "default"):
            return FastGradientConv2d.of(module)
        if type(module) is M.BatchNorm2d:  # pylint: disable=unidiomatic-typecheck
            return FastBatchNorm2d.of(module)
        return None

    replace_modules(model, replacement)
    return model


def prepare_training(model):
    """Give ``model`` its fast CPU training modules (in place); returns the optimizer class to
    train it with."""
    fast_training_modules(model)
    return InplaceSGD
