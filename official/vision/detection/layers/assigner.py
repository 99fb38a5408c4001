"""FCOS training targets for a whole batch at once (no per-image Python loop).

A point is a positive for a ground-truth box when
  - max(l, t, r, b) of the box seen from the point lies in its level's size range, and
  - the point is inside the box's centre region: a square of ``radius * stride`` around the
    box centre, clipped to the box (or inside the box itself when radius is 0).
Among the boxes a point qualifies for, the one with the smallest area wins (the first on ties).
Masks are combined arithmetically: no masked fill of broadcast tensors, which MegEngine 1.13
rejects on the CPU.
"""
import megengine.functional as F

from .points import encode_ltrb, index_range, unbind

_NOT_A_CANDIDATE = 1e10  # added to the area of boxes a point does not qualify for


def _per_point(values, points_per_level):
    """Repeat one value per level over that level's points: [P]."""
    return F.concat([F.full((p.shape[0],), float(v)) for v, p in zip(values, points_per_level)])


def _inside_centre_region(points, boxes, point_strides, radius):
    """[N, G, P] bool: the point lies strictly inside the box's clipped centre square.

    points [P, 2]; boxes [N, G, 1, >=4]; point_strides [P]."""
    x, y = unbind(points, 2)
    x1, y1, x2, y2 = unbind(boxes, 4)
    half = point_strides * radius
    centre_x, centre_y = (x1 + x2) / 2, (y1 + y2) / 2
    inside_x = (x > F.maximum(centre_x - half, x1)) & (x < F.minimum(centre_x + half, x2))
    inside_y = (y > F.maximum(centre_y - half, y1)) & (y < F.minimum(centre_y + half, y2))
    return inside_x & inside_y


def assign_targets(points_per_level, strides, size_ranges, gt_boxes, num_gts, radius=1.5):
    """Targets of every point of every image.

    Args:
        points_per_level: list of [P_l, 2] point coordinates (x, y).
        strides, size_ranges: per level; ranges are [low, high] on max(l, t, r, b).
        gt_boxes: [N, G, 5] (x1, y1, x2, y2, class index), padded with any rows past num_gts;
            G must be at least 1.
        num_gts: [N] number of real boxes per image.
        radius: centre sampling radius in strides; 0 uses the whole box.
    Returns:
        labels [N, P] int32 class index, -1 for background; ltrb [N, P, 4] distances to the
        matched box; centerness [N, P] (0 for background). All detached.
    """
    points = F.concat(points_per_level, axis=0)  # [P, 2]
    point_strides = _per_point(strides, points_per_level)
    low = _per_point([r[0] for r in size_ranges], points_per_level)
    high = _per_point([r[1] for r in size_ranges], points_per_level)

    boxes = F.expand_dims(gt_boxes, 2)  # [N, G, 1, 5]
    ltrb_all = encode_ltrb(points, boxes)  # [N, G, P, 4]
    largest_side = ltrb_all.max(axis=-1)
    in_size_range = (largest_side >= low) & (largest_side <= high)
    if radius > 0:
        inside = _inside_centre_region(points, boxes, point_strides, radius)
    else:
        inside = ltrb_all.min(axis=-1) > 0
    real_box = index_range(gt_boxes.shape[1]).reshape(1, -1, 1) < num_gts.reshape(-1, 1, 1)
    qualifies = (in_size_range & inside & real_box).astype("float32")

    x1, y1, x2, y2, label = unbind(boxes, 5)  # each [N, G, 1]
    candidate_areas = (x2 - x1) * (y2 - y1) + (1 - qualifies) * _NOT_A_CANDIDATE  # [N, G, P]
    match = F.argmin(candidate_areas, axis=1)  # [N, P]
    foreground = candidate_areas.min(axis=1) < _NOT_A_CANDIDATE / 2

    # select the matched box's values with a one-hot sum: F.gather builds its indices with
    # F.arange, which returns wrong values under MegEngine 1.13's asynchronous execution
    one_hot = (F.expand_dims(match, 1) == index_range(gt_boxes.shape[1]).reshape(1, -1, 1))
    one_hot = one_hot.astype("float32")  # [N, G, P]
    matched = [(one_hot * value).sum(axis=1) for value in (x1, y1, x2, y2, label)]  # [N, P]
    labels = F.where(foreground, matched[4].astype("int32"), F.full_like(match, -1))
    ltrb = encode_ltrb(points, F.stack(matched[:4], axis=-1))
    return labels.detach(), ltrb.detach(), (centerness(ltrb) * foreground).detach()


def centerness(ltrb, eps=1e-6):
    """sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b)), 0 where negative."""
    left, top, right, bottom = unbind(ltrb, 4)
    horizontal = F.minimum(left, right) / F.maximum(F.maximum(left, right), eps)
    vertical = F.minimum(top, bottom) / F.maximum(F.maximum(top, bottom), eps)
    return F.sqrt(F.maximum(horizontal, 0) * F.maximum(vertical, 0))
