"""Identical short trainings at MegEngine's async levels, with and without the package's CPU
training kernels: how many end in NaN/Inf, how far their final losses and weights spread, and
the time per step.

Every run is a fresh process training the same tiny FCOS on the same synthetic data from the
same seed through ``run_training`` (as tools/train.py does), so the runs of one setting should
give bit-identical weights. Settings take turns, so a slow spell of the machine hits all.

    .venv/bin/python benchmarks/training_repeatability.py --runs 30 -o repeatability.jsonl

Runs with the project's .venv (not benchmarks/.venv): it needs MegEngine, not torch.
"""
import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from official.vision.detection.data.synthetic import make_synthetic_coco

CONFIG = '''
from official.vision.detection import models


class Cfg(models.FCOSConfig):
    def __init__(self):
        super().__init__()
        self.update(backbone="resnet18", backbone_pretrained=False, backbone_norm="BN",
                    backbone_freeze_at=0, fpn_in_channels=[128, 256, 512], fpn_out_channels=32,
                    fpn_top_in_channel=32, num_classes=3, train_image_short_size=(64,),
                    train_image_max_size=96, nr_images_epoch={images}, max_epoch=1,
                    warm_iters=4, lr_decay_stages=[1], basic_lr=0.02 / 8, log_interval=1000,
                    train_dataset=dict(name="shapes", root="train",
                                       ann_file="annotations/train.json"))


Net = models.FCOS
'''

# the child: one training, then one JSON line with its outcome
CHILD = '''
import hashlib, json, sys, time
import numpy as np
import megengine as mge
from official.vision.detection.engine.hooks import HookBase
from official.vision.detection.engine.trainer import TrainOptions, run_training
from official.vision.detection.errors import NonFiniteError

config, data, out, level, kernels = sys.argv[1:]


class StepTimes(HookBase):
    def __init__(self):
        self.seconds = []

    def before_step(self, trainer):
        self.start = time.perf_counter()

    def after_step(self, trainer):  # the step's loss was read: its work is done
        self.seconds.append(time.perf_counter() - self.start)


timer = StepTimes()
options = TrainOptions(data, out, batch_size=2, num_workers=0, non_finite_retries=0,
                       cpu_kernels=kernels == "on", extra_hooks=(timer,), async_level=int(level))
status, losses = "ok", []
try:
    losses = run_training(config, options)
except NonFiniteError as error:
    status = "non-finite: " + str(error)[:120]
digest = None
if status == "ok":
    state = mge.load(out + "/epoch_0.pkl")["state_dict"]
    digest = hashlib.sha1(b"".join(np.ascontiguousarray(state[k]).tobytes()
                                   for k in sorted(state))).hexdigest()[:12]
print(json.dumps(dict(level=int(level), kernels=kernels, status=status,
                      final_loss=losses[-1] if losses else None,
                      step_ms=1000 * float(np.median(timer.seconds[2:] or [0])),
                      digest=digest)))
'''


def make_data(root):
    make_synthetic_coco(os.path.join(root, "shapes"), num_train=16, num_val=2, image_size=64,
                        num_classes=3, seed=1)


def run_once(config, data, level, kernels):
    with tempfile.TemporaryDirectory() as out:
        result = subprocess.run([sys.executable, "-c", CHILD, config, data, out, str(level),
                                 kernels], capture_output=True, text=True, timeout=3600)
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        return dict(level=level, kernels=kernels, status="crashed: " + result.stderr[-200:],
                    final_loss=None, step_ms=None, digest=None)
    return json.loads(lines[-1])


def summary(rows):
    """One line per (level, kernels): runs, non-finite, distinct weights, loss spread, step."""
    groups = collections.defaultdict(list)
    for row in rows:
        groups[(row["level"], row["kernels"])].append(row)
    lines = ["| async level | CPU kernels | runs | NaN/Inf or crash | distinct final weights "
             "| final loss min / max | median step ms |", "|---|---|---|---|---|---|---|"]
    for (level, kernels), group in sorted(groups.items(), key=lambda kv: (-kv[0][0], kv[0][1])):
        bad = [r for r in group if r["status"] != "ok"]
        losses = [r["final_loss"] for r in group if r["status"] == "ok"]
        steps = [r["step_ms"] for r in group if r["step_ms"]]
        lines.append("| {} | {} | {} | {} | {} | {} | {} |".format(
            level, kernels, len(group), len(bad),
            len({r["digest"] for r in group if r["digest"]}),
            "{:.7f} / {:.7f}".format(min(losses), max(losses)) if losses else "-",
            "{:.0f}".format(statistics.median(steps)) if steps else "-"))
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="trainings per setting")
    parser.add_argument("--steps", type=int, default=20, help="steps of 2 images per training")
    parser.add_argument("--levels", type=int, nargs="+", default=[2, 1, 0])
    parser.add_argument("--kernels", nargs="+", default=["on", "off"], choices=["on", "off"])
    parser.add_argument("-o", "--output", required=True, help="JSON lines, appended")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        make_data(work)
        config = os.path.join(work, "tiny_fcos.py")
        with open(config, "w") as f:
            f.write(CONFIG.format(images=2 * args.steps))
        for run in range(args.runs):
            for level in args.levels:
                for kernels in args.kernels:
                    row = run_once(config, work, level, kernels)
                    row["run"], row["time"] = run, time.strftime("%H:%M:%S")
                    with open(args.output, "a") as f:
                        f.write(json.dumps(row) + "\n")
                    print(json.dumps(row), flush=True)
    with open(args.output) as f:
        print(summary([json.loads(line) for line in f]))


if __name__ == "__main__":
    main()
