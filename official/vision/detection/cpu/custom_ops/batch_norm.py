"""BatchNorm2d whose training step runs as batch_norm.cpp's two operators.

cpu/batch_norm.py's reductions and elementwise operators pass over each activation ~10 times
in a training step: ~16 ms of the demo's 260 ms traced step (MegEngine's graph profile,
docs/megengine_notes.md "Where a training step's time goes"). The operators compute the same
statistics, outputs and gradients in three passes forward and two backward.
"""
from megengine.autodiff import Function
from megengine.core._imperative_rt.core2 import apply  # pylint: disable=no-name-in-module
from megengine.core.ops import custom

from ..batch_norm import FastBatchNorm2d
from . import library


class FusedBatchStatisticsNorm(Function):
    """Training-mode batch normalization of [N, C, H, W] by FcosBatchNormForward and
    FcosBatchNormBackward; keeps ``count``, ``mean`` and ``var`` as BatchStatisticsNorm."""

    def __init__(self, eps):
        super().__init__()
        self.eps = eps

    def forward(self, x, weight, bias):  # pylint: disable=arguments-differ
        y, mean, var = apply(custom.FcosBatchNormForward(eps=self.eps), x, weight, bias)
        self.x, self.weight, self.batch_mean, self.batch_var = x, weight, mean, var
        channels = x.shape[1]
        self.count = x.size // channels
        self.mean, self.var = mean.reshape(1, channels, 1, 1), var.reshape(1, channels, 1, 1)
        return y

    def backward(self, grad_output):  # pylint: disable=arguments-differ
        if grad_output is None:
            return None, None, None
        grad_input, grad_weight, grad_bias = apply(
            custom.FcosBatchNormBackward(eps=self.eps), self.x, self.weight, self.batch_mean,
            self.batch_var, grad_output)
        shape = self.weight.shape
        return grad_input, grad_weight.reshape(shape), grad_bias.reshape(shape)


class FusedBatchNorm2d(FastBatchNorm2d):
    """FastBatchNorm2d (same tensors, running averages and results within float32 rounding)
    whose training batches are normalized by the package's operators where they load."""

    def statistics_norm(self):
        if library.load() is None:
            return super().statistics_norm()
        return FusedBatchStatisticsNorm(self.eps)
