"""Boxes drawn on an image: a box and a "class score" label per detection, or any text per
box (the ground truth of a dataset); the names of the pictures written."""
import colorsys
import os

import cv2
import numpy as np

from .images import to_bgr


def class_color(label):
    """A fixed BGR colour per class (hues spread by the golden ratio)."""
    red, green, blue = colorsys.hsv_to_rgb((label * 0.618033988749895) % 1.0, 0.85, 0.95)
    return int(blue * 255), int(green * 255), int(red * 255)


def draw_detections(img, dets, classes=None, thresh=0.3, is_show_label=True):
    """A copy of ``img`` with the detections ([K, 6] rows) scoring above ``thresh`` drawn."""
    canvas = to_bgr(img).copy()
    font_scale = _font_scale(canvas)
    for x1, y1, x2, y2, score, label in np.asarray(dets).reshape(-1, 6):
        if score < thresh:
            continue
        label = int(label)
        name = classes[label] if classes is not None and label < len(classes) else str(label)
        text = "{} {:.2f}".format(name, score) if is_show_label else None
        _draw_box(canvas, (x1, y1, x2, y2), class_color(label), text, font_scale)
    return canvas


def draw_boxes(img, boxes, labels, texts):
    """A copy of ``img`` with each xyxy box drawn in the colour of its label (as detections of
    that class are) with its text, e.g. the ground truth of a dataset."""
    canvas = to_bgr(img).copy()
    font_scale = _font_scale(canvas)
    for box, label, text in zip(boxes, labels, texts):
        _draw_box(canvas, box, class_color(label), text, font_scale)
    return canvas


def picture_name(path, root):
    """Output picture name, unique within one run: the path relative to the input root with
    separators flattened, always saved as JPEG."""
    relative = os.path.relpath(path, root) if root else os.path.basename(path)
    return os.path.splitext(relative.replace(os.sep, "__"))[0] + ".jpg"


def _font_scale(canvas):
    # text 0.5 high (OpenCV's unit) on COCO-sized pictures, smaller on small ones, so that
    # labels do not hide the objects of a 100-pixel image
    return float(np.clip(min(canvas.shape[:2]) / 960, 0.3, 0.5))


def _draw_box(canvas, box, color, text, font_scale):
    x1, y1, x2, y2 = (int(v) for v in box)
    cv2.rectangle(canvas, (x1, y1), (x2, y2), color, 2)
    if text is not None:
        _draw_label(canvas, text, x1, y1, color, font_scale)


def _draw_label(canvas, text, x, y, color, font_scale):
    """White text on a box of ``color`` just above (x, y), moved in where it would leave the
    picture: below the top edge, left of the right edge, right of the left edge."""
    font = cv2.FONT_HERSHEY_SIMPLEX
    (text_w, text_h), _ = cv2.getTextSize(text, font, font_scale, 1)
    height, width = canvas.shape[:2]
    left = int(np.clip(x, 0, max(width - 1 - text_w, 0)))
    bottom = int(np.clip(y, text_h + 2, height - 1))  # the label's box ends at this row
    cv2.rectangle(canvas, (left, bottom - text_h - 2), (left + text_w, bottom), color, -1)
    cv2.putText(canvas, text, (left, bottom - 2), font, font_scale, (255, 255, 255), 1,
                cv2.LINE_AA)
