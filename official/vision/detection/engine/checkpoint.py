"""Training checkpoints in a run's output folder, each holding the model, optimizer and progress:
``epoch_<N>.pkl`` after every epoch N (all kept), and ``epoch_<N>_step_<S>.pkl`` after S steps
of epoch N, every ``cfg.checkpoint_interval`` steps (the newest ``STEP_CHECKPOINTS_KEPT`` kept).

``newest_checkpoint`` is the one place that decides where a run continues: the newest of them,
by training position, that loads.

Each also holds the categories the model learned, so that it names its detections without the
dataset."""
import math
import os
import re

import numpy as np
import megengine as mge

from ..errors import NonFiniteError, WeightsUnavailableError
from ..utils.files import save_atomic
from ..weights import load_weight_file

logger = mge.get_logger(__name__)

_EPOCH_NAME = re.compile(r"^epoch_(\d+)\.pkl$")
_STEP_NAME = re.compile(r"^epoch_(\d+)_step_(\d+)\.pkl$")
# the temporary file of a checkpoint whose writer was killed (utils/files.atomic_target)
_UNFINISHED_NAME = re.compile(r"^\.tmp-.*-epoch_\d+(_step_\d+)?\.pkl$")

# two, so that a newest step checkpoint that cannot be read (cut short by a power loss, or
# damaged later) still has a predecessor at most one interval older
STEP_CHECKPOINTS_KEPT = 2


def checkpoint_path(output_dir, epoch, step=None):
    """epoch_<epoch>.pkl, or with ``step`` epoch_<epoch>_step_<step>.pkl."""
    name = "epoch_{}.pkl".format(epoch) if step is None else "epoch_{}_step_{}.pkl".format(
        epoch, step)
    return os.path.join(output_dir, name)


def save_checkpoint(output_dir, model, optimizer, epoch, iteration, step=None, categories=None):
    """Write epoch_<epoch>.pkl at the end of ``epoch`` or, with ``step``, the checkpoint of
    ``step`` steps into it, atomically; ``iteration`` counts all steps done so far;
    ``categories``: [{"id", "name"}] of the training set in label order (see
    ``checkpoint_categories``). A step checkpoint also holds ``step_in_epoch``: where the
    epoch's batches continue. It then replaces the older step checkpoints
    (``keep_newest_step_checkpoints``).

    Weights that are no longer finite are not written: the step's loss was checked, but its
    update can still overflow, and MegEngine 1.13's asynchronous CPU execution now and then
    corrupts values (a 1596-step demo run ended with NaN weights after finite losses; resumed
    from its last checkpoint, the same steps ran clean)."""
    state_dict = model.state_dict()
    broken = [name for name, value in state_dict.items() if not np.isfinite(value).all()]
    if broken:
        done = "epoch {}".format(epoch) if step is None else "step {} of epoch {}".format(
            step, epoch)
        raise NonFiniteError(
            "{} ended with non-finite weights in {} tensor(s) ({}{}), not saved; resume "
            "from the last good checkpoint, {}, with --resume (or train with --async-level 0)"
            .format(done, len(broken), ", ".join(broken[:3]), ", ..." if len(broken) > 3 else "",
                    latest_checkpoint(output_dir)))
    checkpoint = {"state_dict": state_dict, "optimizer": optimizer.state_dict(),
                  "epoch": epoch, "iteration": iteration, "categories": categories}
    if step is not None:
        checkpoint["step_in_epoch"] = step
    path = checkpoint_path(output_dir, epoch, step)
    save_atomic(checkpoint, path)
    if step is not None:
        keep_newest_step_checkpoints(output_dir, (epoch, step))
    return path


def keep_newest_step_checkpoints(output_dir, position):
    """Once the step checkpoint at ``position`` (epoch, step) is written, delete the step
    checkpoints past it (another run's, or unreadable ones this run went back from), all but
    the newest ``STEP_CHECKPOINTS_KEPT`` up to it, and the unfinished checkpoints of a killed
    run. Epoch checkpoints stay."""
    found = step_checkpoints(output_dir)
    kept = sorted((p for p in found if p <= position), reverse=True)[:STEP_CHECKPOINTS_KEPT]
    unfinished = [path for _, path in _matching_files(output_dir, _UNFINISHED_NAME)]
    for path in [found[p] for p in set(found) - set(kept)] + unfinished:
        os.remove(path)


def epoch_checkpoints(output_dir):
    """{epoch: path} of the epoch checkpoints in output_dir."""
    return {int(match.group(1)): path for match, path in _matching_files(output_dir, _EPOCH_NAME)}


def step_checkpoints(output_dir):
    """{(epoch, step): path} of the step checkpoints in output_dir."""
    return {(int(match.group(1)), int(match.group(2))): path
            for match, path in _matching_files(output_dir, _STEP_NAME)}


def _matching_files(output_dir, pattern):
    names = os.listdir(output_dir) if os.path.isdir(output_dir) else []
    matches = ((pattern.match(name), name) for name in names)
    return [(match, os.path.join(output_dir, name)) for match, name in matches if match]


def checkpoints_newest_first(output_dir):
    """Paths of all checkpoints in output_dir, the furthest in training first (an epoch's
    checkpoint comes after its step checkpoints)."""
    positions = {(epoch, math.inf): path for epoch, path in epoch_checkpoints(output_dir).items()}
    positions.update(step_checkpoints(output_dir))
    return [positions[p] for p in sorted(positions, reverse=True)]


def latest_checkpoint(output_dir):
    """Path of the furthest checkpoint in output_dir, not read (for messages), or None."""
    found = checkpoints_newest_first(output_dir)
    return found[0] if found else None


def newest_checkpoint(output_dir):
    """(path, checkpoint) of the furthest checkpoint in output_dir that loads, or None when
    there is none. A further one that does not load (a write cut short by a full disk or a
    power loss, a damaged file) is reported in one warning line and skipped; when none loads,
    WeightsUnavailableError names them."""
    unreadable = []
    for path in checkpoints_newest_first(output_dir):
        try:
            return path, load_checkpoint(path)
        except Exception as error:  # pylint: disable=broad-except
            # a damaged pickle fails in many ways (UnpicklingError, EOFError, ValueError, ...):
            # whichever, the file cannot be continued from
            reason = "{}: {}".format(type(error).__name__, " ".join(str(error).split()))
            logger.warning("skipping checkpoint %s: cannot be read (%s)", path, reason)
            unreadable.append("{} ({})".format(os.path.basename(path), reason))
    if unreadable:
        raise WeightsUnavailableError("no checkpoint in {} can be read: {}".format(
            output_dir, "; ".join(unreadable)))
    return None


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


def resume_position(checkpoint):
    """(epoch, step in epoch) of the first step after ``checkpoint``."""
    if "step_in_epoch" in checkpoint:
        return checkpoint["epoch"], checkpoint["step_in_epoch"]
    return checkpoint["epoch"] + 1, 0


def resolve_weights(path):
    """A weight file as given, or the newest epoch checkpoint of a training output folder."""
    if not os.path.isdir(path):
        return path
    found = epoch_checkpoints(path)
    if not found:
        raise FileNotFoundError("no epoch_<N>.pkl checkpoint in {}".format(path))
    return found[max(found)]
