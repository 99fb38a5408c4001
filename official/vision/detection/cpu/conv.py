"""Convolution gradients by matrix products: MegEngine 1.13's CPU gradient kernels are slow.

MegEngine 1.13's CPU kernels for the convolution gradients are slower than its forward
convolution and matrix multiplies: the weight gradient 5-15x (e.g. 3x3, 64->64 channels,
8x32x32: ~1000 ms vs ~150 ms per step), the input gradient ~1.5x (the demo's stride-1 convs:
149 ms vs 98 ms per step on one thread). While training on the CPU the weight gradient is
therefore computed by matrix multiplies over the kernel taps (``weight_gradient``), and the
input gradient of a stride-1 convolution is a forward convolution of the output gradient with
the flipped kernel (``StrideOneConv``); strided convolutions keep MegEngine's input gradient.
A convolution of a single pixel into a single pixel is a matrix product with its one kernel
tap. Forward values are otherwise MegEngine's convolution.
"""
import megengine.functional as F
from megengine.autodiff import Function

from ..layers.conv import Conv2d


# Stacking every tap of the input (im2col) for one matrix product beat one product per tap
# by up to 2x where the per-tap products are small (512 channels at 3x4: 5 vs 10 ms; the
# head's P5-P7) or skinny (the 7x7 stem on 3 channels: 17 vs 29 ms), and was within 10%
# elsewhere; but large stacked buffers raised the training benchmark's peak memory from
# ~950 to ~1070 MB (glibc keeps the freed blocks), so only small or skinny ones are stacked.
STACKED_TAPS_MAX_VALUES = 1 << 19  # 2 MB of float32
SKINNY_MAX_CHANNELS = 4


def weight_gradient(conv, inputs, grad_output, weight_shape):
    """dW of ``conv`` from its input [N, C, H, W] and output gradient [N, O, Ho, Wo]:
    dW = dY @ X^T per group, dY as [O, N * P] and X as the padded input seen through the
    kernel's taps, [C * taps, N * P], with the batch folded into the summed dimension. X is
    built whole (one product) when small or skinny, else one tap at a time (one product per
    tap, no buffer of every tap)."""
    groups = conv.groups
    n, out_channels, out_h, out_w = grad_output.shape
    (pad_h, pad_w), (stride_h, stride_w) = conv.padding, conv.stride
    (dilation_h, dilation_w), (kernel_h, kernel_w) = conv.dilation, conv.kernel_size
    # [G, O / G, N * P]
    grad = grad_output.reshape(n, groups, out_channels // groups, out_h * out_w)
    grad = grad.transpose(1, 2, 0, 3).reshape(groups, out_channels // groups, -1)
    in_channels, height, width = inputs.shape[1:]
    channels_first = inputs.transpose(1, 0, 2, 3)  # [C, N, H, W]: the batch joins P
    if pad_h or pad_w:
        # written into zeros: ~10x faster than F.nn.pad on these shapes
        inputs = F.zeros((in_channels, n, height + 2 * pad_h, width + 2 * pad_w))
        inputs[:, :, pad_h:pad_h + height, pad_w:pad_w + width] = channels_first
    else:
        inputs = channels_first
    taps = [inputs[:, :, i * dilation_h:i * dilation_h + stride_h * (out_h - 1) + 1:stride_h,
                   j * dilation_w:j * dilation_w + stride_w * (out_w - 1) + 1:stride_w]
            for i in range(kernel_h) for j in range(kernel_w)]
    stacked_values = in_channels * len(taps) * grad.shape[-1]
    if (stacked_values <= STACKED_TAPS_MAX_VALUES
            or in_channels // groups <= SKINNY_MAX_CHANNELS):
        # [C, taps, N, Ho, Wo] -> [G, C / G * taps, N * P]
        columns = F.stack(taps, axis=1).reshape(groups, -1, grad.shape[-1])
        return F.matmul(grad, columns, transpose_b=True).reshape(weight_shape)
    per_tap = [F.matmul(grad, tap.reshape(groups, in_channels // groups, -1), transpose_b=True)
               for tap in taps]  # [G, O / G, C / G] each
    return F.stack(per_tap, axis=3).reshape(weight_shape)


class WeightGradByMatmul(Function):
    """Returns zeros shaped like the convolution output; its backward is ``weight_gradient``.
    Added to an output computed with a detached weight, it gives that output MegEngine's input
    gradient and this weight gradient."""

    def __init__(self, conv, inputs, output_shape):
        super().__init__()
        self.conv = conv
        self.inputs = inputs  # [N, C, H, W], detached
        self.output_shape = output_shape

    def forward(self, weight):
        self.weight_shape = weight.shape
        return F.zeros(self.output_shape)

    def backward(self, grad_output):
        if grad_output is None:  # the output did not reach the loss
            return None
        return weight_gradient(self.conv, self.inputs, grad_output, self.weight_shape)


class StrideOneConv(Function):
    """A stride-1 convolution without bias whose gradients are a forward convolution (input)
    and ``weight_gradient`` (weight). Stride 1 makes the input gradient the full correlation
    of the output gradient with the kernel flipped in space and transposed in channels."""

    def __init__(self, conv):
        super().__init__()
        self.conv = conv

    def forward(self, inputs, weight):
        self.inputs, self.weight = inputs, weight
        conv = self.conv
        return F.conv2d(inputs, weight, None, 1, conv.padding, conv.dilation, conv.groups)

    def backward(self, grad_output):
        if grad_output is None:
            return None, None
        conv, weight = self.conv, self.weight
        # flipped in space, channels swapped: [(G,) O, C, kh, kw] -> [(G,) C, O, kh, kw]
        g = weight.ndim - 4  # 1 for grouped weights
        flipped = weight[..., ::-1, ::-1].transpose(*range(g), g + 1, g, g + 2, g + 3)
        (kernel_h, kernel_w), (dilation_h, dilation_w) = conv.kernel_size, conv.dilation
        padding = (dilation_h * (kernel_h - 1) - conv.padding[0],
                   dilation_w * (kernel_w - 1) - conv.padding[1])
        input_grad = F.conv2d(grad_output, flipped, None, 1, padding, conv.dilation,
                              conv.groups)
        return input_grad, weight_gradient(conv, self.inputs, grad_output, weight.shape)


class FastGradientConv2d(Conv2d):
    """A ``Conv2d`` (its tensors, norm and settings) whose training step on the CPU takes the
    gradients described above; same forward values and gradients as MegEngine's."""

    @classmethod
    def of(cls, conv):
        """The convolution ``conv`` (a ``megengine.module.Conv2d``) with fast CPU gradients,
        sharing its Parameters: the optimizer and the state_dict see the same tensors."""
        fast = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                   conv.padding, conv.dilation, conv.groups, bias=conv.bias is not None,
                   norm=getattr(conv, "norm", None))
        fast.weight, fast.bias = conv.weight, conv.bias
        fast.training = conv.training
        return fast

    def calc_conv(self, inp, weight, bias):
        if not self.training:  # frozen stages and eval mode: the plain convolution
            return super().calc_conv(inp, weight, bias)
        tap = self._single_pixel_tap(inp)
        if tap is not None:
            # MegEngine takes ~0.7 ms for a 3x3 conv on [8, 64, 1, 1] (the head at P7 of
            # small images), ~15x this product
            n, out_channels = inp.shape[0], weight.shape[0]
            out = F.matmul(inp.reshape(n, -1), weight[:, :, tap[0], tap[1]], transpose_b=True)
            out = out.reshape(n, out_channels, 1, 1)
            return out if bias is None else out + bias
        if self.stride == (1, 1) and self._flipped_padding_fits():
            out = StrideOneConv(self)(inp, weight)
            return out if bias is None else out + bias
        out = super().calc_conv(inp, weight.detach(), bias)
        return out + WeightGradByMatmul(self, inp.detach(), out.shape)(weight)

    def _single_pixel_tap(self, inp):
        """(i, j) of the only kernel tap that meets a 1x1 input giving a 1x1 output (there
        the convolution is a matrix product); None for any other input or a grouped conv."""
        if self.groups != 1 or tuple(inp.shape[2:]) != (1, 1):
            return None
        tap = []
        for d, k, p, s in zip(self.dilation, self.kernel_size, self.padding, self.stride):
            if (2 * p - d * (k - 1)) // s != 0 or p % d or p // d >= k:
                return None
            tap.append(p // d)
        return tuple(tap)

    def _flipped_padding_fits(self):
        # the input gradient's padding dilation * (kernel - 1) - padding must not be negative
        return all(d * (k - 1) >= p for d, k, p in zip(self.dilation, self.kernel_size,
                                                       self.padding))
