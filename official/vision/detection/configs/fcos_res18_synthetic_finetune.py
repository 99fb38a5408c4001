"""The fine-tuning benchmark (`make finetune-benchmark`): the demo detector on four shape
classes instead of three, trained with one short schedule either from scratch or fine-tuned
from the demo's trained model (`tools/train.py --finetune`)."""
from official.vision.detection.configs import fcos_res18_synthetic_demo as demo


class FinetuneConfig(demo.Cfg):
    def __init__(self):
        super().__init__()
        self.num_classes = 4
        self.nr_images_epoch = 800
        self.max_epoch = 3
        self.lr_decay_stages = [2]


Net = demo.Net
Cfg = FinetuneConfig
