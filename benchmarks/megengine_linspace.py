"""MegEngine 1.13: eager F.linspace returns values computed from another call's bounds at async
levels 2 and 1. Three linspaces are queued, then read; each is compared with NumPy.

    .venv/bin/python benchmarks/megengine_linspace.py

prints, per async level, how many of the calls came out wrong (none should). Why the package
builds index ranges with cumsum (layers/points.py) and never calls F.arange, F.linspace or
F.gather.
"""
import megengine as mge
import megengine.functional as F
import numpy as np

LEVELS = (
    # (points, stride) of three pyramid levels: linspace(stride / 2, (points - 0.5) * stride)
    (128, 8), (64, 16), (32, 32),
)
TRIALS = 50


def wrong_calls(async_level):
    """How many of TRIALS x len(LEVELS) linspace calls differ from NumPy's."""
    mge.config.async_level = async_level
    wrong = 0
    for _ in range(TRIALS):
        queued = [(F.linspace(0.5 * stride, (points - 0.5) * stride, points), points, stride)
                  for points, stride in LEVELS]
        for values, points, stride in queued:
            wrong += not np.allclose(values.numpy(), (np.arange(points) + 0.5) * stride)
    return wrong


def main():
    for level in (2, 1, 0):
        print("async_level {}: {} of {} linspace calls wrong".format(
            level, wrong_calls(level), TRIALS * len(LEVELS)))


if __name__ == "__main__":
    main()
