"""ReLU whose gradient is a product: MegEngine 1.13's CPU kernel for ReLU's gradient is slow.

MegEngine computes ReLU's input gradient with its ``SWITCH_GT0`` elementwise kernel
(x > 0 ? dy : 0), which ran at ~4.5 ns per element on a Zen 4 core pair: 7.2 ms for the
stem's [8, 64, 48, 64] in the demo's traced step, 23 ms of a 280 ms step over its 63 ReLUs
(docs/megengine_notes.md, "Where a training step's time goes"). ``dy * sign(y)`` of the
output y = relu(x) is the same gradient (sign(y) is 1 where x > 0, else 0) in two
vectorized passes.
"""
import megengine.functional as F
import megengine.module as M
from megengine.autodiff import Function


class SignGradientReLUFunction(Function):
    """y = relu(x), with the input gradient dy * sign(y)."""

    def forward(self, x):  # pylint: disable=arguments-differ
        self.output = F.relu(x)
        return self.output

    def backward(self, grad_output):  # pylint: disable=arguments-differ
        if grad_output is None:
            return None
        return grad_output * F.sign(self.output)


class SignGradientReLU(M.ReLU):
    """``megengine.module.ReLU`` whose training step computes its gradient as
    ``SignGradientReLUFunction``; in eval mode it is MegEngine's."""

    def forward(self, x):
        if not self.training:
            return super().forward(x)
        return SignGradientReLUFunction()(x)
