import numpy as np
import pytest
import megengine as mge

import hubconf
from official.vision.detection.backbones.resnet import build_resnet
from official.vision.detection.layers.norm import FrozenBatchNorm2d
from official.vision.detection.models import FCOS, FCOSConfig

from conftest import tiny_config

RELEASED = [
    "fcos_res18_coco_3x_800size", "fcos_res34_coco_3x_800size", "fcos_res50_coco_3x_800size",
    "fcos_res101_coco_3x_800size", "fcos_resx101_coco_2x_800size",
]


@pytest.mark.parametrize("entry", RELEASED)
def test_released_model_state_dict_equals_published_names_and_shapes(entry, published_reference):
    model = getattr(hubconf, entry)()
    shapes = {name: list(value.shape) for name, value in model.state_dict().items()}
    assert shapes == published_reference["state_dicts"][entry]


@pytest.mark.parametrize("entry", RELEASED)
def test_hub_factory_points_at_the_published_url(entry, published_reference):
    assert getattr(hubconf, entry).url == published_reference["weights_urls"][entry]


def test_frozen_bn_is_not_trained_and_applies_its_statistics():
    bn = FrozenBatchNorm2d(2)
    bn.load_state_dict({"weight": np.array([2, 1], "float32"), "bias": np.array([1, 0], "float32"),
                        "running_mean": np.array([1, 0], "float32"),
                        "running_var": np.array([4 - 1e-5, 1 - 1e-5], "float32")})
    x = mge.tensor(np.ones((1, 2, 1, 1), "float32") * 3)
    np.testing.assert_allclose(bn(x).numpy().ravel(), [2 * (3 - 1) / 2 + 1, 3], rtol=1e-6)
    assert list(bn.parameters()) == []


def test_freeze_at_two_excludes_stem_and_res2_from_training():
    model = FCOS(FCOSConfig().update(backbone="resnet18", fpn_in_channels=[128, 256, 512],
                                     backbone_norm="BN", backbone_freeze_at=2))
    trainable = {id(p) for p in model.trainable_parameters()}
    bottom_up = model.backbone.bottom_up
    assert id(bottom_up.conv1.weight) not in trainable
    assert id(bottom_up.layer1[0].conv1.weight) not in trainable
    assert id(bottom_up.layer2[0].conv1.weight) in trainable
    model.train()
    assert not bottom_up.bn1.training and not bottom_up.layer1.training
    assert bottom_up.layer2.training


def test_resnext_uses_32_groups_of_width_8():
    net = build_resnet("resnext101_32x8d")
    assert net.layer1[0].conv2.weight.shape == (32, 8, 8, 3, 3)
    assert net.out_channels == [256, 512, 1024, 2048]


def test_unknown_backbone_and_norm_are_clear_errors():
    with pytest.raises(ValueError, match="unknown backbone 'resnet19'"):
        build_resnet("resnet19")
    with pytest.raises(ValueError, match="unknown norm 'XN'"):
        build_resnet("resnet18", norm="XN")


def test_config_update_rejects_unknown_names():
    with pytest.raises(ValueError, match="num_clases"):
        FCOSConfig().update(num_clases=3)


def test_mismatched_fpn_channels_name_the_right_values():
    with pytest.raises(ValueError, match=r"set cfg.fpn_in_channels = \[128, 256, 512\]"):
        FCOS(FCOSConfig().update(backbone="resnet18"))


def test_eval_forward_returns_scores_and_boxes_for_every_point(tiny_model):
    data = np.random.RandomState(0).uniform(0, 255, (1, 3, 70, 100)).astype("float32")
    im_info = np.array([[70, 100, 140, 200]], "float32")
    scores, boxes = tiny_model(image=mge.tensor(data), im_info=mge.tensor(im_info))
    # padded to 96 x 128: P3 12x16, P4 6x8, P5 3x4, P6 2x2, P7 1x1
    assert scores.shape == (192 + 48 + 12 + 4 + 1, 3) and boxes.shape == (257, 4)
    scores, boxes = scores.numpy(), boxes.numpy()
    assert ((scores >= 0) & (scores <= 1)).all()
    assert boxes[:, 0::2].min() >= 0 and boxes[:, 0::2].max() <= 200
    assert boxes[:, 1::2].min() >= 0 and boxes[:, 1::2].max() <= 140


def test_batched_eval_equals_one_image_at_a_time(tiny_model):
    rng = np.random.RandomState(1)
    data = rng.uniform(0, 255, (2, 3, 64, 96)).astype("float32")
    im_info = np.array([[64, 96, 64, 96], [64, 96, 128, 192]], "float32")
    scores, boxes = tiny_model.inference(data, im_info)
    for i in range(2):
        single_scores, single_boxes = tiny_model(image=data[i:i + 1], im_info=im_info[i:i + 1])
        np.testing.assert_allclose(scores.numpy()[i], single_scores.numpy(), atol=1e-5)
        np.testing.assert_allclose(boxes.numpy()[i], single_boxes.numpy(), atol=1e-3)


def test_training_forward_returns_finite_losses(tiny_model):
    model = FCOS(tiny_config())
    model.train()
    data = np.random.RandomState(2).uniform(0, 255, (2, 3, 64, 96)).astype("float32")
    gt = np.zeros((2, 2, 5), "float32")
    gt[0] = [[4, 4, 60, 50, 1], [10, 20, 40, 60, 2]]
    im_info = np.array([[64, 96, 64, 96, 2], [64, 96, 64, 96, 0]], "float32")
    losses = model(image=data, im_info=im_info, gt_boxes=gt)
    assert set(losses) == {"total_loss", "loss_cls", "loss_bbox", "loss_ctr"}
    assert all(np.isfinite(float(v)) for v in losses.values())


def test_training_without_the_box_count_column_is_a_clear_error():
    model = FCOS(tiny_config())
    model.train()
    data = np.zeros((1, 3, 64, 64), "float32")
    gt = np.array([[[4, 4, 60, 50, 1]]], "float32")
    with pytest.raises(ValueError, match=r"im_info \[N, 5\]"):
        model(image=data, im_info=np.array([[64, 64, 64, 64]], "float32"), gt_boxes=gt)
