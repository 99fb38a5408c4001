"""Arithmetic cost of a model: convolution FLOPs for an input size, and parameter count.

FLOPs are counted as 2 x multiply-accumulates (one multiply and one add each) of the
convolutions only; GroupNorm, ReLU, bias, upsampling and the box decoding add well under 1%.
"""
import megengine as mge
import megengine.module as M
from megengine.jit import trace

from ..deploy.trace import example_inputs


def conv_macs(conv, output_shape):
    """Multiply-accumulates of ``conv`` producing ``output_shape`` [N, Cout, Ho, Wo]:
    every output value sums (Cin / groups) * kh * kw products."""
    kernel_h, kernel_w = _pair(conv.kernel_size)
    batch, out_channels, out_h, out_w = output_shape
    per_output = conv.in_channels // conv.groups * kernel_h * kernel_w
    return batch * out_channels * out_h * out_w * per_output


def count_conv_flops(model, image_shape):
    """2 x convolution MACs of ``model.inference`` on an image [N, 3, H, W].

    Output sizes come from the model's own padding and strides: ``model.inference`` is
    recorded, not run (``record_only``), with static shapes, so this takes about a second
    and leaves no eager work running in the background to disturb timings.
    """
    macs = []

    def record_macs(conv, inputs, output):  # pylint: disable=unused-argument
        macs.append(conv_macs(conv, output.shape))

    handles = [m.register_forward_hook(record_macs) for m in model.modules()
               if isinstance(m, M.Conv2d)]
    inference = trace(model.inference, record_only=True, symbolic_shape=False)
    try:
        batch, _, height, width = image_shape
        inference(*(mge.tensor(value) for value in example_inputs(height, width, batch)))
    finally:
        for handle in handles:
            handle.remove()
    return 2 * sum(macs)


def count_parameters(model):
    """Number of values in the model's Parameters (FrozenBN statistics are buffers and are
    not counted; in the deployed graph they are folded into the conv weights)."""
    return sum(int(p.size) for p in model.parameters())


def _pair(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)
