"""Learning-rate schedule: linear warm-up, then step decay at given epochs."""
import bisect

from ..errors import ConfigError


def learning_rate(cfg, epoch, iteration, total_batch_size):
    """The lr of global ``iteration`` (counted from the start of training) in ``epoch``.

    Base: ``basic_lr * total_batch_size``, times ``lr_decay_rate`` for every stage in
    ``lr_decay_stages`` already reached; the first ``warm_iters`` iterations ramp up linearly.
    """
    lr = cfg.basic_lr * total_batch_size
    lr *= cfg.lr_decay_rate ** bisect.bisect_right(cfg.lr_decay_stages, epoch)
    if iteration < cfg.warm_iters:
        lr *= (iteration + 1) / cfg.warm_iters
    return lr


def steps_per_epoch(cfg, total_batch_size):
    steps = cfg.nr_images_epoch // total_batch_size
    if steps < 1:
        raise ConfigError("nr_images_epoch ({}) is smaller than the total batch size ({})".format(
            cfg.nr_images_epoch, total_batch_size))
    return steps
