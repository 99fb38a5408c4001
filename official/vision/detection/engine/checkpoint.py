"""Training checkpoints: ``epoch_<N>.pkl`` holding the model, optimizer and progress."""
import os
import re

import megengine as mge

from ..errors import WeightsUnavailableError
from ..utils.files import save_atomic

_CHECKPOINT_NAME = re.compile(r"^epoch_(\d+)\.pkl$")


def checkpoint_path(output_dir, epoch):
    return os.path.join(output_dir, "epoch_{}.pkl".format(epoch))


def save_checkpoint(output_dir, model, optimizer, epoch, iteration):
    """Write epoch_<epoch>.pkl atomically; ``iteration`` counts all steps done so far."""
    path = checkpoint_path(output_dir, epoch)
    save_atomic({"state_dict": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "epoch": epoch, "iteration": iteration}, path)
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


def resolve_weights(path):
    """A weight file as given, or the newest checkpoint of a training output folder."""
    if not os.path.isdir(path):
        return path
    latest = latest_checkpoint(path)
    if latest is None:
        raise FileNotFoundError("no epoch_<N>.pkl checkpoint in {}".format(path))
    return latest
