"""MaxPool2d whose training step computes the input gradient with pool.cpp's operator.

MegEngine 1.13's CPU kernel for max pooling's gradient took 8.4 ms of the demo's 280 ms
traced step (the stem's pooling of [8, 64, 48, 64]); the operator gives the same gradient,
ties included, in 3.3-3.8 ms (docs/megengine_notes.md, "Where a training step's time goes").
"""
import megengine.functional as F
import megengine.module as M
from megengine.autodiff import Function
from megengine.core._imperative_rt.core2 import apply  # pylint: disable=no-name-in-module
from megengine.core.ops import custom

from . import library


def pair(value):
    return list(value) if isinstance(value, (tuple, list)) else [value, value]


class MaxPoolFunction(Function):
    """y = max_pool2d(x); the input gradient by FcosMaxPoolBackward (every input equal to
    its window's maximum gets the window's gradient, as MegEngine's kernel gives it)."""

    def __init__(self, kernel, stride, padding):
        super().__init__()
        self.settings = dict(kernel=kernel, stride=stride, padding=padding)

    def forward(self, x):  # pylint: disable=arguments-differ
        self.x = x
        self.y = F.max_pool2d(x, self.settings["kernel"], self.settings["stride"],
                              self.settings["padding"])
        return self.y

    def backward(self, grad_output):  # pylint: disable=arguments-differ
        if grad_output is None:
            return None
        (grad_input,) = apply(custom.FcosMaxPoolBackward(**self.settings), self.x, self.y,
                              grad_output)
        return grad_input


class FastMaxPool2d(M.MaxPool2d):
    """``megengine.module.MaxPool2d`` whose training step on [N, C, H, W] computes its
    gradient with ``MaxPoolFunction`` where the package's CPU operators load; MegEngine's
    otherwise."""

    @classmethod
    def of(cls, pool):
        fast = cls(pool.kernel_size, pool.stride, pool.padding)
        fast.training = pool.training
        return fast

    def forward(self, x):
        if not self.training or x.ndim != 4 or library.load() is None:
            return super().forward(x)
        stride = self.kernel_size if self.stride is None else self.stride
        return MaxPoolFunction(pair(self.kernel_size), pair(stride), pair(self.padding))(x)
