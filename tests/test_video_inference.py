"""Video inference: the annotated video and the JSON lines per frame, read back with OpenCV."""
import json
import os

import cv2
import megengine as mge
import numpy as np
import pytest

from official.vision.detection.engine.video_inference import detect_video, video_outputs
from official.vision.detection.models import FCOS
from official.vision.detection.predictor import Predictor

from conftest import PROJECT_ROOT, run_tool, tiny_config, with_distinct_outputs
from detection_matching import assert_same_detections

FRAMES, FPS, HEIGHT, WIDTH = 7, 10.0, 64, 96
CATEGORIES = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 3, "name": "c"}]

CONFIG = '''
import sys
sys.path.insert(0, TESTS_DIR)
from conftest import tiny_config
from official.vision.detection import models

Net = models.FCOS


def Cfg():
    return tiny_config().update(backbone_norm="FrozenBN", test_image_short_size=64,
                                test_image_max_size=96)  # the frames' size
'''


@pytest.fixture(scope="module")
def model():
    """The tiny detector at the frames' own size, with distinct scores (see conftest)."""
    return with_distinct_outputs(lambda: FCOS(tiny_config().update(
        backbone_norm="FrozenBN", test_image_short_size=HEIGHT, test_image_max_size=WIDTH)),
                                 seed=0)


def write_video(path, codec):
    """FRAMES frames of moving squares on noise."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), FPS, (WIDTH, HEIGHT))
    rng = np.random.RandomState(0)
    for index in range(FRAMES):
        frame = rng.randint(0, 80, (HEIGHT, WIDTH, 3)).astype(np.uint8)
        frame[10:40, 5 + 6 * index:35 + 6 * index] = (40, 200, 250)
        writer.write(frame)
    writer.release()
    return str(path)


def read_video(path):
    """(frames, frames per second) of a video file."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    fps = capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    return frames, fps


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_batched_frames_give_an_annotated_video_and_a_line_per_frame(model, tmp_path):
    video = write_video(tmp_path / "clip.avi", "MJPG")
    count = detect_video(model, video, str(tmp_path / "out"), CATEGORIES, thresh=0.3,
                         batch_size=3)
    annotated, jsonl = video_outputs(video, str(tmp_path / "out"))
    assert count == FRAMES
    assert (annotated, jsonl) == (str(tmp_path / "out" / "clip.avi"),
                                  str(tmp_path / "out" / "clip.jsonl"))
    frames, fps = read_video(annotated)
    assert len(frames) == FRAMES and fps == FPS
    assert all(frame.shape == (HEIGHT, WIDTH, 3) for frame in frames)

    lines = read_jsonl(jsonl)
    assert [line["frame"] for line in lines] == list(range(FRAMES))
    assert [line["time"] for line in lines] == pytest.approx([i / FPS for i in range(FRAMES)])
    # the detections of each frame are those of the frame alone through the predictor
    inputs, _ = read_video(video)
    expected = [dets[dets[:, 4] >= 0.3] for dets in Predictor(model).predict_images(
        inputs)]
    found = [np.array([d["bbox"] + [d["score"], d["label"]] for d in line["detections"]],
                      np.float64).reshape(-1, 6) for line in lines]
    assert sum(len(d) for d in found) > 0
    assert all({"id": d["category_id"], "name": d["class"]} == CATEGORIES[d["label"]]
               for line in lines for d in line["detections"])
    assert_same_detections(found, expected, box_atol=1e-3, score_atol=1e-5)


def test_tool_takes_a_video_by_its_extension(model, tmp_path):
    video = write_video(tmp_path / "clip.mp4", "mp4v")
    weights = str(tmp_path / "w.pkl")
    mge.save(model.state_dict(), weights)
    config = tmp_path / "cfg.py"
    config.write_text(CONFIG.replace("TESTS_DIR", repr(os.path.join(PROJECT_ROOT, "tests"))))
    out = tmp_path / "out"
    result = run_tool("inference.py", "-f", config, "-w", weights, "-i", video, "-o", out,
                      "-b", 4)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "{} frames -> {}, {}".format(
        FRAMES, out / "clip.mp4", out / "clip.jsonl")
    assert sorted(os.listdir(out)) == ["clip.jsonl", "clip.mp4"]  # no temporary left
    frames, fps = read_video(out / "clip.mp4")
    assert len(frames) == FRAMES and fps == FPS and frames[0].shape == (HEIGHT, WIDTH, 3)
    assert len(read_jsonl(out / "clip.jsonl")) == FRAMES

    missing = run_tool("inference.py", "-f", config, "-w", weights, "-i", tmp_path / "no.mkv")
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines()[-1] == "error: no video file at {}".format(
        tmp_path / "no.mkv")
