"""Feature Pyramid Network on res3-res5, with P6/P7 computed from the P5 output."""
import math

import megengine.functional as F
import megengine.module as M

from .conv import Conv2d
from .norm import get_norm


class LastLevelP6P7(M.Module):
    """P6 = 3x3/2 conv of the input; P7 = 3x3/2 conv of ReLU(P6)."""

    def __init__(self, in_channels, out_channels, in_feature="p5"):
        super().__init__()
        self.in_feature = in_feature
        self.p6 = Conv2d(in_channels, out_channels, 3, stride=2, padding=1)
        self.p7 = Conv2d(out_channels, out_channels, 3, stride=2, padding=1)

    def forward(self, x):
        p6 = self.p6(x)
        return [p6, self.p7(F.relu(p6))]


class FPN(M.Module):
    """Top-down pathway with lateral connections over the bottom-up features.

    Per input stage s (stride 2**s): ``fpn_lateral<s>`` (1x1) and ``fpn_output<s>`` (3x3).
    The merged coarser map is resized bilinearly to the finer lateral map's size and added.
    Returns a dict p3..p7 (for strides 8..128 with the default top block).
    """

    def __init__(self, bottom_up, in_features, in_channels, in_strides, out_channels=256,
                 norm=None, top_block=None):
        super().__init__()
        self.bottom_up = bottom_up
        self.in_features = list(in_features)
        self.stages = [int(math.log2(s)) for s in in_strides]
        norm = get_norm(norm)
        for stage, channels in zip(self.stages, in_channels):
            lateral = Conv2d(channels, out_channels, 1, bias=norm is None,
                             norm=None if norm is None else norm(out_channels))
            output = Conv2d(out_channels, out_channels, 3, padding=1, bias=norm is None,
                            norm=None if norm is None else norm(out_channels))
            for conv in (lateral, output):
                M.init.msra_normal_(conv.weight, mode="fan_in")
                if conv.bias is not None:
                    M.init.zeros_(conv.bias)
            setattr(self, "fpn_lateral{}".format(stage), lateral)
            setattr(self, "fpn_output{}".format(stage), output)
        self.top_block = top_block

    def forward(self, x):
        bottom_up = self.bottom_up(x)
        outputs = {}
        merged = None
        for stage, name in reversed(list(zip(self.stages, self.in_features))):
            lateral = getattr(self, "fpn_lateral{}".format(stage))(bottom_up[name])
            if merged is not None:
                lateral = lateral + F.nn.interpolate(
                    merged, size=lateral.shape[2:], mode="bilinear"
                )
            merged = lateral
            outputs["p{}".format(stage)] = getattr(self, "fpn_output{}".format(stage))(merged)
        if self.top_block is not None:
            source = outputs.get(self.top_block.in_feature, bottom_up.get(self.top_block.in_feature))
            last = self.stages[-1]
            for offset, feature in enumerate(self.top_block(source)):
                outputs["p{}".format(last + offset + 1)] = feature
        return outputs
