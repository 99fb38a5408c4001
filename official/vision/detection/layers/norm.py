"""Normalization layers selected by name."""
import numpy as np

import megengine as mge
import megengine.functional as F
import megengine.module as M

from ..errors import ConfigError


class FrozenBatchNorm2d(M.Module):
    """BatchNorm2d whose statistics and affine parameters never change.

    The four tensors are buffers, not Parameters, so no optimizer sees them; they keep the
    names and [C] shapes of MegEngine's BatchNorm2d so published weights load unchanged.
    """

    def __init__(self, num_features, eps=1e-5):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.weight = mge.tensor(np.ones(num_features, dtype=np.float32))
        self.bias = mge.tensor(np.zeros(num_features, dtype=np.float32))
        self.running_mean = mge.tensor(np.zeros(num_features, dtype=np.float32))
        self.running_var = mge.tensor(np.ones(num_features, dtype=np.float32))

    def scale_and_shift(self):
        """The affine map this layer applies: y = x * scale + shift, both of shape [C]."""
        scale = self.weight * F.pow(self.running_var + self.eps, -0.5)
        shift = self.bias - self.running_mean * scale
        return scale, shift

    def forward(self, x):
        scale, shift = self.scale_and_shift()
        return x * scale.reshape(1, -1, 1, 1) + shift.reshape(1, -1, 1, 1)


NORMS = {
    "FrozenBN": FrozenBatchNorm2d,
    "BN": M.BatchNorm2d,
    "SyncBN": M.SyncBatchNorm,
    "GN": lambda channels: M.GroupNorm(32, channels),
}


def get_norm(name):
    """The constructor (channels -> module) of a normalization by name; None for no norm."""
    if name is None:
        return None
    if name not in NORMS:
        raise ConfigError(
            "unknown norm {!r}; choose one of {} or None".format(name, ", ".join(NORMS))
        )
    return NORMS[name]

