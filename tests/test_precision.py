"""--precision: bf16 where the CPU has bf16 units and refused with one line elsewhere, on the
engines that run it; int8 without calibration images; auto's choice per precision."""
import logging

import cv2
import megengine as mge
import numpy as np
import pytest

from official.vision.detection.deploy.detector import build_detector, engine_of
from official.vision.detection.deploy.precision import BF16_FLAGS, check_precision
from official.vision.detection.errors import ConfigError
from official.vision.detection.evaluator import DetEvaluator
from official.vision.detection.utils.config_file import load_config_module

from conftest import run_tool
from detection_matching import detection_table, pair_detections


# bf16 keeps 8 bits of mantissa. On the tiny model (random weights spread as in
# with_distinct_outputs), at 64x96 with three random batches, OpenVINO's bf16 outputs moved from
# eager fp32 by at most 0.0076 in score and 2.0 px in box coordinates (Intel Xeon, lscpu family
# 6, model 207); the tolerances are about 2.5x that. Its 100 detections per image do not all
# match: near-tied low scores reorder and NMS keeps other neighbours, so the confident ones
# (the top TOP_DETECTIONS of each image) are the ones that must have a bf16 partner.
BF16_SCORE_TOLERANCE, BF16_BOX_TOLERANCE = 0.02, 5.0  # pixels
TOP_DETECTIONS = 5
AVX512_NO_BF16 = "fpu sse sse2 avx avx2 fma avx512f avx512bw avx512_vnni"  # e.g. AMD Zen 4


def cpuinfo_with(tmp_path, flags):
    path = tmp_path / "cpuinfo"
    path.write_text("vendor_id\t: GenuineIntel\nflags\t\t: {}\n".format(flags))
    return str(path)


def this_cpu_runs_bf16():
    try:
        check_precision("bf16", "openvino")
    except ConfigError:
        return False
    return True


def test_bf16_is_refused_on_a_cpu_without_bf16_units_naming_them(tmp_path):
    with pytest.raises(ConfigError, match=r"^--precision bf16 needs a CPU with bf16 units "
                                          r"\(AMX-BF16 or AVX512-BF16\), which this CPU lacks"):
        check_precision("bf16", "openvino", cpuinfo_with(tmp_path, AVX512_NO_BF16))


@pytest.mark.parametrize("flag", sorted(BF16_FLAGS))
def test_bf16_is_accepted_with_either_kind_of_bf16_unit(tmp_path, flag):
    check_precision("bf16", "openvino", cpuinfo_with(tmp_path, AVX512_NO_BF16 + " " + flag))
    check_precision("bf16", "auto", cpuinfo_with(tmp_path, AVX512_NO_BF16 + " " + flag))


@pytest.mark.parametrize("engine", ["eager", "traced", "lite", "onnxruntime"])
def test_engines_without_bf16_are_refused_whatever_the_cpu(tmp_path, engine):
    with pytest.raises(ConfigError, match="the {} engine runs fp32 only, not bf16: use --engine "
                                          "openvino$".format(engine)):
        check_precision("bf16", engine, cpuinfo_with(tmp_path, "avx512_bf16 amx_bf16"))


def test_bf16_runs_where_the_cpu_has_the_units_and_is_refused_elsewhere(
        frozen_bn_model, tiny_config_file, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    module = load_config_module(tiny_config_file)
    weights = str(tmp_path / "weights.pkl")
    mge.save(frozen_bn_model.state_dict(), weights)
    if not this_cpu_runs_bf16():
        with pytest.raises(ConfigError, match="which this CPU lacks"):
            build_detector(module, weights, engine="auto", precision="bf16")
        return
    detector = build_detector(module, weights, engine="auto", precision="bf16")
    assert engine_of(detector) == "openvino" and detector.precision == "bf16"
    assert "engine auto: not lite: it does not run bf16" in caplog.text
    image = np.random.RandomState(7).uniform(0, 255, (2, 3, 64, 96)).astype("float32")
    im_info = np.array([[64, 96, 128, 192], [64, 96, 64, 96]], dtype="float32")
    (scores, boxes), (fp32_scores, fp32_boxes) = detector.inference(image, im_info), (
        value.numpy() for value in frozen_bn_model.inference(image, im_info))
    score_error = np.abs(scores - fp32_scores).max()
    # close, and not fp32 under another name (bf16 rounding moves every score a little)
    assert 1e-4 < score_error <= BF16_SCORE_TOLERANCE
    assert np.abs(boxes - fp32_boxes).max() <= BF16_BOX_TOLERANCE
    found = detection_table(DetEvaluator(detector).predict(image=image, im_info=im_info))
    expected = detection_table([detections[:TOP_DETECTIONS] for detections in DetEvaluator(
        frozen_bn_model).predict(image=image, im_info=im_info)])
    pairs = pair_detections(found, expected, BF16_BOX_TOLERANCE, BF16_SCORE_TOLERANCE)
    assert len(pairs) == len(expected) == 2 * TOP_DETECTIONS


def test_int8_without_calibration_images_is_a_one_line_error(tiny_config_file):
    module = load_config_module(tiny_config_file)
    with pytest.raises(ConfigError, match="^int8 is calibrated on your images: give -d DATA"):
        build_detector(module, engine="auto", precision="int8")


def test_the_tools_refuse_bf16_where_it_cannot_run_in_one_line(tiny_config_file, tmp_path):
    image_path = str(tmp_path / "image.png")
    cv2.imwrite(image_path, np.zeros((40, 60, 3), np.uint8))
    result = run_tool("benchmark.py", "-f", tiny_config_file, "-i", image_path, "--mode", "lite",
                      "--precision", "bf16", "-n", "1")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "error: the lite engine runs fp32 only, not bf16: use --engine openvino")
