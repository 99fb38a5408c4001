import numpy as np
import megengine as mge

from official.vision.detection.layers.assigner import assign_targets, centerness
from official.vision.detection.layers.points import level_points

INF = float("inf")


def assign(boxes, sizes, strides, ranges, num_gts=None, radius=0.0):
    """Targets of one image; boxes [G, 5]; sizes: (H, W) of each level's feature map."""
    points = [level_points(h, w, s) for (h, w), s in zip(sizes, strides)]
    gt = mge.tensor(np.asarray(boxes, np.float32).reshape(1, -1, 5))
    count = len(boxes) if num_gts is None else num_gts
    labels, ltrb, ctr = assign_targets(points, strides, ranges, gt,
                                       mge.tensor(np.array([count], np.float32)), radius)
    return labels.numpy()[0], ltrb.numpy()[0], ctr.numpy()[0], np.concatenate(
        [p.numpy() for p in points])


def at(points, x, y):
    return int(np.where((points[:, 0] == x) & (points[:, 1] == y))[0][0])


def test_point_inside_two_boxes_goes_to_the_smaller_box():
    boxes = [[0, 0, 64, 64, 0], [8, 8, 40, 40, 2]]
    labels, ltrb, _, points = assign(boxes, [(8, 8)], [8], [[-1, INF]])
    assert labels[at(points, 20, 20)] == 2
    np.testing.assert_allclose(ltrb[at(points, 20, 20)], [12, 12, 20, 20])
    assert labels[at(points, 52, 52)] == 0
    assert (labels >= 0).all()  # every point lies inside the big box


def test_point_outside_the_size_range_of_its_level_is_background():
    # seen from (4, 4) the box's largest side distance is 60: too big for level 0 ([0, 32])
    boxes = [[2, 2, 64, 30, 1]]
    labels, _, _, points = assign(boxes, [(8, 8), (4, 4)], [8, 16], [[-1, 32], [32, INF]])
    level0 = labels[:64]
    assert (level0 == -1).all()
    assert labels[64 + at(points[64:], 8, 8)] == 1


def test_centre_sampling_keeps_only_points_near_the_box_centre():
    boxes = [[0, 0, 64, 64, 1]]  # centre (32, 32); radius 1.5 * 8 = 12
    labels, _, _, points = assign(boxes, [(8, 8)], [8], [[-1, INF]], radius=1.5)
    assert labels[at(points, 28, 28)] == 1 and labels[at(points, 36, 36)] == 1
    assert labels[at(points, 36, 28)] == 1
    # the region is open: (44, 28) lies on its edge at 32 + 12
    assert labels[at(points, 12, 12)] == -1 and labels[at(points, 44, 28)] == -1


def test_padding_rows_past_the_box_count_are_ignored():
    boxes = [[0, 0, 64, 64, 1], [0, 0, 64, 64, 2]]
    labels, _, ctr, _ = assign(boxes, [(8, 8)], [8], [[-1, INF]], num_gts=1)
    assert set(labels.tolist()) == {1}
    assert (ctr > 0).all()


def test_image_without_boxes_has_only_background():
    labels, _, ctr, _ = assign([[0, 0, 0, 0, 0]], [(8, 8)], [8], [[-1, INF]], num_gts=0)
    assert (labels == -1).all() and (ctr == 0).all()


def test_centerness_target_of_known_distances():
    ltrb = mge.tensor(np.array([[2, 4, 8, 1], [5, 5, 5, 5]], np.float32))
    np.testing.assert_allclose(centerness(ltrb).numpy(), [0.25, 1.0], rtol=1e-6)
