"""The training step as one static graph: forward, backward and SGD run by MegEngine's graph
executor instead of its eager interpreter.

At MegEngine 1.13's eager async levels 2 and 1, identical trainings on the CPU now and then
computed a step wrong or ended an epoch in NaN; level 0 never did but waits for every operator
(docs/megengine_notes.md, "Asynchronous execution"). ``jit.trace(symbolic=True)`` compiles the
step into one graph that the interpreter runs as a single operator, so the only eager work
left is putting the batch and the learning rate, and reading the losses.

Single-process CPU training only: the GradManager's all-reduce callbacks of a distributed run
are not traced here.
"""
import numpy as np

import megengine as mge
import megengine.functional as F
from megengine.jit import trace

from ..boxes import padded_side


def padded_batch(batch):
    """``batch`` with the image zero-padded at the bottom and right to the model's multiple of
    32 (the model pads so itself: same results) and the boxes padded with zero rows to a power
    of two (the assigner ignores rows past each image's count in im_info): few distinct shapes,
    so few graphs to compile."""
    image, boxes = batch["image"], batch["gt_boxes"]
    n, c, h, w = image.shape
    padded_image = np.zeros((n, c, padded_side(h), padded_side(w)), image.dtype)
    padded_image[:, :, :h, :w] = image
    count = 1 << (boxes.shape[1] - 1).bit_length()
    padded_boxes = np.zeros((n, count, boxes.shape[2]), boxes.dtype)
    padded_boxes[:, :boxes.shape[1]] = boxes
    return dict(batch, image=padded_image, gt_boxes=padded_boxes)


class TracedStep:
    """``step(batch)``: one SGD step of ``model`` on a collated batch inside a traced graph,
    one graph per padded batch shape; returns the losses (tensors). The update is applied
    only where every loss is finite, so a NaN/Inf loss leaves the weights and momentum as they
    were (the caller raises). ``optimizer`` is a ``megengine.optimizer.SGD`` (without Nesterov
    momentum); its state and its param groups' "lr", read at every step, are used."""

    def __init__(self, model, optimizer, grad_manager):
        self.model, self.optimizer, self.grad_manager = model, optimizer, grad_manager
        self.graphs = {}  # (image shape, boxes shape) -> traced step

    def __call__(self, batch):
        self.model.check_training_inputs(batch["im_info"], batch["gt_boxes"])
        batch = padded_batch(batch)
        key = (batch["image"].shape, batch["gt_boxes"].shape)
        if key not in self.graphs:
            self.graphs[key] = trace(self._step, symbolic=True, symbolic_shape=False)
        lrs = [mge.tensor(group["lr"], dtype="float32") for group in self.optimizer.param_groups]
        return self.graphs[key](lrs, **{name: mge.tensor(value) for name, value in batch.items()})

    def reset(self):
        """Forget the compiled graphs; call it after the weights or the optimizer state were
        replaced (a checkpoint loaded): a graph recorded the tensors it was traced with, and
        replaying it on tensors made otherwise (e.g. small ones whose values MegEngine now
        knows on the host) fails with "operator mismatch"."""
        self.graphs.clear()

    def _step(self, lrs, image, im_info, gt_boxes):
        model = self.model
        with self.grad_manager:
            losses = model.losses(*model.raw_outputs(image), im_info, gt_boxes)
            self.grad_manager.backward(losses["total_loss"])
        total = sum(losses.values())  # NaN or Inf when any loss is
        finite = F.logical_not(F.isnan(total) | F.isinf(total))
        for group, lr in zip(self.optimizer.param_groups, lrs):
            self._update(group, lr, finite)
        self.optimizer.clear_grad()
        return losses

    def _update(self, group, lr, finite):
        """SGD as megengine.optimizer.SGD computes it, v = momentum * v + grad + weight_decay *
        param; param -= lr * v, held where ``finite`` is false: the increment is replaced by
        zero (NaN-safe: a select, not a product), the momentum factor by 1 and lr by 0."""
        momentum, weight_decay = group["momentum"], group["weight_decay"]
        keep = F.where(finite, mge.tensor(momentum, dtype="float32"), mge.tensor(1.0))
        step_size = lr * finite.astype("float32")
        decay, zero = mge.tensor(weight_decay, dtype="float32"), mge.tensor(0.0)
        state = self.optimizer._state  # pylint: disable=protected-access
        for param in group["params"]:
            if param.grad is None:
                continue
            grad = F.where(finite, param.grad + param * decay, zero)
            if momentum:  # in place, as SGD does: the optimizer's state keeps its tensors
                velocity = state[param]["momentum_buffer"]
                velocity *= keep
                velocity += grad
                grad = velocity
            param -= step_size * grad
