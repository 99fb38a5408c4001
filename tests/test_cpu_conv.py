"""Convolution gradients by matrix products (cpu/conv.py) against MegEngine's own."""
import json

import numpy as np
import pytest
import megengine as mge
import megengine.module as M
from megengine.autodiff import GradManager
from megengine.utils.profiler import Profiler

from official.vision.detection.cpu import conv as conv_module
from official.vision.detection.cpu.conv import FastGradientConv2d
from official.vision.detection.cpu.device import default_cpu_threads


def gradients(conv, x):
    x = mge.Parameter(x)
    params = [p for p in (conv.weight, conv.bias, x) if p is not None]
    gm = GradManager().attach(params)
    with gm:
        y = conv(x)
        gm.backward((y * y).sum())
    return [y.numpy()] + [p.grad.numpy() for p in params]


# stride 1 takes the flipped-kernel input gradient (unless the padding exceeds the kernel's
# reach, as for 1x1 with padding 1); strided convolutions take MegEngine's
@pytest.mark.parametrize("kernel, stride, padding, dilation, groups, bias", [
    (3, 1, 1, 1, 1, True), (3, 2, 1, 1, 1, True), (7, 2, 3, 1, 1, False),
    (1, 2, 0, 1, 1, False), (3, 1, 2, 2, 1, True), (3, 2, 1, 1, 4, True),
    (3, 1, 1, 1, 4, False), (1, 1, 0, 1, 1, False), (3, 1, 0, 1, 1, True),
    ((3, 5), 1, (1, 2), (2, 1), 2, True), (1, 1, 1, 1, 1, True),
])
@pytest.mark.parametrize("stack_taps", [True, False])
def test_training_gradients_equal_megengine_conv(kernel, stride, padding, dilation, groups,
                                                 bias, stack_taps, monkeypatch):
    if not stack_taps:  # one product per tap, as for large inputs
        monkeypatch.setattr(conv_module, "STACKED_TAPS_MAX_VALUES", 0)
        monkeypatch.setattr(conv_module, "SKINNY_MAX_CHANNELS", 0)
    rng = np.random.RandomState(0)
    x = rng.randn(2, 8, 11, 13).astype("float32")
    mge.random.seed(0)
    reference = M.Conv2d(8, 12, kernel, stride, padding, dilation, groups, bias)
    fast = FastGradientConv2d(8, 12, kernel, stride, padding, dilation, groups, bias)
    fast.load_state_dict(reference.state_dict())
    for expected, actual in zip(gradients(reference, x), gradients(fast, x)):
        np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4)


# a 1x1 input with a 1x1 output meets one kernel tap: the training path is a matrix product
@pytest.mark.parametrize("kernel, stride, padding, dilation, groups, tap", [
    (3, 1, 1, 1, 1, (1, 1)), (5, 1, 2, 1, 1, (2, 2)), (3, 1, 2, 2, 1, (1, 1)),
    (3, 2, 1, 1, 1, (1, 1)), ((1, 3), 1, (0, 1), 1, 1, (0, 1)),
    (3, 1, 1, 1, 2, None),  # grouped: the usual path
])
def test_single_pixel_gradients_equal_megengine_conv(kernel, stride, padding, dilation, groups,
                                                     tap):
    x = np.random.RandomState(1).randn(3, 8, 1, 1).astype("float32")
    mge.random.seed(1)
    reference = M.Conv2d(8, 6, kernel, stride, padding, dilation, groups)
    fast = FastGradientConv2d(8, 6, kernel, stride, padding, dilation, groups)
    M.init.normal_(reference.bias)
    fast.load_state_dict(reference.state_dict())
    assert fast._single_pixel_tap(mge.tensor(x)) == tap  # pylint: disable=protected-access
    for expected, actual in zip(gradients(reference, x), gradients(fast, x)):
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


def operators_run(step, path):
    """The result of ``step()`` and the names of the MegEngine operators it ran, as MegEngine's
    profiler recorded them."""
    profiler = Profiler(path=str(path), with_backtrace=False)
    with profiler:
        result = step()
    profiler.dump()
    with open(profiler.path) as f:
        return result, {event["name"] for event in json.load(f)["traceEvents"] if "name" in event}


# a multithread device missed by name would silently take MegEngine's slow filter gradient
@pytest.mark.parametrize("threads", [1, 2])
def test_training_on_single_and_multithread_cpu_devices_takes_the_matmul_weight_gradient(
        threads, tmp_path):
    rng = np.random.RandomState(3)
    with default_cpu_threads(threads):
        mge.random.seed(3)
        reference = M.Conv2d(8, 12, 3, stride=2, padding=1)
        fast = FastGradientConv2d(8, 12, 3, stride=2, padding=1)
        fast.load_state_dict(reference.state_dict())
        x = rng.randn(2, 8, 11, 13).astype("float32")
        expected, reference_operators = operators_run(lambda: gradients(reference, x),
                                                      tmp_path / "reference")
        actual, fast_operators = operators_run(lambda: gradients(fast, x), tmp_path / "fast")
    assert "ConvolutionBackwardFilterV2" in reference_operators  # what the profile shows
    assert not any(name.startswith("ConvolutionBackwardFilter") for name in fast_operators)
    assert "BatchedMatrixMul" in fast_operators
    for want, got in zip(expected, actual):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
