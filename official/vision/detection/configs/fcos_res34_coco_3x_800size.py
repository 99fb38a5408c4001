"""FCOS, ResNet-34 backbone, 3x schedule, 800-pixel short side: 41.0 COCO mAP@[.5:.95] (published weights)."""
from official.vision.detection import models
from official.vision.detection.weights import pretrained


class CustomFCOSConfig(models.FCOSConfig):
    def __init__(self):
        super().__init__()
        self.backbone = "resnet34"
        self.fpn_in_channels = [128, 256, 512]


@pretrained(
    "https://data.megengine.org.cn/models/weights/"
    "fcos_res34_coco_3x_800size_41dot0_8ba4633f.pkl"
)
def fcos_res34_coco_3x_800size(**overrides):
    """FCOS, ResNet-34 backbone, 3x schedule, trained on COCO: 41.0 mAP. Keyword arguments override config fields."""
    return models.FCOS(CustomFCOSConfig().update(**overrides))


Net = models.FCOS
Cfg = CustomFCOSConfig
