"""Training checkpoints: ``epoch_<N>.pkl`` holding the model, optimizer and progress, and the
categories the model learned, so that it names its detections without the dataset."""
import os
import re

import numpy as np
import megengine as mge

from ..errors import NonFiniteError, WeightsUnavailableError
from ..utils.files import save_atomic
from ..weights import load_weight_file

_CHECKPOINT_NAME = re.compile(r"^epoch_(\d+)\.pkl$")


def checkpoint_path(output_dir, epoch):
    return os.path.join(output_dir, "epoch_{}.pkl".format(epoch))


def save_checkpoint(output_dir, model, optimizer, epoch, iteration, categories=None):
    """Write epoch_<epoch>.pkl atomically; ``iteration`` counts all steps done so far;
    ``categories``: [{"id", "name"}] of the training set in label order (see
    ``checkpoint_categories``).

    Weights that are no longer finite are not written: the step's loss was checked, but its
    update can still overflow, and MegEngine 1.13's asynchronous CPU execution now and then
    corrupts values (a 1596-step demo run ended with NaN weights after finite losses; resumed
    from its last checkpoint, the same steps ran clean)."""
    state_dict = model.state_dict()
    broken = [name for name, value in state_dict.items() if not np.isfinite(value).all()]
    if broken:
        raise NonFiniteError(
            "epoch {} ended with non-finite weights in {} tensor(s) ({}{}), not saved; resume "
            "from the last good checkpoint, {}, with --resume (or train with --async-level 0)"
            .format(epoch, len(broken), ", ".join(broken[:3]), ", ..." if len(broken) > 3 else "",
                    latest_checkpoint(output_dir)))
    path = checkpoint_path(output_dir, epoch)
    save_atomic({"state_dict": state_dict, "optimizer": optimizer.state_dict(),
                 "epoch": epoch, "iteration": iteration, "categories": categories}, path)
    return path


def epoch_checkpoints(output_dir):
    """{epoch: path} of the checkpoints in output_dir."""
    found = {}
    if os.path.isdir(output_dir):
        for name in os.listdir(output_dir):
            match = _CHECKPOINT_NAME.match(name)
            if match:
                found[int(match.group(1))] = os.path.join(output_dir, name)
    return found


def latest_checkpoint(output_dir):
    """Path of the highest-epoch checkpoint, or None."""
    found = epoch_checkpoints(output_dir)
    return found[max(found)] if found else None


def load_checkpoint(path):
    checkpoint = mge.load(path, map_location="cpu0")
    missing = {"state_dict", "optimizer", "epoch", "iteration"} - set(checkpoint)
    if missing:
        raise WeightsUnavailableError("{} is not a training checkpoint (lacks {})".format(
            path, ", ".join(sorted(missing))))
    return checkpoint


def checkpoint_categories(path):
    """[{"id", "name"}] of the labels of a training checkpoint file, in label order; None for a
    plain state_dict, a URL, or a checkpoint written before checkpoints kept them."""
    if not os.path.isfile(path):
        return None
    checkpoint = load_weight_file(path)
    return checkpoint.get("categories") if isinstance(checkpoint, dict) else None


def resolve_weights(path):
    """A weight file as given, or the newest checkpoint of a training output folder."""
    if not os.path.isdir(path):
        return path
    latest = latest_checkpoint(path)
    if latest is None:
        raise FileNotFoundError("no epoch_<N>.pkl checkpoint in {}".format(path))
    return latest
