"""``--engine auto``: the fastest engine (MegEngine Lite, ONNX Runtime, OpenVINO) for a model
and a precision on this CPU.

Each engine that runs the precision is built from the model and its weights and times the
network at the config's test size; the fastest one runs. An engine that cannot run the model
is left out, with a logged line saying why (e.g. an operator its export cannot convert). Which
one won is remembered per (config file, weights, CPU, threads, precision) in a small JSON file,
so later runs build only that engine.
"""
import json
import os
import statistics
import time

import megengine as mge

from ..errors import ConfigError, DetectionError
from ..utils.files import write_json_atomic
from ..utils.machine import cpu_model_name
from .trace import EXAMPLE_HW, example_inputs, representative_inputs

logger = mge.get_logger(__name__)

WARMUP_RUNS, TIMED_RUNS = 1, 3


def package_cache_dir():
    """$XDG_CACHE_HOME/megengine-fcos (~/.cache by default): what the engines keep between
    runs."""
    cache = os.getenv("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache"))
    return os.path.join(cache, "megengine-fcos")


def default_cache_path():
    """<package cache>/engine_choices.json."""
    return os.path.join(package_cache_dir(), "engine_choices.json")


def file_identity(path):
    """A file by absolute path, size and time of its last change: another file, or this one
    rewritten, is another identity."""
    stat = os.stat(path)
    return "{} ({} bytes, changed {})".format(os.path.abspath(path), stat.st_size,
                                              stat.st_mtime_ns)


def weights_identity(weights):
    """``file_identity`` of a weight (or model) file; a URL as given; "random weights" for
    None."""
    if weights is not None and os.path.isfile(weights):
        return file_identity(weights)
    return weights or "random weights"


def choice_key(config_file, weights, threads, precision="fp32"):
    """What a choice holds for: the config, the weights (``weights_identity``; or a model
    file), the CPU, the threads and the precision."""
    return json.dumps([os.path.abspath(config_file), weights_identity(weights),
                       cpu_model_name(), threads, precision])


def network_ms(detector, image, im_info):
    """Median milliseconds of ``detector.inference`` after warm-up runs."""
    for _ in range(WARMUP_RUNS):
        detector.inference(image, im_info)
    times = []
    for _ in range(TIMED_RUNS):
        start = time.perf_counter()
        detector.inference(image, im_info)
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def fastest_detector(build, engines, key, cache_path=None):
    """The detector ``build(engine, layout)`` of the engine among ``engines`` whose network
    runs fastest here, as remembered under ``key`` (see ``choice_key``) or timed now. Lite's
    layout is remembered with the choice (a detector's ``layout``), so a remembered Lite model
    is written in it without timing the layouts again; "auto" when nothing is remembered.

    An engine that cannot run the model (its export fails, its package is missing, its
    runtime refuses the graph) is left out with one logged line saying why; a ConfigError
    naming every engine's reason when none can.
    """
    cache_path = cache_path or default_cache_path()
    choices = _read_choices(cache_path)
    failures = {}
    if key in choices and choices[key]["engine"] in engines:
        choice = choices[key]
        detector = _try_engine(build, choice["engine"], choice.get("layout", "auto"), failures)
        if detector is not None:
            logger.info("engine auto: %s, as timed before (%s ms)", choice["engine"],
                        choice["times_ms"])
            return detector
        engines = [engine for engine in engines if engine != choice["engine"]]
    detectors, times = {}, {}
    for engine in engines:
        detector = _try_engine(build, engine, "auto", failures)
        if detector is not None:
            image, im_info = representative_inputs(detector.cfg)
            detectors[engine] = detector
            times[engine] = round(network_ms(detector, image, im_info), 1)
    if not detectors:
        raise ConfigError("engine auto: no engine can run this model ({}); run it with "
                          "--engine eager or --engine traced".format("; ".join(
                              "{}: {}".format(engine, why) for engine, why in failures.items())))
    engine = min(times, key=times.get)
    logger.info("engine auto: the network took %s ms at %dx%d: %s", times, image.shape[2],
                image.shape[3], engine)
    choices[key] = {"engine": engine, "times_ms": times}
    if getattr(detectors[engine], "layout", None):
        choices[key]["layout"] = detectors[engine].layout
    write_json_atomic(choices, cache_path)
    return detectors[engine]


def _try_engine(build, engine, layout, failures):
    """``build(engine, layout)`` after one inference on a small image, or None when either
    fails; then logs why and records it in ``failures`` ({engine: reason})."""
    try:
        detector = build(engine, layout)
        detector.inference(*example_inputs(*EXAMPLE_HW))
        return detector
    # an engine's own library raises its own exception types (onnxruntime's derive from
    # Exception only): whatever stops an engine leaves it out, with the reason logged
    except Exception as error:  # pylint: disable=broad-except
        failures[engine] = why_not(error)
        logger.warning("engine auto: %s cannot run this model: %s", engine, failures[engine])
        return None


def why_not(error):
    """One line from an exception; its type too unless it is one of this package's errors,
    whose messages say what to fix."""
    message = " ".join(str(error).split())
    if isinstance(error, DetectionError):
        return message
    return "{}: {}".format(type(error).__name__, message) if message else type(error).__name__


def _read_choices(path):
    if not os.path.exists(path):
        return {}
    try:
        with open(path) as f:
            return json.load(f)
    except ValueError:  # not JSON (written by something else): time again and replace it
        logger.warning("%s is not a JSON file of engine choices; replacing it", path)
        return {}
