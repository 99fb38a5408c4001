"""GroupNorm whose training step runs as group_norm.cpp's two operators.

MegEngine 1.13's CPU GroupNorm kernels took ~0.1 ms per call at the head's sizes, most of it
not the arithmetic: ~7.6 ms of the demo's training step for its 80 calls
(docs/megengine_notes.md, "Where a training step's time goes").
"""
import megengine.module as M
from megengine.autodiff import Function
from megengine.core._imperative_rt.core2 import apply  # pylint: disable=no-name-in-module
from megengine.core.ops import custom

from . import library


class GroupStatisticsNorm(Function):
    """Group normalization of [N, C, H, W] with per-channel weight and bias by
    FcosGroupNormForward and FcosGroupNormBackward."""

    def __init__(self, groups, eps):
        super().__init__()
        self.groups, self.eps = groups, eps

    def forward(self, x, weight, bias):  # pylint: disable=arguments-differ
        y, mean, var = apply(custom.FcosGroupNormForward(groups=self.groups, eps=self.eps),
                             x, weight, bias)
        self.x, self.weight, self.mean, self.var = x, weight, mean, var
        return y

    def backward(self, grad_output):  # pylint: disable=arguments-differ
        if grad_output is None:
            return None, None, None
        grad_input, grad_weight, grad_bias = apply(
            custom.FcosGroupNormBackward(groups=self.groups, eps=self.eps), self.x,
            self.weight, self.mean, self.var, grad_output)
        shape = self.weight.shape
        return grad_input, grad_weight.reshape(shape), grad_bias.reshape(shape)


class FusedGroupNorm(M.GroupNorm):
    """megengine.module.GroupNorm (same tensors; results within float32 rounding) whose
    training batches are normalized by the package's operators where they load; in eval mode
    it is MegEngine's."""

    @classmethod
    def of(cls, norm):
        """The GroupNorm ``norm`` with the fast training step, sharing its Parameters."""
        fused = cls(norm.num_groups, norm.num_channels, norm.eps, norm.affine)
        fused.weight, fused.bias = norm.weight, norm.bias
        fused.training = norm.training
        return fused

    def forward(self, x):
        if not (self.training and self.affine and x.ndim == 4) or library.load() is None:
            return super().forward(x)
        return GroupStatisticsNorm(self.num_groups, self.eps)(x, self.weight, self.bias)
