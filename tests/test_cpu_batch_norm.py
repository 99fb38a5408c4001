import numpy as np
import pytest
import megengine as mge
import megengine.module as M
from megengine.autodiff import GradManager

from official.vision.detection.cpu.batch_norm import FastBatchNorm2d
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


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape", [(4, 6, 5, 7), (2, 3, 1, 1)])
def test_training_equals_megengine_batchnorm(threads, shape):
    rng = np.random.RandomState(0)
    # an offset mean checks the variance formula where cancellation would show
    x = (rng.randn(*shape) * 2 + 3).astype("float32")
    grad_output = rng.randn(*shape).astype("float32")
    with default_cpu_threads(threads):
        reference = M.BatchNorm2d(shape[1], momentum=0.8)
        fast = FastBatchNorm2d(shape[1], momentum=0.8)
        weight = rng.rand(1, shape[1], 1, 1).astype("float32") + 0.5
        for norm in (reference, fast):
            norm.weight[...] = mge.tensor(weight)
        expected = two_training_steps(reference, x, grad_output)
        actual = two_training_steps(fast, x, grad_output)
    for want, got in zip(expected, actual):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
