"""Compiled inference: BN folding, the dumped Lite graph against eager, its layout, FLOPs,
the tools."""
import ast
import logging
import re
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

import megengine as mge
import megengine.functional as F
import megengine.module as M

from official.vision.detection.benchmark.flops import count_conv_flops, count_parameters
from official.vision.detection.benchmark.inference import machine_peak_gflops, nominal_ghz
from official.vision.detection.deploy.detector import build_detector
from official.vision.detection.deploy.fold import fold_batch_norms, fold_into_conv
from official.vision.detection.deploy.group_norm import PooledGroupNorm, pool_group_norms
from official.vision.detection.deploy.lite_detector import LiteDetector
from official.vision.detection.deploy.lite_export import dump_inference, dump_traced
from official.vision.detection.deploy.layout import (
    blocked_graph_failure, blocked_layout_misuse, dumped_layout, nchw88_kernels_run_here,
    run_in_child
)
from official.vision.detection.deploy.trace import (
    INPUT_NAMES, OUTPUT_NAMES, TracedDetector, recorded_inference
)
from official.vision.detection.errors import ConfigError
from official.vision.detection.evaluator import DetEvaluator
from official.vision.detection.layers.norm import FrozenBatchNorm2d
from official.vision.detection.utils.config_file import load_config_module

import hubconf
from conftest import (
    RELEASED, randomize_batch_norms, randomize_frozen_bn, run_tool, with_distinct_outputs
)
from detection_matching import assert_same_detections

SCORE_TOLERANCE = 1e-3
BOX_TOLERANCE = 0.5  # pixels
# the first is padded to 128 x 160 inside the model, the second needs no padding
SIZES = [(100, 150), (128, 160)]


@pytest.fixture(scope="module")
def lite_model_path(frozen_bn_model, cpu_runs_nchw88, tmp_path_factory):
    """The tiny model dumped in NCHW88 where it runs, else NCHW: the blocked kernels get tested
    wherever they can be (``--layout auto`` may pick either, by speed)."""
    path = str(tmp_path_factory.mktemp("lite") / "tiny.mge")
    dump_inference(frozen_bn_model, path, layout="nchw88" if cpu_runs_nchw88 else "nchw")
    return path


# A test's own answer to "does this CPU run NCHW88 convolutions?", independent of the package's
# probe: one convolution dumped in NCHW88 and run by Lite in a child process.
ONE_BLOCKED_CONV = """
import sys
import numpy as np
import megengine as mge
import megengine.module as M
from megengine.jit import trace
from megenginelite import LiteNetwork
conv = M.Conv2d(8, 8, 3, padding=1)
traced = trace(conv, symbolic=True, capture_as_const=True)
x = np.ones((1, 8, 8, 8), np.float32)
expected = traced(mge.tensor(x)).numpy()
traced.dump(sys.argv[1], arg_names=["x"], optimize_for_inference=True, enable_nchw88=True)
network = LiteNetwork()
network.enable_cpu_inplace_mode()
network.load(sys.argv[1])
network.get_io_tensor("x").set_data_by_copy(x)
network.forward()
network.wait()
output = network.get_io_tensor(network.get_all_output_name()[0]).to_numpy()
sys.exit(0 if np.allclose(output, expected, atol=1e-4) else 3)
"""


@pytest.fixture(scope="session")
def cpu_runs_nchw88(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("one_conv") / "conv.mge")
    try:
        result = subprocess.run([sys.executable, "-c", ONE_BLOCKED_CONV, path], timeout=120,
                                capture_output=True, check=False)
    except subprocess.TimeoutExpired:  # MKLDNN's exit() can deadlock Lite
        return False
    return result.returncode == 0


def random_input(height, width, batch=1, seed=0):
    """image [batch, 3, H, W] in 0-255 and im_info [batch, 4] for originals twice as large."""
    image = np.random.RandomState(seed).uniform(0, 255, (batch, 3, height, width))
    im_info = np.tile([[height, width, 2 * height, 2 * width]], (batch, 1))
    return image.astype("float32"), im_info.astype("float32")


def assert_outputs_close(actual, expected):
    (scores, boxes), (expected_scores, expected_boxes) = actual, expected
    np.testing.assert_allclose(np.asarray(scores), expected_scores.numpy(), atol=SCORE_TOLERANCE)
    np.testing.assert_allclose(np.asarray(boxes), expected_boxes.numpy(), atol=BOX_TOLERANCE)


def outputs(value):
    """numpy (scores, boxes) of any detector's inference result."""
    return tuple(v if isinstance(v, np.ndarray) else v.numpy() for v in value)


# ------------------------------- BN folding ------------------------------- #
def test_folding_removes_every_frozen_bn_and_keeps_outputs(frozen_bn_model):
    folded = fold_batch_norms(frozen_bn_model)
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, FrozenBatchNorm2d) for m in frozen_bn_model.modules())
    image, im_info = random_input(100, 150)
    assert_outputs_close(outputs(folded.inference(image, im_info)),
                         frozen_bn_model.inference(image, im_info))


def test_folding_a_grouped_conv_with_bias_scales_each_output_channel():
    rng = np.random.RandomState(3)
    mge.random.seed(3)
    conv = M.Conv2d(4, 6, 3, padding=1, groups=2)  # weight [2, 3, 2, 3, 3]
    conv.bias = mge.Parameter(rng.normal(0, 1, (1, 6, 1, 1)).astype("float32"))
    norm = FrozenBatchNorm2d(6)
    randomize_frozen_bn(norm, rng)
    x = mge.tensor(rng.normal(0, 1, (1, 4, 5, 5)).astype("float32"))
    expected = norm(conv(x)).numpy()
    fold_into_conv(conv, norm)
    np.testing.assert_allclose(conv(x).numpy(), expected, rtol=1e-5, atol=1e-5)


def test_a_batch_norm_that_follows_no_conv_stays_as_its_affine_map():
    rng = np.random.RandomState(4)
    mge.random.seed(4)
    layers = M.Sequential(M.Conv2d(3, 4, 3), M.ReLU(), M.BatchNorm2d(4))
    randomize_batch_norms(layers, rng)
    layers.eval()
    x = mge.tensor(rng.normal(0, 1, (2, 3, 6, 6)).astype("float32"))
    folded = fold_batch_norms(layers)
    assert [type(m) for m in folded.modules()][1:] == [M.Conv2d, M.ReLU, FrozenBatchNorm2d]
    np.testing.assert_allclose(folded(x).numpy(), layers(x).numpy(), rtol=1e-5, atol=1e-5)


class NormAfterReLU(M.Module):
    def __init__(self):
        super().__init__()
        self.conv = M.Conv2d(3, 4, 3)
        self.bn = M.BatchNorm2d(4)

    def forward(self, x):
        return self.bn(F.relu(self.conv(x)))


def test_an_unnumbered_bn_beside_a_conv_is_not_taken_for_its_norm():
    rng = np.random.RandomState(5)
    mge.random.seed(5)
    model = NormAfterReLU()
    randomize_batch_norms(model, rng)
    model.eval()
    x = mge.tensor(rng.normal(0, 1, (2, 3, 6, 6)).astype("float32"))
    folded = fold_batch_norms(model)
    assert isinstance(folded.bn, FrozenBatchNorm2d)
    np.testing.assert_allclose(folded(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-5)


def test_a_batch_norm_without_running_statistics_is_refused():
    layers = M.Sequential(M.Conv2d(3, 4, 3), M.BatchNorm2d(4, track_running_stats=False))
    with pytest.raises(ConfigError, match="track_running_stats=True$"):
        fold_batch_norms(layers)


# ------------------------------ traced and Lite ----------------------------- #
@pytest.mark.parametrize("height, width", SIZES)
def test_lite_outputs_equal_eager(frozen_bn_model, lite_model_path, height, width):
    lite = LiteDetector(lite_model_path, frozen_bn_model.cfg)
    image, im_info = random_input(height, width)
    assert_outputs_close(lite.inference(image, im_info), frozen_bn_model.inference(image, im_info))


@pytest.mark.parametrize("height, width", SIZES)
def test_lite_detections_equal_eager(frozen_bn_model, lite_model_path, height, width):
    image, im_info = random_input(height, width, seed=1)
    lite = DetEvaluator(LiteDetector(lite_model_path, frozen_bn_model.cfg))
    expected = DetEvaluator(frozen_bn_model).predict(image=image, im_info=im_info)
    assert_same_detections(lite.predict(image=image, im_info=im_info), expected,
                           BOX_TOLERANCE, SCORE_TOLERANCE)


def test_lite_graph_takes_a_batch(frozen_bn_model, lite_model_path):
    image, im_info = random_input(64, 96, batch=2, seed=2)
    im_info[1, 2:] = [64, 96]  # the second image was not resized
    scores, boxes = LiteDetector(lite_model_path, frozen_bn_model.cfg).inference(image, im_info)
    assert scores.shape[0] == 2 and boxes.shape[0] == 2
    assert_outputs_close((scores, boxes), frozen_bn_model.inference(image, im_info))


def test_traced_detector_equals_eager_at_two_sizes(frozen_bn_model):
    traced = TracedDetector(fold_batch_norms(frozen_bn_model))
    for height, width in SIZES:
        image, im_info = random_input(height, width)
        assert_outputs_close(traced.inference(image, im_info),
                             frozen_bn_model.inference(image, im_info))


@pytest.mark.parametrize("entry", RELEASED)
def test_every_released_model_runs_traced_and_on_lite_like_eager(entry, tmp_path):
    model = with_distinct_outputs(getattr(hubconf, entry), seed=6)
    image, im_info = random_input(72, 100, seed=6)
    expected = model.inference(image, im_info)
    traced = TracedDetector(fold_batch_norms(model))
    assert_outputs_close(traced.inference(image, im_info), expected)
    path = str(tmp_path / "model.mge")
    dump_inference(model, path)
    assert_outputs_close(LiteDetector(path, model.cfg).inference(image, im_info), expected)
    # on any CPU: the architecture's NCHW88 graph hands no blocked tensor to a 4-D operator
    dump_inference(model, path, layout="nchw88")
    assert blocked_layout_misuse(path) == []


# ---------------------------------- FLOPs ---------------------------------- #
class TwoConvs(M.Module):
    """A 3x3/2 conv 3->4 and a grouped 1x1 conv 4->6 behind the ``inference`` interface."""

    def __init__(self):
        super().__init__()
        self.conv_a = M.Conv2d(3, 4, 3, stride=2, padding=1)
        self.conv_b = M.Conv2d(4, 6, 1, groups=2)

    def forward(self, image):
        return self.conv_b(self.conv_a(image))

    def inference(self, image, im_info):  # pylint: disable=unused-argument
        return self(image)


def test_flop_count_of_two_small_convs_by_hand():
    # 8 x 10 input -> 4 x 5 outputs; conv_a: 4 * 20 outputs x 27 MACs = 2160;
    # conv_b: 6 * 20 outputs x 2 MACs (4 channels / 2 groups) = 240
    assert count_conv_flops(TwoConvs(), (1, 3, 8, 10)) == 2 * (2160 + 240)
    assert count_conv_flops(TwoConvs(), (2, 3, 8, 10)) == 2 * 2 * (2160 + 240)
    # weights 4 * 3 * 9 + 6 * 2 and biases 4 + 6
    assert count_parameters(TwoConvs()) == 108 + 12 + 4 + 6


def test_fcos_flops_follow_the_padded_input_and_the_batch(frozen_bn_model):
    at_128 = count_conv_flops(frozen_bn_model, (1, 3, 128, 160))
    # 100 x 150 is padded to 128 x 160: the same convolutions run
    assert count_conv_flops(frozen_bn_model, (1, 3, 100, 150)) == at_128
    assert count_conv_flops(frozen_bn_model, (2, 3, 128, 160)) == 2 * at_128


# -------------------------------- benchmark -------------------------------- #
# (the timer's arithmetic and which runs it times: test_benchmark.py)
def test_peak_is_cores_times_clock_times_flops_per_cycle(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\ncpu MHz\t\t: 2596.150\n")
    assert nominal_ghz(str(cpuinfo)) == pytest.approx(2.59615)
    assert machine_peak_gflops(cores=2, ghz=2.6) == pytest.approx(166.4)


# ---------------------------------- tools ---------------------------------- #
def test_dump_tool_writes_a_lite_model_of_the_given_weights(frozen_bn_model, tiny_config_file,
                                                            cpu_runs_nchw88, tmp_path):
    weights = str(tmp_path / "weights.pkl")
    mge.save({"state_dict": frozen_bn_model.state_dict()}, weights)
    output = str(tmp_path / "tiny.mge")
    result = run_tool("dump.py", "-f", tiny_config_file, "-w", weights, "-o", output,
                      "--flops-size", "128", "160", "--layout", "auto")
    assert result.returncode == 0, result.stderr[-2000:]
    expected_gflops = count_conv_flops(frozen_bn_model, (1, 3, 128, 160)) / 1e9
    assert "conv GFLOPs (2 x MACs) at 1x3x128x160: {:.1f}".format(expected_gflops) in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "wrote {} ({} layout)".format(
        output, expected_auto_layout(result.stderr, cpu_runs_nchw88))
    image, im_info = random_input(100, 150)
    lite = LiteDetector(output, frozen_bn_model.cfg)
    assert_outputs_close(lite.inference(image, im_info), frozen_bn_model.inference(image, im_info))


def printed_number(pattern, text):
    return float(re.search(pattern, text).group(1))


def test_benchmark_tool_reports_the_median_and_gflops_of_its_runs(frozen_bn_model,
                                                                   tiny_config_file, tmp_path):
    image_path = str(tmp_path / "image.png")
    cv2.imwrite(image_path, np.random.RandomState(5).randint(0, 255, (60, 90, 3), np.uint8))
    result = run_tool("benchmark.py", "-f", tiny_config_file, "-i", image_path, "--mode",
                      "lite", "-n", "1", "--short-size", "100", "--max-size", "160",
                      "--peak-gflops", "50")
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    stages = {stage: printed_number(stage + r"\s+median\s+([\d.]+) ms", out)
              for stage in ("preprocess", "network", "postprocess", "total")}
    # one run: its total is the sum of its stages (each printed to 0.1 ms)
    parts = stages["preprocess"] + stages["network"] + stages["postprocess"]
    assert stages["total"] == pytest.approx(parts, abs=0.2)
    assert out.strip().splitlines()[-1] == "median_ms={:.1f}".format(stages["total"])
    # the 60 x 90 image runs at 100 x 150: GFLOP/s = its conv FLOPs / the network seconds
    gflops = count_conv_flops(frozen_bn_model, (1, 3, 100, 150)) / 1e9
    assert "network: {:.1f} conv GFLOPs".format(gflops) in out
    rate = printed_number(r"([\d.]+) GFLOP/s,", out)
    assert rate == pytest.approx(gflops / (stages["network"] / 1000), rel=0.01, abs=0.1)
    assert printed_number(r"(\d+)% of the measured 50 GFLOP/s", out) == pytest.approx(
        100 * rate / 50, abs=1)


# ------------------------------ building detectors ---------------------------- #
def test_a_dumped_model_runs_only_on_the_lite_engine(tiny_config_file, lite_model_path):
    module = load_config_module(tiny_config_file)
    with pytest.raises(ValueError, match="add --engine lite"):
        build_detector(module, engine="eager", model_path=lite_model_path)
    assert isinstance(build_detector(module, engine="lite", model_path=lite_model_path),
                      LiteDetector)


def test_a_missing_lite_model_is_named_in_the_error(frozen_bn_model, tmp_path):
    with pytest.raises(FileNotFoundError, match="Lite model not found: .*nowhere.mge"):
        LiteDetector(str(tmp_path / "nowhere.mge"), frozen_bn_model.cfg)


# ---------------------------------- layout --------------------------------- #
def test_pooled_group_norm_equals_group_norm():
    rng = np.random.RandomState(7)
    norm = M.GroupNorm(8, 32)
    norm.weight = mge.Parameter(rng.uniform(0.5, 1.5, 32).astype("float32"))
    norm.bias = mge.Parameter(rng.uniform(-1, 1, 32).astype("float32"))
    x = mge.tensor(rng.normal(3, 2, (2, 32, 7, 9)).astype("float32"))
    np.testing.assert_allclose(PooledGroupNorm(norm)(x).numpy(), norm(x).numpy(), atol=1e-5)


def test_pooling_the_group_norms_of_a_detector_keeps_its_outputs(frozen_bn_model):
    pooled = pool_group_norms(frozen_bn_model)
    assert not any(isinstance(m, M.GroupNorm) for m in pooled.modules())
    assert sum(isinstance(m, PooledGroupNorm) for m in pooled.modules()) == 8
    assert any(isinstance(m, M.GroupNorm) for m in frozen_bn_model.modules())  # a copy
    image, im_info = random_input(100, 150, seed=8)
    assert_outputs_close(outputs(pooled.inference(image, im_info)),
                         frozen_bn_model.inference(image, im_info))


def blocked_dump(model, path):
    """``model`` (GroupNorms as they are) traced and dumped in NCHW88 without any check."""
    inference, _ = recorded_inference(model)
    return dump_traced(inference, path, INPUT_NAMES, OUTPUT_NAMES, "nchw88")


def test_a_native_group_norm_on_blocked_tensors_is_found_in_the_dumped_graph(frozen_bn_model,
                                                                           tmp_path):
    misuse = blocked_layout_misuse(blocked_dump(frozen_bn_model, str(tmp_path / "gn.mge")))
    # the head's 8 GroupNorms on each of the 5 levels
    assert len(misuse) == 40
    assert all(m.startswith("GroupNormForward on (1, 8, ") for m in misuse)
    assert blocked_layout_misuse(blocked_dump(pool_group_norms(frozen_bn_model),
                                              str(tmp_path / "pooled.mge"))) == []


def test_forcing_nchw88_on_a_graph_that_cannot_run_in_it_is_an_error(tmp_path):
    class LocalResponseNorm(M.Module):  # an operator the NCHW88 pass does not rewrite
        def __init__(self):
            super().__init__()
            self.conv = M.Conv2d(3, 8, 3, padding=1)

        def forward(self, image):
            return F.nn.local_response_norm(self.conv(image), kernel_size=3)

        def inference(self, image, im_info):
            return self(image), im_info

    with pytest.raises(ValueError, match="would pass blocked tensors to LRNForward on"):
        dump_inference(LocalResponseNorm(), str(tmp_path / "lrn.mge"), layout="nchw88")
    assert list(tmp_path.iterdir()) == []  # nothing half-written is left


def test_an_nchw88_detector_runs_in_a_child_exactly_where_nchw88_convolutions_run(
        frozen_bn_model, cpu_runs_nchw88, tmp_path):
    pooled = pool_group_norms(fold_batch_norms(frozen_bn_model))
    path = blocked_dump(pooled, str(tmp_path / "blocked.mge"))
    image, im_info = random_input(64, 96, seed=9)
    expected = dict(zip(OUTPUT_NAMES, outputs(pooled.inference(image, im_info))))
    failure = blocked_graph_failure(path, {"image": image, "im_info": im_info}, expected)
    if cpu_runs_nchw88:
        assert failure is None
    else:
        assert failure.startswith("it failed with exit status")


def test_an_nchw88_file_runs_like_eager_or_is_refused_where_nchw88_does_not_run(
        frozen_bn_model, cpu_runs_nchw88, lite_model_path, tmp_path):
    path = blocked_dump(pool_group_norms(fold_batch_norms(frozen_bn_model)),
                        str(tmp_path / "blocked.mge"))
    assert dumped_layout(path) == "nchw88"
    assert dumped_layout(lite_model_path) == ("nchw88" if cpu_runs_nchw88 else "nchw")
    if not cpu_runs_nchw88:
        with pytest.raises(ConfigError, match="blocked.mge was dumped in the NCHW88 layout"):
            LiteDetector(path, frozen_bn_model.cfg)
        return
    image, im_info = random_input(100, 150, seed=11)
    assert_outputs_close(LiteDetector(path, frozen_bn_model.cfg).inference(image, im_info),
                         frozen_bn_model.inference(image, im_info))


def test_a_child_run_returns_the_outputs_of_the_graph(lite_model_path, frozen_bn_model):
    image, im_info = random_input(64, 96, seed=10)
    values, failure = run_in_child(lite_model_path, {"image": image, "im_info": im_info})
    assert failure is None
    assert_outputs_close((values["scores"], values["boxes"]),
                         frozen_bn_model.inference(image, im_info))


def expected_auto_layout(log, cpu_runs_nchw88):
    """NCHW where NCHW88 convolutions do not run; else the faster of the two by the times the
    dump logged for both (they must be there)."""
    timed = re.findall(r"layout auto: (\{.*?\}) ms per run at \d+x\d+ on \d+ thread\(s\): (\w+)",
                       log)
    if not cpu_runs_nchw88:
        assert timed == []
        return "nchw"
    (times, chosen), = timed
    times = ast.literal_eval(times)
    assert set(times) == {"nchw", "nchw88"} and min(times, key=times.get) == chosen
    return chosen


def test_the_auto_layout_is_the_faster_of_those_that_run_right_on_this_cpu(
        frozen_bn_model, cpu_runs_nchw88, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    layout = dump_inference(frozen_bn_model, str(tmp_path / "chosen.mge"), probe_timeout=30)
    assert layout == expected_auto_layout(caplog.text, cpu_runs_nchw88)
    image, im_info = random_input(100, 150, seed=3)
    lite = LiteDetector(str(tmp_path / "chosen.mge"), frozen_bn_model.cfg)
    assert_outputs_close(lite.inference(image, im_info), frozen_bn_model.inference(image, im_info))


def test_a_probe_that_runs_out_of_time_answers_false_at_once():
    # no Python with MegEngine Lite starts in 10 ms: the child is killed
    start = time.monotonic()
    assert nchw88_kernels_run_here(timeout=0.01) is False
    assert time.monotonic() - start < 15


def test_an_unknown_layout_is_refused(frozen_bn_model, tmp_path):
    with pytest.raises(ValueError, match="layout must be one of"):
        dump_inference(frozen_bn_model, str(tmp_path / "x.mge"), layout="nhwc")
