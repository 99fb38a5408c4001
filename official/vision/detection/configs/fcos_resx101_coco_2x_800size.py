"""FCOS, ResNeXt-101 32x8d backbone, 2x schedule, 800-pixel short side: 44.8 COCO mAP@[.5:.95] (published weights)."""
from official.vision.detection import models
from official.vision.detection.weights import pretrained


class CustomFCOSConfig(models.FCOSConfig):
    def __init__(self):
        super().__init__()
        self.backbone = "resnext101_32x8d"
        self.max_epoch = 36
        self.lr_decay_stages = [24, 32]


@pretrained(
    "https://data.megengine.org.cn/models/weights/"
    "fcos_resx101_coco_2x_800size_44dot8_42ac8e82.pkl"
)
def fcos_resx101_coco_2x_800size(**overrides):
    """FCOS, ResNeXt-101 32x8d backbone, 2x schedule, trained on COCO: 44.8 mAP. Keyword arguments override config fields."""
    return models.FCOS(CustomFCOSConfig().update(**overrides))


Net = models.FCOS
Cfg = CustomFCOSConfig
