"""The order-free comparison of detections that the engine, batch and TTA tests rely on."""
import numpy as np
import pytest

from official.vision.detection.data.coco import coco_results

from detection_matching import assert_same_detections

# The Zen 3 failure: eager and Lite (NCHW88 kernels, scores ~3e-7 apart) found the same two
# detections of class 1, but their scores, 3e-7 apart, came out in the other order.
EAGER = np.array([[12.5, 8.0, 40.25, 30.5, 0.6180340, 0],
                  [50.0, 20.0, 80.0, 60.0, 0.2875031, 1],
                  [5.0, 40.0, 30.0, 70.0, 0.2875028, 1]])
LITE = np.array([[12.5, 8.0, 40.25, 30.5, 0.6180338, 0],
                 [5.0, 40.0, 30.0, 70.0, 0.2875030, 1],
                 [50.0, 20.0, 80.0, 60.0, 0.2875027, 1]])
BOX_ATOL, SCORE_ATOL = 0.05, 1e-6


def test_near_tied_detections_of_one_class_match_in_either_order():
    # compared row by row, the swapped rows hold different boxes
    assert np.abs(LITE[:, :4] - EAGER[:, :4]).max() > 10
    assert_same_detections(LITE, EAGER, BOX_ATOL, SCORE_ATOL)
    assert_same_detections([LITE, EAGER[:1]], [EAGER, LITE[:1]], BOX_ATOL, SCORE_ATOL)


def test_coco_result_dicts_are_read_as_xywh_boxes():
    # image_id 0 and category ids equal to the labels: the same detections as the arrays
    lite = coco_results([{"image_id": 0, "det_res": LITE}], category_ids=[0, 1])
    assert lite[1]["bbox"] == [5.0, 40.0, 25.0, 30.0]
    assert_same_detections(lite, [EAGER], BOX_ATOL, SCORE_ATOL)
    for result in lite:  # corners where the width and height belong
        x1, y1, width, height = result["bbox"]
        result["bbox"] = [x1, y1, x1 + width, y1 + height]
    with pytest.raises(AssertionError, match="expected but not found"):
        assert_same_detections(lite, [EAGER], BOX_ATOL, SCORE_ATOL)


def test_overlapping_detections_of_one_class_pair_with_their_own_partners():
    # IoU 0.54 (NMS at 0.6 keeps both), scores tied within the tolerance: each found box
    # overlaps both expected ones enough to be paired with either
    expected = np.array([[0, 0, 20, 20, 0.5, 2], [6, 0, 26, 20, 0.5000004, 2]])
    found = expected[::-1] + [0.01, 0, 0, 0.01, 0, 0]
    assert_same_detections(found, expected, BOX_ATOL, SCORE_ATOL)


def changed(rows, index, column, value):
    rows = rows.copy()
    rows[index, column] = value
    return rows


@pytest.mark.parametrize("lite, message", [
    # a box 3 px off (IoU 0.78): paired, then reported as moved with both boxes
    (changed(LITE, 1, [0, 2], [8.0, 33.0]), r"moved by more than 0.05 px \(1\):\n  found "
     r"image 0 class 1 box \(8.000, 40.000, 33.000, 70.000\)"),
    # far away: one detection missing, another one extra
    (changed(LITE, 1, [0, 2], [60.0, 85.0]), r"expected but not found \(1\):\n  image 0 "
     r"class 1 box \(5.000, 40.000, 30.000, 70.000\) score 0.2875028\nfound but not expected"),
    (changed(LITE, 0, 5, 2), r"expected but not found \(1\):\n  image 0 class 0 .*\n"
     r"found but not expected \(1\):\n  image 0 class 2 "),
    (changed(LITE, 2, 4, 0.2875047), r"expected but not found \(1\):\n  .* score 0.2875031\n"
     r"found but not expected \(1\):\n  .* score 0.2875047"),
    (LITE[:2], r"^2 found and 3 expected .*\nexpected but not found \(1\):\n  image 0 class 1 "
     r"box \(50.000"),
    (np.concatenate([LITE, [[60, 0, 70, 10, 0.1, 1]]]), r"^4 found and 3 expected.*\nfound "
     r"but not expected \(1\):\n  image 0 class 1 box \(60.000, 0.000, 70.000, 10.000\)"),
], ids=["moved", "elsewhere", "other class", "other score", "missing", "extra"])
def test_another_box_class_score_or_count_fails_and_is_listed(lite, message):
    with pytest.raises(AssertionError, match=message):
        assert_same_detections(lite, EAGER, BOX_ATOL, SCORE_ATOL)


def test_the_same_detections_in_another_image_fail():
    with pytest.raises(AssertionError, match="found but not expected"):
        assert_same_detections([EAGER[:0], LITE], [EAGER, EAGER[:0]], BOX_ATOL, SCORE_ATOL)


def test_long_lists_are_cut_short():
    far = EAGER + [100, 0, 100, 0, 0, 0]
    extra = np.concatenate([far] * 3)
    with pytest.raises(AssertionError, match=r"found but not expected \(9\):(\n  image.*){5}"
                       r"\n  \.\.\. and 4 more"):
        assert_same_detections(np.concatenate([EAGER, extra]), EAGER, BOX_ATOL, SCORE_ATOL)


def test_nothing_to_compare_fails():
    with pytest.raises(AssertionError, match="no expected detections"):
        assert_same_detections([np.zeros((0, 6))], [np.zeros((0, 6))], BOX_ATOL, SCORE_ATOL)


def test_boxes_beyond_the_pixel_tolerance_match_when_they_overlap_by_the_given_iou():
    # the first box, 27.75 px wide, shifted right: IoU 0.993 after 0.1 px, 0.965 after 0.5 px
    assert_same_detections(LITE + [0.1, 0, 0.1, 0, 0, 0], EAGER, 0.01, SCORE_ATOL, min_iou=0.99)
    with pytest.raises(AssertionError, match=r"moved by more than 0.01 px and overlaps by less "
                                             r"than IoU 0.99 \(3\):"):
        assert_same_detections(LITE + [0.5, 0, 0.5, 0, 0, 0], EAGER, 0.01, SCORE_ATOL,
                               min_iou=0.99)
