"""FCOS head shared over the pyramid levels: class logits, ltrb distances, centerness."""
import math

import numpy as np

import megengine as mge
import megengine.functional as F
import megengine.module as M

from .conv import Conv2d


def _tower(channels, num_convs):
    layers = []
    for _ in range(num_convs):
        layers += [Conv2d(channels, channels, 3, padding=1), M.GroupNorm(32, channels), M.ReLU()]
    return M.Sequential(*layers)


class PointHead(M.Module):
    """Two towers of ``num_convs`` x (3x3 conv, GN(32), ReLU): one for classification, one for
    regression, which also feeds the centerness branch. A learnable scale per level multiplies
    the regression before the ReLU; the result is multiplied by the level's stride.
    """

    def __init__(self, in_channels, num_classes, strides, prior_prob=0.01, num_convs=4):
        super().__init__()
        self.strides = list(strides)
        self.cls_subnet = _tower(in_channels, num_convs)
        self.bbox_subnet = _tower(in_channels, num_convs)
        self.cls_score = Conv2d(in_channels, num_classes, 3, padding=1)
        self.bbox_pred = Conv2d(in_channels, 4, 3, padding=1)
        self.ctrness = Conv2d(in_channels, 1, 3, padding=1)
        for module in self.modules():
            if isinstance(module, M.Conv2d):
                M.init.normal_(module.weight, mean=0, std=0.01)
                M.init.zeros_(module.bias)
        # start every class at probability prior_prob so the focal loss is stable at first
        M.init.fill_(self.cls_score.bias, -math.log((1 - prior_prob) / prior_prob))
        self.scale_list = mge.Parameter(np.ones(len(self.strides), dtype=np.float32))

    def forward(self, features):
        """features: list of [N, C, H_l, W_l]. Returns three lists over levels:
        logits [N, K, H_l, W_l], ltrb distances in pixels [N, 4, H_l, W_l], centerness logits
        [N, 1, H_l, W_l]."""
        logits, offsets, ctrness = [], [], []
        for level, (feature, stride) in enumerate(zip(features, self.strides)):
            logits.append(self.cls_score(self.cls_subnet(feature)))
            reg = self.bbox_subnet(feature)
            offsets.append(F.relu(self.bbox_pred(reg) * self.scale_list[level]) * stride)
            ctrness.append(self.ctrness(reg))
        return logits, offsets, ctrness
