"""The error analysis of a result file (analysis/) on hand-made cases whose answer is known."""
import json
import os

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from official.vision.detection.analysis.breakdown import (
    ERROR_TYPES, areas_under_curves, error_breakdown
)
from official.vision.detection.analysis.confusion import confusion_matrix, match_image
from official.vision.detection.analysis.report import AnalysisOptions, run_analysis
from official.vision.detection.analysis.results import read_results
from official.vision.detection.errors import ConfigError, DatasetError

from conftest import run_tool

CONFIG = '''
from official.vision.detection import models


class Cfg(models.FCOSConfig):
    def __init__(self):
        super().__init__()
        self.test_dataset = dict(name="pets", root="val", ann_file="annotations/val.json")
        self.train_dataset = dict(name="pets", root="train", ann_file="annotations/train.json")
        self.num_classes = 3


Net = models.FCOS
'''

CATEGORIES = [{"id": 1, "name": "cat", "supercategory": "animal"},
              {"id": 2, "name": "dog", "supercategory": "animal"},
              {"id": 7, "name": "car", "supercategory": "vehicle"}]
# (image, category, [x, y, w, h]) on 200 x 200 images
GROUND_TRUTH = [(1, 1, [10, 10, 50, 50]), (1, 2, [120, 120, 60, 60]),
                (2, 1, [10, 10, 60, 60]), (2, 7, [120, 120, 60, 60]),
                (3, 7, [10, 10, 50, 50]), (3, 2, [120, 120, 60, 60])]
# (image, category, box, score), one mistake of each kind:
# - a cat on image 1's dog, scored highest: a similar class (same supercategory)
# - image 2's cat shifted right by 40 px: IoU 1200 / 6000 = 0.2, a localization error
# - a car on image 3's dog: another class; a car on image 3's empty lower left: background
# - no dog detected; image 3's car missed
MISTAKES = [(1, 1, [10, 10, 50, 50], 0.9), (1, 1, [120, 120, 60, 60], 0.95),
            (2, 1, [50, 10, 60, 60], 0.8), (2, 7, [120, 120, 60, 60], 0.9),
            (3, 7, [10, 130, 40, 40], 0.95), (3, 7, [120, 120, 60, 60], 0.92)]


def annotation_dict(categories=CATEGORIES):
    images = [{"id": i, "file_name": "{}.png".format(i), "height": 200, "width": 200}
              for i in (1, 2, 3)]
    annotations = [{"id": n + 1, "image_id": image, "category_id": category, "bbox": box,
                    "area": box[2] * box[3], "iscrowd": 0}
                   for n, (image, category, box) in enumerate(GROUND_TRUTH)]
    return {"images": images, "annotations": annotations, "categories": categories}


def results(detections):
    return [{"image_id": i, "category_id": c, "bbox": b, "score": s} for i, c, b, s in detections]


def exact_detections():
    return results([(i, c, b, 0.9) for i, c, b in GROUND_TRUTH])


def coco_of(tmp_path, data):
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(data))
    return COCO(str(path))


def areas(tmp_path, detections, categories=CATEGORIES):
    curves, has_similar = error_breakdown(coco_of(tmp_path, annotation_dict(categories)),
                                          detections, [1, 2, 3])
    per_category, overall = areas_under_curves(curves)
    return {c["name"]: dict(zip(ERROR_TYPES, row))
            for c, row in zip(categories, per_category)}, overall, has_similar


def test_exact_detections_leave_no_error(tmp_path):
    per_category, overall, _ = areas(tmp_path, exact_detections())
    for name in ("cat", "dog", "car"):
        assert list(per_category[name].values()) == pytest.approx([1] * 7)
    assert list(overall) == pytest.approx([1] * 7)


# Of COCO's 101 recall points 0, 0.01, ..., 1, the 51 up to 0.5 hold the precision reached at
# recall 0.5 when a category finds one of its two boxes, the 50 beyond hold 0.
HALF = 51 / 101


def test_each_mistake_shows_as_its_error_type(tmp_path):
    per_category, overall, has_similar = areas(tmp_path, results(MISTAKES))
    assert has_similar
    # cat: by score a dog (false), its first box, the shifted box (false at IoU 0.5 and 0.75,
    # a hit at 0.1): precision 1/2 at recall 0.5; at IoU 0.1 2/3 at recall 1; forgiving the
    # dog (same supercategory) leaves two hits
    assert [per_category["cat"][t] for t in ERROR_TYPES] == pytest.approx(
        [HALF / 2, HALF / 2, 2 / 3, 1, 1, 1, 1])
    # dog: nothing found, so every curve is 0 until FN
    assert [per_category["dog"][t] for t in ERROR_TYPES] == pytest.approx([0] * 6 + [1])
    # car: background (false), the dog (false), its first box: precision 1/3 at recall 0.5;
    # forgiving another class (the dog) 1/2; forgiving background 1; the missed box is FN
    assert [per_category["car"][t] for t in ERROR_TYPES] == pytest.approx(
        [HALF / 3, HALF / 3, HALF / 3, HALF / 3, HALF / 2, HALF, 1])
    assert list(overall) == pytest.approx(np.mean([list(per_category[n].values())
                                                   for n in ("cat", "dog", "car")], axis=0))


def test_without_supercategories_every_confusion_counts_as_other_class(tmp_path):
    plain = [{"id": c["id"], "name": c["name"]} for c in CATEGORIES]
    per_category, _, has_similar = areas(tmp_path, results(MISTAKES), plain)
    assert not has_similar
    assert [per_category["cat"][t] for t in ("Loc", "Sim", "Oth")] == pytest.approx(
        [2 / 3, 2 / 3, 1])


def match(detections, ground_truth=GROUND_TRUTH, image_id=None, iou_threshold=0.5):
    """match_image of one image's result dicts and ground truth, labels = category ids."""
    gt = [(c, b) for i, c, b in ground_truth if i == image_id]
    dets = sorted((d for d in detections if d["image_id"] == image_id), key=lambda d: -d["score"])
    xyxy = [[x, y, x + w, y + h] for x, y, w, h in [b for _, b in gt] + [d["bbox"] for d in dets]]
    return match_image(np.array(xyxy[:len(gt)]).reshape(-1, 4), [c for c, _ in gt],
                       np.array(xyxy[len(gt):]).reshape(-1, 4),
                       [d["category_id"] for d in dets], iou_threshold)


def test_confusion_matrix_counts_each_mistake_in_its_cell():
    label = {1: 0, 2: 1, 7: 2, None: None}
    pairs = [[(label[g], label[d]) for g, d in match(results(MISTAKES), image_id=i)]
             for i in (1, 2, 3)]
    # rows ground truth cat, dog, car, background; columns detected cat, dog, car, background
    assert confusion_matrix(pairs, 3).tolist() == [[1, 0, 0, 1],   # a cat found, one missed
                                                   [1, 0, 1, 0],   # dogs taken for cat, car
                                                   [0, 0, 1, 1],   # a car found, one missed
                                                   [1, 0, 1, 0]]   # shifted cat, car on nothing
    exact = [match(exact_detections(), image_id=i) for i in (1, 2, 3)]
    assert confusion_matrix([[(label[g], label[d]) for g, d in p] for p in exact], 3).tolist() \
        == [[2, 0, 0, 0], [0, 2, 0, 0], [0, 0, 2, 0], [0, 0, 0, 0]]


def test_a_correct_detection_keeps_its_object_from_a_higher_scored_wrong_class():
    # image 1: the cat on the dog (0.95) is scored above a dog on the dog (0.9)
    detections = results(MISTAKES + [(1, 2, [120, 120, 60, 60], 0.9)])
    assert sorted(match(detections, image_id=1), key=str) == sorted(
        [(1, 1), (2, 2), (None, 1)], key=str)


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("analysis")
    os.makedirs(root / "pets" / "val")
    os.makedirs(root / "pets" / "annotations")
    (root / "pets" / "annotations" / "val.json").write_text(json.dumps(annotation_dict()))
    for i in (1, 2, 3):
        cv2.imwrite(str(root / "pets" / "val" / "{}.png".format(i)),
                    np.full((200, 200, 3), 90 * i % 256, np.uint8))
    (root / "cfg.py").write_text(CONFIG)
    return root


def test_analysis_writes_its_pictures_and_the_summary(dataset_dir, tmp_path):
    results_path = tmp_path / "results.json"
    results_path.write_text(json.dumps(results(MISTAKES)))
    out = tmp_path / "analysis"
    text = run_analysis(str(dataset_dir / "cfg.py"), AnalysisOptions(
        str(dataset_dir), str(results_path), str(out)))
    for name in ("pr_curves.png", "error_breakdown.png", "confusion_matrix.png"):
        assert cv2.imread(str(out / name)) is not None, name
    # image 3: the car on the dog (missed and false), background, the missed car: 2 and 2
    assert sorted(os.listdir(out / "worst_images")) == ["01_3.jpg", "02_1.jpg", "03_2.jpg"]
    worst = cv2.imread(str(out / "worst_images" / "01_3.jpg"))
    # a header line over ground truth | 4 px gap | detections, enlarged from 200 to 256 px
    assert worst.shape == (22 + 256, 256 + 4 + 256, 3)
    assert (out / "summary.txt").read_text() == text
    assert "3.png (2, 2), 1.png (1, 1), 2.png (1, 1)" in text
    summary = json.loads((out / "analysis.json").read_text())
    assert summary["breakdown"]["has_supercategories"]
    assert summary["confusion_matrix"][3] == [1, 0, 1, 0]
    assert summary["score_threshold"] == 0.3  # the config's test_vis_threshold


def test_split_train_reads_the_config_train_dataset(dataset_dir, tmp_path):
    results_path = tmp_path / "results.json"
    results_path.write_text(json.dumps(exact_detections()))
    with pytest.raises(DatasetError, match="annotations/train.json"):
        run_analysis(str(dataset_dir / "cfg.py"), AnalysisOptions(
            str(dataset_dir), str(results_path), str(tmp_path / "out"), split="train"))


@pytest.mark.parametrize("content, message", [
    ('{"image_id": 1}', "holds a dict"),
    ("[]", "has no detections"),
    ('[{"image_id": 1, "category_id": 1, "bbox": [1, 2, 3], "score": 0.5}]', "bbox of 4"),
    ('[{"image_id": 99, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5}]',
     "1 image id(s) the split lacks, e.g. 99"),
    ('[{"image_id": 1, "category_id": 5, "bbox": [1, 2, 3, 4], "score": 0.5}]',
     "1 category id(s) the split lacks, e.g. 5"),
])
def test_a_bad_results_file_is_named_with_what_is_wrong(tmp_path, content, message):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    with pytest.raises(ConfigError, match="results file .*bad.json") as error:
        read_results(str(bad), [1, 2, 3], [1, 2, 7])
    assert message in str(error.value)


def test_the_tool_ends_a_bad_results_file_with_one_error_line(dataset_dir, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    done = run_tool("analyze_results.py", "-f", dataset_dir / "cfg.py", "-d", dataset_dir,
                    "--results", bad, "-o", tmp_path / "out")
    assert done.returncode == 1
    assert done.stderr.startswith("error: results file ") and "is not JSON" in done.stderr
    assert done.stderr.count("\n") == 1
    assert not (tmp_path / "out").exists()
