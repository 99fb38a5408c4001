"""Shared fixtures: small models and the reference of the published weights."""
import importlib.util
import json
import os
import subprocess
import sys

import megengine as mge
import numpy as np
import pytest

from official.vision.detection.cpu import use_mkl_avx2_kernels
from official.vision.detection.deploy.fold import BATCH_NORMS
from official.vision.detection.layers.norm import FrozenBatchNorm2d
from official.vision.detection.model_zoo import RELEASED_MODELS
from official.vision.detection.models import FCOS, FCOSConfig

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
PROJECT_ROOT = os.path.dirname(TESTS_DIR)
RELEASED = list(RELEASED_MODELS)  # the hub entries of the published models

# MKL's kernels as the tools and the trainer choose them on this CPU (its AVX2 kernels on AMD
# CPUs), before any test runs one: MKL reads the switch when it first runs, so a test that
# set it later changed the kernels of the tests after it, and results depended on the order
use_mkl_avx2_kernels()


@pytest.fixture(scope="session")
def published_reference():
    with open(os.path.join(TESTS_DIR, "data", "fcos_state_dicts.json")) as f:
        return json.load(f)


@pytest.fixture(scope="session", autouse=True)
def package_cache(tmp_path_factory):
    """What the engines keep between runs (auto's choices, OpenVINO's compiled models) in a
    temporary folder instead of the user's cache, for the tests and the tools they start."""
    before = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))
    yield os.environ["XDG_CACHE_HOME"]
    if before is None:
        del os.environ["XDG_CACHE_HOME"]
    else:
        os.environ["XDG_CACHE_HOME"] = before


def tiny_config(num_classes=3):
    """A ResNet-18 FCOS with a narrow pyramid: fast enough for many eager forwards."""
    cfg = FCOSConfig().update(
        backbone="resnet18", fpn_in_channels=[128, 256, 512], fpn_out_channels=64,
        fpn_top_in_channel=64, num_classes=num_classes, backbone_norm="BN",
        backbone_freeze_at=0,
    )
    return cfg


@pytest.fixture(scope="session")
def tiny_model():
    # MegEngine's initializers draw from MegEngine's generator, not NumPy's: seeded here, the
    # weights do not depend on which tests ran before
    mge.random.seed(0)
    model = FCOS(tiny_config())
    model.eval()
    return model


def spread_head_outputs(model, rng):
    """The head starts with std 0.01 weights (nearly equal scores everywhere); wider weights
    give distinct scores, so NMS and top-k pick the same detections in eager and compiled runs."""
    for conv in (model.head.cls_score, model.head.ctrness, model.head.bbox_pred):
        conv.weight = mge.Parameter(rng.normal(0, 0.05, conv.weight.shape).astype("float32"))


def load_tool(script):
    """tools/<script> imported as a module, so that its functions can be called."""
    spec = importlib.util.spec_from_file_location(os.path.splitext(script)[0] + "_tool",
                                                  os.path.join(PROJECT_ROOT, "tools", script))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_tool(script, *args):
    """Run tools/<script> with ``args`` from the project root; the finished process."""
    return subprocess.run(
        [sys.executable, os.path.join(PROJECT_ROOT, "tools", script)] + [str(a) for a in args],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600, check=False,
    )


def randomize_frozen_bn(model, rng):
    """Statistics far from the identity, so that folding them is really exercised."""
    for module in model.modules():
        if isinstance(module, FrozenBatchNorm2d):
            channels = module.num_features
            module.load_state_dict({
                "weight": rng.uniform(0.5, 1.5, channels).astype("float32"),
                "bias": rng.uniform(-0.2, 0.2, channels).astype("float32"),
                "running_mean": rng.uniform(-0.2, 0.2, channels).astype("float32"),
                "running_var": rng.uniform(0.5, 2.0, channels).astype("float32"),
            })


def randomize_batch_norms(model, rng):
    """Running statistics and affine parameters of every BN and SyncBN far from the identity,
    as training leaves them."""
    for module in model.modules():
        if isinstance(module, BATCH_NORMS):
            shape = module.running_mean.shape  # [1, C, 1, 1]
            module.load_state_dict({
                "weight": rng.uniform(0.5, 1.5, shape).astype("float32"),
                "bias": rng.uniform(-0.2, 0.2, shape).astype("float32"),
                "running_mean": rng.uniform(-0.2, 0.2, shape).astype("float32"),
                "running_var": rng.uniform(0.5, 2.0, shape).astype("float32"),
            })


def with_distinct_outputs(build, seed):
    """``build()``, its initial weights drawn after seeding MegEngine's generator with ``seed``,
    in eval mode with FrozenBN statistics and head weights that compiled engines must
    reproduce exactly (see randomize_frozen_bn and spread_head_outputs)."""
    mge.random.seed(seed)
    model = build()
    rng = np.random.RandomState(seed)
    randomize_frozen_bn(model, rng)
    spread_head_outputs(model, rng)
    model.eval()
    return model


@pytest.fixture(scope="module")
def frozen_bn_model():
    return with_distinct_outputs(lambda: FCOS(tiny_config().update(backbone_norm="FrozenBN")),
                                 seed=0)


# the tiny detector as a config file for the tools (FrozenBN, as frozen_bn_model)
TINY_CONFIG_FILE = '''
from official.vision.detection.models import FCOS, FCOSConfig


class Cfg(FCOSConfig):
    def __init__(self):
        super().__init__()
        self.update(backbone="resnet18", fpn_in_channels=[128, 256, 512], fpn_out_channels=64,
                    fpn_top_in_channel=64, num_classes=3)


Net = FCOS
'''


@pytest.fixture(scope="session")
def tiny_config_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("config") / "tiny_fcos.py"
    path.write_text(TINY_CONFIG_FILE)
    return str(path)


# Written the way configs for the official package are: attribute names, Net and Cfg.
OFFICIAL_STYLE_CONFIG = '''
from official.vision.detection import models


class CustomFCOSConfig(models.FCOSConfig):
    def __init__(self):
        super().__init__()
        self.backbone = "resnet18"
        self.backbone_pretrained = False
        self.backbone_norm = "BN"
        self.backbone_freeze_at = 0
        self.fpn_in_channels = [128, 256, 512]
        self.fpn_out_channels = 32
        self.fpn_top_in_channel = 32
        self.train_dataset = dict(name="shapes", root="train", ann_file="annotations/train.json",
                                  remove_images_without_annotations=True)
        self.test_dataset = dict(name="shapes", root="val", ann_file="annotations/val.json",
                                 remove_images_without_annotations=False)
        self.num_classes = 3
        self.train_image_short_size = (64,)
        self.train_image_max_size = 96
        self.test_image_short_size = 64
        self.test_image_max_size = 96
        self.nr_images_epoch = NR_IMAGES
        self.max_epoch = 2
        self.warm_iters = 2
        self.lr_decay_stages = [1]
        self.basic_lr = BASIC_LR
        self.log_interval = 4


Net = models.FCOS
Cfg = CustomFCOSConfig
'''


def write_config(path, nr_images=8, basic_lr=0.01 / 16, optimizer=None):
    """The official-style config with these values; ``optimizer`` (cfg.optimizer) is set only
    when given, as the official package has no such option."""
    text = OFFICIAL_STYLE_CONFIG.replace("NR_IMAGES", str(nr_images))
    text = text.replace("BASIC_LR", repr(basic_lr))
    if optimizer is not None:
        text = text.replace("        self.basic_lr", "        self.optimizer = {!r}\n"
                            "        self.basic_lr".format(optimizer))
    path.write_text(text)
    return str(path)
