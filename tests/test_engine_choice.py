"""--engine auto: the fastest of Lite, onnxruntime and OpenVINO for a model and a precision on
this CPU, remembered."""
import ast
import json
import logging
import re

import cv2
import megengine as mge
import numpy as np
import pytest

from official.vision.detection.deploy.detector import build_detector, engine_of
from official.vision.detection.deploy.engine_choice import choice_key, default_cache_path
from official.vision.detection.deploy.onnx_export import export_onnx
from official.vision.detection.utils.config_file import load_config_module

from conftest import run_tool, with_distinct_outputs

# small test images keep the timing short
SMALL_TEST_SIZE = "\n        self.update(test_image_short_size=64, test_image_max_size=96)\n"


@pytest.fixture
def small_config(tiny_config_file, tmp_path):
    path = tmp_path / "small_fcos.py"
    text = open(tiny_config_file).read().replace("num_classes=3)\n", "num_classes=3)" +
                                                  SMALL_TEST_SIZE)
    path.write_text(text)
    return str(path)


@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


def logged_times(log):
    """{engine: ms} and the engine chosen, from the log of a timed choice."""
    (times, chosen), = re.findall(r"engine auto: the network took (\{.*?\}) ms at \d+x\d+: "
                                  r"(\w+)", log)
    return ast.literal_eval(times), chosen


def test_auto_runs_the_engine_that_timed_fastest_and_remembers_it(small_config, cache_home,
                                                                   tmp_path, caplog):
    caplog.set_level(logging.INFO)
    module = load_config_module(small_config)
    mge.random.seed(1)
    weights = str(tmp_path / "weights.pkl")
    mge.save(module.Net(module.Cfg()).state_dict(), weights)
    (cache_home / "megengine-fcos").mkdir(parents=True)
    with open(default_cache_path(), "w") as f:  # not written by this package: replaced
        f.write("not json")
    detector = build_detector(module, weights, "auto", threads=1)
    times, chosen = logged_times(caplog.text)
    assert set(times) == {"lite", "onnxruntime", "openvino"}
    assert min(times, key=times.get) == chosen
    assert engine_of(detector) == chosen
    remembered = {"engine": chosen, "times_ms": times}
    if chosen == "lite":  # and the layout its file was written in
        remembered["layout"] = detector.layout
    with open(default_cache_path()) as f:
        assert json.load(f) == {choice_key(small_config, weights, 1): remembered}

    caplog.clear()  # the second time builds the remembered engine only, Lite in its layout
    again = build_detector(module, weights, "auto", threads=1)
    assert engine_of(again) == chosen
    assert "as timed before" in caplog.text and "the network took" not in caplog.text
    assert "layout auto" not in caplog.text
    assert getattr(again, "layout", None) == remembered.get("layout")


def test_a_remembered_lite_choice_writes_its_file_in_the_remembered_layout(
        small_config, cache_home, caplog):
    caplog.set_level(logging.INFO)
    module = load_config_module(small_config)
    (cache_home / "megengine-fcos").mkdir(parents=True)
    with open(default_cache_path(), "w") as f:
        json.dump({choice_key(small_config, None, 1): {
            "engine": "lite", "times_ms": {"lite": 1.0, "onnxruntime": 2.0},
            "layout": "nchw"}}, f)
    detector = build_detector(module, None, "auto", threads=1)
    assert engine_of(detector) == "lite" and detector.layout == "nchw"
    assert "layout auto" not in caplog.text


def test_the_choice_is_kept_per_weight_file_and_thread_count(small_config, tmp_path):
    weights = tmp_path / "weights.pkl"
    weights.write_bytes(b"first")
    first = choice_key(small_config, str(weights), 2)
    assert choice_key(small_config, str(weights), 1) != first
    weights.write_bytes(b"second, longer")  # retrained in place
    assert choice_key(small_config, str(weights), 2) != first
    assert choice_key(small_config, None, 2) == choice_key(small_config, None, 2)


def test_auto_with_a_dumped_file_times_the_engines_that_read_it(small_config, cache_home,
                                                                tmp_path, caplog):
    caplog.set_level(logging.INFO)
    module = load_config_module(small_config)
    model = with_distinct_outputs(lambda: module.Net(module.Cfg()), seed=3)
    path = export_onnx(model, str(tmp_path / "small.onnx"))
    detector = build_detector(module, engine="auto", model_path=path, threads=1)
    times, chosen = logged_times(caplog.text)
    assert set(times) == {"onnxruntime", "openvino"} and engine_of(detector) == chosen
    assert "engine auto: not lite: it does not read small.onnx" in caplog.text


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_choice_is_kept_per_precision(small_config, precision):
    assert choice_key(small_config, None, 1, precision) != choice_key(
        small_config, None, 1, "int8")


# a detector whose first operation, a GELU on the 0-255 pixels (~ the identity there), has no
# ONNX form here (opset 12 has no Gelu, mgeconvert no ERF): MegEngine Lite runs it, ONNX export
# (which onnxruntime and openvino read) cannot write it
GELU_NET = '''

import megengine.functional as F


class Net(FCOS):
    def raw_outputs(self, image):
        return super().raw_outputs(F.gelu(image))
'''
# a detector whose inference also returns its pyramid's top feature map: the files of the
# engines have the two outputs scores and boxes, so no engine can run it
THREE_OUTPUTS_NET = '''

import megengine.functional as F


class Net(FCOS):
    def inference(self, image, im_info):
        scores, boxes = super().inference(image, im_info)
        return scores, boxes, F.zeros((1,)) + F.sqrt(image.mean())
'''


def config_with_net(small_config, tmp_path, net):
    path = tmp_path / "custom_net.py"
    path.write_text(open(small_config).read().replace("\nNet = FCOS\n", net))
    return load_config_module(str(path))


def test_auto_says_why_an_engine_cannot_run_the_model_and_runs_another(
        small_config, cache_home, tmp_path, caplog):
    module = config_with_net(small_config, tmp_path, GELU_NET)
    key = choice_key(module.__file__, None, 1)
    (cache_home / "megengine-fcos").mkdir(parents=True)
    with open(default_cache_path(), "w") as f:  # remembered from before the model changed
        json.dump({key: {"engine": "onnxruntime", "times_ms": {"lite": 2.0, "onnxruntime": 1.0}}},
                  f)
    caplog.set_level(logging.INFO)
    detector = build_detector(module, None, "auto", threads=1)
    assert engine_of(detector) == "lite"
    failures = [r.getMessage() for r in caplog.records if "cannot run this model" in r.getMessage()]
    assert len(failures) == 2
    for engine, failure in zip(("onnxruntime", "openvino"), failures):
        assert failure.startswith("engine auto: {} cannot run this model: ONNX export cannot "
                                  "convert the Elemwise operator".format(engine)), failure
        assert "GELU" in failure
    times, chosen = logged_times(caplog.text)  # the others are timed again
    assert set(times) == {"lite"} and chosen == "lite"
    with open(default_cache_path()) as f:
        assert json.load(f)[key]["engine"] == "lite"


def test_auto_without_an_engine_that_runs_the_model_is_a_one_line_error(
        small_config, cache_home, tmp_path):
    module = config_with_net(small_config, tmp_path, THREE_OUTPUTS_NET)
    weights, image_path = str(tmp_path / "weights.pkl"), str(tmp_path / "image.png")
    mge.save(module.Net(module.Cfg()).state_dict(), weights)
    cv2.imwrite(image_path, np.zeros((40, 60, 3), np.uint8))
    result = run_tool("inference.py", "-f", module.__file__, "-w", weights, "--engine", "auto",
                      "-i", image_path, "-o", tmp_path / "out")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert re.fullmatch(r"error: engine auto: no engine can run this model \(lite: .*; "
                        r"onnxruntime: .*; openvino: .*\); run it with --engine eager or "
                        r"--engine traced", last)
    for engine in ("lite", "onnxruntime", "openvino"):
        assert "engine auto: {} cannot run this model".format(engine) in result.stderr
