"""Identical short trainings at MegEngine's async levels, with the eager or the traced training
step, with and without the package's CPU training kernels: how many end in NaN/Inf, how far
their final losses and weights spread, and the time per step.

Every run is a fresh process training the same tiny FCOS on the same synthetic data from the
same seed through ``run_training`` (as tools/train.py does), so the runs of one setting should
give bit-identical weights. Settings take turns, so a slow spell of the machine hits all.

    .venv/bin/python benchmarks/training_repeatability.py --runs 30 -o repeatability.jsonl
    .venv/bin/python benchmarks/training_repeatability.py --runs 60 --settings traced:0 \
        eager:0 eager:2 --kernels on -o repeatability.jsonl   # traced:0 is the CPU default
    .venv/bin/python benchmarks/training_repeatability.py --size demo --runs 3 --steps 12 \
        -o demo_steps.jsonl     # what each setting costs at the demo's size
    .venv/bin/python benchmarks/training_repeatability.py --optimizer adamw --runs 30 \
        --settings traced:0 --kernels on -o repeatability.jsonl   # the demo's optimizer
    .venv/bin/python benchmarks/training_repeatability.py --size varied --runs 60 \
        --settings default:0 traced:0 --kernels on -o repeatability.jsonl   # varied sizes

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
                    backbone_freeze_at=0, fpn_in_channels=[128, 256, 512], fpn_out_channels={width},
                    fpn_top_in_channel={width}, num_classes=3, train_image_short_size={short},
                    train_image_max_size={long}, nr_images_epoch={images}, max_epoch=1,
                    warm_iters=4, lr_decay_stages=[1], optimizer="{optimizer}",
                    basic_lr={basic_lr}, weight_decay={weight_decay}, log_interval=1000,
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

config, data, out, step, level, kernels, batch = sys.argv[1:]


class StepRoute(HookBase):  # which step the run took: the default is the plan's
    def before_train(self, trainer):
        self.route = "eager" if trainer.traced_step is None else "traced"


class StepTimes(HookBase):
    def __init__(self):
        self.seconds = []

    def before_step(self, trainer):
        self.start = time.perf_counter()

    def after_step(self, trainer):  # the step's loss was read: its work is done
        self.seconds.append(time.perf_counter() - self.start)


timer, route = StepTimes(), StepRoute()
options = TrainOptions(data, out, batch_size=int(batch), num_workers=0, non_finite_retries=0,
                       cpu_kernels=kernels == "on", extra_hooks=(timer, route),
                       async_level=int(level), step=None if step == "default" else step)
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
print(json.dumps(dict(step=step, route=route.route, level=int(level), kernels=kernels,
                      status=status,
                      final_loss=losses[-1] if losses else None,
                      step_ms=1000 * float(np.median(timer.seconds[2:] or [0])),
                      digest=digest)))
'''


# the rates the demo trains with (configs/fcos_res18_synthetic_demo.py and, for SGD, before it)
OPTIMIZERS = {
    "sgd": dict(basic_lr=0.02 / 8, weight_decay=1e-4),
    "adamw": dict(basic_lr=1e-3 / 8, weight_decay=0.05),
}

# "tiny": many runs in little time; "demo": the step of `make demo` (its FPN width, image size
# and batch), for what a level costs on a real training; "varied": tiny, on images of varied
# sizes and aspect ratios at two scales, so the batches take several padded sizes (the traced
# step pads them to canvases, cpu/step_plan.py)
SIZES = {
    "tiny": dict(width=32, short=(64,), long=96, batch=2, image=64),
    "demo": dict(width=64, short=(96,), long=128, batch=8, image=128),
    "varied": dict(width=32, short=(32, 64), long=96, batch=2, image=((40, 100), (40, 100))),
}


def make_data(root, size):
    make_synthetic_coco(os.path.join(root, "shapes"), num_train=16, num_val=2,
                        image_size=SIZES[size]["image"], num_classes=3, seed=1)


def run_once(config, data, step, level, kernels, size):
    with tempfile.TemporaryDirectory() as out:
        result = subprocess.run([sys.executable, "-c", CHILD, config, data, out, step, str(level),
                                 kernels, str(SIZES[size]["batch"])],
                                capture_output=True, text=True, timeout=3600)
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        row = dict(step=step, level=level, kernels=kernels,
                   status="crashed: " + result.stderr[-200:], final_loss=None, step_ms=None,
                   digest=None)
    else:
        row = json.loads(lines[-1])
    row["size"] = size
    return row


def summary(rows):
    """One line per (size, optimizer, step, level, kernels): runs, non-finite, distinct
    weights, loss spread, step time. Rows from before the traced step have the eager one,
    rows from before the optimizer option SGD."""
    groups = collections.defaultdict(list)
    for row in rows:
        step = row.get("step", "eager")
        if step == "default":  # the trainer's choice
            step = "default ({})".format(row.get("route", "?"))
        groups[(row.get("size", "tiny"), row.get("optimizer", "sgd"), step,
                row["level"], row["kernels"])].append(row)
    lines = ["| size | optimizer | step | async level | CPU kernels | runs | NaN/Inf or crash | "
             "distinct final weights | final loss min / max | median step ms |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for (size, optimizer, step, level, kernels), group in sorted(
            groups.items(), key=lambda kv: (kv[0][:3], -kv[0][3], kv[0][4])):
        bad = [r for r in group if r["status"] != "ok"]
        losses = [r["final_loss"] for r in group if r["status"] == "ok"]
        steps = [r["step_ms"] for r in group if r["step_ms"]]
        lines.append("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
            size, optimizer, step, level, kernels, len(group), len(bad),
            len({r["digest"] for r in group if r["digest"]}),
            "{:.7f} / {:.7f}".format(min(losses), max(losses)) if losses else "-",
            "{:.0f}".format(statistics.median(steps)) if steps else "-"))
    return "\n".join(lines)


def setting(text):
    """"traced:0" -> ("traced", 0)."""
    step, _, level = text.partition(":")
    if step not in ("traced", "eager", "default") or level not in ("0", "1", "2"):
        raise argparse.ArgumentTypeError("expected STEP:LEVEL, STEP traced, eager or default "
                                         "(the trainer's choice), LEVEL 0-2, not {!r}".format(
                                             text))
    return step, int(level)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="trainings per setting")
    parser.add_argument("--steps", type=int, default=20, help="steps per training")
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny",
                        help="tiny: 2 images of 64 x 96 per step, a 32-channel FPN; demo: "
                             "8 of 96 x 128, 64 channels, as `make demo` trains; varied: "
                             "tiny on images of varied sizes, short side 32 or 64")
    parser.add_argument("--settings", nargs="+", type=setting,
                        default=[("eager", 2), ("eager", 1), ("eager", 0)],
                        help="STEP:LEVEL pairs, the training step (traced, eager, or default: "
                             "the trainer's choice) and MegEngine's async level, e.g. traced:0 "
                             "eager:2")
    parser.add_argument("--kernels", nargs="+", default=["on", "off"], choices=["on", "off"])
    parser.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="sgd",
                        help="cfg.optimizer, at the demo's rates for it")
    parser.add_argument("-o", "--output", required=True, help="JSON lines, appended")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        make_data(work, args.size)
        size = SIZES[args.size]
        config = os.path.join(work, "fcos.py")
        with open(config, "w") as f:
            f.write(CONFIG.format(images=size["batch"] * args.steps, optimizer=args.optimizer,
                                  **OPTIMIZERS[args.optimizer], **size))
        for run in range(args.runs):
            for step, level in args.settings:
                for kernels in args.kernels:
                    row = run_once(config, work, step, level, kernels, args.size)
                    row["run"], row["time"] = run, time.strftime("%H:%M:%S")
                    row["optimizer"] = args.optimizer
                    with open(args.output, "a") as f:
                        f.write(json.dumps(row) + "\n")
                    print(json.dumps(row), flush=True)
    with open(args.output) as f:
        print(summary([json.loads(line) for line in f]))


if __name__ == "__main__":
    main()
