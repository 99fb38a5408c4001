"""Fold frozen batch norms into the convolutions that feed them.

A FrozenBatchNorm2d after a convolution is an affine map per output channel, y = x * s + t, so
conv(x, W) + b followed by it equals conv(x, W * s) + (b * s + t). Folding removes one
elementwise pass over every backbone feature map from the compiled graph.
"""
import copy

import megengine as mge
import megengine.module as M

from ..layers.norm import FrozenBatchNorm2d


def fold_frozen_bn(model):
    """A deep copy of ``model`` in which every FrozenBatchNorm2d that directly follows a
    convolution is merged into it and replaced by ``M.Identity``; ``model`` is unchanged."""
    folded = copy.deepcopy(model)
    # collect first: replacing children while iterating modules() would skip or revisit some
    pairs = [pair for module in folded.modules() for pair in _conv_norm_pairs(module)]
    for parent, conv, norm_name in pairs:
        fold_into_conv(conv, getattr(parent, norm_name))
        setattr(parent, norm_name, M.Identity())
    return folded


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
    the ResNet stem and blocks, whose forward applies ``bn<k>`` to the output of ``conv<k>``.
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
        conv = getattr(module, "conv" + name[len("bn"):], None) if name.startswith("bn") else None
        if isinstance(child, FrozenBatchNorm2d) and isinstance(conv, M.Conv2d):
            pairs.append((module, conv, name))
    return pairs
