"""What observing training costs on the demo's config and data (docs/observing.md, "Cost"):
- the training-log hooks (training_logs.py) against the training steps they log;
- the validation --eval-every-epoch adds after each epoch, against a 168-step demo epoch;
- the dataset check training runs first (files looked up) and --check's (images decoded).

    .venv/bin/python tools/make_synthetic_coco.py -o /tmp/demo/synthetic --train 800 --val 100 \
        --classes 3 --seed 0 --size 96-128 --max-objects 4 --object-scale 0.2-0.6
    .venv/bin/python benchmarks/observing_cost.py -d /tmp/demo

Training steps run the demo config at batch 8 on synthetic 96 x 128 batches, two epochs of
--steps / 2 steps with a record every --log-every steps (the demo records every 50). All parts
run in one process, so a slow spell of a shared machine hits them alike: compare the ratios.
Runs with the project's .venv.
"""
import argparse
import collections
import tempfile
import time

import numpy as np
import megengine as mge

from official.vision.detection import cpu
from official.vision.detection.benchmark.training import synthetic_sample
from official.vision.detection.data.build import (
    build_test_dataset, build_train_dataset, check_dataset
)
from official.vision.detection.data.coco import coco_results
from official.vision.detection.data.collate import collate_train
from official.vision.detection.data.transforms import TrainTransform
from official.vision.detection.engine import training_logs
from official.vision.detection.engine.coco_evaluation import cocoeval_metrics, detect_and_gather
from official.vision.detection.engine.hooks import HookBase
from official.vision.detection.engine.trainer import TrainOptions, build_trainer
from official.vision.detection.predictor import Predictor
from official.vision.detection.utils.config_file import load_config_module

DEMO_CONFIG = "official/vision/detection/configs/fcos_res18_synthetic_demo.py"
DEMO_STEPS, DEMO_EPOCHS, DEMO_STEPS_PER_EPOCH = 1008, 6, 168
LOG_HOOKS = (training_logs.StepMetrics, training_logs.MetricRecords, training_logs.MetricsFile,
             training_logs.TensorboardWriter, training_logs.CurvesPlot)
POINTS = ("before_train", "before_epoch", "before_step", "after_step", "after_epoch",
          "after_train")


class TimedHook(HookBase):
    """``hook`` with the seconds of each of its calls added to ``seconds[name]`` (the list of
    ``name``'s call times)."""

    def __init__(self, hook, seconds):
        self.hook, self.seconds = hook, seconds
        self.name = type(hook).__name__

    def _timed(self, point, trainer):
        start = time.perf_counter()
        getattr(self.hook, point)(trainer)
        self.seconds[self.name, point].append(time.perf_counter() - start)

    def before_train(self, trainer):
        self._timed("before_train", trainer)

    def before_epoch(self, trainer):
        self._timed("before_epoch", trainer)

    def before_step(self, trainer):
        self._timed("before_step", trainer)

    def after_step(self, trainer):
        self._timed("after_step", trainer)

    def after_epoch(self, trainer):
        self._timed("after_epoch", trainer)

    def after_train(self, trainer):
        self._timed("after_train", trainer)


def demo_trainer(module, output_dir, steps_per_epoch=1):
    cfg = module.Cfg()
    cfg.update(nr_images_epoch=8 * steps_per_epoch, max_epoch=2)
    mge.random.seed(0)
    return build_trainer(module.Net(cfg), cfg, TrainOptions("", output_dir, batch_size=8),
                         on_cpu=True)


def synthetic_batches(count, seed=0):
    rng = np.random.default_rng(seed)
    transform = TrainTransform((96,), 128)
    return [collate_train([transform(synthetic_sample(rng, 96, 128, 3), rng) for _ in range(8)])
            for _ in range(count)]


def log_hook_cost(module, steps, log_every):
    """Seconds of the training run and {(hook, point): [seconds of each call]}."""
    with tempfile.TemporaryDirectory() as output_dir:
        trainer = demo_trainer(module, output_dir, steps // 2)
        trainer.cfg.log_interval = log_every
        seconds = collections.defaultdict(list)
        trainer.hooks = [TimedHook(h, seconds) if isinstance(h, LOG_HOOKS) else h
                         for h in trainer.hooks]
        batches = synthetic_batches(steps // 2)
        start = time.perf_counter()
        trainer.train(lambda epoch, start: iter(batches[start:]))
        return time.perf_counter() - start, seconds


def report_log_hooks(module, steps, log_every):
    total, seconds = log_hook_cost(module, steps, log_every)
    for (name, point), calls in sorted(seconds.items()):
        if sum(calls) >= 0.0005:
            print("  {:<18} {:<13} {:8.4f} s in {} calls".format(name, point, sum(calls),
                                                               len(calls)))
    hooks = sum(sum(calls) for calls in seconds.values())
    plots = seconds["CurvesPlot", "after_epoch"]  # the first one imports matplotlib
    others = (hooks - sum(plots) - sum(seconds["TensorboardWriter", "before_train"])) / steps
    step = (total - hooks) / steps
    print("log hooks: {:.3f} s of {:.1f} s ({:.2f}%), {:.2f} ms per step of {:.0f} ms; "
          "curves.png {} (first with the matplotlib import)".format(
              hooks, total, 100 * hooks / total, 1000 * hooks / steps, 1000 * step,
              ", ".join("{:.2f} s".format(s) for s in plots)))
    demo = (plots[0] + (DEMO_EPOCHS - 1) * plots[-1]
            + sum(seconds["TensorboardWriter", "before_train"]) + DEMO_STEPS * others)
    print("estimate for make demo's {} steps: {:.1f} s of logging, {:.2f}% of {:.0f} s of "
          "steps".format(DEMO_STEPS, demo, 100 * demo / (DEMO_STEPS * step), DEMO_STEPS * step))


def report_validation(module, dataset_dir, rounds=2):
    """Validation of the val split (EpochEvaluation's work) against 10 timed steps."""
    with tempfile.TemporaryDirectory() as output_dir:
        trainer = demo_trainer(module, output_dir)
        dataset = build_test_dataset(trainer.cfg, dataset_dir)
        for round_ in range(rounds):
            trainer.model.train()
            batches = synthetic_batches(10, seed=round_)
            start = time.perf_counter()
            for batch in batches:
                trainer.run_step(batch)
            step = (time.perf_counter() - start) / len(batches)
            trainer.model.eval()
            start = time.perf_counter()
            records = detect_and_gather(Predictor(trainer.model), dataset, 8, False, 0,
                                        output_dir)
            cocoeval_metrics(dataset.coco, coco_results(records, dataset.category_ids),
                             [r["image_id"] for r in records])
            validation = time.perf_counter() - start
            print("validation of {} images: {:.2f} s ({} detections), step {:.3f} s: {:.1f}% "
                  "of a {}-step epoch".format(len(dataset), validation,
                                              sum(len(r["det_res"]) for r in records), step,
                                              100 * validation / (DEMO_STEPS_PER_EPOCH * step),
                                              DEMO_STEPS_PER_EPOCH))


def report_check(cfg, dataset_dir, rounds=2):
    for round_ in range(rounds):
        for decode in (False, True):
            start = time.perf_counter()
            report = check_dataset(cfg.train_dataset, dataset_dir, decode_images=decode)
            print("check of {} images ({}): {:.3f} s, {} findings".format(
                report.num_images, "decoded" if decode else "files looked up",
                time.perf_counter() - start, len(report.findings)))
    start = time.perf_counter()
    build_train_dataset(cfg, dataset_dir)
    print("building the training dataset: {:.3f} s".format(time.perf_counter() - start))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-d", "--dataset-dir", required=True,
                        help="holds synthetic/ as make_synthetic_coco.py writes it for the demo")
    parser.add_argument("--steps", type=int, default=80, help="training steps (two epochs)")
    parser.add_argument("--log-every", type=int, default=10, help="steps between records")
    args = parser.parse_args()
    cpu.use_mkl_avx2_kernels()
    module = load_config_module(DEMO_CONFIG)
    with cpu.default_cpu_threads(2):
        report_check(module.Cfg(), args.dataset_dir)
        report_log_hooks(module, args.steps, args.log_every)
        report_validation(module, args.dataset_dir)


if __name__ == "__main__":
    main()
