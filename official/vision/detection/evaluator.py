"""DetEvaluator: the model hub's face of pre-processing, prediction, COCO formatting and
drawing, each of which lives in its own module (predictor.py, postprocess.py, data/coco.py,
visualize.py)."""
from .boxes import resized_hw
from .data.coco import coco_results
from .data.coco_categories import COCO_CATEGORY_IDS
from .errors import ConfigError
from .images import to_bgr
from .predictor import Predictor, process_inputs
from .visualize import class_color, draw_detections


class DetEvaluator:
    """Wraps a detector with ``cfg`` and ``inference(image, im_info) -> (scores [N, P, K],
    boxes [N, P, 4])``: the eager ``FCOS`` or an engine from ``deploy``."""

    get_hw_by_short_size = staticmethod(resized_hw)
    to_bgr = staticmethod(to_bgr)
    process_inputs = staticmethod(process_inputs)
    class_color = staticmethod(class_color)
    vis_det = staticmethod(draw_detections)

    def __init__(self, model):
        self.model = model
        self.predictor = Predictor(model)
        self.cfg = self.predictor.cfg

    def predict(self, image, im_info):
        """Detections of a batch: one [K, 6] float32 array (x1, y1, x2, y2, score, class
        index) for a batch of one, a list of them otherwise."""
        detections = self.predictor.predict(image, im_info)
        return detections[0] if len(detections) == 1 else detections

    def predict_images(self, images, tta=False):
        """Detections ([K, 6] each) of BGR images at the config's test size (see
        ``Predictor.predict_images``)."""
        return self.predictor.predict_images(images, tta)

    def views(self, tta):
        """(short_size, flip) of each test-time view."""
        return self.predictor.views(tta)

    def detections(self, scores, boxes):
        """Threshold, NMS and top-k of each image's NumPy [P, K] scores and [P, 4] boxes."""
        return self.predictor.detections(scores, boxes)

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
                    "has {} classes, not COCO's 80".format(cfg.num_classes))
            category_ids = COCO_CATEGORY_IDS
        return coco_results(results, category_ids)
