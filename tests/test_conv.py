import numpy as np
import pytest
import megengine as mge
import megengine.module as M
from megengine.autodiff import GradManager

from official.vision.detection.layers import conv as conv_module
from official.vision.detection.layers.conv import Conv2d
from official.vision.detection.utils.cpu import on_cpu_device


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


def test_eval_mode_uses_the_plain_convolution():
    conv = Conv2d(3, 4, 3, padding=1)
    conv.eval()
    x = mge.tensor(np.ones((1, 3, 5, 5), "float32"))
    np.testing.assert_array_equal(conv(x).numpy(), M.Conv2d.calc_conv(
        conv, x, conv.weight, conv.bias).numpy())


@pytest.mark.parametrize("device", ["cpu0", "multithread2:0"])
def test_single_and_multithread_cpu_devices_take_the_matmul_weight_gradient(device):
    # a multithread device missed by name would fall back to the slow native kernel
    assert on_cpu_device(mge.tensor([1.0], device=device))
