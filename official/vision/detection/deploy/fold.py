"""Fold batch norms into the convolutions that feed them.

In inference mode every batch norm the configs offer (FrozenBN, BN and SyncBN, which normalize
with their running statistics) is an affine map per output channel, y = x * s + t, so
conv(x, W) + b followed by it equals conv(x, W * s) + (b * s + t). Folding removes one
elementwise pass over every backbone feature map from the compiled graphs, and leaves ONNX
export no BatchNorm operator to convert.
"""
import copy

import megengine as mge
import megengine.module as M

from ..errors import ConfigError
from ..layers.norm import FrozenBatchNorm2d
from ..utils.modules import replace_modules

# the trained batch norms; cpu/batch_norm.py's FastBatchNorm2d, which a model trained on the
# CPU carries until it is saved, is a BatchNorm2d
BATCH_NORMS = (M.BatchNorm2d, M.SyncBatchNorm)


def fold_batch_norms(model):
    """A deep copy of ``model`` in which every batch norm is its inference-mode affine map:
    merged into the convolution it directly follows, which then carries it as weight and bias,
    and replaced by ``M.Identity``. A batch norm that follows no convolution stays as a
    FrozenBatchNorm2d (one multiply-add, which every engine runs). ``model`` is unchanged."""
    folded = copy.deepcopy(model)
    replace_modules(folded, frozen_batch_norm)
    # collect first: replacing children while iterating modules() would skip or revisit some
    pairs = [pair for module in folded.modules() for pair in _conv_norm_pairs(module)]
    for parent, conv, norm_name in pairs:
        fold_into_conv(conv, getattr(parent, norm_name))
        setattr(parent, norm_name, M.Identity())
    return folded


def frozen_batch_norm(norm):
    """The FrozenBatchNorm2d computing what the BN or SyncBN ``norm`` computes in inference
    mode, from copies of its running statistics and affine parameters; None for any other
    module."""
    if not isinstance(norm, BATCH_NORMS):
        return None
    if not norm.track_running_stats:
        raise ConfigError("a batch norm without running statistics (track_running_stats=False) "
                          "normalizes every batch by its own statistics and cannot be folded "
                          "for inference; train it with track_running_stats=True")
    frozen = FrozenBatchNorm2d(norm.num_features, norm.eps)
    tensors = ("running_mean", "running_var") + (("weight", "bias") if norm.affine else ())
    # BatchNorm2d keeps them as [1, C, 1, 1], FrozenBatchNorm2d as [C]
    frozen.load_state_dict({name: getattr(norm, name).numpy().reshape(-1) for name in tensors},
                           strict=False)
    return frozen


def fold_into_conv(conv, norm):
    """Give ``conv`` the weight [..., Cin/g, kh, kw] and bias [1, Cout, 1, 1] of conv -> norm."""
    scale, shift = (value.numpy() for value in norm.scale_and_shift())
    weight = conv.weight.numpy()
    # output channels are the leading axes: (Cout,) or, for grouped convs, (groups, Cout/groups)
    out_axes = weight.shape[:-3]
    conv.weight = mge.Parameter(weight * scale.reshape(out_axes + (1, 1, 1)))
    bias = shift if conv.bias is None else conv.bias.numpy().reshape(-1) * scale + shift
    conv.bias = mge.Parameter(bias.reshape(1, -1, 1, 1))


def _conv_norm_pairs(module):
    """(parent, conv, norm attribute name) for each FrozenBN applied right after a conv.

    The three layouts of this package: a ``Sequential`` (ResNet shortcuts) where the norm is
    the next layer; a conv carrying its norm as ``.norm`` (the FPN's, official layout); and
    the ResNet stem and blocks, whose forward applies ``bn<k>`` to the output of ``conv<k>``
    (k a number).
    """
    if isinstance(module, M.Sequential):
        layers = [(key, getattr(module, key)) for key in module.layer_keys]
        return [
            (module, conv, norm_name)
            for (_, conv), (norm_name, norm) in zip(layers, layers[1:])
            if isinstance(conv, M.Conv2d) and isinstance(norm, FrozenBatchNorm2d)
        ]
    if isinstance(module, M.Conv2d):
        has_norm = isinstance(getattr(module, "norm", None), FrozenBatchNorm2d)
        return [(module, module, "norm")] if has_norm else []
    pairs = []
    for name, child in module.named_children():
        # numbered only: a plain ``bn`` beside a ``conv`` may follow anything
        numbered = name.startswith("bn") and name[len("bn"):].isdigit()
        conv = getattr(module, "conv" + name[len("bn"):], None) if numbered else None
        if isinstance(child, FrozenBatchNorm2d) and isinstance(conv, M.Conv2d):
            pairs.append((module, conv, name))
    return pairs
