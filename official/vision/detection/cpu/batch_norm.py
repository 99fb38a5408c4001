"""BatchNorm statistics by reductions: MegEngine 1.13's CPU BatchNorm kernels are slow.

Its CPU BatchNorm kernels take 2-4x as long as the same statistics from reductions and
elementwise ops, e.g. 6.5 ms against 1.5 ms forward and backward for [8, 64, 24, 32] on two
threads.
"""
import megengine.functional as F
import megengine.module as M
from megengine.autodiff import Function


def channel_sum(x):
    """[N, C, H, W] -> [1, C, 1, 1]: two reductions over contiguous axes, several times
    faster on the CPU than one over axes (0, 2, 3)."""
    n, channels = x.shape[:2]
    return x.reshape(n, channels, -1).sum(axis=2).sum(axis=0).reshape(1, channels, 1, 1)


class BatchStatisticsNorm(Function):
    """Training-mode batch normalization of [N, C, H, W] by reductions and elementwise ops.

    Centred first, as MegEngine's kernel: x_hat = (x - mean) / sqrt(var + eps), output
    x_hat * weight + bias, input gradient weight / sqrt(var + eps) * (dy - mean(dy) - x_hat *
    mean(dy * x_hat)). (Expanding x - mean to save the centred copy cancels catastrophically
    where a channel's mean is large against its spread: at 1000x, outputs and gradients were
    off by up to 0.4.) The batch mean and (biased) variance stay on the object for the running
    averages.
    """

    def __init__(self, eps):
        super().__init__()
        self.eps = eps

    def forward(self, x, weight, bias):
        count = x.size // x.shape[1]
        mean = channel_sum(x) / count
        centred = x - mean
        var = channel_sum(centred * centred) / count
        inv_std = 1 / F.sqrt(var + self.eps)
        normalized = centred * inv_std
        self.count, self.mean, self.var, self.inv_std = count, mean, var, inv_std
        self.normalized, self.weight = normalized, weight
        return normalized * weight + bias

    def backward(self, grad_output):
        if grad_output is None:
            return None, None, None
        grad_bias = channel_sum(grad_output)
        grad_weight = channel_sum(grad_output * self.normalized)
        grad_input = (self.weight * self.inv_std) * (
            grad_output - (grad_bias + self.normalized * grad_weight) / self.count)
        return grad_input, grad_weight, grad_bias


class FastBatchNorm2d(M.BatchNorm2d):
    """megengine.module.BatchNorm2d (same tensors, results and running averages) whose
    training step computes the batch statistics with ``BatchStatisticsNorm``."""

    @classmethod
    def of(cls, norm):
        """The BatchNorm ``norm`` with the fast training step, sharing its Parameters and
        running averages: the optimizer and the state_dict see the same tensors."""
        fast = cls(norm.num_features, norm.eps, norm.momentum, norm.affine,
                   norm.track_running_stats, norm.freeze)
        fast.weight, fast.bias = norm.weight, norm.bias
        fast.running_mean, fast.running_var = norm.running_mean, norm.running_var
        fast.training = norm.training
        return fast

    def statistics_norm(self):
        """The Function normalizing a training batch; it keeps the batch's ``count``, ``mean``
        and biased ``var`` ([1, C, 1, 1]) for the running averages."""
        return BatchStatisticsNorm(self.eps)

    def forward(self, x):
        if not (self.training and self.affine and self.track_running_stats and not self.freeze
                and x.ndim == 4):
            return super().forward(x)
        norm = self.statistics_norm()
        y = norm(x, self.weight, self.bias)
        # MegEngine's update: the running variance averages the unbiased batch variance
        unbiased_var = norm.var * (norm.count / max(norm.count - 1, 1))
        for running, batch in ((self.running_mean, norm.mean), (self.running_var, unbiased_var)):
            running[...] = running * self.momentum + batch * (1 - self.momentum)
        return y
