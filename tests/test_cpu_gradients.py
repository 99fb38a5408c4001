"""The CPU training modules whose gradients replace slow MegEngine kernels: ReLU (cpu/relu.py)
and max pooling (cpu/custom_ops/pool.py), against MegEngine's modules, exactly."""
import numpy as np
import pytest
import megengine as mge
import megengine.module as M
from megengine.autodiff import GradManager
from megengine.jit import trace

from official.vision.detection.cpu.custom_ops.pool import FastMaxPool2d
from official.vision.detection.cpu.relu import SignGradientReLU


def forward_backward(module, x, grad_output):
    """The output and the input gradient, as tensors."""
    x = mge.Parameter(x)
    gm = GradManager().attach([x])
    with gm:
        y = module(x)
        gm.backward(y, mge.tensor(grad_output))
    return y, x.grad


def output_and_input_gradient(module, x, grad_output):
    return [tensor.numpy() for tensor in forward_backward(module, x, grad_output)]


def test_the_sign_gradient_relu_gives_megengines_output_and_gradient_exactly():
    rng = np.random.RandomState(0)
    x = rng.randn(2, 3, 5, 7).astype("float32")
    x[0, 0, 0, :3] = [0.0, -0.0, 1e-38]  # zeros and a denormal: the gradient's edge
    grad_output = rng.randn(*x.shape).astype("float32")
    relu = SignGradientReLU()
    relu.train()
    expected = output_and_input_gradient(M.ReLU(), x, grad_output)
    actual = output_and_input_gradient(relu, x, grad_output)
    for want, got in zip(expected, actual):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("kernel, stride, padding, size", [
    (3, 2, 1, (13, 16)),  # the ResNet stem's, odd and even sides
    (2, 2, 0, (8, 6)),
    ((3, 2), (1, 2), (1, 0), (7, 9)),
])
def test_the_max_pooling_gradient_is_megengines_ties_included(kernel, stride, padding, size):
    rng = np.random.RandomState(0)
    # after a ReLU: a third zeros, so many windows hold their maximum more than once
    x = np.maximum(rng.randn(2, 3, *size), -0.0).astype("float32")
    x[0, 0] = 0.0  # a plane of ties only
    reference = M.MaxPool2d(kernel, stride, padding)
    fast = FastMaxPool2d.of(reference)
    fast.train()
    grad_output = rng.randn(*reference(mge.tensor(x)).shape).astype("float32")
    expected = output_and_input_gradient(reference, x, grad_output)
    actual = output_and_input_gradient(fast, x, grad_output)
    for want, got in zip(expected, actual):
        np.testing.assert_array_equal(got, want)


def test_a_compiled_graph_gives_the_eager_max_pooling_gradient():
    rng = np.random.RandomState(1)
    x = np.maximum(rng.randn(2, 4, 12, 10), 0).astype("float32")
    grad_output = rng.randn(2, 4, 6, 5).astype("float32")
    pool = FastMaxPool2d(3, 2, 1)
    pool.train()
    graph = trace(lambda x, g: forward_backward(pool, x, g), symbolic=True)
    eager = output_and_input_gradient(pool, x, grad_output)
    for _ in range(2):  # recorded, then compiled
        compiled = graph(mge.tensor(x), mge.tensor(grad_output))
    for want, got in zip(eager, compiled):
        np.testing.assert_array_equal(got.numpy(), want)
