"""DetEvaluator: pre-processing, detections from a model, COCO formatting and drawing."""
import colorsys

import cv2
import numpy as np

from .data.coco_categories import COCO_CATEGORY_IDS
from .data.collate import stack_padded
from .boxes import group_by_padded_size, hflip_boxes, resized_hw
from .data.transforms import resize
from .errors import ConfigError
from .postprocess import detect


def _to_numpy(value):
    return value if isinstance(value, np.ndarray) else value.numpy()


class DetEvaluator:
    """Wraps a detector with ``cfg`` and ``inference(image, im_info) -> (scores [N, P, K],
    boxes [N, P, 4])``: the eager ``FCOS`` or a compiled model from ``deploy``."""

    def __init__(self, model):
        self.model = model
        self.cfg = model.cfg

    # ---------------------------- pre-processing ---------------------------- #
    @staticmethod
    def get_hw_by_short_size(im_height, im_width, short_size, max_size):
        """Resized (height, width): the short side becomes ``short_size`` unless the long side
        would pass ``max_size``, in which case the long side becomes ``max_size``."""
        return resized_hw(im_height, im_width, short_size, max_size)

    @staticmethod
    def to_bgr(img):
        """A 3-channel BGR view of a BGR, grayscale or BGRA image array."""
        if img is None:
            raise ConfigError(
                "image is None: cv2.imread returns None for a missing or unreadable file; "
                "check the path"
            )
        img = np.asarray(img)
        if img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 1):
            return cv2.cvtColor(img.reshape(img.shape[:2]), cv2.COLOR_GRAY2BGR)
        if img.ndim == 3 and img.shape[2] == 4:
            return cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
        if img.ndim != 3 or img.shape[2] != 3:
            raise ConfigError(
                "expected an image of shape (h, w), (h, w, 1), (h, w, 3) or (h, w, 4), got "
                "{}".format(img.shape)
            )
        return img

    @staticmethod
    def process_inputs(img, short_size, max_size, flip=False):
        """Resize (and optionally flip) one image for the model.

        Returns data float32 [1, 3, rh, rw] (BGR, 0-255) and im_info float32
        [[rh, rw, h, w]].
        """
        img = DetEvaluator.to_bgr(img)
        height, width = img.shape[:2]
        resized, (resized_h, resized_w) = resize(img, short_size, max_size)
        if flip:
            resized = resized[:, ::-1]
        data = np.ascontiguousarray(resized.transpose(2, 0, 1)[None], dtype=np.float32)
        im_info = np.array([[resized_h, resized_w, height, width]], dtype=np.float32)
        return data, im_info

    # ------------------------------- detection ------------------------------ #
    def predict(self, image, im_info):
        """Detections of a batch: one [K, 6] float32 array (x1, y1, x2, y2, score, class
        index) for a batch of one, a list of them otherwise."""
        scores, boxes = self.model.inference(image, im_info)
        detections = self.detections(_to_numpy(scores), _to_numpy(boxes))
        return detections[0] if len(detections) == 1 else detections

    def predict_images(self, images, tta=False):
        """Detections ([K, 6] each) of BGR images at the config's test size.

        Images that share a padded input size run in one forward. With ``tta``, every image is
        also run at ``cfg.test_tta_short_sizes`` and (``cfg.test_tta_flip``) mirrored; the
        candidates of all views are merged before one NMS per image.
        """
        images = [self.to_bgr(image) for image in images]
        scores = [[] for _ in images]
        boxes = [[] for _ in images]
        for short_size, flip in self.views(tta):
            inputs = [self.process_inputs(image, short_size, self.cfg.test_image_max_size, flip)
                      for image in images]
            for group in group_by_padded_size([data.shape[2:] for data, _ in inputs]):
                batch = stack_padded([inputs[index][0][0] for index in group])
                im_info = np.concatenate([inputs[index][1] for index in group])
                view_scores, view_boxes = self.model.inference(batch, im_info)
                view_scores, view_boxes = _to_numpy(view_scores), _to_numpy(view_boxes)
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
        return [
            detect(s, b, cfg.test_cls_threshold, cfg.test_nms, cfg.test_max_boxes_per_image)
            for s, b in zip(scores, boxes)
        ]

    # ------------------------------ formatting ------------------------------ #
    @staticmethod
    def format(results, cfg, category_ids=None):
        """COCO result dicts from records {"image_id": id, "det_res": [K, 6] array}.

        ``category_ids[label]`` is the annotation-file id of each label; by default the COCO ids
        of the 80 released classes.
        """
        if category_ids is None:
            if cfg.num_classes != len(COCO_CATEGORY_IDS):
                raise ConfigError(
                    "pass category_ids (the dataset's category id of each label): the model "
                    "has {} classes, not COCO's 80".format(cfg.num_classes)
                )
            category_ids = COCO_CATEGORY_IDS
        formatted = []
        for record in results:
            for x1, y1, x2, y2, score, label in np.asarray(record["det_res"]).reshape(-1, 6):
                formatted.append({
                    "image_id": record["image_id"],
                    "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                    "score": float(score),
                    "category_id": int(category_ids[int(label)]),
                })
        return formatted

    # ------------------------------- drawing -------------------------------- #
    @staticmethod
    def class_color(label):
        """A fixed BGR colour per class (hues spread by the golden ratio)."""
        red, green, blue = colorsys.hsv_to_rgb((label * 0.618033988749895) % 1.0, 0.85, 0.95)
        return int(blue * 255), int(green * 255), int(red * 255)

    @staticmethod
    def vis_det(img, dets, classes=None, thresh=0.3, is_show_label=True):
        """A copy of ``img`` with the detections scoring above ``thresh`` drawn on it."""
        canvas = DetEvaluator.to_bgr(img).copy()
        # text 0.5 high (OpenCV's unit) on COCO-sized pictures, smaller on small ones, so that
        # labels do not hide the objects of a 100-pixel image
        font, font_scale = cv2.FONT_HERSHEY_SIMPLEX, float(np.clip(min(canvas.shape[:2]) / 960,
                                                                    0.3, 0.5))
        for x1, y1, x2, y2, score, label in np.asarray(dets).reshape(-1, 6):
            if score < thresh:
                continue
            label = int(label)
            color = DetEvaluator.class_color(label)
            top_left, bottom_right = (int(x1), int(y1)), (int(x2), int(y2))
            cv2.rectangle(canvas, top_left, bottom_right, color, 2)
            if is_show_label:
                name = classes[label] if classes is not None and label < len(classes) else str(label)
                text = "{} {:.2f}".format(name, score)
                (text_w, text_h), _ = cv2.getTextSize(text, font, font_scale, 1)
                text_y = max(int(y1), text_h + 2)
                cv2.rectangle(canvas, (int(x1), text_y - text_h - 2), (int(x1) + text_w, text_y),
                              color, -1)
                cv2.putText(canvas, text, (int(x1), text_y - 2), font, font_scale, (255, 255, 255),
                            1, cv2.LINE_AA)
        return canvas
