"""ONNX export against eager inference, on onnxruntime and OpenVINO; their engines in the tools;
the error without the export packages."""
import collections
import json
import os
import re
import subprocess
import sys

import cv2
import megengine as mge
import megengine.functional as F
import megengine.module as M
import numpy as np
import onnx
import onnxruntime
import pytest

from official.vision.detection.backbones.resnet import BasicBlock, Bottleneck
from official.vision.detection.data.synthetic import make_synthetic_coco
from official.vision.detection.deploy.detector import build_detector, file_detector
from official.vision.detection.deploy.onnx_export import OPSET, export_onnx
from official.vision.detection.deploy.onnxruntime_detector import SPIN_OPTION, OnnxRuntimeDetector
from official.vision.detection.deploy.openvino_detector import OpenVINODetector, openvino_cache_dir
from official.vision.detection.deploy.trace import EXAMPLE_HW
from official.vision.detection.engine.coco_evaluation import EvalOptions, run_test
from official.vision.detection.errors import ConfigError
from official.vision.detection.evaluator import DetEvaluator
from official.vision.detection.models import FCOS
from official.vision.detection.utils.config_file import load_config_module
from official.vision.detection.utils.machine import usable_cpus

import hubconf
from conftest import (
    PROJECT_ROOT, RELEASED, randomize_batch_norms, run_tool, spread_head_outputs, tiny_config,
    with_distinct_outputs
)
from detection_matching import assert_same_detections
from without_packages import run_without

SCORE_TOLERANCE = 1e-4
BOX_TOLERANCE = 0.05  # pixels
# neither side a multiple of 32 in one of them; one export serves both and batches of 2
SIZES = [(64, 96), (96, 64)]
# the engines that run an ONNX file, both held to the tolerances above in fp32
ONNX_DETECTORS = (OnnxRuntimeDetector, OpenVINODetector)


def random_batch(height, width, seed):
    """Two images [2, 3, H, W] in 0-255; the first was resized from twice its size."""
    image = np.random.RandomState(seed).uniform(0, 255, (2, 3, height, width)).astype("float32")
    im_info = np.array([[height, width, 2 * height, 2 * width],
                        [height, width, height, width]], dtype="float32")
    return image, im_info


def assert_onnx_runs_like_eager(model, path, seed):
    """On each engine of ONNX_DETECTORS, at every size of SIZES, batch 2: scores, boxes and the
    detections of each image."""
    for detector_class in ONNX_DETECTORS:
        assert_detector_runs_like_eager(detector_class(path, model.cfg), model, seed)


def assert_detector_runs_like_eager(detector, model, seed):
    for height, width in SIZES:
        image, im_info = random_batch(height, width, seed)
        scores, boxes = detector.inference(image, im_info)
        expected_scores, expected_boxes = (v.numpy() for v in model.inference(image, im_info))
        assert scores.shape == expected_scores.shape and boxes.shape == expected_boxes.shape
        np.testing.assert_allclose(scores, expected_scores, rtol=0, atol=SCORE_TOLERANCE)
        np.testing.assert_allclose(boxes, expected_boxes, rtol=0, atol=BOX_TOLERANCE)
        detections = DetEvaluator(detector).predict(image=image, im_info=im_info)
        expected = DetEvaluator(model).predict(image=image, im_info=im_info)
        assert all(len(wanted) for wanted in expected)  # each image is compared
        assert_same_detections(detections, expected, BOX_TOLERANCE, SCORE_TOLERANCE)


@pytest.fixture(scope="module")
def onnx_path(frozen_bn_model, tmp_path_factory):
    return export_onnx(frozen_bn_model, str(tmp_path_factory.mktemp("onnx") / "tiny.onnx"))


# ------------------------------ the exported graph ----------------------------- #
def test_onnx_outputs_equal_eager_at_two_sizes_in_batches_of_two(frozen_bn_model, onnx_path):
    assert_onnx_runs_like_eager(frozen_bn_model, onnx_path, seed=1)


@pytest.mark.parametrize("entry", RELEASED)
def test_every_released_architecture_exports_like_eager(entry, tmp_path):
    model = with_distinct_outputs(getattr(hubconf, entry), seed=2)
    path = export_onnx(model, str(tmp_path / "model.onnx"))
    assert_onnx_runs_like_eager(model, path, seed=3)


def test_the_graph_has_the_inference_contract_and_no_batch_norm(onnx_path):
    model = onnx.load(onnx_path)
    onnx.checker.check_model(model)
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [OPSET]

    def dims(value_info):
        return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]

    assert {i.name: dims(i) for i in model.graph.input} == {
        "image": ["batch", 3, "height", "width"], "im_info": ["batch", 4]}
    assert {o.name: dims(o) for o in model.graph.output} == {
        "scores": ["batch", "points", 3], "boxes": ["batch", "points", 4]}
    # every convolution carries its bias [C]; no Add or Mul applies a per-channel constant
    # [1, C, 1, 1] (a bias, or the scale of an unfolded BN) to a convolution's output
    constants = {tensor.name: list(tensor.dims) for tensor in model.graph.initializer}
    convs = [node for node in model.graph.node if node.op_type == "Conv"]
    assert convs and all(len(conv.input) == 3 and constants[conv.input[2]] == constants[
        conv.input[1]][:1] for conv in convs)
    conv_outputs = {conv.output[0] for conv in convs}
    assert not [node for node in model.graph.node if node.op_type in ("Add", "Mul") and any(
        name in conv_outputs for name in node.input) and any(
        len(constants.get(name, [])) == 4 for name in node.input)]
    assert not any(node.op_type == "BatchNormalization" for node in model.graph.node)


class NormAfterReLU(M.Module):
    """conv, ReLU, BN: a batch norm that no convolution feeds directly, so nothing to fold
    into."""

    def __init__(self):
        super().__init__()
        self.features = M.Conv2d(3, 8, 3, padding=1)
        self.norm = M.BatchNorm2d(8)

    def forward(self, image, im_info):
        return self.inference(image, im_info)

    def inference(self, image, im_info):
        features = self.norm(F.relu(self.features(image)))
        return features.reshape(image.shape[0], -1, 8), im_info.reshape(image.shape[0], 1, 4)


def test_a_batch_norm_after_no_conv_exports_as_a_per_channel_multiply_add(tmp_path):
    mge.random.seed(8)
    model = NormAfterReLU()
    randomize_batch_norms(model, np.random.RandomState(8))
    model.eval()
    path = export_onnx(model, str(tmp_path / "model.onnx"))
    assert not any(node.op_type == "BatchNormalization" for node in onnx.load(path).graph.node)
    image, im_info = random_batch(64, 96, seed=9)
    scores, _ = OnnxRuntimeDetector(path, cfg=None).inference(image, im_info)
    expected, _ = model.inference(mge.tensor(image), mge.tensor(im_info))
    np.testing.assert_allclose(scores, expected.numpy(), rtol=1e-5, atol=SCORE_TOLERANCE)


class ResizesByHalves(M.Module):
    """A network whose resize scales by 1.5, unlike the FPN's."""

    def forward(self, image, im_info):
        return self.inference(image, im_info)

    def inference(self, image, im_info):
        resized = F.nn.interpolate(image, size=image.shape[2:] * 3 // 2, mode="bilinear")
        return resized.reshape(image.shape[0], -1, 3), im_info.reshape(image.shape[0], 1, 4)


def test_a_resize_by_a_factor_that_is_not_whole_is_a_one_line_error(tmp_path):
    path = tmp_path / "model.onnx"
    traced = "{} to {}".format(EXAMPLE_HW, tuple(side * 3 // 2 for side in EXAMPLE_HW))
    with pytest.raises(ConfigError, match=r"resizing by whole factors only \(the FPN's\), .* "
                                          r"resizes " + re.escape(traced) + "$"):
        export_onnx(ResizesByHalves(), str(path))
    assert not path.exists()


def onnxruntime_graph(path, directory):
    """The graph onnxruntime runs here: all optimizations, its blocked layout included."""
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(directory / "optimized.onnx")
    onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return onnx.load(options.optimized_model_filepath).graph


def assert_convolutions_stay_blocked_and_fused(model, path, directory):
    """In onnxruntime's graph of the export ``path`` of ``model``: the layout conversions that
    the architecture needs at most, no bias Add, ReLUs and residual sums inside the Convs."""
    graph = onnxruntime_graph(path, directory)
    producers = {name: node for node in graph.node for name in node.output}
    readers = collections.Counter(name for node in graph.node for name in node.input)
    constants = {tensor.name for tensor in graph.initializer}

    def conv_writing(name):  # the Conv whose output ``name`` is, converted or not; else None
        node = producers.get(name)
        while node is not None and node.op_type == "ReorderOutput":
            node = producers.get(node.input[0])
        return node if node is not None and node.op_type == "Conv" else None

    convs = [node for node in graph.node if node.op_type == "Conv"]
    assert convs and all(conv.domain == "com.microsoft.nchwc" for conv in convs)
    # NCHW data is needed (a ReorderInput into a blocked Conv, or a ReorderOutput from it) only
    # into and out of each GroupNorm, which reshapes (the head applies each of its GroupNorms
    # at every level); at the 3 head outputs of every level; where a Shape reads a blocked map:
    # each level's feature (the anchor points), and level 0 of the 3 head outputs (flattening
    # reads batch and channels there)
    levels = len(model.cfg.stride)
    group_norms = levels * sum(isinstance(m, M.GroupNorm) for m in model.head.modules())
    reorders = [node for node in graph.node if node.op_type in ("ReorderInput", "ReorderOutput")]
    assert len(reorders) <= 2 * group_norms + 3 * levels + levels + 3
    # no bias Add after a Conv: the bias is the Conv's input
    assert not [node for node in graph.node if node.op_type == "Add" and any(
        map(conv_writing, node.input)) and constants.intersection(node.input)]
    # ReLUs run inside the Conv before them; those left follow the GroupNorms, and one follows
    # a Conv whose output is read elsewhere too (P6 feeds the head and, through a ReLU, P7)
    relus = [node for node in graph.node if node.op_type == "Relu"]
    assert len(relus) <= group_norms + 1
    assert not [relu for relu in relus if conv_writing(relu.input[0]) and readers[
        relu.input[0]] == 1]
    # each residual block's sum accumulates into its last Conv (the fourth input)
    blocks = sum(isinstance(m, (BasicBlock, Bottleneck)) for m in model.modules())
    assert sum(len(conv.input) == 4 for conv in convs) >= blocks


def test_onnxruntime_keeps_the_convolutions_blocked_and_fuses_bias_relu_and_sums(
        frozen_bn_model, onnx_path, tmp_path):
    assert_convolutions_stay_blocked_and_fused(frozen_bn_model, onnx_path, tmp_path)


def test_a_trained_batch_norm_backbone_exports_as_blocked_and_fused_as_frozen_bn(tmp_path):
    model = with_distinct_outputs(lambda: FCOS(tiny_config()), seed=4)  # backbone_norm BN
    randomize_batch_norms(model, np.random.RandomState(4))
    path = export_onnx(model, str(tmp_path / "bn.onnx"))
    assert_convolutions_stay_blocked_and_fused(model, path, tmp_path)


def test_onnxruntime_keeps_the_r50_convolutions_blocked_and_fuses_bias_relu_and_sums(tmp_path):
    model = hubconf.fcos_res50_coco_3x_800size()
    model.eval()
    path = export_onnx(model, str(tmp_path / "r50.onnx"))
    assert_convolutions_stay_blocked_and_fused(model, path, tmp_path)


def test_onnxruntime_loads_the_file_and_runs_it_on_the_given_threads(frozen_bn_model,
                                                                     onnx_path):
    session = onnxruntime.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image", "im_info"]
    assert [o.name for o in session.get_outputs()] == ["scores", "boxes"]
    detector = OnnxRuntimeDetector(onnx_path, frozen_bn_model.cfg, threads=1)
    assert detector.session.get_session_options().intra_op_num_threads == 1
    default = OnnxRuntimeDetector(onnx_path, frozen_bn_model.cfg)
    assert default.session.get_session_options().intra_op_num_threads == usable_cpus()


def test_a_server_runs_onnxruntime_without_spinning_threads_and_the_same_outputs(
        frozen_bn_model, onnx_path, tiny_config_file):
    """tools/serve.py's engine: its threads sleep after a run instead of spinning, so the
    server's HTTP and decoding threads get the cores (docs/benchmarks.md, "Serving")."""
    spinning = OnnxRuntimeDetector(onnx_path, frozen_bn_model.cfg)
    quiet = file_detector(load_config_module(tiny_config_file), "onnxruntime", onnx_path,
                          spin=False)
    for detector, setting in ((spinning, "1"), (quiet, "0")):
        options = detector.session.get_session_options()
        assert options.get_session_config_entry(SPIN_OPTION) == setting
    image = np.random.default_rng(0).uniform(0, 255, (1, 3, 64, 96)).astype("float32")
    im_info = np.array([[64, 96, 64, 96]], "float32")
    for expected, actual in zip(spinning.inference(image, im_info),
                                quiet.inference(image, im_info)):
        np.testing.assert_array_equal(actual, expected)


# ------------------------------ building detectors ----------------------------- #
def test_an_onnx_file_runs_on_onnxruntime_and_openvino_only(tiny_config_file, onnx_path):
    module = load_config_module(tiny_config_file)
    for engine, detector_class in zip(("onnxruntime", "openvino"), ONNX_DETECTORS):
        assert isinstance(build_detector(module, engine=engine, model_path=onnx_path),
                          detector_class)
    with pytest.raises(ValueError, match=r"the lite engine reads \.mge files, not .*tiny.onnx: "
                                         "use --engine onnxruntime or openvino$"):
        build_detector(module, engine="lite", model_path=onnx_path)
    with pytest.raises(FileNotFoundError, match="ONNX model not found: .*nowhere.onnx"):
        build_detector(module, engine="onnxruntime", model_path=onnx_path + ".nowhere.onnx")


# ----------------------------------- tools ------------------------------------- #
def test_dump_tool_writes_onnx_of_the_given_weights(frozen_bn_model, tiny_config_file,
                                                    tmp_path):
    weights = str(tmp_path / "weights.pkl")
    mge.save({"state_dict": frozen_bn_model.state_dict()}, weights)
    output = str(tmp_path / "tiny.onnx")
    result = run_tool("dump.py", "-f", tiny_config_file, "-w", weights, "-o", output)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "wrote {} (ONNX opset {})".format(
        output, OPSET)
    image, im_info = random_batch(*SIZES[0], seed=4)
    scores, _ = OnnxRuntimeDetector(output, frozen_bn_model.cfg).inference(image, im_info)
    expected = frozen_bn_model.inference(image, im_info)[0].numpy()
    np.testing.assert_allclose(scores, expected, rtol=0, atol=SCORE_TOLERANCE)


def test_dump_tool_writes_an_openvino_ir_that_runs_like_eager(frozen_bn_model, tiny_config_file,
                                                             tmp_path):
    weights = str(tmp_path / "weights.pkl")
    mge.save(frozen_bn_model.state_dict(), weights)
    output = str(tmp_path / "tiny.xml")
    result = run_tool("dump.py", "-f", tiny_config_file, "-w", weights, "-o", output)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "wrote {} and its .bin (OpenVINO IR)".format(
        output)
    assert sorted(os.listdir(tmp_path)) == ["tiny.bin", "tiny.xml", "weights.pkl"]
    module = load_config_module(tiny_config_file)
    detector = build_detector(module, engine="openvino", model_path=output)
    assert_detector_runs_like_eager(detector, frozen_bn_model, seed=4)


def test_openvino_loads_its_compiled_model_from_the_cache_on_the_second_build(
        frozen_bn_model, tiny_config_file, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    weights = str(tmp_path / "weights.pkl")
    mge.save(frozen_bn_model.state_dict(), weights)
    module = load_config_module(tiny_config_file)
    # each build writes the model to a new temporary file
    first = build_detector(module, weights, "openvino", threads=1)
    assert not first.loaded_from_cache and os.listdir(openvino_cache_dir())
    second = build_detector(module, weights, "openvino", threads=1)
    assert second.loaded_from_cache
    assert_detector_runs_like_eager(second, frozen_bn_model, seed=5)


def test_benchmark_and_inference_tools_run_the_onnx_file(tiny_config_file, onnx_path,
                                                          tmp_path):
    image_path = str(tmp_path / "image.png")
    cv2.imwrite(image_path, np.random.RandomState(5).randint(0, 255, (60, 90, 3), np.uint8))
    result = run_tool("benchmark.py", "-f", tiny_config_file, "-i", image_path, "--mode",
                      "onnxruntime", "--model", onnx_path, "-n", "1", "--threads", "1",
                      "--short-size", "64", "--max-size", "96")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "onnxruntime engine, 1 thread(s)" in result.stdout
    assert result.stdout.strip().splitlines()[-1].startswith("median_ms=")
    result = run_tool("inference.py", "-f", tiny_config_file, "--engine", "onnxruntime",
                      "--model", onnx_path, "-i", image_path, "-o", str(tmp_path / "out"),
                      "--thresh", "0")
    assert result.returncode == 0, result.stderr[-2000:]
    with open(tmp_path / "out" / "detections.json") as f:
        assert len(json.load(f)) == 1


EVAL_CONFIG = '''
from official.vision.detection import models


class Cfg(models.FCOSConfig):
    def __init__(self):
        super().__init__()
        self.update(backbone="resnet18", backbone_norm="FrozenBN", fpn_in_channels=[128, 256, 512],
                    fpn_out_channels=32, fpn_top_in_channel=32, num_classes=3,
                    test_image_short_size=64, test_image_max_size=96, test_cls_threshold=0.05,
                    test_dataset=dict(name="shapes", root="val", ann_file="annotations/val.json",
                                      remove_images_without_annotations=False))


Net = models.FCOS
'''


def test_test_tool_gives_the_eager_numbers_on_onnxruntime(tmp_path):
    make_synthetic_coco(str(tmp_path / "shapes"), num_train=2, num_val=6,
                        image_size=((48, 80), (48, 80)), num_classes=3, seed=3)
    config = tmp_path / "cfg.py"
    config.write_text(EVAL_CONFIG)
    module = load_config_module(str(config))
    mge.random.seed(5)
    model = module.Net(module.Cfg())
    spread_head_outputs(model, np.random.RandomState(6))
    weights, model_path = str(tmp_path / "weights.pkl"), str(tmp_path / "model.onnx")
    mge.save(model.state_dict(), weights)
    model.eval()
    export_onnx(model, model_path)
    result = run_tool("test.py", "-f", str(config), "--engine", "onnxruntime", "--model",
                      model_path, "-d", str(tmp_path), "-b", "2", "--workers", "0")
    assert result.returncode == 0, result.stderr[-2000:]
    eager = run_test(str(config), EvalOptions(str(tmp_path), [weights], num_workers=0,
                                              results_path=str(tmp_path / "eager.json")))
    printed = float(result.stdout.strip().splitlines()[-1].split("=")[1])
    assert printed == pytest.approx(eager[weights]["AP"], abs=1e-4)


# ------------------------- without the export packages ------------------------- #
@pytest.mark.parametrize("packages, missing", [("mgeconvert", "mgeconvert"), ("onnx", "onnx")])
def test_export_without_its_packages_is_a_one_line_error_naming_them(
        tiny_config_file, tmp_path, packages, missing):
    output = tmp_path / "tiny.onnx"
    result = run_without(packages, "dump.py", "-f", tiny_config_file, "-o", output)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(
        "error: ONNX export needs the Python package {},".format(missing))
    assert not output.exists()


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_an_onnx_engine_without_its_package_is_a_one_line_error(tiny_config_file, onnx_path,
                                                                 tmp_path, engine):
    image_path = str(tmp_path / "image.png")
    cv2.imwrite(image_path, np.zeros((40, 60, 3), np.uint8))
    for script, args in (("benchmark.py", ["--mode", engine, "-n", "1"]),
                         ("inference.py", ["--engine", engine, "-o", tmp_path])):
        result = run_without(engine, script, "-f", tiny_config_file, "-i", image_path,
                             "--model", onnx_path, *args)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert result.stderr.strip().splitlines()[-1].startswith(
            "error: the {} engine needs the Python package {},".format(engine, engine))
