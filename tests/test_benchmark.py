"""The arithmetic of benchmarking: medians of given run times, GFLOP/s and the peak fraction,
the FLOPs of one convolution, and which runs and stages the timer measures."""
import re
import time

import megengine.functional as F
import megengine.module as M
import numpy as np
import pytest

from official.vision.detection.benchmark.flops import count_conv_flops
from official.vision.detection.benchmark.inference import benchmark, median_ms, stage_ms

from conftest import load_tool, tiny_config

# Four runs (seconds) whose medians are easy by hand. Per-run totals (ms) 33, 17, 30, 45: their
# median 31.5 differs from the sum of the stage medians (2.5 + 25 + 2.5 = 30), so a total
# built from stage medians is caught.
TIMINGS = [
    {"preprocess": 0.002, "network": 0.030, "postprocess": 0.001},
    {"preprocess": 0.004, "network": 0.010, "postprocess": 0.003},
    {"preprocess": 0.001, "network": 0.020, "postprocess": 0.009},
    {"preprocess": 0.003, "network": 0.040, "postprocess": 0.002},
]


def test_stage_times_in_ms_run_by_run_with_each_runs_total():
    runs = stage_ms(TIMINGS)
    assert runs["network"] == pytest.approx([30, 10, 20, 40])
    assert runs["total"] == pytest.approx([33, 17, 30, 45])


def test_medians_of_given_run_times_by_hand():
    # an even count: the mean of the middle two values
    assert median_ms(TIMINGS) == pytest.approx(
        {"preprocess": 2.5, "network": 25, "postprocess": 2.5, "total": 31.5})
    assert median_ms(TIMINGS[:3]) == pytest.approx(
        {"preprocess": 2, "network": 20, "postprocess": 3, "total": 30})


def test_report_gives_flops_over_the_median_network_time_and_the_fraction_of_the_peak(capsys):
    # 5e9 FLOPs in the median network time of 25 ms: 200 GFLOP/s, half of a 400 GFLOP/s peak
    load_tool("benchmark.py").report(TIMINGS, 5e9, measured_peak_gflops=400)
    out = capsys.readouterr().out
    rate, percent, peak = re.search(
        r"network: 5\.0 conv GFLOPs \(2 x MACs\), ([\d.]+) GFLOP/s, (\d+)% of the measured "
        r"(\d+) GFLOP/s", out).groups()
    assert (float(rate), int(percent), int(peak)) == (200.0, 50, 400)
    total = re.search(r"total\s+median\s+([\d.]+) ms\s+\(min ([\d.]+), max ([\d.]+)\)", out)
    assert [float(v) for v in total.groups()] == [31.5, 17.0, 45.0]
    assert out.strip().splitlines()[-1] == "median_ms=31.5"


class OneConv(M.Module):
    """One convolution behind the ``inference`` interface that count_conv_flops records; it
    sees the 3-channel image twice (6 channels), so that it can have 3 groups of 2."""

    def __init__(self, conv):
        super().__init__()
        self.conv = conv

    def forward(self, image):
        return self.conv(F.concat([image, image], axis=1))

    def inference(self, image, im_info):  # pylint: disable=unused-argument
        return self(image)


@pytest.mark.parametrize("batch", [1, 2])
def test_flops_of_one_strided_dilated_grouped_conv_by_hand(batch):
    conv = M.Conv2d(6, 12, (3, 5), stride=2, padding=(1, 2), dilation=(2, 1), groups=3)
    # 9 x 11 input: Hout = (9 + 2 - 2 * (3 - 1) - 1) // 2 + 1 = 4, Wout = (11 + 4 - 5) // 2 + 1
    # = 6; each output sums Cin / groups * kh * kw = 2 * 15 products: 2 * 12 * 4 * 6 * 30
    assert count_conv_flops(OneConv(conv), (batch, 3, 9, 11)) == batch * 2 * 12 * 4 * 6 * 30


class PausingDetector:
    """A detector whose network takes a known time: call k sleeps pauses[k] seconds. Its
    outputs score below the threshold, so post-processing has nothing to keep."""

    def __init__(self, pauses):
        self.cfg = tiny_config()
        self.pauses = list(pauses)
        self.inputs = []

    def inference(self, image, im_info):
        self.inputs.append((image.shape, im_info.tolist()))
        time.sleep(self.pauses[len(self.inputs) - 1])
        return np.zeros((1, 10, self.cfg.num_classes), np.float32), np.zeros((1, 10, 4))


# sleep overshoot and other processes on a shared machine stay well under this
SCHEDULING_SLACK = 0.1


def test_benchmark_times_each_stage_of_the_runs_after_the_warm_up():
    # warm-up runs take 0.4 s: timing one of them instead of a timed run shows
    detector = PausingDetector([0.4, 0.4, 0.05, 0.15])
    img = np.random.RandomState(4).randint(0, 255, (60, 90, 3), dtype=np.uint8)
    timings = benchmark(detector, img, 100, 160, runs=2, warmup=2)
    # every call saw the image resized to short side 100 (60 x 90 -> 100 x 150)
    assert detector.inputs == [((1, 3, 100, 150), [[100, 150, 60, 90]])] * 4
    assert len(timings) == 2
    for pause, timing in zip([0.05, 0.15], timings):
        assert pause <= timing["network"] < pause + SCHEDULING_SLACK
        assert timing["preprocess"] < SCHEDULING_SLACK and timing["postprocess"] < SCHEDULING_SLACK
