"""COCO evaluation: detections for every test image, result files, and COCOeval metrics."""
import collections
import contextlib
import dataclasses
import functools
import io
import json
import os
import pickle

import megengine as mge
import megengine.distributed as dist
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tqdm import tqdm

from ..data.build import build_test_dataset
from ..data.coco import coco_results
from ..data.loader import BatchLoader
from ..data.samplers import inference_batches
from ..errors import ConfigError
from ..predictor import Predictor
from ..utils.config_file import load_config_module
from ..utils.files import atomic_target, write_json_atomic
from ..weights import build_model
from .launch import launch, world_info

logger = mge.get_logger(__name__)

COCO_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl",
                "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


class LoadImages:
    """Batch of dataset indices -> (indices, BGR images); runs in loader workers."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __call__(self, indices):
        return indices, [self.dataset[i]["image"] for i in indices]


def detect_dataset(predictor, dataset, batch_size=1, tta=False, num_workers=2, world_size=1,
                   rank=0):
    """Records {"image_id", "det_res" [K, 6]} for this rank's share of the dataset.

    Batches hold images of one padded input size, so any batch size gives the detections of
    one image at a time."""
    cfg = predictor.cfg
    sizes = [(r["height"], r["width"]) for r in dataset.records]
    batches = inference_batches(sizes, batch_size, cfg.test_image_short_size,
                                cfg.test_image_max_size, world_size, rank)
    records = {}
    with BatchLoader(LoadImages(dataset), num_workers) as loader, tqdm(
            total=sum(map(len, batches)), unit="img", disable=rank != 0,
            dynamic_ncols=True) as progress:
        for indices, images in loader.iterate(batches):
            for index, dets in zip(indices, predictor.predict_images(images, tta)):
                records[index] = {"image_id": dataset.records[index]["image_id"], "det_res": dets}
            progress.update(len(indices))
    return [records[i] for i in sorted(records)]


def gather_records(records, work_dir, world_size, rank):
    """All ranks' records on rank 0 (None elsewhere), exchanged through files in work_dir."""
    if world_size == 1:
        return records
    part = os.path.join(work_dir, ".records.rank{}.pkl".format(rank))
    with atomic_target(part) as temporary, open(temporary, "wb") as f:
        pickle.dump(records, f)
    dist.group_barrier()
    if rank != 0:
        return None
    merged = []
    for other in range(world_size):
        path = os.path.join(work_dir, ".records.rank{}.pkl".format(other))
        with open(path, "rb") as f:
            merged += pickle.load(f)
        os.remove(path)
    return merged


def detect_and_gather(predictor, dataset, batch_size=1, tta=False, num_workers=2, work_dir=".",
                      world_size=1, rank=0):
    """``detect_dataset`` on every rank; all records on rank 0 (None elsewhere)."""
    records = detect_dataset(predictor, dataset, batch_size, tta, num_workers, world_size, rank)
    return gather_records(records, work_dir, world_size, rank)


def run_cocoeval(coco, results, image_ids):
    """pycocotools' bbox COCOeval of result dicts on ``image_ids``, evaluated, accumulated and
    summarized (its printout swallowed); None without results, which it cannot evaluate."""
    if not results:
        return None
    with contextlib.redirect_stdout(io.StringIO()):  # the caller prints its own table
        coco_eval = COCOeval(coco, coco.loadRes(results), "bbox")
        coco_eval.params.imgIds = list(image_ids)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval


def summary_metrics(coco_eval, num_images):
    """The 12 COCOeval bbox numbers {name: value}; every metric is 0, with a warning saying
    why, when there were no detections (``coco_eval`` None)."""
    if coco_eval is None:
        logger.warning("no detections on %d images: every metric is 0", num_images)
        return dict.fromkeys(COCO_METRICS, 0.0)
    return dict(zip(COCO_METRICS, (float(v) for v in coco_eval.stats)))


def cocoeval_metrics(coco, results, image_ids):
    """The 12 COCOeval bbox numbers {name: value} of result dicts on ``image_ids``."""
    return summary_metrics(run_cocoeval(coco, results, image_ids), len(image_ids))


def per_class_metrics(coco, coco_eval, image_ids):
    """One row per category of ``coco``: {"category_id", "name", "AP", "AP50", "gt_boxes"}.

    AP and AP50 come from pycocotools' accumulated ``precision`` [IoU, recall, category, area,
    max detections]: the mean of the entries above -1 at area "all" and 100 detections, over
    every IoU threshold (AP) or at IoU 0.5 (AP50), as COCOeval's own summary averages them over
    all categories. A category without ground truth in ``image_ids`` gets -1, pycocotools' mark
    of an undefined metric; without any detection (``coco_eval`` None) the others get 0.
    ``gt_boxes`` counts the non-crowd boxes, the ones a detection can match."""
    category_ids = sorted(coco.getCatIds())  # the order of COCOeval's category axis
    gt_boxes = collections.Counter(
        a["category_id"] for a in coco.loadAnns(coco.getAnnIds(imgIds=list(image_ids)))
        if not a.get("iscrowd", 0))
    rows = []
    for k, category_id in enumerate(category_ids):
        row = {"category_id": category_id, "name": coco.cats[category_id]["name"],
               "AP": -1.0, "AP50": -1.0, "gt_boxes": gt_boxes[category_id]}
        if coco_eval is not None:
            precision = coco_eval.eval["precision"][:, :, k, 0, -1]
            row["AP"], row["AP50"] = _mean_defined(precision), _mean_defined(precision[0])
        elif row["gt_boxes"]:
            row["AP"] = row["AP50"] = 0.0
        rows.append(row)
    return rows


def _mean_defined(precision):
    defined = precision[precision > -1]
    return float(defined.mean()) if defined.size else -1.0


def per_class_table(rows):
    """Text table of ``per_class_metrics`` rows: category name, AP, AP50, ground-truth boxes."""
    width = max([len("category")] + [len(row["name"]) for row in rows])
    lines = ["{:<{w}} {:>6} {:>6} {:>8}".format("category", "AP", "AP50", "gt boxes", w=width)]
    lines += ["{:<{w}} {:6.3f} {:6.3f} {:8d}".format(row["name"], row["AP"], row["AP50"],
                                                    row["gt_boxes"], w=width) for row in rows]
    return "\n".join(lines)


def score_records(dataset, records, results_path):
    """Write the COCO result file of ``records`` and, beside it, their per-class metrics
    (``per_class_path``); return (the 12 metrics, the per-class rows)."""
    results = coco_results(records, dataset.category_ids)
    write_json_atomic(results, results_path)
    image_ids = [r["image_id"] for r in records]
    coco_eval = run_cocoeval(dataset.coco, results, image_ids)
    classes = per_class_metrics(dataset.coco, coco_eval, image_ids)
    write_json_atomic(classes, per_class_path(results_path))
    return summary_metrics(coco_eval, len(image_ids)), classes


def per_class_path(results_path):
    """Where the per-class metrics of a result file go: ``<results>_per_class.json``."""
    return os.path.splitext(results_path)[0] + "_per_class.json"


def row_labels(paths):
    """{path: label} for table rows: the shortest trailing part of each path that no other path
    shares, so one file shows as its name and two runs' epoch_<N>.pkl as run/epoch_<N>.pkl."""
    parts = {path: os.path.normpath(path).split(os.sep) for path in paths}
    labels = {}
    for path, own in parts.items():
        others = [p for other, p in parts.items() if other != path]
        depth = 1
        while depth < len(own) and any(p[-depth:] == own[-depth:] for p in others):
            depth += 1
        labels[path] = os.path.join(*own[-depth:]) if depth < len(own) else path
    return labels


def metrics_table(rows):
    """Text table: one row per {label: {metric: value}} entry, the 12 COCO metrics as columns."""
    label_width = max([len("weights")] + [len(label) for label in rows])
    lines = ["{:<{w}} ".format("weights", w=label_width) + " ".join(
        "{:>6}".format(name) for name in COCO_METRICS)]
    for label, metrics in rows.items():
        lines.append("{:<{w}} ".format(label, w=label_width) + " ".join(
            "{:6.3f}".format(metrics[name]) for name in COCO_METRICS))
    return "\n".join(lines)


@dataclasses.dataclass
class EvalOptions:
    dataset_dir: str
    weights: list  # weight files (state_dicts or training checkpoints) to evaluate in turn
    batch_size: int = 1
    tta: bool = False
    results_path: str = None  # default: beside each evaluated file
    num_workers: int = 2
    engine: str = "eager"  # or "traced" / "lite" / "onnxruntime" / "openvino" / "auto"
    model_path: str = None  # a dumped Lite, ONNX or OpenVINO model, instead of weight files
    precision: str = "fp32"  # or "bf16" / "int8": see deploy/precision.py


def results_path_for(evaluated_path, explicit=None):
    if explicit:
        return explicit
    return os.path.splitext(evaluated_path)[0] + "_coco_results.json"


def eager_detector(config_module, weights=None, engine="eager", model_path=None,
                   precision="fp32"):
    """The eager model with ``weights``: the only engine without ``deploy``'s
    ``build_detector``, which takes the same arguments and any engine."""
    if engine != "eager" or model_path is not None or precision != "fp32":
        raise ConfigError("the {} engine in {} needs deploy.detector.build_detector".format(
            engine, precision))
    return build_model(config_module, weights)


def evaluated_detectors(config_module, options, build_detector=eager_detector):
    """(file, build) of each detector to evaluate, ``build()`` making it with
    ``build_detector``: the dumped model of ``options.model_path``, or the model with each
    weight file on ``options.engine``."""
    if options.model_path is not None:
        return [(options.model_path, functools.partial(
            build_detector, config_module, engine=options.engine,
            model_path=options.model_path, precision=options.precision))]
    return [(weights, functools.partial(build_detector, config_module, weights, options.engine,
                                        precision=options.precision))
            for weights in options.weights]


def evaluate_detectors(detectors, cfg, options, world_size=1, rank=0):
    """Evaluate each (file, build) of ``detectors``; return {file: metrics} on rank 0. The
    result file of each is named after its file unless ``options.results_path`` is set."""
    dataset = build_test_dataset(cfg, options.dataset_dir)
    labels = row_labels([path for path, _ in detectors])
    table = {}
    for path, build in detectors:
        results_path = results_path_for(path, options.results_path)
        records = detect_and_gather(Predictor(build()), dataset, options.batch_size,
                                    options.tta, options.num_workers,
                                    os.path.dirname(os.path.abspath(results_path)), world_size,
                                    rank)
        if rank == 0:
            table[path], classes = score_records(dataset, records, results_path)
            print(metrics_table({labels[path]: table[path]}), flush=True)
            print(per_class_table(classes), flush=True)
            logger.info("detections written to %s, per-class metrics to %s", results_path,
                        per_class_path(results_path))
    return table


def evaluate_result_files(ann_file, result_paths):
    """{result file: metrics} of COCO result files against one annotation file."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(ann_file)
    table = {}
    for path in result_paths:
        with open(path) as f:
            results = json.load(f)
        table[path] = cocoeval_metrics(coco, results, sorted(coco.getImgIds()))
    return table


def test_worker(config_file, options, build_detector):
    world_size, rank = world_info()
    module = load_config_module(config_file)
    return evaluate_detectors(evaluated_detectors(module, options, build_detector),
                              module.Cfg(), options, world_size, rank)


def run_test(config_file, options, num_devices=1, build_detector=eager_detector):
    """Evaluate every weight file, or the dumped model, of ``options``; print one table row per
    file, and a summary table when there are several. ``build_detector``: eager models only
    by default; tools/test.py passes ``deploy.detector.build_detector`` for every engine."""
    if options.engine not in ("eager", "traced") and num_devices > 1:
        raise ConfigError("the {} engine runs in one CPU process: use -n 1".format(
            options.engine))
    results = launch(test_worker, (config_file, options, build_detector), num_devices)
    table = results if num_devices == 1 else results[0]
    if len(table) > 1:
        labels = row_labels(table)
        print(metrics_table({labels[k]: v for k, v in table.items()}))
    return table
