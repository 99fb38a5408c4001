"""Image and box transforms for training and testing (NumPy / OpenCV)."""
import cv2
import numpy as np

from ..boxes import hflip_boxes, resized_hw, scale_boxes


def resize(image, short_size, max_size):
    """Bilinear resize by the short-side rule; returns the image and its new (h, w)."""
    height, width = resized_hw(image.shape[0], image.shape[1], short_size, max_size)
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR), (height, width)


def hflip(image, boxes):
    """Mirror an image and its boxes left-right."""
    return image[:, ::-1], hflip_boxes(boxes, image.shape[1])


class TrainTransform:
    """Multi-scale short-side resize (one of ``short_sizes``, capped by ``max_size``) and a
    horizontal flip with probability ``flip_prob``."""

    def __init__(self, short_sizes, max_size, flip_prob=0.5):
        self.short_sizes = list(np.atleast_1d(short_sizes))
        self.max_size = max_size
        self.flip_prob = flip_prob

    def __call__(self, sample, rng):
        """sample: dict from a dataset; rng: np.random.Generator. Returns a new dict with the
        resized image, boxes and ``im_info`` (resized_h, resized_w, original_h, original_w)."""
        image, boxes = sample["image"], sample["boxes"]
        short_size, flip = self.draw(rng)
        resized, new_hw = resize(image, short_size, self.max_size)
        boxes = scale_boxes(boxes, image.shape[:2], new_hw)
        if flip:
            resized, boxes = hflip(resized, boxes)
        im_info = (new_hw[0], new_hw[1], image.shape[0], image.shape[1])
        return dict(sample, image=resized, boxes=boxes, im_info=im_info)

    def draw(self, rng):
        """The random choices of one sample, (short size, flip), in the order ``__call__``
        makes them."""
        short_size = self.short_sizes[rng.integers(len(self.short_sizes))]
        return short_size, rng.random() < self.flip_prob

    def resized_size(self, height, width, rng):
        """(height, width) after the transform of an image of this size, drawing from ``rng``
        what ``__call__`` draws: the size of a batch is known without loading its images."""
        return resized_hw(height, width, self.draw(rng)[0], self.max_size)
