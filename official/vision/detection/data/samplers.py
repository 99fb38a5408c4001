"""Which dataset indices go into which batch, for training and for inference."""
import numpy as np

from ..boxes import group_by_padded_size, resized_hw
from ..errors import DatasetError


class GroupedBatchSampler:
    """Training batches whose images share an aspect-ratio group (landscape or portrait).

    The order depends only on (seed, epoch), so a run resumed at an epoch sees the same batches
    as an uninterrupted one. With several devices, rank r takes every world_size-th index of
    each shuffled pass, so ranks never share an image within a pass.
    """

    def __init__(self, groups, batch_size, seed=0, world_size=1, rank=0):
        if len(groups) < world_size:
            raise DatasetError("the training dataset has {} images with annotations, fewer than "
                               "the {} devices".format(len(groups), world_size))
        self.groups = np.asarray(groups)
        self.batch_size = batch_size
        self.seed = seed
        self.world_size = world_size
        self.rank = rank

    def epoch_batches(self, epoch, num_batches):
        """The first ``num_batches`` batches (lists of indices) of ``epoch``."""
        rng = np.random.default_rng([self.seed, epoch])
        pending = {group: [] for group in np.unique(self.groups)}
        batches = []
        while len(batches) < num_batches:
            for index in rng.permutation(len(self.groups))[self.rank::self.world_size]:
                bucket = pending[self.groups[index]]
                bucket.append(int(index))
                if len(bucket) == self.batch_size:
                    batches.append(list(bucket))
                    bucket.clear()
                    if len(batches) == num_batches:
                        break
        return batches


def inference_batches(sizes, batch_size, short_size, max_size, world_size=1, rank=0):
    """Batches of indices whose images have the same padded input size.

    Images of one batch are then padded identically, so batched results equal one image at a
    time. ``sizes`` lists (height, width) per image; rank r handles every world_size-th image.
    """
    mine = range(rank, len(sizes), world_size)
    groups = group_by_padded_size([resized_hw(*sizes[index], short_size, max_size)
                                   for index in mine])
    return [[mine[i] for i in group[start:start + batch_size]]
            for group in groups for start in range(0, len(group), batch_size)]
