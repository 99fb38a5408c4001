"""The released FCOS models, in one table (as torchvision's weight enums): name, the config
fields that differ from the base recipe (ResNet-50, 3x schedule), weight URL and COCO mAP.

The config modules (``configs/<name>.py``, what tools take with ``-f``), their hub factories,
``hubconf.py``, the fine-tuning lookup by name and the tests all read it from here.
"""
import dataclasses

from .cpu import prepare_cpu_process
from .errors import ConfigError
from .models import FCOS
from .utils.config_file import config_name
from .weights import pretrained

WEIGHTS_URL = "https://data.megengine.org.cn/models/weights/{}.pkl"


@dataclasses.dataclass(frozen=True)
class ReleasedModel:
    name: str  # the hub entry and config module name
    description: str
    overrides: dict  # FCOSConfig fields that differ from the base config
    weight_file: str  # the published file, without .pkl
    coco_map: float  # published COCO val2017 mAP@[.5:.95], 800/1333 test size

    @property
    def url(self):
        return WEIGHTS_URL.format(self.weight_file)


RELEASED_MODELS = {model.name: model for model in [
    ReleasedModel("fcos_res18_coco_3x_800size", "ResNet-18 backbone, 3x schedule",
                  dict(backbone="resnet18", fpn_in_channels=[128, 256, 512]),
                  "fcos_res18_coco_3x_800size_37dot6_adab0136", 37.6),
    ReleasedModel("fcos_res34_coco_3x_800size", "ResNet-34 backbone, 3x schedule",
                  dict(backbone="resnet34", fpn_in_channels=[128, 256, 512]),
                  "fcos_res34_coco_3x_800size_41dot0_8ba4633f", 41.0),
    ReleasedModel("fcos_res50_coco_3x_800size", "ResNet-50 backbone, 3x schedule", dict(),
                  "fcos_res50_coco_3x_800size_42dot2_b16f9c8b", 42.2),
    ReleasedModel("fcos_res101_coco_3x_800size", "ResNet-101 backbone, 3x schedule",
                  dict(backbone="resnet101"),
                  "fcos_res101_coco_3x_800size_44dot3_f38e8df1", 44.3),
    ReleasedModel("fcos_resx101_coco_2x_800size", "ResNeXt-101 32x8d backbone, 2x schedule",
                  dict(backbone="resnext101_32x8d", max_epoch=36, lr_decay_stages=[24, 32]),
                  "fcos_resx101_coco_2x_800size_44dot8_42ac8e82", 44.8),
]}


def hub_factory(name, config_class):
    """The ``@pretrained`` hub entry of a released model: ``factory(pretrained=False,
    **config_overrides) -> FCOS`` built from ``config_class``."""
    released = RELEASED_MODELS[name]

    def factory(**overrides):
        prepare_cpu_process()  # before the model's first convolution
        return FCOS(config_class().update(**overrides))

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = ("FCOS, {}, trained on COCO: {} mAP. Keyword arguments override config "
                       "fields.".format(released.description, released.coco_map))
    return pretrained(released.url)(factory)


def released_model_of_config(config_file):
    """The released model whose config module is ``config_file`` (by its file name)."""
    name = config_name(config_file)
    if name not in RELEASED_MODELS:
        raise ConfigError("{} is not the config of a released model ({}): its published weights "
                          "are unknown; pass -w WEIGHTS".format(config_file,
                                                                ", ".join(RELEASED_MODELS)))
    return RELEASED_MODELS[name]
