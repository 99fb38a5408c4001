"""``model.inference`` as a MegEngine Lite file: traced, optimized for inference with conv +
bias + ReLU fused, in the NCHW or NCHW88 layout. One file serves any image size and batch
size (see trace.py)."""
import os
import tempfile

import numpy as np

import megengine as mge

from ..errors import ConfigError
from ..utils.files import atomic_target, publish
from ..utils.machine import usable_cpus
from .fold import fold_batch_norms
from .group_norm import pool_group_norms
from .layout import (
    PROBE_TIMEOUT_S, SECONDS, TIMING_TIMEOUT_S, blocked_graph_failure, blocked_layout_misuse,
    check_layout, nchw88_kernels_run_here, run_in_child
)
from .trace import (
    EXAMPLE_HW, INPUT_NAMES, OUTPUT_NAMES, recorded_inference, representative_inputs
)

logger = mge.get_logger(__name__)

TIMED_RUNS = 3  # per layout, after a first run


def dump_inference(model, path, fold_bn=True, layout="auto", probe_timeout=PROBE_TIMEOUT_S,
                   timing_timeout=TIMING_TIMEOUT_S):
    """Write ``model.inference`` as a Lite model to ``path`` (atomically); return the layout
    it was written in.

    Inputs "image" [N, 3, H, W] float32 and "im_info" [N, 4]; outputs "scores" [N, P, K] and
    "boxes" [N, P, 4], as ``model.inference``. ``fold_bn`` first folds the batch norms into
    the convs (of a copy; ``fold.py``). The graph is optimized for inference with conv + bias
    + ReLU fused.
    ``layout``: "nchw"; "nchw88" (channel blocks of 8 for x86 AVX kernels; its GroupNorms are
    computed by ``PooledGroupNorm``); or "auto": the faster of the two on this CPU, timed in
    child processes at the config's test size (``choose_layout``).
    """
    check_layout(layout)
    if fold_bn:
        model = fold_batch_norms(model)
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(path))) as directory:
        candidates = {}
        if layout in ("nchw", "auto"):
            candidates["nchw"] = _dump_nchw(model, os.path.join(directory, "nchw.mge"))
        if layout == "nchw88" or (layout == "auto" and nchw88_kernels_run_here(probe_timeout)):
            candidates["nchw88"] = _dump_blocked(model, os.path.join(directory, "nchw88.mge"),
                                                 layout == "auto", probe_timeout)
        candidates = {name: file for name, file in candidates.items() if file is not None}
        chosen = choose_layout(candidates, model.cfg, timing_timeout) if len(candidates) > 1 \
            else next(iter(candidates))
        publish(candidates[chosen], path)
    return chosen


def choose_layout(candidates, cfg, timeout):
    """The layout ({layout: dumped file}) whose graph runs the config's test size fastest on
    the threads Lite will use, each timed in a child process within ``timeout`` seconds (one
    that fails or runs out of time loses); logs the times."""
    image, im_info = representative_inputs(cfg)
    inputs = dict(zip(INPUT_NAMES, (image, im_info)))
    times = {}
    for layout, candidate in candidates.items():
        outputs, failure = run_in_child(candidate, inputs, timeout, usable_cpus(), TIMED_RUNS)
        times[layout] = float("inf") if failure else 1000 * float(np.median(outputs[SECONDS]))
    chosen = min(times, key=times.get)
    logger.info("layout auto: %s ms per run at %dx%d on %d thread(s): %s", {
        name: round(ms, 1) for name, ms in times.items()}, image.shape[2], image.shape[3],
        usable_cpus(), chosen)
    return chosen


def _dump_nchw(model, path):
    inference, _ = recorded_inference(model)
    return dump_traced(inference, path, INPUT_NAMES, OUTPUT_NAMES)


def _dump_blocked(model, path, verify, timeout):
    """``path`` with ``model`` dumped in NCHW88 if its graph is sound and, with ``verify``,
    runs right in a child process; None if it does not. Without ``verify`` (NCHW88 asked
    for), a graph that cannot be sound is an error."""
    image, im_info = probe_inputs(*EXAMPLE_HW)
    # the outputs of the recording call are those of the NCHW computation
    inference, expected = recorded_inference(pool_group_norms(model), (image, im_info))
    dump_traced(inference, path, INPUT_NAMES, OUTPUT_NAMES, "nchw88")
    if verify:
        failure = blocked_graph_failure(path, dict(zip(INPUT_NAMES, (image, im_info))), expected,
                                        timeout)
        if failure is not None:
            logger.warning("NCHW88 layout not used: %s", failure)
            return None
        return path
    misuse = blocked_layout_misuse(path)
    if misuse:
        raise ConfigError("the NCHW88 graph of {} would pass blocked tensors to {}".format(
            type(model).__name__, "; ".join(misuse)))
    return path


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
