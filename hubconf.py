"""MegEngine hub entry points of the FCOS detectors.

    model = megengine.hub.load("megengine/models", "fcos_res50_coco_3x_800size", pretrained=True)
    api = megengine.hub.import_module("megengine/models", git_host="github.com")
    data, im_info = api.DetEvaluator.process_inputs(cv2.imread("cat.jpg"), 800, 1333)
    scores, boxes = model(image=megengine.tensor(data), im_info=megengine.tensor(im_info))
"""
from official.vision.detection.configs.fcos_res18_coco_3x_800size import (  # noqa: F401
    fcos_res18_coco_3x_800size,
)
from official.vision.detection.configs.fcos_res34_coco_3x_800size import (  # noqa: F401
    fcos_res34_coco_3x_800size,
)
from official.vision.detection.configs.fcos_res50_coco_3x_800size import (  # noqa: F401
    fcos_res50_coco_3x_800size,
)
from official.vision.detection.configs.fcos_res101_coco_3x_800size import (  # noqa: F401
    fcos_res101_coco_3x_800size,
)
from official.vision.detection.configs.fcos_resx101_coco_2x_800size import (  # noqa: F401
    fcos_resx101_coco_2x_800size,
)
from official.vision.detection.evaluator import DetEvaluator  # noqa: F401
from official.vision.detection.models import FCOS, FCOSConfig  # noqa: F401

dependencies = ["megengine", "numpy", "cv2"]
