"""ResNet and ResNeXt backbones returning the res2-res5 feature maps.

Module names (conv1, bn1, layer1.0.conv1, layer1.0.downsample.0, ...) follow MegEngine's
classification ResNet, so the published detection and ImageNet weights load by name. The
ReLUs are modules (no tensors) so that CPU training can give them a faster gradient
(cpu/relu.py).
"""
import megengine.module as M

from ..errors import ConfigError
from ..layers.conv import Conv2d
from ..layers.norm import get_norm


def _shortcut(in_channels, out_channels, stride, norm):
    if in_channels == out_channels and stride == 1:
        return None
    return M.Sequential(
        Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
        norm(out_channels),
    )


class BasicBlock(M.Module):
    expansion = 1

    def __init__(self, in_channels, channels, stride, norm, groups=1, width_per_group=64):
        super().__init__()
        if groups != 1 or width_per_group != 64:
            raise ConfigError("BasicBlock supports only groups=1 and width_per_group=64")
        self.conv1 = Conv2d(in_channels, channels, 3, stride, padding=1, bias=False)
        self.bn1 = norm(channels)
        self.conv2 = Conv2d(channels, channels, 3, 1, padding=1, bias=False)
        self.bn2 = norm(channels)
        self.downsample = _shortcut(in_channels, channels, stride, norm)
        self.relu = M.ReLU()

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.bn2(self.conv2(x))
        return self.relu(x + identity)


class Bottleneck(M.Module):
    """1x1 reduce, 3x3 (strided, grouped for ResNeXt), 1x1 expand."""

    expansion = 4

    def __init__(self, in_channels, channels, stride, norm, groups=1, width_per_group=64):
        super().__init__()
        width = int(channels * (width_per_group / 64.0)) * groups
        out_channels = channels * self.expansion
        self.conv1 = Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = norm(width)
        self.conv2 = Conv2d(width, width, 3, stride, padding=1, groups=groups, bias=False)
        self.bn2 = norm(width)
        self.conv3 = Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = norm(out_channels)
        self.downsample = _shortcut(in_channels, out_channels, stride, norm)
        self.relu = M.ReLU()

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        x = self.bn3(self.conv3(x))
        return self.relu(x + identity)


# ImageNet classification weights of MegEngine's model hub, loaded into the backbone when
# training starts with cfg.backbone_pretrained (the other backbones need `-w`)
IMAGENET_WEIGHTS = {
    "resnet18": "https://data.megengine.org.cn/models/weights/resnet18_naiveaug_70312_78a63ca6.pkl",
    "resnet34": "https://data.megengine.org.cn/models/weights/resnet34_naiveaug_73960_fd9d869d.pkl",
    "resnet50": "https://data.megengine.org.cn/models/weights/resnet50_fbaug_76254_4e14b7d1.pkl",
}

# name -> (block, blocks per stage, groups, width per group)
ARCHITECTURES = {
    "resnet18": (BasicBlock, [2, 2, 2, 2], 1, 64),
    "resnet34": (BasicBlock, [3, 4, 6, 3], 1, 64),
    "resnet50": (Bottleneck, [3, 4, 6, 3], 1, 64),
    "resnet101": (Bottleneck, [3, 4, 23, 3], 1, 64),
    "resnext101_32x8d": (Bottleneck, [3, 4, 23, 3], 32, 8),
}


class ResNet(M.Module):
    """Stem (7x7/2 conv, norm, ReLU, 3x3/2 max pool) and four stages res2-res5.

    ``freeze_at`` k keeps the first k of (stem, res2, res3, res4, res5) fixed: their output is
    detached, so no gradient is computed for them, and ``frozen_modules`` names them for the
    optimizer.
    """

    def __init__(self, block, layers, norm="FrozenBN", freeze_at=0, groups=1,
                 width_per_group=64):
        super().__init__()
        norm = get_norm(norm)
        self.freeze_at = freeze_at
        self.conv1 = Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = norm(64)
        self.relu = M.ReLU()
        self.maxpool = M.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_channels = 64
        self.out_channels = []
        for index, (num_blocks, channels) in enumerate(zip(layers, [64, 128, 256, 512])):
            blocks = []
            for block_index in range(num_blocks):
                stride = 2 if index > 0 and block_index == 0 else 1
                blocks.append(block(in_channels, channels, stride, norm, groups, width_per_group))
                in_channels = channels * block.expansion
            setattr(self, "layer{}".format(index + 1), M.Sequential(*blocks))
            self.out_channels.append(in_channels)
        self._init_weights()

    def _init_weights(self):
        for module in self.modules():
            if isinstance(module, M.Conv2d):
                M.init.msra_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def stages(self):
        """The five stages in order: stem, res2, res3, res4, res5 (as lists of modules)."""
        return [[self.conv1, self.bn1], [self.layer1], [self.layer2], [self.layer3], [self.layer4]]

    def frozen_modules(self):
        return [m for stage in self.stages()[:self.freeze_at] for m in stage]

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        if self.freeze_at >= 1:
            x = x.detach()
        x = self.maxpool(x)
        features = {}
        for index in range(4):
            x = getattr(self, "layer{}".format(index + 1))(x)
            if self.freeze_at >= index + 2:
                x = x.detach()
            features["res{}".format(index + 2)] = x
        return features


def build_resnet(name, norm="FrozenBN", freeze_at=0):
    if name not in ARCHITECTURES:
        raise ConfigError(
            "unknown backbone {!r}; choose one of {}".format(name, ", ".join(ARCHITECTURES))
        )
    block, layers, groups, width_per_group = ARCHITECTURES[name]
    return ResNet(block, layers, norm, freeze_at, groups, width_per_group)
