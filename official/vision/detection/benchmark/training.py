"""Time the training step of a config on synthetic images or on a dataset's batches: per phase,
per image, in total, and peak memory.

The step is ``Trainer.run_step`` (the trainer ``run_training`` builds on this device), cut into
phases with a full sync after each, since MegEngine runs eager work asynchronously and a
phase's time would otherwise show up in the next one's.
"""
import collections
import dataclasses
import itertools
import resource
import statistics
import time

import numpy as np
import megengine as mge

from .. import cpu
from ..boxes import padded_side
from ..data.build import build_train_dataset
from ..data.collate import collate_train
from ..data.transforms import TrainTransform
from ..engine.schedule import steps_per_epoch
from ..engine.trainer import (TrainOptions, build_trainer, cpu_step_plan, quiet_cpu_workers,
                              training_batches)
from .flops import count_conv_flops

# the phases of an eager step; a traced step has "data" and "step" (one graph)
PHASES = ("data", "forward", "backward", "optimizer")
# a training step runs every convolution three times: forward, input gradient, weight gradient
TRAIN_FLOPS_PER_FORWARD_FLOP = 3


@dataclasses.dataclass
class TrainTiming:
    phase_ms: dict  # phase -> milliseconds of each timed step
    batch_size: int
    input_shape: tuple  # [N, 3, H, W] of the padded batch (the most common one)
    step_flops: float  # conv FLOPs of one step (3 x the forward's; the mean over the steps)
    async_level: int = None  # MegEngine's, while the steps ran
    step: str = None  # "traced" or "eager" (engine/trainer.py, training_step)
    convolutions: str = None  # what ran them: "onednn" or "megengine" (cpu.CONVOLUTIONS)
    num_shapes: int = 1  # distinct padded input shapes of the timed steps

    def step_ms(self):
        return [sum(phase[i] for phase in self.phase_ms.values())
                for i in range(len(self.phase_ms["data"]))]

    def total_seconds(self):
        """All timed steps, data and graph compilations included."""
        return sum(self.step_ms()) / 1000

    def median_ms(self, phase):
        return statistics.median(self.phase_ms[phase])

    def ms_per_image(self):
        return statistics.median(self.step_ms()) / self.batch_size

    def gflops_per_second(self):
        return self.step_flops / 1e9 / (statistics.median(self.step_ms()) / 1000)


def peak_rss_mb():
    """The process's peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synthetic_sample(rng, height, width, num_classes):
    """A random image with one to four boxes of at least 8 px per side, 0-based labels."""
    count = int(rng.integers(1, 5))
    x1 = rng.uniform(0, width - 8, count)
    y1 = rng.uniform(0, height - 8, count)
    x2 = rng.uniform(x1 + 8, width)
    y2 = rng.uniform(y1 + 8, height)
    return dict(image=rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
                boxes=np.stack([x1, y1, x2, y2], axis=1).astype(np.float32),
                labels=rng.integers(0, num_classes, count).astype(np.int32))


def time_training(config_module, batch_size, steps, warmup, short_size, max_size, seed=0,
                  async_level=None, step=None, dataset_dir=None, **options):
    """Phase times of ``steps`` training steps after ``warmup`` untimed ones, each on a new
    batch, at MegEngine's ``async_level`` (by default the trainer's: 0 on the CPU, else
    MegEngine's own), with the trainer's ``step`` ("eager", "traced", or None: the trainer's
    default) and other ``TrainOptions`` (``convolutions``, ``precision``, ``threads``). The
    batches are synthetic ``short_size`` x ``max_size`` images (landscape, so the resize keeps
    them at that size), or with ``dataset_dir`` those of the config's training split there,
    drawn, loaded and augmented as tools/train.py does (the config's scales, whatever the
    images' sizes)."""
    on_cpu = not mge.is_cuda_available()
    cfg = config_module.Cfg()
    options = TrainOptions(dataset_dir="", output_dir="", batch_size=batch_size, step=step,
                           **options)
    plan = None
    if dataset_dir is None:
        batches = synthetic_batches(cfg, batch_size, short_size, max_size, seed)
    else:  # the run's batches, and on the CPU its choice of step and canvases
        dataset = build_train_dataset(cfg, dataset_dir)
        sampler, make_batch = training_batches(cfg, dataset, batch_size, seed)
        if on_cpu and step != "eager":
            plan = cpu_step_plan(cfg, dataset, sampler, make_batch, batch_size)
        batches = dataset_batches(sampler, make_batch, steps_per_epoch(cfg, batch_size))
    if on_cpu:
        cpu.prepare_cpu_process(quiet_cpu_workers(options, plan))  # as the trainer does
    if async_level is None and on_cpu:
        async_level = cpu.CPU_TRAINING_ASYNC_LEVEL
    with cpu.async_level(mge.config.async_level if async_level is None else async_level):
        return _time_training(config_module, cfg, options, batches, plan, steps, warmup,
                              seed, on_cpu)


def _time_training(config_module, cfg, options, batches, plan, steps, warmup, seed, on_cpu):
    mge.random.seed(seed)
    model = config_module.Net(cfg)
    trainer = build_trainer(model, cfg, options, on_cpu=on_cpu, step_plan=plan)
    model.train()
    phase_ms, shapes = {}, []
    for number in range(warmup + steps):
        clock = PhaseClock()
        batch = next(batches)
        clock("data")
        trainer.run_step(batch, on_phase=clock)
        if number >= warmup:
            for phase, seconds in clock.times.items():
                phase_ms.setdefault(phase, []).append(1000 * seconds)
            shapes.append(input_shape(batch["image"].shape, trainer.traced_step and plan))
    model.eval()  # counting records model.inference, whose convolutions training runs too
    flops = {shape: TRAIN_FLOPS_PER_FORWARD_FLOP * count_conv_flops(model, shape)
             for shape in set(shapes)}
    onednn = any(isinstance(module, cpu.OneDNNConv2d) for module in model.modules())
    most_common_shape = collections.Counter(shapes).most_common(1)[0][0]
    return TrainTiming(phase_ms, options.batch_size, most_common_shape,
                       statistics.mean(flops[shape] for shape in shapes), mge.config.async_level,
                       "eager" if trainer.traced_step is None else "traced",
                       "onednn" if onednn else "megengine", len(set(shapes)))


def input_shape(image_shape, plan=None):
    """The network's input shape for a batch of ``image_shape``: padded to the canvas of the
    traced step's ``plan`` (a cpu.StepPlan), else to multiples of 32 as the model pads."""
    n, c, height, width = image_shape
    if plan:
        return (n, c) + plan.input_size(height, width)
    return n, c, padded_side(height), padded_side(width)


def synthetic_batches(cfg, batch_size, short_size, max_size, seed):
    """Endless collated batches of synthetic ``short_size`` x ``max_size`` images."""
    transform = TrainTransform(short_size, max_size)
    rng = np.random.default_rng(seed)
    while True:
        yield collate_train([transform(synthetic_sample(rng, short_size, max_size,
                                                        cfg.num_classes), rng)
                             for _ in range(batch_size)])


def dataset_batches(sampler, make_batch, num_steps):
    """Training batches epoch after epoch (``num_steps`` each), as a one-process run of
    tools/train.py draws and loads them."""
    for epoch in itertools.count():
        for number, indices in enumerate(sampler.epoch_batches(epoch, num_steps)):
            yield make_batch((epoch, number, indices))


class PhaseClock:
    """Called with a phase's name when it ends: waits for MegEngine's pending work, then
    records the seconds since the previous phase ended (``times``)."""

    def __init__(self):
        self.times = {}
        self.last = time.perf_counter()

    def __call__(self, phase):
        mge._full_sync()  # pylint: disable=protected-access
        now = time.perf_counter()
        self.times[phase], self.last = now - self.last, now
