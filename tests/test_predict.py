"""tools/inference.py and the library behind it: pictures, JSON, bad files."""
import json
import os
import subprocess
import sys

import cv2
import megengine as mge
import numpy as np
import pytest

from official.vision.detection.engine.file_inference import (
    detect_files, image_paths, label_categories
)
from official.vision.detection.models import FCOSConfig
from official.vision.detection.visualize import picture_name

from conftest import PROJECT_ROOT, tiny_config

CONFIG = '''
import sys
sys.path.insert(0, TESTS_DIR)
from conftest import tiny_config
from official.vision.detection import models

Net = models.FCOS


def Cfg():
    return tiny_config().update(test_vis_threshold=0.0, test_image_short_size=64,
                                test_image_max_size=96)
'''


@pytest.fixture
def image_folder(tmp_path):
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.RandomState(0)
    cv2.imwrite(str(folder / "color.jpg"), rng.randint(0, 255, (40, 60, 3)).astype(np.uint8))
    cv2.imwrite(str(folder / "sub" / "gray.png"), rng.randint(0, 255, (30, 20)).astype(np.uint8))
    cv2.imwrite(str(folder / "rgba.png"), rng.randint(0, 255, (25, 25, 4)).astype(np.uint8))
    cv2.imwrite(str(folder / "tiny.png"), np.full((1, 1, 3), 128, np.uint8))
    (folder / "broken.jpg").write_bytes(b"this is not an image")
    (folder / "notes.txt").write_text("not an image either")
    return folder


def test_folder_globs_and_files_name_the_images(image_folder):
    found = image_paths(str(image_folder))
    assert [os.path.basename(p) for p in found] == [
        "broken.jpg", "color.jpg", "rgba.png", "gray.png", "tiny.png"]
    assert image_paths(str(image_folder / "*.png")) == [str(image_folder / "rgba.png"),
                                                         str(image_folder / "tiny.png")]
    with pytest.raises(FileNotFoundError, match="no image files"):
        image_paths(str(image_folder / "missing.jpg"))


def test_bad_files_are_skipped_and_every_other_image_gets_a_picture(image_folder, tmp_path,
                                                                     tiny_model):
    out = tmp_path / "out"
    categories = [{"id": 4, "name": "a"}, {"id": 7, "name": "b"}, {"id": 9, "name": "c"}]
    records, skipped = detect_files(tiny_model, image_paths(str(image_folder)), str(out),
                                    categories, thresh=0.0, batch_size=2,
                                    input_root=str(image_folder))
    assert [os.path.basename(p) for p in skipped] == ["broken.jpg"]
    assert sorted(os.listdir(out)) == ["color.jpg", "detections.json", "rgba.jpg",
                                       "sub__gray.jpg", "tiny.jpg"]
    assert cv2.imread(str(out / "tiny.jpg")).shape == (1, 1, 3)
    saved = json.loads((out / "detections.json").read_text())
    assert [os.path.basename(r["file"]) for r in saved] == ["color.jpg", "rgba.png", "gray.png",
                                                            "tiny.png"]
    first = saved[0]["detections"][0]
    assert set(first) == {"bbox", "score", "label", "class", "category_id"}
    assert categories[first["label"]] == {"id": first["category_id"], "name": first["class"]}
    assert saved == json.loads(json.dumps(records))


def test_labels_are_coco_categories_for_released_models_and_numbers_otherwise(tmp_path,
                                                                              tiny_model):
    assert label_categories(FCOSConfig())[:2] == [{"id": 1, "name": "person"},
                                                  {"id": 2, "name": "bicycle"}]
    assert label_categories(FCOSConfig())[-1] == {"id": 90, "name": "toothbrush"}
    assert label_categories(tiny_config(), None, "/nonexistent") == [
        {"id": None, "name": str(label)} for label in range(3)]
    state_dict = str(tmp_path / "w.pkl")  # a plain state_dict keeps no categories
    mge.save(tiny_model.state_dict(), state_dict)
    assert label_categories(tiny_config(), state_dict)[0] == {"id": None, "name": "0"}


def test_picture_names_stay_unique_across_sub_folders():
    assert picture_name("/in/a/b.png", "/in") == "a__b.jpg"
    assert picture_name("/x/c.jpeg", None) == "c.jpg"


def run_tool(tmp_path, *args):
    config = tmp_path / "cfg.py"
    config.write_text(CONFIG.replace("TESTS_DIR", repr(os.path.join(PROJECT_ROOT, "tests"))))
    return subprocess.run([sys.executable, os.path.join(PROJECT_ROOT, "tools", "inference.py"),
                           "-f", str(config), *args], capture_output=True, text=True,
                          timeout=600)


def test_tool_writes_pictures_and_reports_the_skipped_file(image_folder, tmp_path, tiny_model):
    weights = str(tmp_path / "w.pkl")
    mge.save(tiny_model.state_dict(), weights)
    result = run_tool(tmp_path, "-w", weights, "-i", str(image_folder), "-o",
                      str(tmp_path / "pictures"))
    assert result.returncode == 0, result.stderr
    saved = tmp_path / "pictures" / "detections.json"
    found = sum(len(record["detections"]) for record in json.loads(saved.read_text()))
    assert result.stdout.strip().splitlines()[-1] == (
        "4 images, {} detections -> {}; 1 skipped (not readable as images)".format(found, saved))
    assert "broken.jpg" in result.stderr


def test_tool_with_no_readable_image_fails_and_writes_nothing(image_folder, tmp_path,
                                                              tiny_model):
    weights = str(tmp_path / "w.pkl")
    mge.save(tiny_model.state_dict(), weights)
    out = tmp_path / "pictures"
    result = run_tool(tmp_path, "-w", weights, "-i", str(image_folder / "broken.jpg"), "-o",
                      str(out))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "error: none of the 1 input file(s) is a readable image (first: {})".format(
            image_folder / "broken.jpg"))
    assert not (out / "detections.json").exists()


def test_tool_missing_input_is_one_line_without_traceback(tmp_path, tiny_model):
    weights = str(tmp_path / "w.pkl")
    mge.save(tiny_model.state_dict(), weights)
    result = run_tool(tmp_path, "-w", weights, "-i", str(tmp_path / "nope.jpg"))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "error: no image files at {}".format(
        tmp_path / "nope.jpg")


def test_tool_on_the_lite_engine_writes_pictures_and_json(image_folder, tmp_path, tiny_model):
    weights = str(tmp_path / "w.pkl")
    mge.save(tiny_model.state_dict(), weights)
    out = tmp_path / "pictures"
    result = run_tool(tmp_path, "-w", weights, "--engine", "lite", "-i", str(image_folder),
                      "-o", str(out), "-b", "2")
    assert result.returncode == 0, result.stderr
    assert "4 images" in result.stdout and "1 skipped" in result.stdout
    assert sorted(os.listdir(out)) == ["color.jpg", "detections.json", "rgba.jpg",
                                       "sub__gray.jpg", "tiny.jpg"]
    saved = json.loads((out / "detections.json").read_text())
    assert len(saved) == 4 and all(record["detections"] for record in saved)
