"""Conv2d whose training step runs its convolutions on oneDNN (conv.cpp's operators).

MegEngine 1.13's CPU convolutions ran the demo's shapes at 30-126 GFLOP/s on two cores
(docs/benchmarks.md, "Training step"); oneDNN, which torchvision's CPU convolutions use too,
computes forward, input gradient and weight gradient (with the bias gradient) in its own
kernels. ``OneDNNConv2d`` has the tensors, state dict and forward values of the convolution
it replaces; a shape oneDNN refuses keeps ``FastGradientConv2d``'s route, with one log line.
"""
import ctypes

import megengine as mge
import megengine.functional as F
from megengine.autodiff import Function
from megengine.core._imperative_rt import core2
from megengine.core._imperative_rt.core2 import apply  # pylint: disable=no-name-in-module
from megengine.core.ops import custom

from ..conv import FastGradientConv2d
from . import library

logger = mge.get_logger(__name__)

PRECISIONS = ("fp32", "bf16")


def conv_settings(conv, precision):
    """The operators' parameters of a convolution module: stride, padding (top, bottom,
    left, right), dilation, groups, precision and whether it has a bias."""
    (pad_h, pad_w) = conv.padding
    return dict(stride=list(conv.stride), padding=[pad_h, pad_h, pad_w, pad_w],
                dilation=list(conv.dilation), groups=conv.groups, precision=precision,
                bias=conv.bias is not None)


def refusal(x_shape, weight_shape, settings):
    """None if oneDNN runs this convolution (its primitives are then made and kept), else
    its reason in one line."""
    handle = library.load()
    message = ctypes.create_string_buffer(512)
    int64s, int32s = ctypes.c_int64, ctypes.c_int32
    refused = handle.fcos_onednn_check(
        (int64s * 4)(*x_shape), (int64s * len(weight_shape))(*weight_shape),
        len(weight_shape), (int32s * 2)(*settings["stride"]),
        (int32s * 4)(*settings["padding"]), (int32s * 2)(*settings["dilation"]),
        settings["groups"], int(settings["precision"] == "bf16"), int(settings["bias"]), message,
        len(message))
    return message.value.decode(errors="replace").strip() if refused else None


class OneDNNConvolution(Function):
    """y = conv(x, weight) + bias on oneDNN; its backward is one operator giving the input
    gradient (when ``input_grad``), the weight gradient and the bias gradient (with
    ``settings["bias"]``; else ``bias`` is a placeholder that gets no gradient)."""

    def __init__(self, settings, input_grad=True):
        super().__init__()
        self.settings = settings
        self.input_grad = input_grad

    def forward(self, inputs, weight, bias):
        self.inputs, self.weight = inputs, weight
        (output,) = apply(custom.FcosConvForward(**self.settings), inputs, weight, bias)
        return output

    def backward(self, grad_output):
        if grad_output is None:  # the output did not reach the loss
            return None, None, None
        op = custom.FcosConvBackward(input_grad=self.input_grad, **self.settings)
        input_grad, weight_grad, bias_grad = apply(op, self.inputs, self.weight, grad_output)
        return ((input_grad if self.input_grad else None), weight_grad,
                (bias_grad if self.settings["bias"] else None))


class OneDNNConv2d(FastGradientConv2d):
    """A ``Conv2d`` (its tensors, norm and settings) whose training step runs on oneDNN in
    ``precision`` ("fp32", or "bf16": inputs, weights and output gradients rounded to
    bfloat16 inside the operators, results and gradients float32). Eval mode, and shapes
    oneDNN refuses, keep the routes of ``FastGradientConv2d``."""

    refused = {}  # (input shape, weight shape, settings) -> reason, logged once

    @classmethod
    def of(cls, conv, precision="fp32"):  # pylint: disable=arguments-differ
        fast = super().of(conv)
        fast.precision = precision
        return fast

    def calc_conv(self, inp, weight, bias):
        if not self.training:
            return super().calc_conv(inp, weight, bias)
        settings = conv_settings(self, self.precision)
        key = (tuple(inp.shape), tuple(weight.shape), str(sorted(settings.items())))
        if key not in self.refused:
            self.refused[key] = refusal(key[0], key[1], settings)
            if self.refused[key]:
                logger.info("oneDNN refused a convolution of %s with weights %s (%s): "
                            "MegEngine's runs it", key[0], key[1], self.refused[key])
        if self.refused[key]:
            return super().calc_conv(inp, weight, bias)
        flat_bias = F.zeros((1,)) if bias is None else bias.reshape(-1)  # placeholder
        # the image, or a frozen stage's output, is tracked by no gradient: skip its gradient
        input_grad = core2.get_grad_key([inp]) is not None
        return OneDNNConvolution(settings, input_grad)(inp, weight, flat_bias)
