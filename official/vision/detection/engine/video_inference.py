"""Detections on a video file: an annotated copy of the video and one JSON line per frame."""
import os

import cv2
import megengine as mge
from tqdm import tqdm

from ..errors import ConfigError, DatasetError
from ..predictor import Predictor
from ..utils.files import atomic_target, json_line
from ..visualize import draw_detections
from .file_inference import detection_dict, names_of

logger = mge.get_logger(__name__)

# the codec cv2.VideoWriter writes for each container this package reads and writes (the
# opencv-python wheels' FFmpeg has these encoders)
VIDEO_CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".mkv": "mp4v", ".avi": "MJPG"}
DEFAULT_FPS = 25.0  # when a file does not say its frame rate


def is_video(path):
    """Whether ``path`` names a video file (by its extension)."""
    return os.path.splitext(path)[1].lower() in VIDEO_CODECS


def require_video(path):
    """FileNotFoundError or DatasetError unless OpenCV can read frames from ``path``."""
    if not os.path.isfile(path):
        raise FileNotFoundError("no video file at {}".format(path))
    capture = cv2.VideoCapture(path)
    try:
        if not capture.isOpened() or not capture.read()[0]:
            raise DatasetError("cannot read frames from the video {}".format(path))
    finally:
        capture.release()


def video_outputs(video_path, output_dir):
    """(annotated video, frame detections .jsonl) of a video in ``output_dir``: the video's
    name and container, and that name with .jsonl."""
    stem, extension = os.path.splitext(os.path.basename(video_path))
    return (os.path.join(output_dir, stem + extension.lower()),
            os.path.join(output_dir, stem + ".jsonl"))


def detect_video(detector, video_path, output_dir, categories, thresh, batch_size=1, tta=False):
    """Write the video with its detections above ``thresh`` drawn (same frame rate and size)
    and a JSON line per frame, {"frame", "time" in seconds, "detections"}, into ``output_dir``
    (``video_outputs``), both atomically; ``categories`` (file_inference.label_categories)
    name the labels; ``batch_size`` frames per forward. Returns the number of frames."""
    require_video(video_path)
    capture = cv2.VideoCapture(video_path)
    fps = capture.get(cv2.CAP_PROP_FPS)
    if not fps > 0:
        logger.warning("%s does not say its frame rate: writing %g fps", video_path, DEFAULT_FPS)
        fps = DEFAULT_FPS
    video_out, jsonl_out = video_outputs(video_path, output_dir)
    predictor = Predictor(detector)
    frames_done = 0
    # the temporary names keep the extension, from which cv2.VideoWriter picks the container
    with atomic_target(video_out) as video_temporary, atomic_target(jsonl_out) as \
            jsonl_temporary, open(jsonl_temporary, "w") as lines, tqdm(
                total=int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None, unit="frame",
                dynamic_ncols=True) as progress:
        writer = None
        try:
            for frames in _frame_batches(capture, batch_size):
                if writer is None:
                    writer = _video_writer(video_temporary, fps, frames[0])
                for frame, dets in zip(frames, predictor.predict_images(frames, tta)):
                    dets = dets[dets[:, 4] >= thresh]
                    writer.write(draw_detections(frame, dets, names_of(categories), thresh))
                    lines.write(json_line({"frame": frames_done, "time": frames_done / fps,
                                           "detections": [detection_dict(row, categories)
                                                          for row in dets]}))
                    frames_done += 1
                progress.update(len(frames))
        finally:
            capture.release()
            if writer is not None:
                writer.release()
    return frames_done


def _frame_batches(capture, batch_size):
    """Lists of up to ``batch_size`` consecutive BGR frames until the video ends."""
    batch = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        batch.append(frame)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _video_writer(path, fps, first_frame):
    height, width = first_frame.shape[:2]
    extension = os.path.splitext(path)[1].lower()
    codec = VIDEO_CODECS[extension]
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*codec), fps, (width, height))
    if not writer.isOpened():
        raise ConfigError("this OpenCV cannot write {} video with the {} codec; convert the "
                          "input to {}".format(extension, codec, " or ".join(VIDEO_CODECS)))
    return writer
