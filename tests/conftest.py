"""Shared fixtures: small models and the reference of the published weights."""
import json
import os

import numpy as np
import pytest

from official.vision.detection.models import FCOS, FCOSConfig

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
PROJECT_ROOT = os.path.dirname(TESTS_DIR)


@pytest.fixture(scope="session")
def published_reference():
    with open(os.path.join(TESTS_DIR, "data", "fcos_state_dicts.json")) as f:
        return json.load(f)


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
    np.random.seed(0)
    model = FCOS(tiny_config())
    model.eval()
    return model
