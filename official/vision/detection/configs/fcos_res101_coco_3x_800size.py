"""FCOS, ResNet-101 backbone, 3x schedule, 800-pixel short side: 44.3 COCO mAP@[.5:.95] (published weights)."""
from official.vision.detection import models
from official.vision.detection.weights import pretrained


class CustomFCOSConfig(models.FCOSConfig):
    def __init__(self):
        super().__init__()
        self.backbone = "resnet101"


@pretrained(
    "https://data.megengine.org.cn/models/weights/"
    "fcos_res101_coco_3x_800size_44dot3_f38e8df1.pkl"
)
def fcos_res101_coco_3x_800size(**overrides):
    """FCOS, ResNet-101 backbone, 3x schedule, trained on COCO: 44.3 mAP. Keyword arguments override config fields."""
    return models.FCOS(CustomFCOSConfig().update(**overrides))


Net = models.FCOS
Cfg = CustomFCOSConfig
