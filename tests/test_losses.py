import math

import numpy as np
import megengine as mge
import pytest

from official.vision.detection.layers.losses import (
    binary_cross_entropy_with_logits, iou_loss_ltrb, sigmoid_focal_loss
)
from official.vision.detection.models import FCOS

from conftest import tiny_config


def t(values):
    return mge.tensor(np.array(values, np.float32))


def test_focal_loss_of_hand_computed_cases():
    # logit 0: p = 0.5, BCE = log 2; (1 - p_t)^2 = 0.25; alpha_t 0.25 (positive) / 0.75
    loss = sigmoid_focal_loss(t([0.0, 0.0]), t([1.0, 0.0]), alpha=0.25, gamma=2).numpy()
    np.testing.assert_allclose(loss, [math.log(2) * 0.25 * 0.25, math.log(2) * 0.25 * 0.75],
                               rtol=1e-6)


def test_focal_loss_without_gamma_and_alpha_is_bce():
    logits, targets = t([-3.0, 0.5, 2.0]), t([0.0, 1.0, 1.0])
    np.testing.assert_allclose(sigmoid_focal_loss(logits, targets, alpha=-1, gamma=0).numpy(),
                               binary_cross_entropy_with_logits(logits, targets).numpy())


def test_bce_with_large_logits_is_finite():
    loss = binary_cross_entropy_with_logits(t([100.0, -100.0]), t([0.0, 1.0])).numpy()
    np.testing.assert_allclose(loss, [100, 100], rtol=1e-5)


@pytest.mark.parametrize("loss_type, expected", [
    # pred box [-1, -1, 1, 1], target box [0, 0, 2, 2]: IoU 1/7, enclosing area 9, union 7
    ("iou", -math.log(1 / 7)), ("linear_iou", 6 / 7), ("giou", 1 - (1 / 7 - 2 / 9)),
])
def test_iou_losses_of_known_boxes(loss_type, expected):
    loss = iou_loss_ltrb(t([[1, 1, 1, 1]]), t([[0, 0, 2, 2]]), loss_type).numpy()
    np.testing.assert_allclose(loss, [expected], rtol=1e-5)


def test_identical_boxes_have_zero_giou_loss():
    np.testing.assert_allclose(iou_loss_ltrb(t([[3, 2, 5, 7]]), t([[3, 2, 5, 7]])).numpy(), [0],
                               atol=1e-6)


def test_unknown_iou_loss_type_is_rejected():
    with pytest.raises(ValueError, match="iou_loss_type"):
        iou_loss_ltrb(t([[1, 1, 1, 1]]), t([[1, 1, 1, 1]]), "diou")


def test_batch_without_boxes_has_only_the_background_focal_loss():
    mge.random.seed(0)
    model = FCOS(tiny_config())
    model.eval()  # BN with fixed statistics: the two forwards below see the same logits
    data = np.random.RandomState(0).uniform(0, 255, (2, 3, 64, 64)).astype("float32")
    im_info = np.array([[64, 64, 64, 64, 0]] * 2, "float32")
    losses = model(image=data, im_info=im_info, gt_boxes=np.zeros((2, 1, 5), "float32"))
    values = {k: float(v) for k, v in losses.items()}
    logits = model.raw_outputs(mge.tensor(data))[0].numpy().astype(np.float64)
    # every point and class is a negative: (1 - alpha) p^gamma (-log(1 - p)), normalized by
    # max(num_fg, 1) = 1
    prob = 1 / (1 + np.exp(-logits))
    expected = (0.75 * prob ** 2 * np.logaddexp(0, logits)).sum()
    assert values["loss_cls"] == pytest.approx(expected, rel=1e-5)
    assert values["loss_bbox"] == 0 and values["loss_ctr"] == 0
    assert values["total_loss"] == pytest.approx(expected, rel=1e-5)
