"""COCO evaluation through the library and tools/test.py on a tiny synthetic dataset."""
import contextlib
import io
import json
import os
import subprocess
import sys

import cv2
import megengine as mge
import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from official.vision.detection.data.synthetic import make_synthetic_coco
from official.vision.detection.deploy.detector import build_detector
from official.vision.detection.deploy.lite_export import dump_inference
from official.vision.detection.engine.coco_evaluation import (
    COCO_METRICS, EvalOptions, evaluate_result_files, metrics_table, per_class_metrics,
    per_class_path, run_cocoeval, row_labels, run_test
)
from official.vision.detection.evaluator import DetEvaluator
from official.vision.detection.postprocess import detect
from official.vision.detection.models import FCOS
from official.vision.detection.utils.config_file import load_config_module
from official.vision.detection.weights import build_model

from conftest import PROJECT_ROOT, run_tool, spread_head_outputs, tiny_config
from detection_matching import assert_same_detections

CONFIG = '''
from official.vision.detection import models


class Cfg(models.FCOSConfig):
    def __init__(self):
        super().__init__()
        self.backbone = "resnet18"
        self.backbone_norm = "BN"
        self.fpn_in_channels = [128, 256, 512]
        self.fpn_out_channels = 32
        self.fpn_top_in_channel = 32
        self.test_dataset = dict(name="shapes", root="val", ann_file="annotations/val.json",
                                 remove_images_without_annotations=False)
        self.num_classes = 3
        self.test_image_short_size = 64
        self.test_image_max_size = 96
        self.test_tta_short_sizes = (48, 80)
        self.test_cls_threshold = THRESHOLD


Net = models.FCOS
'''


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A dataset with images of several sizes, a config and random weights for it."""
    root = tmp_path_factory.mktemp("eval")
    make_synthetic_coco(str(root / "shapes"), num_train=2, num_val=10,
                        image_size=((48, 80), (48, 80)), num_classes=3, seed=3)
    config = root / "cfg.py"
    config.write_text(CONFIG.replace("THRESHOLD", "0.05"))
    module = load_config_module(str(config))
    mge.random.seed(7)
    weights = str(root / "weights.pkl")
    mge.save(module.Net(module.Cfg()).state_dict(), weights)
    return str(root), str(config), weights


def evaluate(setup, tmp_path, name, **options):
    dataset_dir, config, weights = setup
    out = str(tmp_path / name)
    table = run_test(config, EvalOptions(dataset_dir, [weights], results_path=out,
                                         num_workers=0, **options))
    with open(out) as f:
        return table[weights], json.load(f)


def test_batched_evaluation_gives_the_numbers_of_one_image_at_a_time(setup, tmp_path):
    single, single_results = evaluate(setup, tmp_path, "b1.json", batch_size=1)
    batched, batched_results = evaluate(setup, tmp_path, "b4.json", batch_size=4)
    assert set(single) == set(COCO_METRICS)
    assert single == batched
    assert_same_detections(batched_results, single_results, box_atol=1e-3, score_atol=1e-5)


def test_result_file_uses_the_annotation_ids(setup, tmp_path):
    _, results = evaluate(setup, tmp_path, "ids.json")
    with open(os.path.join(setup[0], "shapes", "annotations", "val.json")) as f:
        annotations = json.load(f)
    assert results
    assert {r["category_id"] for r in results} <= {c["id"] for c in annotations["categories"]}
    assert {r["image_id"] for r in results} <= {i["id"] for i in annotations["images"]}


# -------------------------- test-time augmentation by hand -------------------------- #
def resized_hw_by_hand(height, width, short_size, max_size):
    """fcos_numerics.md: the short side to short_size unless the long side passes max_size."""
    scale = short_size / min(height, width)
    if scale * max(height, width) > max_size:
        scale = max_size / max(height, width)
    return int(round(height * scale)), int(round(width * scale))


def view_candidates_by_hand(model, image, short_size, flip):
    """Scores [P, K] and boxes [P, 4] in original pixels of one view of a BGR image: resized
    bilinearly, mirrored after resizing; a mirrored view's boxes are mirrored back about the
    original width W (x1' = W - x2, x2' = W - x1: boxes are continuous coordinates, points
    sit at (j + 0.5) * stride, so the mirror of x is W - x, not W - 1 - x)."""
    height, width = image.shape[:2]
    hw = resized_hw_by_hand(height, width, short_size, model.cfg.test_image_max_size)
    resized = cv2.resize(image, hw[::-1], interpolation=cv2.INTER_LINEAR)
    resized = resized[:, ::-1] if flip else resized
    data = resized.transpose(2, 0, 1)[None].astype(np.float32)
    im_info = np.array([[hw[0], hw[1], height, width]], np.float32)
    scores, boxes = (value.numpy()[0] for value in model.inference(data, im_info))
    if flip:
        boxes = np.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], 1)
    return scores, boxes


def tta_detections_by_hand(model, image):
    """Candidates of the test size and the TTA sizes (ascending), each plain then mirrored,
    concatenated, then the package's threshold + NMS + top-k (tested in test_postprocess)."""
    cfg = model.cfg
    sizes = sorted({cfg.test_image_short_size, *cfg.test_tta_short_sizes})
    views = [view_candidates_by_hand(model, image, size, flip)
             for size in sizes for flip in (False, True)]
    scores, boxes = (np.concatenate(parts) for parts in zip(*views))
    kept = detect(scores, boxes, cfg.test_cls_threshold, cfg.test_nms,
                  cfg.test_max_boxes_per_image)
    return kept, views


def test_tta_detections_equal_the_hand_merged_candidates_of_all_views():
    mge.random.seed(8)
    model = FCOS(tiny_config().update(test_image_short_size=64, test_image_max_size=128,
                                      test_tta_short_sizes=(80, 48)))
    spread_head_outputs(model, np.random.RandomState(9))
    model.eval()
    rng = np.random.RandomState(10)
    # a landscape and a portrait image: never the same padded input, so each runs alone
    images = [rng.randint(0, 255, shape, np.uint8) for shape in ((60, 90, 3), (90, 60, 3))]
    results = DetEvaluator(model).predict_images(images, tta=True)
    for image, result in zip(images, results):
        expected, views = tta_detections_by_hand(model, image)
        # every view (3 sizes x plain/mirrored) must own some kept box, or it goes unchecked
        for _, boxes in views:
            assert (np.abs(boxes[:, None] - expected[None, :, :4]).max(-1) < 1e-6).any()
        assert_same_detections(result, expected, box_atol=1e-5, score_atol=1e-5)


def test_evaluation_with_tta_writes_the_hand_merged_detections(setup, tmp_path):
    dataset_dir, config, weights = setup
    tta, tta_results = evaluate(setup, tmp_path, "tta.json", tta=True)
    assert set(tta) == set(COCO_METRICS)
    with open(os.path.join(dataset_dir, "shapes", "annotations", "val.json")) as f:
        annotations = json.load(f)
    category_ids = sorted(c["id"] for c in annotations["categories"])
    model = build_model(load_config_module(config), weights)
    expected = []
    for info in annotations["images"]:
        image = cv2.imread(os.path.join(dataset_dir, "shapes", "val", info["file_name"]))
        for x1, y1, x2, y2, score, label in tta_detections_by_hand(model, image)[0]:
            expected.append({"image_id": info["id"], "bbox": [x1, y1, x2 - x1, y2 - y1],
                             "score": score, "category_id": category_ids[int(label)]})
    assert_same_detections(tta_results, expected, box_atol=1e-4, score_atol=1e-6)


def test_no_detections_gives_zero_ap_instead_of_a_pycocotools_crash(setup, tmp_path):
    dataset_dir, config, weights = setup
    strict = tmp_path / "strict.py"
    strict.write_text(open(config).read().replace("self.test_cls_threshold = 0.05",
                                                  "self.test_cls_threshold = 1.0"))
    table = run_test(str(strict), EvalOptions(dataset_dir, [weights], num_workers=0,
                                              results_path=str(tmp_path / "none.json")))
    assert all(v == 0 for v in table[weights].values())


def ground_truth_as_results(ann_file, shift):
    """COCO result dicts of the annotations' boxes, each moved right by ``shift`` times its
    width (score 0.9)."""
    with open(ann_file) as f:
        annotations = json.load(f)["annotations"]
    assert annotations
    return [{"image_id": a["image_id"], "category_id": a["category_id"], "score": 0.9,
             "bbox": [a["bbox"][0] + shift * a["bbox"][2]] + a["bbox"][1:]}
            for a in annotations]


def test_result_files_evaluate_to_known_numbers_in_one_table(setup, tmp_path):
    ann_file = os.path.join(setup[0], "shapes", "annotations", "val.json")
    paths = [str(tmp_path / "exact.json"), str(tmp_path / "moved.json")]
    # a box moved by a fifth of its width overlaps its object by IoU 0.8 / 1.2 = 2/3: a match
    # at the IoU thresholds 0.5-0.65, 4 of COCO's 10
    for path, shift in zip(paths, (0, 0.2)):
        with open(path, "w") as f:
            json.dump(ground_truth_as_results(ann_file, shift), f)
    table = evaluate_result_files(ann_file, paths)
    exact, moved = table[paths[0]], table[paths[1]]
    assert [exact[m] for m in ("AP", "AP50", "AP75", "AR100")] == pytest.approx([1, 1, 1, 1])
    assert [moved[m] for m in ("AP", "AP50", "AP75", "AR100")] == pytest.approx(
        [0.4, 1, 0, 0.4])
    lines = metrics_table({"exact": exact, "moved": moved}).splitlines()
    assert lines[0].split() == ["weights"] + list(COCO_METRICS)
    assert lines[2].split()[:4] == ["moved", "0.400", "1.000", "0.000"]


def hand_made_evaluation(tmp_path):
    """Ground truth and detections whose per-class numbers are known by hand (COCO boxes are
    x, y, width, height):
    - "perfect": 2 boxes, each found exactly: AP 1.
    - "ranked": 2 boxes; by score, a hit, a false positive, a hit. Precision is 1 up to recall
      0.5 and 2/3 beyond, at every IoU threshold: of the 101 recall points 0, 0.01, ..., 1,
      the 51 up to 0.5 count 1 and the 50 above count 2/3, so AP = AP50 = (51 + 50 * 2/3) / 101.
    - "loose": 1 box found with IoU 0.52 (a 100 x 52 box inside the 100 x 100 one): a match at
      the IoU threshold 0.5 only, so AP50 1 and AP 1/10 (one of the 10 thresholds).
    - "absent": no ground truth, one detection: undefined, -1 as pycocotools marks it.
    - "crowd": a crowd box only, which counts for no class."""
    images = [{"id": i, "file_name": "{}.jpg".format(i), "height": 200, "width": 200}
              for i in (1, 2)]
    categories = [{"id": i, "name": name}
                  for i, name in ((3, "perfect"), (4, "ranked"), (6, "loose"), (8, "absent"),
                                  (9, "crowd"))]
    gt = [(1, 3, [0, 0, 50, 50]), (2, 3, [100, 100, 60, 40]), (1, 4, [100, 0, 80, 80]),
          (2, 4, [0, 100, 70, 90]), (1, 6, [0, 100, 100, 100])]
    annotations = [{"id": n + 1, "image_id": image, "category_id": category, "bbox": box,
                    "area": box[2] * box[3], "iscrowd": 0}
                   for n, (image, category, box) in enumerate(gt)]
    annotations.append({"id": 9, "image_id": 2, "category_id": 9, "bbox": [150, 0, 50, 50],
                        "area": 2500, "iscrowd": 1})
    ann_file = tmp_path / "hand.json"
    ann_file.write_text(json.dumps({"images": images, "annotations": annotations,
                                    "categories": categories}))
    detections = [(1, 3, [0, 0, 50, 50], 0.9), (2, 3, [100, 100, 60, 40], 0.8),
                  (1, 4, [100, 0, 80, 80], 0.9), (2, 4, [150, 150, 20, 20], 0.8),
                  (2, 4, [0, 100, 70, 90], 0.7), (1, 6, [0, 100, 100, 52], 0.9),
                  (2, 8, [10, 10, 30, 30], 0.9)]
    results = [{"image_id": image, "category_id": category, "bbox": box, "score": score}
               for image, category, box, score in detections]
    return str(ann_file), results


def test_per_class_ap_equals_the_hand_computed_precision_recall_curves(tmp_path):
    ann_file, results = hand_made_evaluation(tmp_path)
    coco = COCO(ann_file)
    coco_eval = run_cocoeval(coco, results, [1, 2])
    rows = per_class_metrics(coco, coco_eval, [1, 2])
    ranked = (51 + 50 * 2 / 3) / 101
    assert [(r["name"], r["category_id"], r["gt_boxes"]) for r in rows] == [
        ("perfect", 3, 2), ("ranked", 4, 2), ("loose", 6, 1), ("absent", 8, 0), ("crowd", 9, 0)]
    assert [r["AP"] for r in rows] == pytest.approx([1, ranked, 0.1, -1, -1])
    assert [r["AP50"] for r in rows] == pytest.approx([1, ranked, 1, -1, -1])
    # COCOeval's own AP is the mean over the classes with ground truth
    assert coco_eval.stats[0] == pytest.approx((1 + ranked + 0.1) / 3)


def test_without_detections_classes_with_ground_truth_get_zero(tmp_path):
    ann_file, _ = hand_made_evaluation(tmp_path)
    coco = COCO(ann_file)
    rows = per_class_metrics(coco, run_cocoeval(coco, [], [1, 2]), [1, 2])
    assert [(r["AP"], r["AP50"]) for r in rows] == [(0, 0), (0, 0), (0, 0), (-1, -1), (-1, -1)]


def pycocotools_reference(coco, results, image_ids):
    """pycocotools' own COCOeval of result dicts: what run_cocoeval's faster-coco-eval must
    reproduce."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_eval = COCOeval(coco, coco.loadRes([dict(r) for r in results]), "bbox")
        coco_eval.params.imgIds = list(image_ids)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval


def random_results(ann_file, per_image, seed):
    """``per_image`` detections of random classes, boxes and scores on every image."""
    with open(ann_file) as f:
        annotations = json.load(f)
    rng = np.random.RandomState(seed)
    category_ids = [c["id"] for c in annotations["categories"]]
    return [{"image_id": image["id"], "category_id": int(rng.choice(category_ids)),
             "bbox": [float(v) for v in rng.uniform(0, 40, 4) + [0, 0, 4, 4]],
             "score": float(rng.uniform())}
            for image in annotations["images"] for _ in range(per_image)]


def test_the_evaluation_gives_the_numbers_of_pycocotools(setup, tmp_path):
    """faster-coco-eval against pycocotools: the hand-made case (crowd box, a category without
    ground truth), boxes exact and moved, and 120 random detections an image (past the
    100-detection cut). pycocotools divides by tp + fp + 2.2e-16, faster-coco-eval by tp + fp:
    a precision of 1 differs in its last bit, so the numbers agree to 1e-15, not bitwise."""
    ann_file, hand_made = hand_made_evaluation(tmp_path)
    val = os.path.join(setup[0], "shapes", "annotations", "val.json")
    cases = [(ann_file, hand_made), (val, ground_truth_as_results(val, 0)),
             (val, ground_truth_as_results(val, 0.2)), (val, random_results(val, 120, 0))]
    for path, results in cases:
        coco = COCO(path)
        image_ids = sorted(coco.getImgIds())
        faster = run_cocoeval(coco, results, image_ids)
        reference = pycocotools_reference(coco, results, image_ids)
        assert faster.stats == pytest.approx(reference.stats, rel=0, abs=1e-15)
        assert faster.eval["precision"] == pytest.approx(reference.eval["precision"], rel=0,
                                                         abs=1e-15)
        assert np.array_equal(faster.eval["recall"], reference.eval["recall"])
        for mine, theirs in zip(per_class_metrics(coco, faster, image_ids),
                                per_class_metrics(coco, reference, image_ids)):
            assert mine["name"] == theirs["name"] and mine["gt_boxes"] == theirs["gt_boxes"]
            assert [mine["AP"], mine["AP50"]] == pytest.approx([theirs["AP"], theirs["AP50"]],
                                                               rel=0, abs=1e-15)


def test_evaluation_prints_and_saves_the_per_class_table(setup, tmp_path, capsys):
    dataset_dir, config, weights = setup
    out = str(tmp_path / "results.json")
    run_test(config, EvalOptions(dataset_dir, [weights], results_path=out, num_workers=0))
    with open(per_class_path(out)) as f:
        rows = json.load(f)
    assert per_class_path(out) == str(tmp_path / "results_per_class.json")
    with open(os.path.join(dataset_dir, "shapes", "annotations", "val.json")) as f:
        annotations = json.load(f)
    assert [r["name"] for r in rows] == [c["name"] for c in sorted(
        annotations["categories"], key=lambda c: c["id"])]
    assert sum(r["gt_boxes"] for r in rows) == len(annotations["annotations"])
    lines = capsys.readouterr().out.splitlines()
    header = [line.split() for line in lines].index(["category", "AP", "AP50", "gt", "boxes"])
    assert lines[header - 2].split()[0] == "weights"  # after the COCO table
    for row, line in zip(rows, lines[header + 1:]):
        assert line.split() == [row["name"], "{:.3f}".format(row["AP"]),
                                "{:.3f}".format(row["AP50"]), str(row["gt_boxes"])]


def test_tool_evaluates_epoch_checkpoints_and_prints_the_metrics(setup, tmp_path):
    dataset_dir, config, weights = setup
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    for epoch in (3, 4):
        mge.save({"state_dict": mge.load(weights), "epoch": epoch}, str(log_dir / "epoch_{}.pkl"
                                                                       .format(epoch)))
    result = subprocess.run(
        [sys.executable, os.path.join(PROJECT_ROOT, "tools", "test.py"), "-f", config, "-d",
         dataset_dir, "-se", "3", "-ee", "4", "--log-dir", str(log_dir), "-b", "2",
         "--workers", "0"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[-1].startswith("mAP=")
    assert sum(line.startswith("epoch_4.pkl") for line in lines) == 2  # its row + the summary
    assert (log_dir / "epoch_3_coco_results.json").exists()


def test_tool_reports_a_missing_dataset_in_one_line(setup, tmp_path):
    _, config, weights = setup
    result = subprocess.run(
        [sys.executable, os.path.join(PROJECT_ROOT, "tools", "test.py"), "-f", config,
         "-w", weights, "-d", str(tmp_path / "nowhere")], capture_output=True, text=True,
        timeout=600)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: annotation file not found")


# ------------------------------ compiled engines ---------------------------- #
# Lite fuses and reorders float operations: pixels and scores move in the 4th decimal
LITE_BOX_ATOL = 0.05
LITE_SCORE_ATOL = 1e-3


@pytest.fixture(scope="module")
def distinct_weights(setup):
    """Weights of the setup's config whose scores differ from point to point, so that eager and
    Lite runs keep the same detections."""
    dataset_dir, config, _ = setup
    mge.random.seed(11)
    model = build_model(load_config_module(config))
    spread_head_outputs(model, np.random.RandomState(0))
    path = os.path.join(dataset_dir, "distinct.pkl")
    mge.save(model.state_dict(), path)
    return path


def metrics_and_results(setup, weights, results_path, **options):
    evaluation = EvalOptions(setup[0], [weights], results_path=results_path, num_workers=0,
                             **options)
    table = run_test(setup[1], evaluation, build_detector=build_detector)
    with open(results_path) as f:
        return table[weights], json.load(f)


def test_lite_engine_gives_the_eager_numbers_batched_and_with_tta(setup, distinct_weights,
                                                                   tmp_path):
    options = dict(batch_size=4, tta=True)
    eager, eager_results = metrics_and_results(setup, distinct_weights, str(tmp_path / "e.json"),
                                               **options)
    lite, lite_results = metrics_and_results(setup, distinct_weights, str(tmp_path / "l.json"),
                                             engine="lite", **options)
    assert_same_detections(lite_results, eager_results, LITE_BOX_ATOL, LITE_SCORE_ATOL)
    assert lite == pytest.approx(eager, abs=1e-3)


def printed_metrics(stdout, label):
    """{metric: value} of the table row that tools/test.py printed for ``label``."""
    row = next(line for line in stdout.splitlines() if line.startswith(label + " "))
    return dict(zip(COCO_METRICS, (float(value) for value in row.split()[1:])))


def test_tool_prints_the_eager_numbers_for_a_dumped_model_on_the_lite_engine(
        setup, distinct_weights, tmp_path):
    dataset_dir, config, _ = setup
    model_path = str(tmp_path / "distinct.mge")
    dump_inference(build_model(load_config_module(config), distinct_weights), model_path)
    result = run_tool("test.py", "-f", config, "--engine", "lite", "--model", model_path,
                      "-d", dataset_dir, "-b", "2", "--workers", "0")
    assert result.returncode == 0, result.stderr
    eager, eager_results = metrics_and_results(setup, distinct_weights,
                                               str(tmp_path / "eager.json"))
    # the table prints 3 decimals
    assert printed_metrics(result.stdout, "distinct.mge") == pytest.approx(eager, abs=1.5e-3)
    with open(tmp_path / "distinct_coco_results.json") as f:
        assert_same_detections(json.load(f), eager_results, LITE_BOX_ATOL, LITE_SCORE_ATOL)


@pytest.mark.parametrize("arguments, message", [
    (["--model", "nowhere.mge"], "error: Lite model not found: nowhere.mge"),
    (["-w", "weights.pkl", "-n", "2"], "error: the lite engine runs in one CPU process"),
])
def test_tool_reports_a_bad_lite_run_in_one_line(setup, arguments, message):
    dataset_dir, config, _ = setup
    result = run_tool("test.py", "-f", config, "-d", dataset_dir, "--engine", "lite",
                      *arguments)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(message)


def test_table_rows_are_named_by_the_shortest_distinct_path_suffix():
    runs = [os.path.join("/work", run, "epoch_1.pkl") for run in ("scratch", "finetune")]
    assert row_labels(runs) == {runs[0]: os.path.join("scratch", "epoch_1.pkl"),
                                runs[1]: os.path.join("finetune", "epoch_1.pkl")}
    assert row_labels(["/work/log/epoch_4.pkl"]) == {"/work/log/epoch_4.pkl": "epoch_4.pkl"}
    same_tail = ["/a/log/epoch_1.pkl", "/b/log/epoch_1.pkl", "/b/log/epoch_2.pkl"]
    assert row_labels(same_tail) == {same_tail[0]: os.path.join("a", "log", "epoch_1.pkl"),
                                     same_tail[1]: os.path.join("b", "log", "epoch_1.pkl"),
                                     same_tail[2]: "epoch_2.pkl"}
