"""The training benchmark: synthetic batches, the phase split, and the numbers it reports."""
import os
import re

import numpy as np
import pytest

from official.vision.detection.benchmark.flops import count_conv_flops
from official.vision.detection.benchmark.training import (
    PHASES, TrainTiming, synthetic_sample, time_training
)
from official.vision.detection.data.synthetic import make_synthetic_coco
from official.vision.detection.utils.config_file import load_config_module

from conftest import load_tool, run_tool, write_config

CONFIG = '''
import sys
sys.path.insert(0, {tests!r})
from conftest import tiny_config
from official.vision.detection import models

Net = models.FCOS
Cfg = tiny_config
'''


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("config") / "tiny.py"
    path.write_text(CONFIG.format(tests=os.path.dirname(os.path.abspath(__file__))))
    return path


def test_synthetic_samples_hold_boxes_of_at_least_8_px_inside_the_image():
    rng = np.random.default_rng(0)
    for _ in range(200):
        sample = synthetic_sample(rng, 48, 80, num_classes=3)
        boxes, labels = sample["boxes"], sample["labels"]
        assert sample["image"].shape == (48, 80, 3) and 1 <= len(boxes) <= 4
        assert (boxes[:, 2] - boxes[:, 0] >= 8).all() and (boxes[:, 3] - boxes[:, 1] >= 8).all()
        assert (boxes >= 0).all() and (boxes[:, 2] <= 80).all() and (boxes[:, 3] <= 48).all()
        assert set(labels) <= {0, 1, 2}


# Three steps of 4 images (ms): the steps take 45, 85 and 76 ms, median 76, while the phase
# medians sum to 1 + 20 + 40 + 4 = 65, so a step built from phase medians is caught.
TIMING = TrainTiming({"data": [1, 1, 2], "forward": [10, 20, 30], "backward": [30, 60, 40],
                      "optimizer": [4, 4, 4]}, batch_size=4, input_shape=(4, 3, 64, 96),
                     step_flops=6e9)


def test_timing_arithmetic():
    assert TIMING.step_ms() == [45, 85, 76]
    assert TIMING.median_ms("backward") == 40
    assert TIMING.ms_per_image() == 76 / 4
    assert TIMING.gflops_per_second() == pytest.approx(6 / 0.076)


def test_report_prints_the_phases_the_median_step_and_its_gflops(capsys):
    load_tool("benchmark.py").report_training(TIMING, measured_peak_gflops=100)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[1].split() == ["forward", "median", "20.0", "ms", "(min", "10.0,", "max", "30.0)"]
    # 6 conv GFLOPs in the median step of 76 ms: 78.9 GFLOP/s, 79% of 100
    assert lines[-5] == ("step: 76.0 ms for 4 images of 64x96 (padded), 6.0 conv GFLOPs (3 x the "
                         "forward's), 78.9 GFLOP/s, 79% of the measured 100 GFLOP/s limit")
    # all steps, 45 + 85 + 76 ms
    assert lines[-4] == ("total: 0.2 s for 3 steps of 1 padded input shape(s), data and graph "
                         "compilations included")
    assert lines[-3] == "train_total_s=0.2"
    assert lines[-2] == "train_ms_per_image=19.0"


def test_every_phase_is_timed_for_every_step_and_flops_are_three_forwards(config_file):
    module = load_config_module(str(config_file))
    timing = time_training(module, batch_size=2, steps=3, warmup=1, short_size=64, max_size=90,
                           step="eager")
    assert timing.step == "eager" and set(timing.phase_ms) == set(PHASES)
    assert all(len(times) == 3 and min(times) > 0 for times in timing.phase_ms.values())
    assert timing.input_shape == (2, 3, 64, 96)  # 90 padded to a multiple of 32
    model = module.Net(module.Cfg())
    model.eval()
    assert timing.step_flops == 3 * count_conv_flops(model, (2, 3, 64, 96))


def test_tool_prints_the_phase_split_and_ends_with_per_image_time_and_peak_memory(config_file):
    result = run_tool("benchmark.py", "-f", config_file, "--train", "-b", "2", "-n", "3",
                      "--warmup", "1", "--short-size", "64", "--max-size", "96",
                      "--step", "traced")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    # the traced step is one graph: data and step, no phases inside
    assert lines[-8].startswith("traced training step")
    assert [line.split()[0] for line in lines[-7:-5]] == ["data", "step"]
    step_ms = float(re.match(r"step: ([0-9.]+) ms for 2 images of 64x96", lines[-5]).group(1))
    total = float(re.match(r"total: ([0-9.]+) s for 3 steps of 1 padded input shape\(s\), data "
                           r"and graph compilations included", lines[-4]).group(1))
    assert lines[-3] == "train_total_s={:.1f}".format(total) and total >= 3 * step_ms / 1000 - 0.1
    assert re.fullmatch(r"train_ms_per_image=[0-9.]+", lines[-2])
    assert float(lines[-2].split("=")[1]) == pytest.approx(step_ms / 2, abs=0.06)
    assert re.fullmatch(r"peak_rss_mb=[0-9]+", lines[-1]) and int(lines[-1].split("=")[1]) > 100


def test_on_a_dataset_the_steps_train_on_its_batches_at_their_sizes(tmp_path):
    make_synthetic_coco(str(tmp_path / "shapes"), num_train=6, num_val=1,
                        image_size=((40, 100), (40, 100)), num_classes=3, seed=2)
    module = load_config_module(write_config(tmp_path / "fcos.py", nr_images=6))
    timing = time_training(module, batch_size=2, steps=3, warmup=0, short_size=None,
                           max_size=None, step="eager", dataset_dir=str(tmp_path))
    # the config's short side 64 and long side at most 96: padded 64x96 or 96x64
    assert timing.input_shape in ((2, 3, 64, 96), (2, 3, 96, 64))
    assert len(timing.step_ms()) == 3 and timing.total_seconds() == sum(timing.step_ms()) / 1000


def test_tool_needs_an_image_unless_training(config_file):
    result = run_tool("benchmark.py", "-f", config_file)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: give -i IMAGE to time inference, or --train")
