import numpy as np
import megengine as mge
from megengine.jit import trace

from official.vision.detection.layers.points import (
    boxes_to_original_image, decode_ltrb, encode_ltrb, level_points, pyramid_points
)


def test_level_points_are_cell_centres_in_row_major_order():
    points = level_points(2, 3, 8).numpy()
    expected = [[4, 4], [12, 4], [20, 4], [4, 12], [12, 12], [20, 12]]
    np.testing.assert_array_equal(points, expected)


def test_pyramid_points_follow_each_feature_map_size():
    features = [mge.tensor(np.zeros((1, 1, 4, 6), "float32")),
                mge.tensor(np.zeros((1, 1, 2, 3), "float32"))]
    first, second = pyramid_points(features, [8, 16])
    assert first.shape == (24, 2) and second.shape == (6, 2)
    np.testing.assert_array_equal(second.numpy()[-1], [40, 24])


def test_two_grids_computed_together_keep_their_own_values():
    # guards against the eager linspace bug of MegEngine 1.13 (values swapped between results)
    wide, tall = level_points(1, 48, 1, 0), level_points(32, 1, 1, 0)
    np.testing.assert_array_equal(wide.numpy()[:, 0], np.arange(48))
    np.testing.assert_array_equal(tall.numpy()[:, 1], np.arange(32))


def test_traced_points_follow_the_input_size():
    @trace(symbolic=True, capture_as_const=True)
    def points_of(feature):
        return pyramid_points([feature], [8])[0]

    for h, w in [(3, 5), (4, 2)]:
        out = points_of(mge.tensor(np.zeros((1, 1, h, w), "float32"))).numpy()
        np.testing.assert_array_equal(out, level_points(h, w, 8).numpy())


def test_encode_then_decode_returns_the_box():
    points = mge.tensor(np.array([[10.0, 20.0], [15.0, 25.0]], "float32"))
    box = mge.tensor(np.array([[2.0, 5.0, 30.0, 40.0]], "float32"))
    ltrb = encode_ltrb(points, box)
    np.testing.assert_allclose(ltrb.numpy(), [[8, 15, 20, 20], [13, 20, 15, 15]])
    np.testing.assert_allclose(decode_ltrb(points, ltrb).numpy(), [[2, 5, 30, 40]] * 2)


def test_boxes_scale_back_to_the_original_image_and_clip():
    # image resized from 100x200 (h x w) to 50x400: x is divided by 2, y multiplied by 2
    im_info = mge.tensor(np.array([[50, 400, 100, 200]], "float32"))
    boxes = mge.tensor(np.array([[[10, 10, 40, 20], [-6, 30, 500, 70]]], "float32"))
    out = boxes_to_original_image(boxes, im_info).numpy()
    np.testing.assert_allclose(out[0], [[5, 20, 20, 40], [0, 60, 200, 100]])
