"""``model.inference`` as a traced graph: the names of its inputs and outputs, example inputs,
recording it once, and running it in this process (the "traced" engine).

Every shape in the graph is computed from its inputs (padding to multiples of 32, feature
sizes, anchor points), so one recording serves any image size and batch size.
"""
import numpy as np

import megengine as mge
from megengine.jit import trace

from ..boxes import resized_hw

INPUT_NAMES = ("image", "im_info")
OUTPUT_NAMES = ("scores", "boxes")
# any size works: the graph keeps shapes symbolic. Neither side is a multiple of 32, so the
# traced padding branch is the general one; small, because recording runs the network once.
EXAMPLE_HW = (48, 80)


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


def representative_inputs(cfg, seed=0):
    """A random 4:3 landscape image at the config's test size (e.g. 1x3x800x1067 for the
    COCO models) and its im_info: what timings that choose a layout or an engine run."""
    height, width = resized_hw(480, 640, cfg.test_image_short_size, cfg.test_image_max_size)
    image = np.random.RandomState(seed).uniform(0, 255, (1, 3, height, width))
    im_info = np.array([[height, width, height, width]], dtype=np.float32)
    return image.astype(np.float32), im_info


def recorded_inference(model, inputs=None):
    """(traced ``model.inference`` with its graph recorded, its NumPy outputs {name: array})
    from one call on ``inputs`` (image, im_info), by default zeros of EXAMPLE_HW; the
    traced function is ready to dump."""
    inference = trace_inference(model)
    image, im_info = example_inputs(*EXAMPLE_HW) if inputs is None else inputs
    outputs = inference(mge.tensor(image), mge.tensor(im_info))
    return inference, dict(zip(OUTPUT_NAMES, (value.numpy() for value in outputs)))


class TracedDetector:
    """``model.inference`` run as a traced graph in this process, without a file: the
    "traced" engine. Same interface as ``LiteDetector``; NumPy outputs."""

    def __init__(self, model):
        self.cfg = model.cfg
        self._inference = trace_inference(model)

    def inference(self, image, im_info):
        """image [N, 3, H, W], im_info [N, 4] -> scores [N, P, K], boxes [N, P, 4] (numpy)."""
        scores, boxes = self._inference(mge.tensor(image), mge.tensor(im_info))
        return scores.numpy(), boxes.numpy()
