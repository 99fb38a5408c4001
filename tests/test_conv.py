import json

import numpy as np
import pytest
import megengine as mge
import megengine.module as M
from megengine.autodiff import GradManager
from megengine.utils.profiler import Profiler

from official.vision.detection.layers import conv as conv_module
from official.vision.detection.layers.conv import Conv2d
from official.vision.detection.utils.cpu import default_cpu_threads


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
    fast = Conv2d(8, 12, kernel, stride, padding, dilation, groups, bias)
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
    fast = Conv2d(8, 6, kernel, stride, padding, dilation, groups)
    M.init.normal_(reference.bias)
    fast.load_state_dict(reference.state_dict())
    assert fast._single_pixel_tap(mge.tensor(x)) == tap  # pylint: disable=protected-access
    for expected, actual in zip(gradients(reference, x), gradients(fast, x)):
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


def cross_correlation_by_hand(x, weight, bias, stride, padding):
    """NCHW input, OIHW weight: out[n, o, i, j] = bias[o] + sum over c, u, v of
    weight[o, c, u, v] * padded x[n, c, i * stride + u, j * stride + v]."""
    _, _, kernel_h, kernel_w = weight.shape
    padded = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    out_h = (padded.shape[2] - kernel_h) // stride + 1
    out_w = (padded.shape[3] - kernel_w) // stride + 1
    out = np.zeros((x.shape[0], weight.shape[0], out_h, out_w)) + bias.reshape(1, -1, 1, 1)
    for u in range(kernel_h):
        for v in range(kernel_w):
            window = padded[:, :, u:u + stride * out_h:stride, v:v + stride * out_w:stride]
            out += np.einsum("nchw,oc->nohw", window, weight[:, :, u, v])
    return out


def test_eval_mode_computes_the_cross_correlation_with_bias_and_padding():
    rng = np.random.RandomState(2)
    conv = Conv2d(3, 4, 3, stride=2, padding=1)
    conv.weight = mge.Parameter(rng.randn(4, 3, 3, 3).astype("float32"))
    conv.bias = mge.Parameter(rng.randn(1, 4, 1, 1).astype("float32"))
    conv.eval()
    x = rng.randn(2, 3, 7, 9).astype("float32")
    expected = cross_correlation_by_hand(x.astype(np.float64), conv.weight.numpy(),
                                         conv.bias.numpy(), stride=2, padding=1)
    assert expected.shape == (2, 4, 4, 5)
    np.testing.assert_allclose(conv(mge.tensor(x)).numpy(), expected, rtol=1e-5, atol=1e-5)


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
        fast = Conv2d(8, 12, 3, stride=2, padding=1)
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
