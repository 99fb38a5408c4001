"""Anchor points of the feature pyramid and the ltrb box coding around them.

Everything here is built from tensor ops on tensor shapes, so the same code runs eagerly and
under ``trace(symbolic=True)`` with a dynamic input size.
"""
import megengine.functional as F


def index_range(n):
    """[0, 1, ..., n-1] as float32 for a Python int or a traced scalar n.

    F.arange/F.linspace are not used: in eager MegEngine 1.13 two pending linspace results can
    return each other's values (linspace(0, 47, 48) read back as steps of 31/47).
    """
    return F.cumsum(F.ones((n,)), axis=0) - 1


def level_points(height, width, stride, offset=0.5):
    """Points of one level, [H*W, 2] as (x, y) = ((j + offset) * stride, (i + offset) * stride),
    row-major: rows i outer, columns j inner."""
    xs = (index_range(width) + offset) * stride
    ys = (index_range(height) + offset) * stride
    x = F.broadcast_to(xs.reshape(1, -1), (height, width)).flatten()
    y = F.broadcast_to(ys.reshape(-1, 1), (height, width)).flatten()
    return F.stack([x, y], axis=1)


def pyramid_points(features, strides, offset=0.5):
    """One [P_l, 2] tensor of points per feature map [N, C, H_l, W_l]."""
    return [
        level_points(feature.shape[2], feature.shape[3], stride, offset)
        for feature, stride in zip(features, strides)
    ]


def unbind(tensor, count):
    """The first ``count`` components of the last axis as separate, contiguous tensors.

    MegEngine 1.13's CPU kernels misread strided slices in broadcasting ops (``[1, P, 2] -
    x[..., :2]`` of a [N, P, 4] ``x`` gives wrong values; other shapes abort), so every slice
    is materialized (``* 1``) before it meets another operand.
    """
    return [tensor[..., i] * 1 for i in range(count)]


def encode_ltrb(points, boxes):
    """Distances (l, t, r, b) from points [..., 2] to box edges [..., >=4] (broadcast)."""
    x, y = unbind(points, 2)
    x1, y1, x2, y2 = unbind(boxes, 4)
    return F.stack([x - x1, y - y1, x2 - x, y2 - y], axis=-1)


def decode_ltrb(points, ltrb):
    """Boxes (x1, y1, x2, y2) from points [..., 2] and distances [..., 4] (broadcast)."""
    x, y = unbind(points, 2)
    left, top, right, bottom = unbind(ltrb, 4)
    return F.stack([x - left, y - top, x + right, y + bottom], axis=-1)


def boxes_to_original_image(boxes, im_info):
    """Map boxes [N, P, 4] from the resized input to original pixels and clip them to
    [0, w] x [0, h]. im_info rows: (resized_h, resized_w, original_h, original_w, ...)."""
    resized_h, resized_w, height, width = unbind(im_info, 4)
    scale_w, scale_h = resized_w / width, resized_h / height
    scale = F.stack([scale_w, scale_h, scale_w, scale_h], axis=1).reshape(-1, 1, 4)
    upper = F.stack([width, height, width, height], axis=1).reshape(-1, 1, 4)
    return F.minimum(F.maximum(boxes / scale, 0), upper)
