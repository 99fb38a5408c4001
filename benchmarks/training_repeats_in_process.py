"""The tiny training of training_repeatability.py repeated in one process, with every step's
loss kept: which runs leave the others, at which step and by how much, and whether the NaN
weights a run can end with are NaN on the device too. The narrowing in
docs/megengine_notes.md ("Asynchronous execution") was measured with it:

    .venv/bin/python benchmarks/training_repeats_in_process.py --runs 30 --level 2
    MKL_CBWR=AVX2 .venv/bin/python benchmarks/training_repeats_in_process.py --runs 30 --level 2
    .venv/bin/python benchmarks/training_repeats_in_process.py --runs 30 --level 2 --sync forward

``--sync step`` (or ``forward``) waits for all queued work after every step (or after its
forward pass). Prints one JSON line per run, then a summary line.
"""
import argparse
import collections
import json
import os
import sys
import tempfile

import numpy as np
import megengine as mge
import megengine.functional as F

from official.vision.detection.engine.hooks import HookBase
from official.vision.detection.engine.trainer import TrainOptions, Trainer, run_training
from official.vision.detection.errors import NonFiniteError

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from training_repeatability import CONFIG, SIZES, make_data  # noqa: E402  pylint: disable=wrong-import-position


class StepRecord(HookBase):
    """Every step's total loss; after the last step, the weights NaN/Inf as read back and as a
    reduction on the device finds them."""

    def __init__(self, sync):
        self.sync = sync
        self.losses = []
        self.non_finite = None

    def after_step(self, trainer):
        if self.sync == "step":
            mge._full_sync()  # pylint: disable=protected-access
        self.losses.append(trainer.step_losses["total_loss"])
        if trainer.step_in_epoch == trainer.steps_per_epoch - 1:
            tensors = dict(trainer.model.named_tensors())
            read = [k for k, v in trainer.model.state_dict().items() if not np.isfinite(v).all()]
            on_device = [k for k in read if k in tensors and
                         float(F.sum(F.isnan(tensors[k]) | F.isinf(tensors[k])).item()) > 0]
            self.non_finite = dict(read=len(read), on_device=len(on_device), of=len(tensors))


def sync_after_forward():
    """Make every Trainer.run_step wait for all queued work after its forward pass."""
    run_step = Trainer.run_step

    def waiting_run_step(self, batch, on_phase=None):
        def mark(phase):
            if phase == "forward":
                mge._full_sync()  # pylint: disable=protected-access
        return run_step(self, batch, on_phase=mark)

    Trainer.run_step = waiting_run_step


def summary(rows):
    """NaN runs, and the runs whose losses leave the most common sequence: first step, jump."""
    common = collections.Counter(tuple(r["losses"]) for r in rows
                                 if r["status"] == "ok").most_common(1)
    reference = common[0][0] if common else ()
    left = []
    for row in rows:
        if row["status"] == "ok" and tuple(row["losses"]) != reference:
            step = next(i for i, (a, b) in enumerate(zip(row["losses"], reference)) if a != b)
            left.append((row["run"], step, row["losses"][step] - reference[step]))
    return dict(runs=len(rows), non_finite=[r["run"] for r in rows if r["status"] != "ok"],
                left_the_others=[dict(run=r, step=s, jump="{:.2e}".format(j)) for r, s, j in left])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--level", type=int, choices=(0, 1, 2), default=2)
    parser.add_argument("--kernels", choices=("on", "off"), default="on")
    parser.add_argument("--sync", choices=("none", "step", "forward"), default="none")
    args = parser.parse_args()
    if args.sync == "forward":
        sync_after_forward()
    rows = []
    with tempfile.TemporaryDirectory() as work:
        make_data(work, "tiny")
        config = os.path.join(work, "fcos.py")
        with open(config, "w") as f:
            f.write(CONFIG.format(images=40, **SIZES["tiny"]))
        for run in range(args.runs):
            record = StepRecord(args.sync)
            status = "ok"
            with tempfile.TemporaryDirectory() as output_dir:
                options = TrainOptions(work, output_dir, batch_size=2, num_workers=0,
                                       non_finite_retries=0, async_level=args.level,
                                       cpu_kernels=args.kernels == "on", extra_hooks=(record,))
                try:
                    run_training(config, options)
                except NonFiniteError as error:
                    status = str(error)[:80]
            rows.append(dict(run=run, status=status, losses=record.losses,
                             non_finite=record.non_finite))
            print(json.dumps(rows[-1]), flush=True)
    print(json.dumps(summary(rows)))


if __name__ == "__main__":
    main()
