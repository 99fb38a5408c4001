import numpy as np
import pytest
import megengine as mge
from megengine.optimizer import SGD

from official.vision.detection.cpu.sgd import InplaceSGD


def run_steps(optimizer_class, momentum, weight_decay, state=None):
    """Parameters after three steps (the lr changing between them), and the state dict."""
    rng = np.random.RandomState(0)
    params = [mge.Parameter(rng.randn(3, 4).astype("float32")),
              mge.Parameter(rng.randn(5).astype("float32")), mge.Parameter(np.ones(2, "float32"))]
    optimizer = optimizer_class(params, lr=0.1, momentum=momentum, weight_decay=weight_decay)
    if state is not None:
        optimizer.load_state_dict(state)
    for step in range(3):
        for group in optimizer.param_groups:
            group["lr"] = 0.1 / (step + 1)
        for param in params[:2]:  # the last one gets no gradient, so it must not move
            param.grad = mge.tensor(rng.randn(*param.shape).astype("float32"))
        optimizer.step().clear_grad()
    return [p.numpy() for p in params], optimizer.state_dict()


@pytest.mark.parametrize("momentum, weight_decay", [(0.9, 1e-2), (0.9, 0.0), (0.0, 1e-2)])
def test_updates_equal_megengine_sgd(momentum, weight_decay):
    expected, _ = run_steps(SGD, momentum, weight_decay)
    actual, _ = run_steps(InplaceSGD, momentum, weight_decay)
    for want, got in zip(expected, actual):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(actual[2], np.ones(2, "float32"))


def test_state_dict_is_interchangeable_with_megengine_sgd():
    # a checkpoint of either optimizer resumes the other: same keys, same momentum buffers
    _, megengine_state = run_steps(SGD, 0.9, 1e-2)
    _, inplace_state = run_steps(InplaceSGD, 0.9, 1e-2)
    assert megengine_state.keys() == inplace_state.keys()
    expected, _ = run_steps(SGD, 0.9, 1e-2, state=inplace_state)
    actual, _ = run_steps(InplaceSGD, 0.9, 1e-2, state=megengine_state)
    for want, got in zip(expected, actual):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
