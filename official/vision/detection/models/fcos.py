"""FCOS (Tian et al., https://arxiv.org/abs/1904.01355): backbone -> FPN -> point head.

``model(image, im_info, gt_boxes)`` returns a dict of losses; without ``gt_boxes`` it returns
(scores, boxes) in original-image pixels, as the official model does in eval mode (the released
models use frozen BN and GN, so their outputs do not depend on the mode). Final detections
(threshold, NMS, top-k) come from ``DetEvaluator.predict``.
"""
import numpy as np

import megengine as mge
import megengine.distributed as dist
import megengine.functional as F
import megengine.module as M

from ..backbones.resnet import build_resnet
from ..boxes import padded_side
from ..errors import ConfigError, DatasetError
from ..layers.assigner import assign_targets
from ..layers.fpn import FPN, LastLevelP6P7
from ..layers.losses import binary_cross_entropy_with_logits, iou_loss_ltrb, sigmoid_focal_loss
from ..layers.point_head import PointHead
from ..layers.points import (
    boxes_to_original_image, decode_ltrb, index_range, pyramid_points
)

def pad_to_multiple(image):
    """Zero-pad [N, C, H, W] at the bottom and right to multiples of SIZE_DIVISIBILITY.

    Works on Python-int shapes (eager) and on traced shapes alike. The image is written into a
    zero tensor of the padded size: concatenating zero-row blocks would, for a side that is
    already a multiple, put an empty tensor into the traced graph, which Lite's profiler
    rejects ("assertion `cur_shape > 0' failed").
    """
    n, c, h, w = image.shape
    padded_h, padded_w = padded_side(h), padded_side(w)
    if isinstance(padded_h, int) and (padded_h, padded_w) == (h, w):
        return image
    padded = F.zeros((n, c, padded_h, padded_w))
    padded[:, :, :h, :w] = image
    return padded


def _flatten_levels(maps):
    """List of [N, C, H_l, W_l] -> [N, sum(H_l * W_l), C], rows in (level, i, j) order."""
    n, c = maps[0].shape[0], maps[0].shape[1]
    return F.concat([m.transpose(0, 2, 3, 1).reshape(n, -1, c) for m in maps], axis=1)


def _mean_over_devices(value):
    if dist.is_distributed():
        value = dist.functional.all_reduce_sum(value) / dist.get_world_size()
    return value


class FCOS(M.Module):
    def __init__(self, cfg):
        super().__init__()
        _check_config(cfg)
        self.cfg = cfg
        bottom_up = build_resnet(cfg.backbone, cfg.backbone_norm, cfg.backbone_freeze_at)
        stage_channels = dict(zip(["res2", "res3", "res4", "res5"], bottom_up.out_channels))
        expected = [stage_channels.get(name) for name in cfg.fpn_in_features]
        if list(cfg.fpn_in_channels) != expected:
            raise ConfigError(
                "fpn_in_channels {} do not match {}'s {} channels {}; set cfg.fpn_in_channels "
                "= {}".format(cfg.fpn_in_channels, cfg.backbone, cfg.fpn_in_features, expected,
                              expected)
            )
        self.backbone = FPN(
            bottom_up, cfg.fpn_in_features, cfg.fpn_in_channels, cfg.fpn_in_strides,
            cfg.fpn_out_channels, cfg.fpn_norm,
            LastLevelP6P7(cfg.fpn_top_in_channel, cfg.fpn_out_channels, cfg.fpn_top_in_feature),
        )
        self.head = PointHead(cfg.fpn_out_channels, cfg.num_classes, cfg.stride,
                              cfg.cls_prior_prob)
        self.img_mean = np.array(cfg.img_mean, dtype=np.float32).reshape(1, -1, 1, 1)
        self.img_std = np.array(cfg.img_std, dtype=np.float32).reshape(1, -1, 1, 1)

    # ------------------------------ parameters ------------------------------ #
    def trainable_parameters(self):
        """Parameters outside the frozen backbone stages (what the optimizer updates)."""
        frozen = {
            id(p) for m in self.backbone.bottom_up.frozen_modules() for p in m.parameters()
        }
        return [p for p in self.parameters() if id(p) not in frozen]

    def train(self, mode=True, recursive=True):
        super().train(mode, recursive)
        # frozen stages keep eval behaviour (BN statistics do not drift) while training
        for module in self.backbone.bottom_up.frozen_modules():
            module.eval()

    # -------------------------------- forward ------------------------------- #
    def forward(self, image, im_info, gt_boxes=None):
        """image: [N, 3, H, W] BGR 0-255 (any size); im_info: [N, 4] rows (resized_h,
        resized_w, original_h, original_w), training adds a 5th column, the number of boxes;
        gt_boxes: [N, G, 5] (x1, y1, x2, y2, class index) in resized-image pixels, class indices
        0-based (0 .. num_classes - 1), unlike the official package's 1-based labels.
        """
        image, im_info = _as_tensor(image), _as_tensor(im_info)
        if gt_boxes is not None:
            gt_boxes = _as_tensor(gt_boxes)
            self.check_training_inputs(im_info, gt_boxes)
        logits, ltrb, ctrness, points = self.raw_outputs(image)
        if gt_boxes is not None:
            return self.losses(logits, ltrb, ctrness, points, im_info, gt_boxes)
        scores, boxes = self.detect_points(logits, ltrb, ctrness, points, im_info)
        if image.shape[0] == 1:
            return scores[0], boxes[0]
        return scores, boxes

    def check_training_inputs(self, im_info, gt_boxes):
        """Refuse a training batch the losses would silently misread (tensors or NumPy)."""
        if im_info.ndim != 2 or im_info.shape[1] != 5:
            # a 4-column im_info would make the assigner read past its rows
            raise ConfigError("training needs im_info [N, 5] with the number of boxes of each "
                              "image in column 5, got shape {}".format(tuple(im_info.shape)))
        _check_labels(_as_numpy(gt_boxes), _as_numpy(im_info)[:, 4], self.cfg.num_classes)

    def inference(self, image, im_info):
        """Always batched: scores [N, P, K] and boxes [N, P, 4] in original pixels."""
        image, im_info = _as_tensor(image), _as_tensor(im_info)
        return self.detect_points(*self.raw_outputs(image), im_info)

    def raw_outputs(self, image):
        """Head outputs flattened over levels: logits [N, P, K], ltrb [N, P, 4], centerness
        logits [N, P], and the points of each level."""
        image = (pad_to_multiple(image) - self.img_mean) / self.img_std
        pyramid = self.backbone(image)
        features = [pyramid[name] for name in self.cfg.in_features]
        logits, ltrb, ctrness = self.head(features)
        points = pyramid_points(features, self.cfg.stride, self.cfg.anchor_offset)
        return (_flatten_levels(logits), _flatten_levels(ltrb), _flatten_levels(ctrness)[..., 0],
                points)

    def detect_points(self, logits, ltrb, ctrness, points, im_info):
        boxes = decode_ltrb(F.expand_dims(F.concat(points, axis=0), 0), ltrb)
        boxes = boxes_to_original_image(boxes, im_info)
        scores = F.sqrt(F.sigmoid(logits) * F.expand_dims(F.sigmoid(ctrness), 2))
        return scores, boxes

    def losses(self, logits, ltrb, ctrness, points, im_info, gt_boxes):
        cfg = self.cfg
        labels, ltrb_targets, ctr_targets = assign_targets(
            points, cfg.stride, cfg.object_sizes_of_interest, gt_boxes, im_info[:, 4],
            cfg.center_sampling_radius,
        )
        foreground = (labels >= 0).astype("float32")
        num_fg = _mean_over_devices(foreground.sum()).detach()
        sum_ctr = _mean_over_devices(ctr_targets.sum()).detach()

        classes = index_range(cfg.num_classes).reshape(1, 1, -1)
        cls_targets = (F.expand_dims(labels.astype("float32"), 2) == classes).astype("float32")
        loss_cls = sigmoid_focal_loss(
            logits, cls_targets, cfg.focal_loss_alpha, cfg.focal_loss_gamma
        ).sum() / F.maximum(num_fg, 1)

        # background rows get a unit box so the IoU stays finite; their weight is 0
        fg4 = F.expand_dims(foreground, 2)
        safe_targets = ltrb_targets * fg4 + (1 - fg4)
        loss_bbox = (
            iou_loss_ltrb(ltrb, safe_targets, cfg.iou_loss_type) * ctr_targets
        ).sum() / F.maximum(sum_ctr, 1e-5) * cfg.loss_bbox_weight

        loss_ctr = (
            binary_cross_entropy_with_logits(ctrness, ctr_targets) * foreground
        ).sum() / F.maximum(num_fg, 1)
        return {
            "total_loss": loss_cls + loss_bbox + loss_ctr,
            "loss_cls": loss_cls,
            "loss_bbox": loss_bbox,
            "loss_ctr": loss_ctr,
        }


def _check_labels(gt_boxes, num_boxes, num_classes):
    """Refuse class indices outside [0, num_classes): the focal loss would silently treat such
    a box as background (a 1-based label K) or as another class."""
    for boxes, count in zip(gt_boxes, num_boxes.astype(int)):
        labels = boxes[:count, 4]
        wrong = labels[(labels < 0) | (labels >= num_classes) | (labels != np.round(labels))]
        if wrong.size:
            raise DatasetError(
                "class label {:g} is outside [0, {}): training takes 0-based class indices "
                "(0 .. num_classes - 1); the official FCOS and megengine.data.dataset.COCO give "
                "1-based labels: subtract 1".format(wrong[0], num_classes))


def _as_tensor(value):
    return value if isinstance(value, mge.Tensor) else mge.tensor(np.asarray(value, np.float32))


def _as_numpy(value):
    return value.numpy() if isinstance(value, mge.Tensor) else np.asarray(value)


def _check_config(cfg):
    if len(cfg.in_features) != len(cfg.stride):
        raise ConfigError("cfg.in_features and cfg.stride must have one entry per level")
    if len(cfg.object_sizes_of_interest) != len(cfg.stride):
        raise ConfigError("cfg.object_sizes_of_interest needs one [low, high] per level")
