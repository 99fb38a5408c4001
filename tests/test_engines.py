"""Every documented norm on every engine: the detections of a trained model match eager's.

One small detector per norm (backbone and FPN) is trained a few steps on the CPU, as the
trainer trains (``fast_training_modules``), so that its batch norm statistics and weights are
not the initial ones; every engine of ``ENGINES`` then runs it from its weight file.
"""
import collections

import megengine as mge
import numpy as np
import pytest
from megengine.autodiff import GradManager
from megengine.optimizer import SGD

from official.vision.detection.cpu import (
    CPU_TRAINING_ASYNC_LEVEL, async_level, fast_training_modules
)
from official.vision.detection.deploy.detector import ENGINES, build_detector
from official.vision.detection.deploy.fold import BATCH_NORMS, fold_batch_norms
from official.vision.detection.evaluator import DetEvaluator
from official.vision.detection.layers.norm import NORMS
from official.vision.detection.utils.config_file import load_config_module

from conftest import randomize_frozen_bn, spread_head_outputs
from detection_matching import assert_same_detections

# every engine computes in float32
SCORE_TOLERANCE = 1e-4
# boxes match when they overlap by BOX_IOU, or (boxes of no area, which overlap nothing) when
# their corners are within BOX_TOLERANCE
BOX_IOU, BOX_TOLERANCE = 0.99, 0.01
# "auto" runs one of the others
RUNNING_ENGINES = [engine for engine in ENGINES if engine != "auto"]
TRAINING_STEPS = 3

TRAINED_CONFIG = '''
from official.vision.detection.models import FCOS, FCOSConfig


class Cfg(FCOSConfig):
    def __init__(self):
        super().__init__()
        self.update(backbone="resnet18", backbone_norm=NORM, fpn_norm=NORM, backbone_freeze_at=0,
                    fpn_in_channels=[128, 256, 512], fpn_out_channels=64, fpn_top_in_channel=64,
                    num_classes=3, test_image_short_size=64, test_image_max_size=96)


Net = FCOS
'''

Trained = collections.namedtuple("Trained", "norm model config weights batches expected")


def training_batch(rng, height=64, width=96, batch=2, boxes=2):
    """Random images with random boxes of random classes: image, im_info [N, 5], gt_boxes."""
    image = rng.uniform(0, 255, (batch, 3, height, width)).astype("float32")
    corners = rng.uniform(0, 0.5, (batch, boxes, 2)) * [width, height]
    sizes = rng.uniform(0.2, 0.5, (batch, boxes, 2)) * [width, height]
    labels = rng.randint(0, 3, (batch, boxes, 1))
    gt_boxes = np.concatenate([corners, corners + sizes, labels], axis=2).astype("float32")
    im_info = np.array([[height, width, height, width, boxes]] * batch, dtype="float32")
    return image, im_info, gt_boxes


def train_a_few_steps(model, rng):
    """As the trainer trains on the CPU: at its async level. At MegEngine's default (2) 3 of 60
    such trainings of the GN model in one process ended with weights of their own, and its
    traced and ONNX engines once failed together in a suite (2026-12-08, AMD EPYC 25/1); 60
    of 60 at level 0 ended alike."""
    model.train()
    params = model.trainable_parameters()
    grad_manager = GradManager().attach(params)
    optimizer = SGD(params, lr=0.01, momentum=0.9)
    with async_level(CPU_TRAINING_ASYNC_LEVEL):
        for _ in range(TRAINING_STEPS):
            with grad_manager:
                grad_manager.backward(model(*training_batch(rng))["total_loss"])
            optimizer.step().clear_grad()
    model.eval()


def comparison_batches(seed):
    """Two batches: two images at 64x96 (the first resized from twice its size), one at
    96x64; neither side of the first a multiple of 32."""
    rng = np.random.RandomState(seed)
    batches = []
    for (height, width), scales in (((64, 96), (2, 1)), ((96, 64), (1,))):
        image = rng.uniform(0, 255, (len(scales), 3, height, width)).astype("float32")
        im_info = np.array([[height, width, scale * height, scale * width] for scale in scales],
                           dtype="float32")
        batches.append((image, im_info))
    return batches


def detections_of(detector, batches):
    """For each batch, a list of the [K, 6] detections of each image."""
    evaluator = DetEvaluator(detector)
    return [evaluator.predictor.predict(image, im_info) for image, im_info in batches]


@pytest.fixture(scope="session", params=list(NORMS))
def trained(request, tmp_path_factory):
    """A detector with the norm ``request.param``, trained a few steps; its config file and
    weight file; test batches and the eager detections of its weight file on them."""
    norm = request.param
    directory = tmp_path_factory.mktemp("trained_" + norm)
    config = directory / "config.py"
    config.write_text(TRAINED_CONFIG.replace("NORM", repr(norm)))
    module = load_config_module(str(config))
    mge.random.seed(0)
    rng = np.random.RandomState(0)
    model = module.Net(module.Cfg())
    randomize_frozen_bn(model, rng)  # FrozenBN never trains: statistics as published ones
    fast_training_modules(model)
    train_a_few_steps(model, rng)
    # wider head weights give distinct scores, so that NMS and the top 100 keep the same
    # detections on every engine (the backbone, FPN and their norms stay as trained)
    spread_head_outputs(model, rng)
    weights = str(directory / "weights.pkl")
    mge.save(model.state_dict(), weights)
    batches = comparison_batches(seed=1)
    expected = detections_of(build_detector(module, weights, "eager"), batches)
    return Trained(norm, model, module, weights, batches, expected)


def test_training_changed_the_batch_norm_statistics(trained):
    norms = [m for m in trained.model.modules() if isinstance(m, BATCH_NORMS)]
    assert bool(norms) == (trained.norm in ("BN", "SyncBN"))
    for norm in norms:
        assert np.abs(norm.running_mean.numpy()).max() > 0
        assert np.abs(norm.running_var.numpy() - 1).max() > 0


def test_folding_the_trained_model_leaves_no_batch_norm_and_keeps_its_outputs(trained):
    folded = fold_batch_norms(trained.model)
    assert not [m for m in folded.modules() if isinstance(m, BATCH_NORMS)]
    for image, im_info in trained.batches:
        (scores, boxes), (expected_scores, expected_boxes) = (
            [value.numpy() for value in model.inference(image, im_info)]
            for model in (folded, trained.model))
        np.testing.assert_allclose(scores, expected_scores, rtol=0, atol=SCORE_TOLERANCE)
        np.testing.assert_allclose(boxes, expected_boxes, rtol=0, atol=BOX_TOLERANCE)


@pytest.mark.parametrize("engine", RUNNING_ENGINES)
def test_every_engine_detects_what_eager_detects_with_every_norm(trained, engine):
    # Lite in NCHW: its layout choice times both layouts in child processes (a minute here);
    # folded, every norm leaves the operators of FrozenBN or GN, which test_deploy runs in NCHW88
    detector = build_detector(trained.config, trained.weights, engine, layout="nchw")
    found = detections_of(detector, trained.batches)
    for found_in_batch, expected in zip(found, trained.expected):
        assert all(len(detections) for detections in expected)  # each image is compared
        assert_same_detections(found_in_batch, expected, BOX_TOLERANCE, SCORE_TOLERANCE,
                               min_iou=BOX_IOU)
