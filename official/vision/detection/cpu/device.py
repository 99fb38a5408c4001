"""MegEngine's CPU devices, and running its operators synchronously."""
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


@contextlib.contextmanager
def synchronous_execution():
    """Inside the block MegEngine runs each operator before returning (async_level 0).

    Its default, fully asynchronous eager mode now and then corrupts values on the CPU
    (MegEngine 1.13): of six identical 24-step trainings of a tiny FCOS one ended with NaN
    weights, and a resumed run differed from an uninterrupted one by up to 1.3e-4 in about one
    try of six. Synchronously, repeated runs were identical, at ~2.5x the time per step.
    """
    previous = mge.config.async_level
    mge.config.async_level = 0
    try:
        yield
    finally:
        mge.config.async_level = previous
