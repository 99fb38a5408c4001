"""The traced training step (cpu/traced_step.py) against the eager one on the same batches."""
import numpy as np
import megengine as mge
import megengine.functional as F
import pytest
from megengine import Parameter
from megengine.jit import trace
from megengine.optimizer import AdamW

from official.vision.detection.benchmark.training import synthetic_sample
from official.vision.detection.cpu.step_plan import MAX_GRAPHS, StepPlan
from official.vision.detection.cpu.traced_step import TracedStep, padded_batch
from official.vision.detection.data.collate import collate_train
from official.vision.detection.data.transforms import TrainTransform
from official.vision.detection.engine.trainer import TrainOptions, build_trainer, training_step
from official.vision.detection.errors import ConfigError, NonFiniteLossError
from official.vision.detection.models import FCOS

from conftest import tiny_config

# (short side, long side) of each step's images: two padded sizes, one graph used twice
STEP_SIZES = [(64, 96), (96, 64), (50, 80)]


def batches(seed=0):
    """Three batches of two images with 1-4 boxes each: varying box counts and sizes."""
    rng = np.random.default_rng(seed)
    for short, long in STEP_SIZES:
        transform = TrainTransform((short,), long)
        yield collate_train([transform(synthetic_sample(rng, short, long, 3), rng)
                             for _ in range(2)])


def trainer_of(step, optimizer="sgd", plan=None):
    mge.random.seed(0)
    model = FCOS(tiny_config().update(optimizer=optimizer))
    trainer = build_trainer(model, model.cfg, TrainOptions("", "", batch_size=2, step=step),
                            on_cpu=True, step_plan=plan)
    if optimizer == "adamw":
        # AdamW scales each gradient by its own size, so gradients that are rounding noise
        # (summed in different orders by the two routes) would move full steps of either
        # sign: a larger eps keeps them small. A large decay makes that term count.
        for group in trainer.optimizer.param_groups:
            group.update(eps=1e-3, weight_decay=0.5)
    model.train()
    return trainer


def set_lr(trainer, lr):
    for group in trainer.optimizer.param_groups:
        group["lr"] = lr


def weights(trainer):
    return {name: value.numpy() for name, value in trainer.model.named_parameters()}


@pytest.fixture(scope="module")
def eager_run():
    trainer = trainer_of("eager")
    losses = []
    for number, batch in enumerate(batches()):
        set_lr(trainer, 0.002 * (number + 1))  # a schedule: each step its own rate
        losses.append(trainer.run_step(batch))
    return losses, weights(trainer)


def relative_difference(weights, expected, start):
    """The norm of ``weights - expected`` over that of the update ``expected - start``."""
    update = np.concatenate([(expected[k] - start[k]).ravel() for k in start])
    difference = np.concatenate([(weights[k] - expected[k]).ravel() for k in start])
    return np.linalg.norm(difference) / np.linalg.norm(update)


def test_traced_steps_give_the_eager_losses_and_weights(eager_run):
    expected_losses, expected_weights = eager_run
    trainer = trainer_of("traced")
    for number, (batch, expected) in enumerate(zip(batches(), expected_losses)):
        set_lr(trainer, 0.002 * (number + 1))
        losses = trainer.run_step(batch)
        assert losses.keys() == expected.keys()
        np.testing.assert_allclose([losses[k] for k in expected], list(expected.values()),
                                   rtol=2e-4)
    assert len(trainer.traced_step.graphs) == 2
    # the routes sum gradients in different orders: compared to the size of the update
    start = weights(trainer_of("traced"))
    assert relative_difference(weights(trainer), expected_weights, start) < 0.01


def steps_from_the_same_state(eager, eager_batch, traced, traced_batch, lr):
    """A step of each trainer at ``lr`` from the eager one's weights and optimizer state:
    (the weights before, the eager step's losses, the traced step's)."""
    traced.model.load_state_dict(eager.model.state_dict())
    traced.optimizer.load_state_dict(eager.optimizer.state_dict())
    traced.traced_step.reset()
    start = weights(eager)
    set_lr(eager, lr)
    set_lr(traced, lr)
    return start, eager.run_step(eager_batch), traced.run_step(traced_batch)


def test_batches_padded_to_a_canvas_train_as_the_eager_step_on_the_padded_batches():
    """Padding to a canvas changes the input (the padded points are background in the
    classification loss and the padded pixels enter BatchNorm's statistics, as the padding of
    a batch's smaller images does): the traced step on a canvas computes what the eager step
    computes on the batch padded so, each step from the same state (the padded area's
    gradients cancel, so rounding differences grow faster over steps than without)."""
    plan = StepPlan("traced", ((96, 96),), 32, "")  # holds the 64x96 and 96x64 batches
    eager, traced = trainer_of("eager"), trainer_of("traced", plan=plan)
    for number, batch in enumerate(list(batches())[:2]):
        padded = padded_batch(batch, plan)
        assert padded["image"].shape[2:] == (96, 96) and padded["gt_boxes"].shape[1] == 32
        start, expected, losses = steps_from_the_same_state(eager, padded, traced, batch,
                                                            0.002 * (number + 1))
        np.testing.assert_allclose([losses[k] for k in expected], list(expected.values()),
                                   rtol=1e-5)
        assert relative_difference(weights(traced), weights(eager), start) < 0.01


def assert_equal_but_rounding(actual, expected, err_msg=""):
    """Equal but for the float32 rounding of a few operations on values of this size."""
    bound = 8 * np.spacing(np.abs(expected).max())
    np.testing.assert_allclose(actual, expected, rtol=0, atol=bound, err_msg=err_msg)


@pytest.mark.parametrize("one_pass", [True, False], ids=["one pass", "elementwise"])
def test_the_traced_adamw_update_is_adamws_on_the_same_gradients(one_pass):
    """The update as the traced step builds it, in a compiled graph, against
    megengine.optimizer.AdamW from the same weights, moments, step counts and gradients, three
    steps in a row (the bias corrections change at each). The gradients are given: the whole
    steps of the two routes are compared below, where gradients of their own may differ."""
    rng = np.random.default_rng(0)
    shapes = [(16, 8, 3, 3), (16,), (1,)]
    params = [Parameter(rng.normal(size=shape).astype("float32")) for shape in shapes]
    twins = [Parameter(param.numpy()) for param in params]
    settings = dict(lr=0.01, betas=(0.9, 0.999), weight_decay=0.05)
    optimizer, reference = AdamW(params, **settings), AdamW(twins, **settings)
    traced = TracedStep(None, optimizer, None, one_pass_updates=one_pass)
    assert traced.one_pass_updates == one_pass
    group = optimizer.param_groups[0]
    state = params + [optimizer._state[p][k] for p in params  # pylint: disable=protected-access
                      for k in sorted(optimizer._state[p])]  # pylint: disable=protected-access

    def update(state, lr, grads):
        for param, grad in zip(params, grads):
            param.grad = grad
        traced.update(group, lr, F.ones_like(lr) > 0)
        return list(state)

    graph = trace(update, symbolic=True, symbolic_shape=False, without_host=True)
    graph.overall = False
    for number in range(3):
        grads = [(rng.normal(size=shape) * 10.0 ** -number).astype("float32") for shape in shapes]
        saved = [F.copy(tensor) for tensor in state]
        for _ in range(1 if number else 2):  # the first call records, later ones are compiled
            for tensor, value in zip(state, saved):
                tensor._reset(F.copy(value))  # pylint: disable=protected-access
            new_state = graph(state, mge.tensor(0.01), [mge.tensor(g) for g in grads])
        for tensor, value in zip(state, new_state):
            tensor._reset(value)  # pylint: disable=protected-access
        for twin, grad in zip(twins, grads):
            twin.grad = mge.tensor(grad)
        reference.step().clear_grad()
        for param, twin in zip(params, twins):
            assert_equal_but_rounding(param.numpy(), twin.numpy())
    for param, twin in zip(params, twins):
        for name, value in reference._state[twin].items():  # pylint: disable=protected-access
            mine = optimizer._state[param][name]  # pylint: disable=protected-access
            assert_equal_but_rounding(mine.numpy(), value.numpy(), err_msg=name)


def test_traced_adamw_steps_give_the_eager_losses_and_nearly_their_weights():
    """Whole steps from the same weights and moments. Their gradients agree to ~1e-6 except
    where a ReLU input lies within rounding noise of zero: the routes' convolutions sum in
    other orders (~6e-6 apart here), so such an input can fall on either side and pass or
    stop its gradient. On an AMD EPYC (lscpu 25/17) with MKL's AVX2 kernels one BatchNorm
    output of 3.6e-7 (eager) took the other side in the graph at the third step, moving the
    gradients below it by 0.6-0.9% and the weights by 0.19% of the update (6e-6 elsewhere):
    the routes differ in the subgradient they pick, not in the update (pinned above)."""
    eager, traced = trainer_of("eager", "adamw"), trainer_of("traced", "adamw")
    for number, batch in enumerate(batches()):
        start, expected, losses = steps_from_the_same_state(eager, batch, traced, batch,
                                                            0.002 * (number + 1))
        np.testing.assert_allclose([losses[k] for k in expected], list(expected.values()),
                                   rtol=1e-5)
        assert relative_difference(weights(traced), weights(eager), start) < 1e-2
    for trainer in (eager, traced):  # the bias correction's step count
        steps = {state["step"].item() for state in trainer.optimizer._state.values()}
        assert steps == {len(STEP_SIZES)}


def test_the_learning_rate_is_read_at_every_step_of_a_graph():
    trainer = trainer_of("traced")
    first, second = list(batches())[::2]  # padded to the same shapes: one graph
    set_lr(trainer, 0.01)
    trainer.run_step(first)
    before = weights(trainer)
    set_lr(trainer, 0.0)  # still momentum: SGD moves by lr * velocity, here 0
    trainer.run_step(second)
    assert len(trainer.traced_step.graphs) == 1
    for name, value in weights(trainer).items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)


def test_only_the_graphs_of_the_last_batch_shapes_are_kept():
    trainer = trainer_of("traced")
    set_lr(trainer, 0.002)
    sizes = [(32 * k, 160) for k in range(1, MAX_GRAPHS + 2)]  # one shape more than kept
    rng = np.random.default_rng(0)
    for short, long in sizes + sizes[-1:]:
        transform = TrainTransform((short,), long)
        batch = collate_train([transform(synthetic_sample(rng, short, long, 3), rng)
                               for _ in range(2)])
        trainer.run_step(batch)
    kept = [image_shape[2:] for image_shape, _ in trainer.traced_step.graphs]
    assert kept == [(32 * k, 160) for k in range(2, MAX_GRAPHS + 2)]  # the first one dropped


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_a_non_finite_loss_raises_before_weights_or_optimizer_state_change(optimizer):
    trainer = trainer_of("traced", optimizer)
    batch = next(batches())
    trainer.run_step(batch)  # a step that moves the weights and the optimizer's state
    nan_bias = np.full(trainer.model.head.cls_score.bias.shape, np.nan, "float32")
    # NaN logits, a NaN classification loss
    trainer.model.load_state_dict({"head.cls_score.bias": nan_bias}, strict=False)
    trainer.traced_step.reset()  # as Trainer.resume does: graphs replay recorded tensors
    before = weights(trainer)
    states = trainer.optimizer._state  # pylint: disable=protected-access
    saved = {(id(p), name): value.numpy() for p, state in states.items()
             for name, value in state.items()}
    assert saved  # momentum buffers; AdamW's moments and step counts
    with pytest.raises(NonFiniteLossError, match="non-finite loss"):
        trainer.run_step(batch)
    for name, value in weights(trainer).items():  # NaN equals NaN here
        np.testing.assert_array_equal(value, before[name], err_msg=name)
    for param, state in states.items():
        for name, value in state.items():
            np.testing.assert_array_equal(value.numpy(), saved[id(param), name], err_msg=name)


def test_training_is_traced_by_default_on_the_cpu_and_eager_on_gpus():
    assert training_step(TrainOptions("", ""), on_cpu=True) == "traced"
    assert training_step(TrainOptions("", ""), on_cpu=False) == "eager"
    assert training_step(TrainOptions("", "", step="eager"), on_cpu=True) == "eager"
    assert training_step(TrainOptions("", "", step="traced"), on_cpu=True) == "traced"
    with pytest.raises(ConfigError, match="single-process CPU training only"):
        training_step(TrainOptions("", "", step="traced"), on_cpu=False)
    with pytest.raises(ConfigError, match="'traced' or 'eager'"):
        training_step(TrainOptions("", "", step="graph"), on_cpu=True)
