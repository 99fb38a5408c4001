"""FCOS, ResNet-50 backbone, 3x schedule, 800-pixel short side: 42.2 COCO mAP@[.5:.95]
(published weights). The base FCOSConfig is this model's recipe."""
from official.vision.detection import models
from official.vision.detection.weights import pretrained


@pretrained(
    "https://data.megengine.org.cn/models/weights/"
    "fcos_res50_coco_3x_800size_42dot2_b16f9c8b.pkl"
)
def fcos_res50_coco_3x_800size(**overrides):
    """FCOS, ResNet-50 backbone, trained on COCO: 42.2 mAP. Keyword arguments override
    config fields."""
    return models.FCOS(models.FCOSConfig().update(**overrides))


Net = models.FCOS
Cfg = models.FCOSConfig
