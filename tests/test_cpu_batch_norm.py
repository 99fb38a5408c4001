import numpy as np
import pytest
import megengine as mge
import megengine.module as M
from megengine.autodiff import GradManager

from official.vision.detection.cpu.batch_norm import FastBatchNorm2d
from official.vision.detection.cpu.custom_ops.batch_norm import FusedBatchNorm2d
from official.vision.detection.cpu.device import default_cpu_threads


def two_training_steps(norm, x, grad_output):
    """Outputs and gradients (input, weight, bias) of two steps, then the running averages."""
    x = mge.Parameter(x)
    gm = GradManager().attach([x, norm.weight, norm.bias])
    results = []
    for step in range(2):
        with gm:
            y = norm(x * (step + 1.0))  # a second batch with other statistics
            gm.backward(y, mge.tensor(grad_output))
        results += [y.numpy(), x.grad.numpy(), norm.weight.grad.numpy(), norm.bias.grad.numpy()]
        for tensor in (x, norm.weight, norm.bias):
            tensor.grad = None
    return results + [norm.running_mean.numpy(), norm.running_var.numpy()]


NORMS = [FastBatchNorm2d, FusedBatchNorm2d]  # by reductions, by the package's operators


@pytest.mark.parametrize("fast_norm", NORMS)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape", [(4, 6, 5, 7), (2, 3, 1, 1)])
def test_training_equals_megengine_batchnorm(fast_norm, threads, shape):
    rng = np.random.RandomState(0)
    # an offset mean checks the variance formula where cancellation would show
    x = (rng.randn(*shape) * 2 + 3).astype("float32")
    grad_output = rng.randn(*shape).astype("float32")
    with default_cpu_threads(threads):
        reference = M.BatchNorm2d(shape[1], momentum=0.8)
        fast = fast_norm(shape[1], momentum=0.8)
        weight = rng.rand(1, shape[1], 1, 1).astype("float32") + 0.5
        for norm in (reference, fast):
            norm.weight[...] = mge.tensor(weight)
        expected = two_training_steps(reference, x, grad_output)
        actual = two_training_steps(fast, x, grad_output)
    for want, got in zip(expected, actual):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def batch_norm_by_hand(x, weight, grad_output, eps=1e-5):
    """Output and input gradient of training-mode batch normalization, in float64."""
    x, grad_output = x.astype(np.float64), grad_output.astype(np.float64)
    axes = (0, 2, 3)
    centred = x - x.mean(axis=axes, keepdims=True)
    inv_std = 1 / np.sqrt((centred ** 2).mean(axis=axes, keepdims=True) + eps)
    normalized = centred * inv_std
    grad_input = weight * inv_std * (grad_output - grad_output.mean(axis=axes, keepdims=True)
                                     - normalized * (grad_output * normalized).mean(
                                         axis=axes, keepdims=True))
    return normalized * weight, grad_input


@pytest.mark.parametrize("fast_norm", NORMS)
def test_a_mean_far_from_zero_against_the_spread_keeps_the_results_accurate(fast_norm):
    # mean 1000x the spread: E[x^2] - mean^2, or gradients with x - mean expanded, lose most
    # digits of float32 (such a formula moved weight gradients of a tiny FCOS by 7.6%)
    rng = np.random.RandomState(1)
    x = (rng.randn(4, 6, 5, 7) * 0.02 + 20).astype("float32")
    grad_output = rng.randn(*x.shape).astype("float32")
    weight = np.ones((1, 6, 1, 1))
    expected_output, expected_grad = batch_norm_by_hand(x, weight, grad_output)
    output, grad_input = two_training_steps(fast_norm(6), x, grad_output)[:2]
    # x is 20 +- 1.2e-6 in float32: a normalized value can be off by ~1e-4 and still be right
    np.testing.assert_allclose(output, expected_output, atol=1e-3)
    np.testing.assert_allclose(grad_input, expected_grad, atol=1e-3 * np.abs(expected_grad).max())
