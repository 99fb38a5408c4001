"""Offline demo: FCOS with a ResNet-18 (BN, trained from scratch) on the synthetic
COCO-format dataset that `make demo` generates (tools/make_synthetic_coco.py), sized to train
on a 2-core CPU in about ten minutes."""
from official.vision.detection import models


class CustomFCOSConfig(models.FCOSConfig):
    def __init__(self):
        super().__init__()
        self.backbone = "resnet18"
        self.backbone_pretrained = False
        self.backbone_norm = "BN"
        self.backbone_freeze_at = 0
        self.fpn_in_channels = [128, 256, 512]
        # a narrow pyramid and head keep a CPU training step short
        self.fpn_out_channels = 64
        self.fpn_top_in_channel = 64

        self.train_dataset = dict(name="synthetic", root="train", ann_file="annotations/train.json",
                                  remove_images_without_annotations=True)
        self.test_dataset = dict(name="synthetic", root="val", ann_file="annotations/val.json",
                                 remove_images_without_annotations=False)
        self.num_classes = 3

        self.train_image_short_size = (112, 128, 144)
        self.train_image_max_size = 192
        self.test_image_short_size = 128
        self.test_image_max_size = 192
        self.test_tta_short_sizes = (112, 144)

        self.basic_lr = 0.02 / 8
        self.nr_images_epoch = 400
        self.max_epoch = 6
        self.warm_iters = 30
        self.lr_decay_stages = [5]
        self.log_interval = 10


Net = models.FCOS
Cfg = CustomFCOSConfig
