"""GroupNorm that MegEngine's NCHW88 layout pass can carry.

The pass rewrites convolutions, pooling, resizing and elementwise ops to work on channel blocks of
8 ([N, C/8, H, W, 8]) but hands other operators the blocked 5-D tensor unchanged, and the native
GroupNorm operator accepts 4-D input only ("Only supports input of dim 4"). ``PooledGroupNorm``
computes the same normalization from ops the pass does rewrite: a global average pool gives the
mean of every channel, small reshapes of those [N, C, 1, 1] statistics give the mean of every
group, and elementwise ops normalize. No full-size tensor leaves the blocked layout.
"""
import copy

import megengine.functional as F
import megengine.module as M

from ..errors import ConfigError
from ..utils.modules import replace_modules


class PooledGroupNorm(M.Module):
    """``M.GroupNorm`` (affine) from average pooling, reshapes of per-channel statistics and
    elementwise ops; it takes over the GroupNorm's ``weight`` and ``bias``."""

    def __init__(self, group_norm):
        super().__init__()
        if not group_norm.affine:
            raise ConfigError("PooledGroupNorm replaces affine GroupNorms only")
        self.num_groups = group_norm.num_groups
        self.num_channels = group_norm.num_channels
        self.eps = group_norm.eps
        self.weight = group_norm.weight
        self.bias = group_norm.bias

    def forward(self, x):
        centred = x - self._group_average(x)
        # two passes (mean, then the mean square of the centred values), as GroupNorm's own
        inv_std = 1 / F.sqrt(self._group_average(centred * centred) + self.eps)
        scale = inv_std * self.weight.reshape(1, -1, 1, 1)
        return centred * scale + self.bias.reshape(1, -1, 1, 1)

    def _group_average(self, x):
        """[N, C, 1, 1]: for every channel, the average of ``x`` over its group and all
        positions (channels of a group cover the same positions, so it is the mean of their
        means). Shapes are taken from the small statistics only: reading the shape of ``x``
        would make the layout pass convert all of ``x`` back to NCHW."""
        channels_per_group = self.num_channels // self.num_groups
        per_channel = F.adaptive_avg_pool2d(x, (1, 1))
        per_group = per_channel.reshape(-1, self.num_groups, channels_per_group).mean(
            axis=2, keepdims=True)
        # broadcast by addition: F.broadcast_to would need the batch size, a shape of x
        spread = per_group + F.zeros((1, 1, channels_per_group))
        return spread.reshape(-1, self.num_channels, 1, 1)


def pool_group_norms(model):
    """A deep copy of ``model`` with every ``M.GroupNorm`` replaced by a ``PooledGroupNorm``
    holding the same parameters; ``model`` is unchanged."""
    pooled = copy.deepcopy(model)
    replace_modules(pooled, lambda module: PooledGroupNorm(module)
                    if isinstance(module, M.GroupNorm) else None)
    return pooled
