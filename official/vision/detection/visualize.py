"""Detections drawn on an image: a box and a "class score" label per detection."""
import colorsys

import cv2
import numpy as np

from .predictor import to_bgr


def class_color(label):
    """A fixed BGR colour per class (hues spread by the golden ratio)."""
    red, green, blue = colorsys.hsv_to_rgb((label * 0.618033988749895) % 1.0, 0.85, 0.95)
    return int(blue * 255), int(green * 255), int(red * 255)


def draw_detections(img, dets, classes=None, thresh=0.3, is_show_label=True):
    """A copy of ``img`` with the detections ([K, 6] rows) scoring above ``thresh`` drawn."""
    canvas = to_bgr(img).copy()
    # text 0.5 high (OpenCV's unit) on COCO-sized pictures, smaller on small ones, so that
    # labels do not hide the objects of a 100-pixel image
    font_scale = float(np.clip(min(canvas.shape[:2]) / 960, 0.3, 0.5))
    for x1, y1, x2, y2, score, label in np.asarray(dets).reshape(-1, 6):
        if score < thresh:
            continue
        label = int(label)
        color = class_color(label)
        cv2.rectangle(canvas, (int(x1), int(y1)), (int(x2), int(y2)), color, 2)
        if is_show_label:
            name = classes[label] if classes is not None and label < len(classes) else str(label)
            _draw_label(canvas, "{} {:.2f}".format(name, score), int(x1), int(y1), color,
                        font_scale)
    return canvas


def _draw_label(canvas, text, x, y, color, font_scale):
    """White text on a box of ``color`` just above (x, y), kept inside the picture."""
    font = cv2.FONT_HERSHEY_SIMPLEX
    (text_w, text_h), _ = cv2.getTextSize(text, font, font_scale, 1)
    text_y = max(y, text_h + 2)
    cv2.rectangle(canvas, (x, text_y - text_h - 2), (x + text_w, text_y), color, -1)
    cv2.putText(canvas, text, (x, text_y - 2), font, font_scale, (255, 255, 255), 1, cv2.LINE_AA)
