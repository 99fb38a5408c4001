"""Repeating an epoch that ends in NaN/Inf, from the newest good checkpoint.

MegEngine 1.13's asynchronous execution on the CPU now and then corrupts values (see this
package's docstring); the same steps then run clean when repeated. A run that really diverges
fails the repeat too and stops with the error.
"""
import megengine as mge

logger = mge.get_logger(__name__)


class RepeatNonFiniteEpoch:
    """A training hook (it has only ``recover``, see engine/hooks.py): after a NaN/Inf loss or
    weights, restores the newest checkpoint that loads (``Trainer.resume``, as ``--resume``
    does), so the trainer runs the same batches again from there (the epoch's start or a step
    checkpoint in it); at most ``retries`` times per epoch, in single-process runs (the other
    ranks of a distributed run would not follow)."""

    def __init__(self, retries=1, world_size=1):
        self.retries = retries if world_size == 1 else 0
        self.repeats = {}  # epoch -> repeats so far

    def recover(self, trainer, error):
        epoch = trainer.epoch
        if self.repeats.get(epoch, 0) >= self.retries:
            return False
        path = trainer.resume()
        if path is None:
            return False
        self.repeats[epoch] = self.repeats.get(epoch, 0) + 1
        logger.warning("%s; repeating epoch %d from %s", error, epoch, path)
        return True
