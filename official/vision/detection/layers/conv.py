"""Conv2d with an optional norm, and a fast weight gradient for training on the CPU.

MegEngine 1.13's CPU kernel for the convolution weight gradient is 5-15x slower than matrix
multiplies (e.g. 3x3, 64->64 channels, 8x32x32: ~1000 ms vs ~150 ms per step). While
training on the CPU, the weight gradient is therefore computed by ``WeightGradByMatmul``; the
input gradient and all forward values still come from MegEngine's convolution. Parameter names
and shapes are those of ``megengine.module.Conv2d``.
"""
import megengine.functional as F
import megengine.module as M
from megengine.autodiff import Function


class WeightGradByMatmul(Function):
    """Returns zeros shaped like the convolution output; its backward turns the output
    gradient into the convolution's weight gradient with one batched matmul:
    dW[:, :, i, j] = sum_n dY_n @ X_n(i, j)^T, where X_n(i, j) is the padded input seen through
    tap (i, j) of every window."""

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
        conv, groups = self.conv, self.conv.groups
        n, out_channels, out_h, out_w = grad_output.shape
        (pad_h, pad_w), (stride_h, stride_w) = conv.padding, conv.stride
        (dilation_h, dilation_w), (kernel_h, kernel_w) = conv.dilation, conv.kernel_size
        inputs = self.inputs
        if pad_h or pad_w:
            inputs = F.nn.pad(inputs, ((0, 0), (0, 0), (pad_h, pad_h), (pad_w, pad_w)))
        in_channels = inputs.shape[1]
        taps = []
        for i in range(kernel_h):
            for j in range(kernel_w):
                top, left = i * dilation_h, j * dilation_w
                taps.append(inputs[:, :, top:top + stride_h * (out_h - 1) + 1:stride_h,
                                   left:left + stride_w * (out_w - 1) + 1:stride_w])
        # [N * G, taps * C / G, P]: every tap's view of the input, stacked tap-major
        seen = F.stack(taps, axis=1).reshape(n, kernel_h * kernel_w, groups, -1, out_h * out_w)
        seen = seen.transpose(0, 2, 1, 3, 4).reshape(n * groups, -1, out_h * out_w)
        grad = grad_output.reshape(n * groups, out_channels // groups, out_h * out_w)
        weight_grad = F.matmul(grad, seen, transpose_b=True)  # [N * G, O / G, taps * C / G]
        weight_grad = weight_grad.reshape(n, groups, out_channels // groups, kernel_h * kernel_w,
                                          in_channels // groups).sum(axis=0)
        return weight_grad.transpose(0, 1, 3, 2).reshape(self.weight_shape)


def on_cpu_device(tensor):
    # CPU devices are "cpu<k>" (one thread) or "multithread<threads>:<k>"
    name = str(tensor.device.physical_name)
    return name.startswith("cpu") or name.startswith("multithread")


class Conv2d(M.Conv2d):
    """megengine.module.Conv2d, followed by ``norm`` when given (stored as ``.norm``, the
    official layout), with the CPU training speed-up described above."""

    def __init__(self, *args, norm=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.norm = norm

    def calc_conv(self, inp, weight, bias):
        if not (self.training and on_cpu_device(inp)):
            return super().calc_conv(inp, weight, bias)
        out = super().calc_conv(inp, weight.detach(), bias)
        return out + WeightGradByMatmul(self, inp.detach(), out.shape)(weight)

    def forward(self, x):
        x = super().forward(x)
        return x if self.norm is None else self.norm(x)
