"""FCOS, ResNet-18 backbone, 3x schedule, 800-pixel short side: 37.6 COCO mAP@[.5:.95] (published weights)."""
from official.vision.detection import models
from official.vision.detection.weights import pretrained


class CustomFCOSConfig(models.FCOSConfig):
    def __init__(self):
        super().__init__()
        self.backbone = "resnet18"
        self.fpn_in_channels = [128, 256, 512]


@pretrained(
    "https://data.megengine.org.cn/models/weights/"
    "fcos_res18_coco_3x_800size_37dot6_adab0136.pkl"
)
def fcos_res18_coco_3x_800size(**overrides):
    """FCOS, ResNet-18 backbone, 3x schedule, trained on COCO: 37.6 mAP. Keyword arguments override config fields."""
    return models.FCOS(CustomFCOSConfig().update(**overrides))


Net = models.FCOS
Cfg = CustomFCOSConfig
