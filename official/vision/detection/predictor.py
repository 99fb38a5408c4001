"""From BGR images to detections with any engine: pre-processing, batching by padded size,
test-time augmentation, then post-processing.

An engine has ``cfg`` and ``inference(image, im_info) -> (scores [N, P, K], boxes [N, P, 4])``
as NumPy arrays: the traced, Lite and ONNX Runtime detectors of ``deploy``. The eager ``FCOS``
returns MegEngine tensors; ``as_engine`` gives it the same NumPy interface, so nothing past
this point converts.
"""
import numpy as np
import megengine.module as M

from .boxes import group_by_padded_size, hflip_boxes
from .data.collate import stack_padded
from .data.transforms import resize
from .images import to_bgr
from .postprocess import detect


class EagerEngine:
    """An eager model (``FCOS``) behind the NumPy engine interface."""

    def __init__(self, model):
        self.model = model
        self.cfg = model.cfg

    def inference(self, image, im_info):
        scores, boxes = self.model.inference(image, im_info)
        return scores.numpy(), boxes.numpy()


def as_engine(model):
    """``model`` itself when it is an engine already, else the eager model wrapped."""
    return EagerEngine(model) if isinstance(model, M.Module) else model


def process_inputs(img, short_size, max_size, flip=False):
    """Resize (and optionally mirror) one image for the model: data float32 [1, 3, rh, rw]
    (BGR, 0-255) and im_info float32 [[rh, rw, h, w]]."""
    img = to_bgr(img)
    height, width = img.shape[:2]
    resized, (resized_h, resized_w) = resize(img, short_size, max_size)
    if flip:
        resized = resized[:, ::-1]
    data = np.ascontiguousarray(resized.transpose(2, 0, 1)[None], dtype=np.float32)
    im_info = np.array([[resized_h, resized_w, height, width]], dtype=np.float32)
    return data, im_info


class Predictor:
    """Detections of an engine (or eager model) at its config's test size."""

    def __init__(self, model):
        self.engine = as_engine(model)
        self.cfg = self.engine.cfg

    def predict(self, image, im_info):
        """[K, 6] detections (x1, y1, x2, y2, score, class index) of each image of a batch."""
        return self.detections(*self.engine.inference(image, im_info))

    def predict_images(self, images, tta=False):
        """Detections ([K, 6] each) of BGR images. Images that share a padded input size run
        in one forward. With ``tta``, every image also runs at ``cfg.test_tta_short_sizes``
        and (``cfg.test_tta_flip``) mirrored; the candidates of all views are merged before
        one NMS per image."""
        images = [to_bgr(image) for image in images]
        scores, boxes = [[] for _ in images], [[] for _ in images]
        for short_size, flip in self.views(tta):
            inputs = [process_inputs(image, short_size, self.cfg.test_image_max_size, flip)
                      for image in images]
            for group in group_by_padded_size([data.shape[2:] for data, _ in inputs]):
                batch = stack_padded([inputs[index][0][0] for index in group])
                im_info = np.concatenate([inputs[index][1] for index in group])
                view_scores, view_boxes = self.engine.inference(batch, im_info)
                for row, index in enumerate(group):
                    scores[index].append(view_scores[row])
                    boxes[index].append(hflip_boxes(view_boxes[row], im_info[row, 3]) if flip
                                        else view_boxes[row])
        return self.detections([np.concatenate(s) for s in scores],
                               [np.concatenate(b) for b in boxes])

    def views(self, tta):
        """(short_size, flip) of each test-time view; just the plain test size without tta."""
        if not tta:
            return [(self.cfg.test_image_short_size, False)]
        sizes = sorted(set([self.cfg.test_image_short_size] + list(self.cfg.test_tta_short_sizes)))
        flips = [False, True] if self.cfg.test_tta_flip else [False]
        return [(size, flip) for size in sizes for flip in flips]

    def detections(self, scores, boxes):
        """Score threshold, batched NMS and top-k for each image's [P, K] scores and [P, 4]
        boxes (sequences over images)."""
        cfg = self.cfg
        return [detect(s, b, cfg.test_cls_threshold, cfg.test_nms, cfg.test_max_boxes_per_image)
                for s, b in zip(scores, boxes)]
