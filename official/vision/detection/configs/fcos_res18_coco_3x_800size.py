"""A released model: FCOS, ResNet-18 backbone, 3x schedule, 800-pixel short side.

Its config fields, weight URL and COCO mAP are written once, in model_zoo.py."""
from official.vision.detection import models
from official.vision.detection.model_zoo import RELEASED_MODELS, hub_factory


class CustomFCOSConfig(models.FCOSConfig):
    def __init__(self):
        super().__init__()
        self.update(**RELEASED_MODELS["fcos_res18_coco_3x_800size"].overrides)


fcos_res18_coco_3x_800size = hub_factory("fcos_res18_coco_3x_800size", CustomFCOSConfig)

Net = models.FCOS
Cfg = CustomFCOSConfig
