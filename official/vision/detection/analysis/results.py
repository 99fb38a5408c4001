"""Reading a COCO result file (a JSON list of {"image_id", "category_id", "bbox" [x, y, w, h],
"score"}, as tools/test.py --out writes it) against the split it was written for."""
import json
import numbers

from ..errors import ConfigError

RESULT_KEYS = ("image_id", "category_id", "bbox", "score")


def read_results(path, image_ids, category_ids):
    """The detections of ``path``, checked: each a dict with the four COCO result keys, a box
    of 4 numbers, and image and category ids of the split (``image_ids``,
    ``category_ids``)."""
    try:
        with open(path) as f:
            detections = json.load(f)
    except ValueError as error:
        raise ConfigError("results file {} is not JSON ({}); give the file tools/test.py --out "
                          "writes".format(path, error))
    if not isinstance(detections, list):
        raise ConfigError("results file {} holds a {}, not the list of detections tools/test.py "
                          "--out writes".format(path, type(detections).__name__))
    if not detections:
        raise ConfigError("results file {} has no detections: nothing to analyze (lower the "
                          "config's test_cls_threshold?)".format(path))
    for n, d in enumerate(detections):
        _check_detection(path, n, d)
    _check_ids(path, "image", {d["image_id"] for d in detections}, image_ids)
    _check_ids(path, "category", {d["category_id"] for d in detections}, category_ids)
    return detections


def _check_detection(path, n, detection):
    if not isinstance(detection, dict) or not all(k in detection for k in RESULT_KEYS):
        raise ConfigError("results file {}: detection {} is not a dict with {}".format(
            path, n, ", ".join(RESULT_KEYS)))
    box = detection["bbox"]
    if not (isinstance(box, list) and len(box) == 4 and all(
            isinstance(v, numbers.Real) for v in box + [detection["score"]])):
        raise ConfigError("results file {}: detection {} needs a bbox of 4 numbers and a "
                          "numeric score".format(path, n))


def _check_ids(path, kind, found, known):
    unknown = sorted(found - set(known))
    if unknown:
        raise ConfigError("results file {} has {} {} id(s) the split lacks, e.g. {}: was it "
                          "written for another dataset or split?".format(
                              path, len(unknown), kind, unknown[0]))
