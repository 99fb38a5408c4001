import numpy as np
import megengine as mge
import megengine.module as M
from megengine.autodiff import GradManager

from official.vision.detection.cpu.relu import SignGradientReLU


def output_and_input_gradient(relu, x, grad_output):
    x = mge.Parameter(x)
    gm = GradManager().attach([x])
    with gm:
        y = relu(x)
        gm.backward(y, mge.tensor(grad_output))
    return y.numpy(), x.grad.numpy()


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
