"""MegEngine's CPU devices, and how asynchronously its operators run."""
import contextlib

import megengine as mge


def cpu_device(threads):
    """MegEngine's CPU device running kernels on ``threads`` threads ("cpu0" is one)."""
    return "multithread{}:0".format(threads) if threads > 1 else "cpu0"


def on_cpu_device(tensor):
    """Whether ``tensor`` lives on a CPU device: "cpu<k>" (one thread) or
    "multithread<threads>:<k>"."""
    name = str(tensor.device.physical_name)
    return name.startswith("cpu") or name.startswith("multithread")


@contextlib.contextmanager
def default_cpu_threads(threads):
    """Create tensors on ``cpu_device(threads)`` inside the block, then restore the default."""
    previous = mge.get_default_device()
    mge.set_default_device(cpu_device(threads))
    try:
        yield
    finally:
        mge.set_default_device(previous)


# MegEngine's async_level for training on the CPU: 0, the only level at which identical eager
# trainings never went wrong (docs/megengine_notes.md: at 2 and 1, runs now and then computed
# a step wrong or ended an epoch with NaN weights, with MegEngine's own operators too). The
# eager step (--step eager) pays 1.4-2x its level-2 time for it; the traced step
# (traced_step.py, the default), one graph per step, pays only its batch and reads.
CPU_TRAINING_ASYNC_LEVEL = 0


@contextlib.contextmanager
def async_level(level):
    """Inside the block MegEngine runs operators at ``level``: 2 fully asynchronously (its
    default), 1 waiting after operators whose output shapes it cannot infer, 0 each operator
    before returning. Restores the previous level after."""
    previous = mge.config.async_level
    mge.config.async_level = level
    try:
        yield
    finally:
        mge.config.async_level = previous
