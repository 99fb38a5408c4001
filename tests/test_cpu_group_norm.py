"""The package's GroupNorm operators (cpu/custom_ops/group_norm.cpp) against MegEngine's
GroupNorm and a float64 computation by hand."""
import numpy as np
import pytest
import megengine as mge
import megengine.module as M
from megengine.autodiff import GradManager

from official.vision.detection.cpu import fast_training_modules
from official.vision.detection.cpu.custom_ops import library
from official.vision.detection.cpu.custom_ops.group_norm import FusedGroupNorm
from official.vision.detection.cpu.device import default_cpu_threads


def training_step(norm, x, grad_output):
    """Output and gradients (input, weight, bias) of one step."""
    # FusedGroupNorm is MegEngine's where the operators do not load: they must, to be tested
    assert library.load() is not None, library.unavailable_reason()
    x = mge.Parameter(x)
    gm = GradManager().attach([x, norm.weight, norm.bias])
    with gm:
        y = norm(x)
        gm.backward(y, mge.tensor(grad_output))
    return [y.numpy(), x.grad.numpy(), norm.weight.grad.numpy(), norm.bias.grad.numpy()]


def affine_pair(groups, channels, rng):
    reference = M.GroupNorm(groups, channels)
    fused = FusedGroupNorm.of(M.GroupNorm(groups, channels))
    weight = rng.rand(channels).astype("float32") + 0.5
    bias = rng.randn(channels).astype("float32")
    for norm in (reference, fused):
        norm.weight[...] = mge.tensor(weight)
        norm.bias[...] = mge.tensor(bias)
    return reference, fused


# the head's P3 (on both threads) and a P7-sized input (on one; the head's own groups of two
# values there: below), one group, a group per channel, and groups of odd sizes
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("groups, shape", [(32, (8, 64, 12, 16)), (8, (8, 64, 1, 1)),
                                           (1, (2, 6, 5, 7)), (6, (2, 6, 5, 7)),
                                           (3, (3, 9, 4, 3))])
def test_training_equals_megengine_groupnorm(threads, groups, shape):
    rng = np.random.RandomState(0)
    x = (rng.randn(*shape) * 2 + 3).astype("float32")
    grad_output = rng.randn(*shape).astype("float32")
    with default_cpu_threads(threads):
        reference, fused = affine_pair(groups, shape[1], rng)
        expected = training_step(reference, x, grad_output)
        actual = training_step(fused, x, grad_output)
    for want, got in zip(expected, actual):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def group_norm_by_hand(x, groups, weight, grad_output, eps=1e-5):
    """Output and input gradient of group normalization, in float64."""
    n, c = x.shape[:2]
    grouped = x.astype(np.float64).reshape(n, groups, -1)
    grad = (grad_output.astype(np.float64) * weight.reshape(1, c, 1, 1)).reshape(n, groups, -1)
    centred = grouped - grouped.mean(axis=2, keepdims=True)
    inv_std = 1 / np.sqrt((centred ** 2).mean(axis=2, keepdims=True) + eps)
    normalized = centred * inv_std
    grad_input = inv_std * (grad - grad.mean(axis=2, keepdims=True)
                            - normalized * (grad * normalized).mean(axis=2, keepdims=True))
    return ((normalized.reshape(x.shape) * weight.reshape(1, c, 1, 1)),
            grad_input.reshape(x.shape))


@pytest.mark.parametrize("groups, shape, offset, spread", [
    (4, (4, 8, 5, 7), 20, 0.02),  # a mean 1000x the spread: no cancellation
    (32, (8, 64, 1, 1), 3, 2)])  # the head's P7: groups of two values
def test_results_stay_accurate_where_float32_is_fragile(groups, shape, offset, spread):
    rng = np.random.RandomState(1)
    x = (rng.randn(*shape) * spread + offset).astype("float32")
    grad_output = rng.randn(*x.shape).astype("float32")
    fused = FusedGroupNorm.of(M.GroupNorm(groups, shape[1]))
    expected_output, expected_grad = group_norm_by_hand(x, groups, np.ones(shape[1]),
                                                        grad_output)
    output, grad_input = training_step(fused, x, grad_output)[:2]
    np.testing.assert_allclose(output, expected_output, atol=1e-3)
    # (MegEngine's own kernel is off by 2e-4 of the gradients' scale at P7)
    np.testing.assert_allclose(grad_input, expected_grad, atol=1e-3 * np.abs(expected_grad).max())


def test_the_training_modules_share_the_groupnorms_tensors_and_eval_is_megengines():
    model = M.Sequential(M.Conv2d(3, 8, 3, padding=1), M.GroupNorm(4, 8), M.ReLU())
    before = model.state_dict()
    weight = model[1].weight
    fast_training_modules(model, convolutions="onednn")
    assert type(model[1]) is FusedGroupNorm and model[1].weight is weight
    assert sorted(model.state_dict()) == sorted(before)
    x = mge.tensor(np.random.RandomState(2).randn(2, 8, 6, 5).astype("float32"))
    model.eval()
    reference = M.Sequential(M.Conv2d(3, 8, 3, padding=1), M.GroupNorm(4, 8), M.ReLU())
    reference.load_state_dict(before)
    reference.eval()
    np.testing.assert_array_equal(model[1](x).numpy(), reference[1](x).numpy())
