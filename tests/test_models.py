import os

import numpy as np
import pytest
import megengine as mge

import hubconf
from official.vision.detection.backbones.resnet import build_resnet
from official.vision.detection.layers.norm import FrozenBatchNorm2d
from official.vision.detection.model_zoo import RELEASED_MODELS
from official.vision.detection.models import FCOS, FCOSConfig
from official.vision.detection.utils.config_file import load_config_module

from conftest import PROJECT_ROOT, RELEASED, spread_head_outputs, tiny_config


def test_the_model_zoo_table_holds_the_published_models_urls_and_map(published_reference):
    assert set(RELEASED) == set(published_reference["weights_urls"])
    for name, released in RELEASED_MODELS.items():
        assert released.url == published_reference["weights_urls"][name]
        assert released.coco_map == published_reference["coco_map"][name]
        assert str(released.coco_map).replace(".", "dot") in released.url


@pytest.mark.parametrize("entry", RELEASED)
def test_released_model_state_dict_equals_published_names_and_shapes(entry, published_reference):
    model = getattr(hubconf, entry)()
    shapes = {name: list(value.shape) for name, value in model.state_dict().items()}
    assert shapes == published_reference["state_dicts"][entry]


@pytest.mark.parametrize("page", ["README.md", os.path.join("docs", "model_zoo.md")])
def test_readme_and_the_model_zoo_page_list_the_released_models_of_the_table(page):
    with open(os.path.join(PROJECT_ROOT, page)) as f:
        rows = [line.split("|")[1:-1] for line in f if line.startswith("| `fcos_")]
    assert [(row[0].strip(" `"), float(row[2])) for row in rows] == [
        (model.name, model.coco_map) for model in RELEASED_MODELS.values()]
    if page != "README.md":  # the page links every published file
        assert [row[3].strip() for row in rows] == ["[{}.pkl]({})".format(
            model.weight_file, model.url) for model in RELEASED_MODELS.values()]


@pytest.mark.parametrize("entry", RELEASED)
def test_hub_factory_and_config_module_are_built_from_the_table(entry, published_reference):
    factory = getattr(hubconf, entry)
    assert factory.url == published_reference["weights_urls"][entry]
    assert "{} mAP".format(published_reference["coco_map"][entry]) in factory.__doc__
    module = load_config_module(os.path.join(PROJECT_ROOT, "official", "vision", "detection",
                                             "configs", entry + ".py"))
    assert getattr(module, entry).url == factory.url
    assert vars(module.Cfg()) == vars(factory().cfg)


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


# ------------------- golden losses: an independent NumPy FCOS loss ------------------- #
# The constants of fcos_numerics.md ("Inside the model", "Training targets"), written out here
# rather than read from the config, so that a changed default is caught too.
MEAN = np.array([103.530, 116.280, 123.675]).reshape(1, 3, 1, 1)
STD = np.array([57.375, 57.120, 58.395]).reshape(1, 3, 1, 1)
STRIDES = [8, 16, 32, 64, 128]
SIZE_RANGES = [(-1, 64), (64, 128), (128, 256), (256, 512), (512, np.inf)]
RADIUS, ALPHA, GAMMA = 1.5, 0.25, 2.0

# Two 300 x 530 images (padded to 320 x 544); rows x1, y1, x2, y2, 0-based class. Seen from the
# points near their centres: A lies on P3; B and C on P4, where points near both take C, the
# smaller box; D on P5 and P6; E on P3 and P4; F (510 wide) on P6. Image 2's third row lies
# past its box count (read as a box, it would claim points on P4 and P5), the fourth is zeros
# as the collate function pads.
GOLDEN_BOXES = np.array([
    [[20, 30, 60, 62, 0], [150, 60, 330, 200, 1], [200, 80, 340, 190, 2],
     [40, 20, 500, 290, 0]],
    [[300, 150, 400, 230, 2], [10, 40, 520, 140, 1], [0, 0, 200, 200, 1], [0, 0, 0, 0, 0]],
], np.float32)
GOLDEN_IM_INFO = np.array([[300, 530, 300, 530, 4], [300, 530, 600, 1060, 2]], np.float32)


def golden_model():
    """Tiny FCOS with seeded weights; head weights wide enough that logits, boxes and
    centerness vary from point to point, and box outputs mostly positive (bias 1)."""
    mge.random.seed(3)
    model = FCOS(tiny_config())
    spread_head_outputs(model, np.random.RandomState(4))
    model.head.bbox_pred.bias = mge.Parameter(np.ones((1, 4, 1, 1), np.float32))
    model.eval()  # BN with its (initial) running statistics: the same in both runs below
    return model


def head_outputs_by_hand(model, image):
    """Pad and normalize by hand, run the model's FPN and head modules and flatten their maps
    level by level (NHWC order): logits [N, P, K], ltrb [N, P, 4], centerness [N, P] and the
    (H, W) of each level."""
    n, c, h, w = image.shape
    padded = np.zeros((n, c, -(-h // 32) * 32, -(-w // 32) * 32))
    padded[:, :, :h, :w] = image
    pyramid = model.backbone(mge.tensor(((padded - MEAN) / STD).astype(np.float32)))
    features = [pyramid["p{}".format(level)] for level in range(3, 8)]
    maps = [[m.numpy().astype(np.float64) for m in out] for out in model.head(features)]

    def flatten(level_maps):
        return np.concatenate([m.transpose(0, 2, 3, 1).reshape(n, -1, m.shape[1])
                               for m in level_maps], axis=1)

    shapes = [f.shape[2:] for f in features]
    return flatten(maps[0]), flatten(maps[1]), flatten(maps[2])[..., 0], shapes


def points_by_hand(shapes):
    """Points (x, y) = ((j + 0.5) * stride, (i + 0.5) * stride), rows outer, and each point's
    level."""
    points, levels = [], []
    for level, ((height, width), stride) in enumerate(zip(shapes, STRIDES)):
        rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
        points.append(np.stack([cols.ravel() + 0.5, rows.ravel() + 0.5], axis=1) * stride)
        levels.append(np.full(height * width, level))
    return np.concatenate(points), np.concatenate(levels)


def targets_by_hand(points, levels, boxes):
    """Labels (-1 background) and ltrb targets of one image's points. Boxes are visited from
    the smallest area up (stable: the first on ties), and a point takes the first box it
    qualifies for: inside the box's centre square of RADIUS strides clipped to the box, with
    max(l, t, r, b) in its level's range."""
    labels = np.full(len(points), -1)
    ltrb = np.zeros((len(points), 4))
    x, y = points[:, 0], points[:, 1]
    half = RADIUS * np.array(STRIDES)[levels]
    low, high = np.array(SIZE_RANGES).T[:, levels]
    for x1, y1, x2, y2, label in sorted(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1])):
        distances = np.stack([x - x1, y - y1, x2 - x, y2 - y], axis=1)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        inside = ((np.maximum(cx - half, x1) < x) & (x < np.minimum(cx + half, x2))
                  & (np.maximum(cy - half, y1) < y) & (y < np.minimum(cy + half, y2)))
        in_range = (distances.max(axis=1) >= low) & (distances.max(axis=1) <= high)
        new = inside & in_range & (labels < 0)
        labels[new], ltrb[new] = label, distances[new]
    return labels, ltrb


def bce_by_hand(logits, targets):
    """-(t log sigmoid(x) + (1 - t) log(1 - sigmoid(x))) = log(1 + e^x) - t x."""
    return np.logaddexp(0, logits) - targets * logits


def focal_by_hand(logits, targets):
    prob = 1 / (1 + np.exp(-logits))
    p_t = targets * prob + (1 - targets) * (1 - prob)
    alpha_t = targets * ALPHA + (1 - targets) * (1 - ALPHA)
    return alpha_t * (1 - p_t) ** GAMMA * bce_by_hand(logits, targets)


def giou_loss_by_hand(pred, target):
    """1 - GIoU of boxes (-l, -t, r, b) around the same point."""
    def size(x1y1, x2y2):
        width_height = (x2y2 - x1y1).clip(0)
        return width_height[:, 0] * width_height[:, 1]

    pred_x1y1, pred_x2y2 = -pred[:, :2], pred[:, 2:]
    target_x1y1, target_x2y2 = -target[:, :2], target[:, 2:]
    inter = size(np.maximum(pred_x1y1, target_x1y1), np.minimum(pred_x2y2, target_x2y2))
    union = size(pred_x1y1, pred_x2y2) + size(target_x1y1, target_x2y2) - inter
    enclosing = size(np.minimum(pred_x1y1, target_x1y1), np.maximum(pred_x2y2, target_x2y2))
    return 1 - (inter / union - (enclosing - union) / enclosing)


def losses_by_hand(logits, ltrb, ctr_logits, labels, ltrb_targets):
    """The FCOS losses of fcos_numerics.md from flattened head outputs and targets."""
    fg = labels >= 0
    num_fg = max(fg.sum(), 1)
    one_hot = (labels[..., None] == np.arange(logits.shape[-1])).astype(np.float64)
    lr, tb = ltrb_targets[fg][:, 0::2], ltrb_targets[fg][:, 1::2]
    ctr = np.sqrt(lr.min(1) / lr.max(1) * tb.min(1) / tb.max(1))
    losses = {
        "loss_cls": focal_by_hand(logits, one_hot).sum() / num_fg,
        "loss_bbox": (giou_loss_by_hand(ltrb[fg], ltrb_targets[fg]) * ctr).sum()
        / max(ctr.sum(), 1e-5),
        "loss_ctr": bce_by_hand(ctr_logits[fg], ctr).sum() / num_fg,
    }
    losses["total_loss"] = sum(losses.values())
    return losses


def test_training_losses_equal_an_independent_numpy_fcos_loss():
    model = golden_model()
    image = np.random.RandomState(5).uniform(0, 255, (2, 3, 300, 530))
    logits, ltrb, ctr_logits, shapes = head_outputs_by_hand(model, image)
    points, levels = points_by_hand(shapes)
    targets = [targets_by_hand(points, levels, boxes[:int(count)])
               for boxes, count in zip(GOLDEN_BOXES, GOLDEN_IM_INFO[:, 4])]
    labels, ltrb_targets = (np.stack(t) for t in zip(*targets))
    # the batch must exercise the rules: positives on P3-P6; on P4, B keeps the points C (the
    # smaller box) does not claim
    positive_levels = np.broadcast_to(levels, labels.shape)[labels >= 0]
    assert set(positive_levels.tolist()) == {0, 1, 2, 3}
    assert set(labels[0][levels == 1].tolist()) == {-1, 1, 2}
    expected = losses_by_hand(logits, ltrb, ctr_logits, labels, ltrb_targets)

    losses = model(image=image.astype(np.float32), im_info=GOLDEN_IM_INFO,
                   gt_boxes=GOLDEN_BOXES)
    assert set(losses) == set(expected)
    for name, value in expected.items():
        assert float(losses[name]) == pytest.approx(value, rel=1e-5), name


def test_training_without_the_box_count_column_is_a_clear_error():
    model = FCOS(tiny_config())
    model.train()
    data = np.zeros((1, 3, 64, 64), "float32")
    gt = np.array([[[4, 4, 60, 50, 1]]], "float32")
    with pytest.raises(ValueError, match=r"im_info \[N, 5\]"):
        model(image=data, im_info=np.array([[64, 64, 64, 64]], "float32"), gt_boxes=gt)
