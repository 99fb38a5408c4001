"""What the training loop does around its steps, one hook per concern.

``Trainer.train`` calls every hook's ``before_train``, then per epoch ``before_epoch``, per
step ``before_step`` and ``after_step``, then ``after_epoch``, and at the end ``after_train``.
A step or an epoch that ends in NaN/Inf raises ``NonFiniteError``; the trainer then asks each
hook to ``recover`` (restore a state from which the epoch can run again) and re-raises when
none does. A hook is any object with some of these methods (the trainer calls those it has);
``HookBase`` gives them all, doing nothing.
"""
import time

import megengine as mge
from tqdm import tqdm

from .schedule import learning_rate

logger = mge.get_logger(__name__)


class HookBase:
    """A hook does nothing at any point unless it overrides that method."""

    def before_train(self, trainer):
        pass

    def before_epoch(self, trainer):
        pass

    def before_step(self, trainer):
        pass

    def after_step(self, trainer):
        pass

    def after_epoch(self, trainer):
        pass

    def after_train(self, trainer):
        pass

    def recover(self, trainer, error):  # pylint: disable=unused-argument
        """True if it restored ``trainer`` to a state from which the failed epoch can run
        again after ``error`` (a NonFiniteError)."""
        return False


class LearningRateSchedule(HookBase):
    """Sets the optimizer's learning rate of each step: warm-up, then step decay."""

    def before_step(self, trainer):
        lr = learning_rate(trainer.cfg, trainer.epoch, trainer.iteration,
                           trainer.total_batch_size)
        for group in trainer.optimizer.param_groups:
            group["lr"] = lr


def is_checkpoint_step(trainer):
    """Whether the step just done is followed by a step checkpoint: every
    ``cfg.checkpoint_interval`` steps, counted over the whole run (0: never), except at the
    last step of an epoch, whose epoch checkpoint follows."""
    interval = trainer.cfg.checkpoint_interval
    return (interval > 0 and trainer.iteration % interval == 0
            and trainer.step_in_epoch < trainer.steps_per_epoch - 1)


class StepCheckpoint(HookBase):
    """Writes epoch_<N>_step_<S>.pkl at the checkpoint steps (``is_checkpoint_step``), on
    rank 0; the older step checkpoints but the last few go (checkpoint.py)."""

    def after_step(self, trainer):
        if trainer.rank == 0 and is_checkpoint_step(trainer):
            logger.info("saved %s", trainer.save_checkpoint(step=trainer.step_in_epoch + 1))


class EpochCheckpoint(HookBase):
    """Writes epoch_<N>.pkl (model, optimizer, progress) after every epoch, on rank 0."""

    def after_epoch(self, trainer):
        if trainer.rank == 0:
            logger.info("saved %s", trainer.save_checkpoint())


def is_log_step(trainer):
    """Whether the step just done is logged: every ``cfg.log_interval`` steps, counted over the
    whole run (so a resumed run logs the steps an uninterrupted one would), the last step of
    each epoch and each checkpoint step (a resumed run starts there, so its first record
    averages the same steps as the uninterrupted run's)."""
    return (trainer.iteration % trainer.cfg.log_interval == 0
            or trainer.step_in_epoch == trainer.steps_per_epoch - 1
            or is_checkpoint_step(trainer))


class ProgressLog(HookBase):
    """A progress bar per epoch and, at the logged steps (``is_log_step``), a line with the
    learning rate, the losses and the data and step times of that step (rank 0)."""

    def __init__(self):
        self.bar = None
        self.step_start = self.data_start = 0.0

    def before_epoch(self, trainer):
        if self.bar is not None:  # the bar of an epoch that failed and runs again
            self.bar.close()
        self.bar = tqdm(total=trainer.steps_per_epoch, initial=trainer.step_in_epoch,
                        desc="epoch {}".format(trainer.epoch), disable=trainer.rank != 0,
                        dynamic_ncols=True)
        self.data_start = time.time()

    def before_step(self, trainer):
        self.step_start = time.time()

    def after_step(self, trainer):
        step, losses = trainer.step_in_epoch, trainer.step_losses
        self.bar.update()
        self.bar.set_postfix(loss="{:.3f}".format(losses["total_loss"]))
        if trainer.rank == 0 and is_log_step(trainer):
            self.bar.write("epoch {} step {}/{} lr {:.5f} {} data {:.3f}s step {:.3f}s".format(
                trainer.epoch, step, trainer.steps_per_epoch,
                trainer.optimizer.param_groups[0]["lr"],
                " ".join("{} {:.4f}".format(k, v) for k, v in losses.items()),
                self.step_start - self.data_start, time.time() - self.step_start))
        self.data_start = time.time()

    def after_epoch(self, trainer):
        self.bar.close()
        self.bar = None
