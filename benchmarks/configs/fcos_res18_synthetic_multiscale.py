"""The demo's model and recipe with multi-scale training on larger images, as a user with
images of varied sizes would set it (issue 32's measurements): short side 128, 144 or 160
per image, long side at most 256. The training step's benchmark on varied-size data
(docs/benchmarks.md, "Training step") uses it with a dataset of varied sizes and aspect ratios:

    python tools/make_synthetic_coco.py -o /tmp/varied/synthetic --train 800 --val 20 \
        --classes 3 --size 96-512 --max-objects 4 --object-scale 0.2-0.6
    python tools/benchmark.py -f benchmarks/configs/fcos_res18_synthetic_multiscale.py \
        --train -d /tmp/varied -b 8 -n 80 --warmup 0
"""
from official.vision.detection import models
from official.vision.detection.configs.fcos_res18_synthetic_demo import CustomFCOSConfig


class MultiScaleConfig(CustomFCOSConfig):
    def __init__(self):
        super().__init__()
        self.train_image_short_size = (128, 144, 160)
        self.train_image_max_size = 256


Net = models.FCOS
Cfg = MultiScaleConfig
