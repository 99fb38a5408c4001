"""``model.inference`` as a MegEngine Lite file: traced, optimized for inference with conv +
bias + ReLU fused, in the NCHW or NCHW88 layout. One file serves any image size and batch
size (see trace.py)."""
import os
import tempfile

import numpy as np

import megengine as mge

from ..errors import ConfigError
from ..utils.files import atomic_target, publish
from .fold import fold_frozen_bn
from .group_norm import pool_group_norms
from .layout import (
    PROBE_TIMEOUT_S, blocked_graph_failure, blocked_layout_misuse, check_layout,
    nchw88_kernels_run_here
)
from .trace import EXAMPLE_HW, INPUT_NAMES, OUTPUT_NAMES, recorded_inference

logger = mge.get_logger(__name__)

def dump_inference(model, path, fold_bn=True, layout="auto", probe_timeout=PROBE_TIMEOUT_S):
    """Write ``model.inference`` as a Lite model to ``path`` (atomically); return the layout
    it was written in.

    Inputs "image" [N, 3, H, W] float32 and "im_info" [N, 4]; outputs "scores" [N, P, K] and
    "boxes" [N, P, 4], as ``model.inference``. ``fold_bn`` first merges FrozenBN into convs
    (of a copy). The graph is optimized for inference with conv + bias + ReLU fused.
    ``layout``: "nchw"; "nchw88" (channel blocks of 8 for x86 AVX kernels; its GroupNorms are
    computed by ``PooledGroupNorm``); or "auto": NCHW88 where this CPU runs NCHW88 kernels and
    the NCHW88 graph of this model, run once in a child process, gives the NCHW outputs.
    """
    check_layout(layout)
    if fold_bn:
        model = fold_frozen_bn(model)
    try_blocked = layout == "nchw88" or (
        layout == "auto" and nchw88_kernels_run_here(probe_timeout))
    if try_blocked and _dump_blocked(model, path, layout == "auto", probe_timeout):
        return "nchw88"
    inference, _ = recorded_inference(model)
    dump_traced(inference, path, INPUT_NAMES, OUTPUT_NAMES)
    return "nchw"


def _dump_blocked(model, path, verify, timeout):
    """Dump ``model`` in NCHW88 to ``path`` if its graph is sound and, with ``verify``, runs
    right in a child process; True if it was written. Without ``verify`` (NCHW88 asked for),
    a graph that cannot be sound is an error."""
    image, im_info = probe_inputs(*EXAMPLE_HW)
    # the outputs of the recording call are those of the NCHW computation
    inference, expected = recorded_inference(pool_group_norms(model), (image, im_info))
    inputs = dict(zip(INPUT_NAMES, (image, im_info)))
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(path))) as directory:
        candidate = os.path.join(directory, os.path.basename(path))
        dump_traced(inference, candidate, INPUT_NAMES, OUTPUT_NAMES, "nchw88")
        if verify:
            failure = blocked_graph_failure(candidate, inputs, expected, timeout)
            if failure is not None:
                logger.warning("NCHW88 layout not used: %s; writing NCHW", failure)
                return False
        else:
            misuse = blocked_layout_misuse(candidate)
            if misuse:
                raise ConfigError("the NCHW88 graph of {} would pass blocked tensors to {}".format(
                    type(model).__name__, "; ".join(misuse)))
        publish(candidate, path)
    return True


def probe_inputs(height, width):
    """A random image [1, 3, height, width] (0-255) and its im_info (no resizing): the input
    on which an NCHW88 graph must give the outputs of the NCHW one."""
    image = np.random.RandomState(0).uniform(0, 255, (1, 3, height, width)).astype(np.float32)
    return image, np.array([[height, width, height, width]], dtype=np.float32)


def dump_traced(traced, path, input_names, output_names, layout="nchw"):
    """Write a traced function, called once, as a Lite graph in ``layout`` ("nchw" or
    "nchw88") to ``path`` (atomically)."""
    if layout not in ("nchw", "nchw88"):
        raise ConfigError("layout must be nchw or nchw88, got {!r}".format(layout))
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
