"""The plain convolution layer: its forward is the cross-correlation (with bias, stride and
padding), followed by its norm."""
import numpy as np
import megengine as mge
import megengine.module as M

from official.vision.detection.layers.conv import Conv2d


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


def test_the_norm_applies_to_the_convolution_output():
    conv = Conv2d(2, 3, 1, bias=False, norm=M.Identity())
    plain = Conv2d(2, 3, 1, bias=False)
    plain.weight = conv.weight
    x = mge.tensor(np.random.RandomState(0).randn(1, 2, 4, 4).astype("float32"))
    np.testing.assert_array_equal(conv(x).numpy(), plain(x).numpy())
    conv.norm = lambda y: y * 2
    np.testing.assert_allclose(conv(x).numpy(), 2 * plain(x).numpy(), rtol=1e-6)
