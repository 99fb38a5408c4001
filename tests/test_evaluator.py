import cv2
import numpy as np
import pytest

from official.vision.detection.evaluator import DetEvaluator
from official.vision.detection.models import FCOSConfig
from official.vision.detection.visualize import draw_detections

from detection_matching import assert_same_detections


def test_resize_rule_short_side_then_long_side_cap():
    assert DetEvaluator.get_hw_by_short_size(480, 640, 800, 1333) == (800, 1067)
    # 800 / 300 * 1200 = 3200 > 1333, so the long side is capped
    assert DetEvaluator.get_hw_by_short_size(300, 1200, 800, 1333) == (333, 1333)


def test_process_inputs_returns_nchw_float_and_im_info():
    img = np.random.RandomState(0).randint(0, 255, (48, 64, 3), dtype=np.uint8)
    data, im_info = DetEvaluator.process_inputs(img, 96, 200)
    assert data.shape == (1, 3, 96, 128) and data.dtype == np.float32
    np.testing.assert_array_equal(im_info, [[96, 128, 48, 64]])
    expected = cv2.resize(img, (128, 96), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(data[0].transpose(1, 2, 0), expected)


def test_flip_mirrors_the_resized_image():
    img = np.random.RandomState(1).randint(0, 255, (20, 30, 3), dtype=np.uint8)
    data, _ = DetEvaluator.process_inputs(img, 20, 100)
    flipped, _ = DetEvaluator.process_inputs(img, 20, 100, flip=True)
    np.testing.assert_array_equal(flipped, data[..., ::-1])


@pytest.mark.parametrize("shape", [(30, 40), (30, 40, 1), (30, 40, 4)])
def test_grayscale_and_four_channel_images_become_bgr(shape):
    img = np.full(shape, 100, dtype=np.uint8)
    data, im_info = DetEvaluator.process_inputs(img, 30, 100)
    assert data.shape == (1, 3, 30, 40)
    assert (data == 100).all()


def test_unreadable_image_is_a_clear_error():
    with pytest.raises(ValueError, match="cv2.imread returns None"):
        DetEvaluator.process_inputs(cv2.imread("/no/such/file.jpg"), 800, 1333)
    with pytest.raises(ValueError, match="expected an image of shape"):
        DetEvaluator.process_inputs(np.zeros((4, 4, 2), np.uint8), 800, 1333)


def test_predict_returns_thresholded_sorted_detections(tiny_model):
    img = np.random.RandomState(2).randint(0, 255, (60, 90, 3), dtype=np.uint8)
    data, im_info = DetEvaluator.process_inputs(img, 64, 128)
    evaluator = DetEvaluator(tiny_model)
    dets = evaluator.predict(image=data, im_info=im_info)
    cfg = tiny_model.cfg
    assert dets.shape[1] == 6 and 0 < len(dets) <= cfg.test_max_boxes_per_image
    assert (dets[:, 4] > cfg.test_cls_threshold).all()
    assert (np.diff(dets[:, 4]) <= 0).all()
    assert set(dets[:, 5].astype(int)) <= set(range(cfg.num_classes))
    assert dets[:, [0, 2]].max() <= 90 and dets[:, [1, 3]].max() <= 60


def test_predict_on_a_batch_returns_one_array_per_image(tiny_model):
    img = np.random.RandomState(3).randint(0, 255, (64, 96, 3), dtype=np.uint8)
    data, im_info = DetEvaluator.process_inputs(img, 64, 128)
    evaluator = DetEvaluator(tiny_model)
    single = evaluator.predict(image=data, im_info=im_info)
    batch = evaluator.predict(image=np.concatenate([data, data]),
                              im_info=np.concatenate([im_info, im_info]))
    assert len(batch) == 2
    assert_same_detections(batch, [single, single], box_atol=1e-4, score_atol=1e-4)


def test_format_uses_the_dataset_category_ids_and_xywh():
    dets = np.array([[10, 20, 30, 60, 0.9, 0], [0, 0, 5, 5, 0.5, 79]], np.float32)
    coco = DetEvaluator.format([{"image_id": 42, "det_res": dets}], FCOSConfig())
    assert [r["category_id"] for r in coco] == [1, 90]
    assert coco[0]["bbox"] == [10, 20, 20, 40] and coco[0]["image_id"] == 42
    custom = DetEvaluator.format([{"image_id": 7, "det_res": dets[:1]}],
                                 FCOSConfig().update(num_classes=2), category_ids=[17, 3])
    assert custom[0]["category_id"] == 17


def test_format_without_category_ids_for_a_custom_dataset_is_an_error():
    with pytest.raises(ValueError, match="category_ids"):
        DetEvaluator.format([], FCOSConfig().update(num_classes=3))


def test_vis_det_draws_the_outline_and_label_of_boxes_above_the_threshold():
    img = np.zeros((50, 80, 3), np.uint8)
    dets = np.array([[10, 10, 40, 40, 0.9, 2], [50, 5, 70, 45, 0.1, 1]], np.float32)
    drawn = DetEvaluator.vis_det(img, dets, classes=["a", "b", "c"], thresh=0.3)
    color = DetEvaluator.class_color(2)
    in_color = (drawn == color).all(axis=-1)
    # the outline of (10, 10)-(40, 40), 2 pixels wide, in the class colour; inside, nothing
    assert in_color[10:41, 10].all() and in_color[10:41, 40].all()
    assert in_color[10, 10:41].all() and in_color[40, 10:41].all()
    assert not drawn[12:39, 12:39].any()
    # the label: a band of the class colour above the box, the text in another colour
    band = drawn[1:10, 10:40]
    assert band.any(axis=-1).all() and not (band == color).all()
    assert not drawn[:, 45:].any()  # the low-score box is not drawn
    assert not img.any()  # the input is left untouched
    assert len({DetEvaluator.class_color(label) for label in range(80)}) == 80


def test_labels_shrink_on_small_pictures_so_the_objects_stay_visible():
    def label_rows(side):
        img = np.zeros((side, side, 3), np.uint8)
        dets = np.array([[20, 40, 80, 90, 0.9, 0]], np.float32)
        drawn = DetEvaluator.vis_det(img, dets, classes=["rectangle"])
        # the label band sits above the box top (y=40); count its painted rows
        return int(drawn[:40, 20:].any(axis=(1, 2)).sum())

    assert label_rows(100) < label_rows(600)
    assert label_rows(100) <= 10


def text_extent(picture):
    """(rows, columns, pixel count) of the white text of a picture's label."""
    rows, columns = np.nonzero((picture > 200).all(axis=-1))
    return rows.max() - rows.min() + 1, columns.max() - columns.min() + 1, len(rows)


@pytest.mark.parametrize("box", [[-20, 60, 40, 100], [170, 60, 200, 100], [60, 0, 120, 40],
                                 [60, 110, 120, 150]], ids=["left", "right", "top", "bottom"])
def test_a_label_at_each_edge_of_the_picture_is_moved_in_whole(box):
    # a label in the middle of the 200x150 picture shows all of "triangle 0.90"
    whole = draw_detections(np.zeros((150, 200, 3), np.uint8),
                            np.array([[80, 60, 120, 100, 0.9, 2]]), ["a", "b", "triangle"])
    at_edge = draw_detections(np.zeros((150, 200, 3), np.uint8), np.array([box + [0.9, 2]]),
                              ["a", "b", "triangle"])
    assert text_extent(at_edge) == text_extent(whole)
