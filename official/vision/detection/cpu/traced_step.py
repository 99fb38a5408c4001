"""The training step as one static graph: forward, backward and the optimizer's update (SGD or
AdamW) run by MegEngine's graph executor instead of its eager interpreter.

At MegEngine 1.13's eager async levels 2 and 1, identical trainings on the CPU now and then
computed a step wrong or ended an epoch in NaN; level 0 never did but waits for every operator
(docs/megengine_notes.md, "Asynchronous execution"). ``jit.trace(symbolic=True)`` compiles the
step into one graph that the interpreter runs as a single operator, so the only eager work
left is putting the batch and the learning rate, and reading the losses.

The graph is traced ``without_host``: after its first two calls (record, compile) the Python
of the step no longer runs, which made the demo's step ~11% faster than a trace that replays
it (515 vs 576 ms per step of 8 images, Intel Xeon 6/207). It is traced as a pure function of
the model's tensors and the optimizer's state, which it returns updated: MegEngine's other
without-host mode (modules and optimizer as arguments, updates captured) hung compiling a
second graph of the same model.

A graph serves one input shape: batches are padded to the canvases of the run's plan
(step_plan.py), so a run compiles a graph or two, and the graphs are compiled with static
shapes, which plan their memory ahead.

Single-process CPU training only: the GradManager's all-reduce callbacks of a distributed run
are not traced here.
"""
import collections
import ctypes

import numpy as np

import megengine as mge
import megengine.functional as F
from megengine.jit import trace
from megengine.optimizer import SGD, AdamW

from ..boxes import padded_side
from .custom_ops import library as custom_ops_library
from .custom_ops import optimizer as one_pass
from .step_plan import MAX_GRAPHS, box_rows


def padded_batch(batch, plan=None):
    """``batch`` with the image zero-padded at the bottom and right to the smallest canvas of
    ``plan`` (step_plan.py) that holds it, else to the model's multiple of 32 (the model pads
    so itself: same results), and the boxes padded with zero rows to the plan's rows, else to
    a power of two, at least 16 (the assigner ignores rows past each image's count in
    im_info): few distinct shapes, so few graphs to compile."""
    image, boxes = batch["image"], batch["gt_boxes"]
    n, c, h, w = image.shape
    height, width = plan.input_size(h, w) if plan else (padded_side(h), padded_side(w))
    padded_image = np.zeros((n, c, height, width), image.dtype)
    padded_image[:, :, :h, :w] = image
    count = box_rows(boxes.shape[1])
    if plan is not None and plan.box_rows >= boxes.shape[1]:
        count = plan.box_rows
    padded_boxes = np.zeros((n, count, boxes.shape[2]), boxes.dtype)
    padded_boxes[:, :boxes.shape[1]] = boxes
    return dict(batch, image=padded_image, gt_boxes=padded_boxes)


def static_graph(function):
    """``function`` traced as one static graph without host, a pure function of its arguments
    (see the module's text), with the graph options measured at 8 images of 160 x 256
    (docs/megengine_notes.md, "Memory of a compiled graph")."""
    # optimization level 1: level 2 (MegEngine's default) compiled twice as long and kept
    # ~0.4 GB more per graph, for steps no faster
    graph = trace(function, symbolic=True, symbolic_shape=False, without_host=True, opt_level=1)
    graph.overall = False
    # pylint: disable=protected-access
    # the inputs' shapes fixed in the graph (what MEGENGINE_INPUT_NODE_USE_STATIC_SHAPE does):
    # otherwise most values have shapes known only when the graph runs and are allocated then,
    # ~2 GB at the step's peak, against ~0.4 GB planned ahead
    graph._trace.record_input_shapes = True
    # MegEngine's check, on a graph's first run, that no operator writes its inputs: with
    # static shapes ~40 s of a compilation's ~50 s of CPU time
    graph._graph_options["var_sanity_check_first_run"] = False
    return graph


def return_freed_memory():
    """Give the memory freed after recording and compiling a graph back to the system: glibc
    keeps freed blocks for reuse, and what a compilation leaves scattered would otherwise count
    in the process's size for as long as it lives (docs/megengine_notes.md). A no-op where
    the C library is not glibc."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class TracedStep:
    """``step(batch)``: one optimizer step of ``model`` on a collated batch inside a traced
    graph, one graph per padded batch shape (the canvases of ``plan``, a step_plan.StepPlan;
    the graphs of the last MAX_GRAPHS shapes kept); returns the losses
    (tensors). The update is applied only where every loss is finite, so a NaN/Inf loss leaves
    the weights and the optimizer's state as they were (the caller raises). ``optimizer`` is a
    ``megengine.optimizer.SGD`` (without Nesterov momentum) or ``AdamW``, updated as they
    compute it; its state and its param groups' "lr", read at every step, are used; the other
    hyper-parameters are read when a graph is traced. With ``one_pass_updates`` (by default
    where the package's CPU operators load) each parameter is updated by one operator
    (custom_ops/optimizer.cpp) instead of a dozen elementwise passes."""

    def __init__(self, model, optimizer, grad_manager, plan=None, one_pass_updates=None):
        if not isinstance(optimizer, (SGD, AdamW)) or getattr(optimizer, "nesterov", False):
            raise TypeError("the traced step updates as SGD without Nesterov momentum or AdamW "
                            "do, not as {}".format(type(optimizer).__name__))
        self.model, self.optimizer, self.grad_manager = model, optimizer, grad_manager
        self.plan = plan  # step_plan.StepPlan: the canvases and box rows, or None
        unavailable = custom_ops_library.unavailable_reason()  # loads the operators
        if one_pass_updates and unavailable:
            raise ValueError(unavailable)
        if one_pass_updates is None:
            one_pass_updates = unavailable is None
        # SGD without momentum keeps no buffer for the operator to update
        self.one_pass_updates = one_pass_updates and (
            isinstance(optimizer, AdamW) or all(group["momentum"]
                                                for group in optimizer.param_groups))
        self.graphs = collections.OrderedDict()  # (image shape, boxes shape) -> traced step
        self.state = None  # the tensors a step reads and replaces, see _state

    def __call__(self, batch):
        self.model.check_training_inputs(batch["im_info"], batch["gt_boxes"])
        batch = padded_batch(batch, self.plan)
        key = (batch["image"].shape, batch["gt_boxes"].shape)
        if self.state is None:
            self.state = self._state()
        inputs = {name: mge.tensor(value) for name, value in batch.items()}
        graph = self.graphs.pop(key, None)
        if graph is None:
            graph = self._compiled(inputs)
            while len(self.graphs) >= MAX_GRAPHS:
                self.graphs.popitem(last=False)
        self.graphs[key] = graph  # the most recently used last
        lrs = [mge.tensor(group["lr"], dtype="float32") for group in self.optimizer.param_groups]
        losses, new_state = graph(self.state, lrs, **inputs)
        self._put_state(new_state)
        return losses

    def _compiled(self, inputs):
        """A new graph, recorded on ``inputs`` and the current state, which is then put back:
        every step runs on a compiled graph (the recording call computed ~1e-6 apart), so a
        step's result does not depend on when its graph was traced, and a run resumed from a
        checkpoint (graphs traced anew) ends with the uninterrupted run's weights."""
        graph = static_graph(self._step)
        saved = [F.copy(tensor) for tensor in self.state]
        lrs = [mge.tensor(0.0) for _ in self.optimizer.param_groups]
        graph(self.state, lrs, **inputs)
        self._put_state(saved)
        return_freed_memory()
        return graph

    def _put_state(self, values):
        """Give the state's tensors ``values``, in place: the optimizer and the model keep
        their tensor objects."""
        for tensor, value in zip(self.state, values):
            tensor._reset(value)  # pylint: disable=protected-access

    def reset(self):
        """Forget the compiled graphs; call it after the weights or the optimizer state were
        replaced (a checkpoint loaded): the graphs' inputs are the tensors they were traced
        with."""
        self.graphs.clear()
        self.state = None

    def _state(self):
        """The model's tensors (parameters and buffers such as BN statistics) and the
        optimizer's state of each parameter (SGD's momentum buffers, AdamW's moments and step
        counts): the graph's inputs, which it returns updated."""
        tensors = [tensor for _, tensor in self.model.named_tensors()]
        state = self.optimizer._state  # pylint: disable=protected-access
        for group in self.optimizer.param_groups:
            for param in group["params"]:
                tensors += [state[param][name] for name in sorted(state.get(param, {}))]
        return tensors

    def _step(self, state, lrs, image, im_info, gt_boxes):
        model = self.model
        with self.grad_manager:
            losses = model.losses(*model.raw_outputs(image), im_info, gt_boxes)
            self.grad_manager.backward(losses["total_loss"])
        total = sum(losses.values())  # NaN or Inf when any loss is
        finite = F.logical_not(F.isnan(total) | F.isinf(total))
        for group, lr in zip(self.optimizer.param_groups, lrs):
            self.update(group, lr, finite)
        self.optimizer.clear_grad()
        return losses, list(state)  # the tensors updated in place: the graph's new state

    def update(self, group, lr, finite):
        """The optimizer's step of the parameters of ``group`` (their gradients in
        ``param.grad``) at learning rate ``lr``, held where the boolean ``finite`` is false."""
        adamw = isinstance(self.optimizer, AdamW)
        if self.one_pass_updates:
            state = self.optimizer._state  # pylint: disable=protected-access
            update = one_pass.adamw_update if adamw else one_pass.sgd_update
            update(group, state, lr, finite.astype("float32"))
        elif adamw:
            self._adamw_update(group, lr, finite)
        else:
            self._sgd_update(group, lr, finite)

    def _sgd_update(self, group, lr, finite):
        """SGD as megengine.optimizer.SGD computes it, v = momentum * v + grad + weight_decay *
        param; param -= lr * v, held where ``finite`` is false: the increment is replaced by
        zero (NaN-safe: a select, not a product), the momentum factor by 1 and lr by 0. The
        constants come from operators, not host tensors: a graph traced without host takes
        no tensor it was not given."""
        momentum, weight_decay = float(group["momentum"]), float(group["weight_decay"])
        finite_factor = finite.astype("float32")
        keep = F.where(finite, F.full_like(finite_factor, momentum), F.ones_like(finite_factor))
        step_size = lr * finite_factor
        zero = F.zeros_like(finite_factor)
        state = self.optimizer._state  # pylint: disable=protected-access
        for param in group["params"]:
            if param.grad is None:
                continue
            grad = F.where(finite, param.grad + param * weight_decay, zero)
            if momentum:  # in place: the tensor the optimizer's state holds
                velocity = state[param]["momentum_buffer"]
                velocity *= keep
                velocity += grad
                grad = velocity
            param -= step_size * grad

    def _adamw_update(self, group, lr, finite):
        """AdamW as megengine.optimizer.AdamW computes it: step += 1, m = beta1 * m + (1 -
        beta1) * grad, v = beta2 * v + (1 - beta2) * grad^2, param -= lr * (m / (1 -
        beta1^step) / (sqrt(v / (1 - beta2^step)) + eps) + weight_decay * param); held where
        ``finite`` is false: the step count does not move, the moments keep their values
        (factor 1, gradient replaced by zero) and the increment is a selected zero (NaN-safe:
        at step 0 the bias correction divides by zero)."""
        (beta1, beta2), eps = group["betas"], float(group["eps"])
        weight_decay = float(group["weight_decay"])
        # 1 - beta as MegEngine's AdamW computes it, between float32 tensors: 1 - 0.999 is
        # 0.0009999871 there, 1.3e-5 below the 0.001 of Python's floats (its in-place variant's)
        gain1, gain2 = (float(np.float32(1) - np.float32(beta)) for beta in (beta1, beta2))
        finite_factor = finite.astype("float32")
        one, zero = F.ones_like(finite_factor), F.zeros_like(finite_factor)
        base1, base2 = F.full_like(finite_factor, beta1), F.full_like(finite_factor, beta2)
        keep1, keep2 = F.where(finite, base1, one), F.where(finite, base2, one)
        state = self.optimizer._state  # pylint: disable=protected-access
        for param in group["params"]:
            if param.grad is None:
                continue
            grad = F.where(finite, param.grad, zero)
            moments = state[param]  # in place: the tensors the optimizer's state holds
            step, mean, square = moments["step"], moments["exp_avg"], moments["exp_avg_sq"]
            step += finite_factor
            mean *= keep1
            mean += grad * gain1
            square *= keep2
            square += gain2 * (grad * grad)
            delta = (mean / (1 - base1 ** step)) / ((square / (1 - base2 ** step)) ** 0.5 + eps)
            if weight_decay:
                delta += param * weight_decay
            param -= F.where(finite, lr * delta, zero)
