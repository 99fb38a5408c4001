"""FCOSConfig: every hyper-parameter of the detector, named as in the official MegEngine package.

A released model's config subclasses it and overrides a few fields in ``__init__``; config files
written for the official package keep working because the attribute names are the same.
"""
from ..errors import ConfigError


class FCOSConfig:
    # pylint: disable=too-many-instance-attributes,too-many-statements
    def __init__(self):
        # ------------------------------ backbone ------------------------------ #
        self.backbone = "resnet50"  # resnet18/34/50/101 or resnext101_32x8d
        # ImageNet weights for the backbone when training starts (looked up by backbone name)
        self.backbone_pretrained = True
        self.backbone_norm = "FrozenBN"  # FrozenBN, BN, SyncBN or GN
        # stages that are not trained: 0 none, 1 the stem, 2 stem + res2, ... 5 all of res2-res5
        self.backbone_freeze_at = 2

        # -------------------------------- FPN --------------------------------- #
        self.fpn_norm = None  # None: convs with bias, as in the released models
        self.fpn_in_features = ["res3", "res4", "res5"]
        self.fpn_in_strides = [8, 16, 32]
        self.fpn_in_channels = [512, 1024, 2048]
        self.fpn_out_channels = 256
        self.fpn_top_in_feature = "p5"  # P6 is computed from the P5 output
        self.fpn_top_in_channel = 256

        # -------------------------------- data -------------------------------- #
        # relative paths resolve under `-d DATASET_DIR`/<name>/; absolute paths are used as given
        self.train_dataset = dict(
            name="coco",
            root="train2017",
            ann_file="annotations/instances_train2017.json",
            remove_images_without_annotations=True,
        )
        self.test_dataset = dict(
            name="coco",
            root="val2017",
            ann_file="annotations/instances_val2017.json",
            remove_images_without_annotations=False,
        )
        self.num_classes = 80
        self.img_mean = [103.530, 116.280, 123.675]  # BGR, 0-255 pixels
        self.img_std = [57.375, 57.120, 58.395]

        # ------------------------------- head --------------------------------- #
        self.stride = [8, 16, 32, 64, 128]
        self.in_features = ["p3", "p4", "p5", "p6", "p7"]
        self.anchor_offset = 0.5  # point at the cell centre: (j + 0.5) * stride
        # a ground-truth box is learnt on the level whose range holds max(l, t, r, b)
        self.object_sizes_of_interest = [
            [-1, 64], [64, 128], [128, 256], [256, 512], [512, float("inf")]
        ]
        self.center_sampling_radius = 1.5  # in strides; 0 turns centre sampling off
        self.cls_prior_prob = 0.01  # initial foreground probability of the classifier

        # ------------------------------- losses ------------------------------- #
        self.focal_loss_alpha = 0.25
        self.focal_loss_gamma = 2
        self.iou_loss_type = "giou"  # giou, iou or linear_iou
        self.loss_bbox_weight = 1.0

        # ------------------------------ training ------------------------------ #
        self.train_image_short_size = (640, 672, 704, 736, 768, 800)
        self.train_image_max_size = 1333
        # "sgd": momentum SGD, the COCO recipe; "adamw": Adam with decoupled weight decay and
        # betas (momentum, 0.999), much faster from scratch in a short schedule
        # (docs/training.md#the-optimizer)
        self.optimizer = "sgd"
        self.basic_lr = 0.01 / 16  # per image: the lr is basic_lr * total batch size
        self.momentum = 0.9
        self.weight_decay = 1e-4
        self.log_interval = 20
        # steps between checkpoints within an epoch (0: only the epoch_<N>.pkl after each
        # epoch): 6-12 minutes of COCO at 8 GPUs x 2 images, what a crash can cost at most
        # (docs/training.md#checkpoints-and-resuming); a multiple of log_interval
        self.checkpoint_interval = 1000
        self.nr_images_epoch = 80000
        self.max_epoch = 54
        self.warm_iters = 500
        self.lr_decay_rate = 0.1
        self.lr_decay_stages = [42, 50]  # epochs at which the lr is multiplied by the rate

        # ------------------------------- testing ------------------------------ #
        self.test_image_short_size = 800
        self.test_image_max_size = 1333
        self.test_max_boxes_per_image = 100
        self.test_vis_threshold = 0.3
        self.test_cls_threshold = 0.05
        self.test_nms = 0.6
        # test-time augmentation (--tta): extra short sides, and mirrored copies of every view
        self.test_tta_short_sizes = (640, 960)
        self.test_tta_flip = True

    def update(self, **overrides):
        """Set existing attributes by name and return self; an unknown name is an error."""
        unknown = sorted(k for k in overrides if not hasattr(self, k))
        if unknown:
            raise ConfigError(
                "unknown config option(s) {} for {}; valid names are the attributes of "
                "FCOSConfig".format(", ".join(unknown), type(self).__name__)
            )
        for key, value in overrides.items():
            setattr(self, key, value)
        return self

    def as_table(self):
        """Rows of (name, value) for logging a run's configuration."""
        return [(k, repr(v)) for k, v in sorted(vars(self).items())]
