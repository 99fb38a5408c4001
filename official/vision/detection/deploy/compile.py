"""Trace ``model.inference`` into a static graph and dump it for MegEngine Lite.

The dumped graph computes every shape from its inputs (padding to multiples of 32, feature
sizes, anchor points), so one file serves any image size and batch size.
"""
import numpy as np

import megengine as mge
from megengine.jit import trace

from ..utils.files import atomic_target
from .fold import fold_frozen_bn

INPUT_NAMES = ("image", "im_info")
OUTPUT_NAMES = ("scores", "boxes")
# any size works: the graph keeps shapes symbolic. Neither side is a multiple of 32, so the
# traced padding branch is the general one; small, because tracing runs the network once.
EXAMPLE_HW = (48, 80)
CONCRETE_LAYOUTS = ("nchw", "nchw88")


def trace_inference(model):
    """``model.inference`` compiled by ``trace(symbolic=True, capture_as_const=True)``.

    Call it with Tensors image [N, 3, H, W] (BGR, 0-255) and im_info [N, 4]; it returns
    Tensors scores [N, P, K] and boxes [N, P, 4]. The first call records the graph.
    """

    @trace(symbolic=True, capture_as_const=True)
    def inference(image, im_info):
        return model.inference(image, im_info)

    return inference


def example_inputs(height, width, batch=1):
    """Zero image [batch, 3, height, width] and its im_info [batch, 4] (no resizing)."""
    image = np.zeros((batch, 3, height, width), dtype=np.float32)
    im_info = np.tile(np.array([[height, width, height, width]], dtype=np.float32), (batch, 1))
    return image, im_info


def dump_inference(model, path, fold_bn=True, layout="nchw"):
    """Write ``model.inference`` as a Lite model to ``path`` (atomically).

    Inputs "image" [N, 3, H, W] float32 and "im_info" [N, 4]; outputs "scores" [N, P, K] and
    "boxes" [N, P, 4], as ``model.inference``. ``fold_bn`` first merges FrozenBN into convs
    (of a copy). The graph is optimized for inference with conv + bias + ReLU fused; with
    ``layout="nchw88"`` its convolutions run on channel blocks of 8 (x86 AVX kernels), which
    not every CPU runs: ``choose_layout("auto")`` tests this one.
    """
    if fold_bn:
        model = fold_frozen_bn(model)
    inference = trace_inference(model)
    image, im_info = example_inputs(*EXAMPLE_HW)
    inference(mge.tensor(image), mge.tensor(im_info))
    return dump_traced(inference, path, INPUT_NAMES, OUTPUT_NAMES, layout)


def dump_traced(traced, path, input_names, output_names, layout="nchw"):
    """Write a traced function, called once, as a Lite graph in ``layout`` ("nchw" or
    "nchw88") to ``path`` (atomically)."""
    if layout not in CONCRETE_LAYOUTS:
        raise ValueError("layout must be one of {}, got {!r}".format(CONCRETE_LAYOUTS, layout))
    with atomic_target(path) as partial:
        traced.dump(
            partial, arg_names=list(input_names), output_names=list(output_names),
            optimize_for_inference=True, enable_fuse_conv_bias_nonlinearity=True,
            enable_nchw88=layout == "nchw88",
            # the compatibility pass rewrites GroupNorm into elementwise ops with a [C] weight
            # against [N, C, H, W] maps and fails ("bad input shape for polyadic operator");
            # keeping the graph as traced keeps the native GroupNorm operator
            no_change_graph=True,
        )
    return path


class TracedDetector:
    """``model.inference`` run as a traced graph in this process, without a file: the
    "traced" engine. Same interface as ``LiteDetector``; numpy outputs."""

    def __init__(self, model):
        self.cfg = model.cfg
        self._inference = trace_inference(model)

    def inference(self, image, im_info):
        """image [N, 3, H, W], im_info [N, 4] -> scores [N, P, K], boxes [N, P, 4] (numpy)."""
        scores, boxes = self._inference(mge.tensor(image), mge.tensor(im_info))
        return scores.numpy(), boxes.numpy()
