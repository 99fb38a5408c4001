"""Image arrays as the detector and the drawings take them: 3-channel BGR (OpenCV's order)."""
import cv2
import numpy as np

from .errors import ConfigError

# the image files a folder is searched for (inference inputs, converted datasets)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def to_bgr(img):
    """A 3-channel BGR view of a BGR, grayscale or BGRA image array."""
    if img is None:
        raise ConfigError("image is None: cv2.imread returns None for a missing or unreadable "
                          "file; check the path")
    img = np.asarray(img)
    if img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 1):
        return cv2.cvtColor(img.reshape(img.shape[:2]), cv2.COLOR_GRAY2BGR)
    if img.ndim == 3 and img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ConfigError("expected an image of shape (h, w), (h, w, 1), (h, w, 3) or (h, w, 4), "
                          "got {}".format(img.shape))
    return img
