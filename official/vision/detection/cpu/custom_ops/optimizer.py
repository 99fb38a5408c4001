"""The optimizers' updates in one pass per parameter (optimizer.cpp), for the traced CPU step.

Each replaces, in place (``Tensor._reset``, as MegEngine's in-place operators do), a parameter
and its state by the operator's outputs: what megengine.optimizer.AdamW or SGD (momentum, no
Nesterov) compute, held where ``finite`` is 0.
"""
from megengine.core._imperative_rt.core2 import apply  # pylint: disable=no-name-in-module
from megengine.core.ops import custom


def _put(tensors, values):
    for tensor, value in zip(tensors, values):
        tensor._reset(value)  # pylint: disable=protected-access


def adamw_update(group, state, lr, finite):
    """AdamW's step of the parameters of ``group`` (a param group) with their ``state``
    (the optimizer's), learning rate ``lr`` and ``finite`` (float32 tensors of one value)."""
    (beta1, beta2), eps = group["betas"], group["eps"]
    op = custom.FcosAdamWUpdate(beta1=float(beta1), beta2=float(beta2), eps=float(eps),
                                weight_decay=float(group["weight_decay"]))
    for param in group["params"]:
        if param.grad is None:
            continue
        moments = state[param]
        tensors = (param, moments["exp_avg"], moments["exp_avg_sq"], moments["step"])
        _put(tensors, apply(op, param, param.grad, *tensors[1:], lr, finite))


def sgd_update(group, state, lr, finite):
    """Momentum SGD's step of the parameters of ``group``, as ``adamw_update``."""
    op = custom.FcosSGDUpdate(momentum=float(group["momentum"]),
                              weight_decay=float(group["weight_decay"]))
    for param in group["params"]:
        if param.grad is None:
            continue
        buffer = state[param]["momentum_buffer"]
        _put((param, buffer), apply(op, param, param.grad, buffer, lr, finite))
