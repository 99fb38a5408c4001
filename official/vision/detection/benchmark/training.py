"""Time the training step of a config on synthetic images: per phase, per image, peak memory.

The step is ``Trainer.run_step`` (the trainer ``run_training`` builds on this device), cut into
phases with a full sync after each, since MegEngine runs eager work asynchronously and a
phase's time would otherwise show up in the next one's.
"""
import dataclasses
import resource
import statistics
import time

import numpy as np
import megengine as mge

from .. import cpu
from ..boxes import padded_side
from ..data.collate import collate_train
from ..data.transforms import TrainTransform
from ..engine.trainer import TrainOptions, build_trainer, quiet_cpu_workers
from .flops import count_conv_flops

# the phases of an eager step; a traced step has "data" and "step" (one graph)
PHASES = ("data", "forward", "backward", "optimizer")
# a training step runs every convolution three times: forward, input gradient, weight gradient
TRAIN_FLOPS_PER_FORWARD_FLOP = 3


@dataclasses.dataclass
class TrainTiming:
    phase_ms: dict  # phase -> milliseconds of each timed step
    batch_size: int
    input_shape: tuple  # [N, 3, H, W] of the padded batch
    step_flops: float  # conv FLOPs of one step (3 x the forward's)
    async_level: int = None  # MegEngine's, while the steps ran
    step: str = None  # "traced" or "eager" (engine/trainer.py, training_step)
    convolutions: str = None  # what ran them: "onednn" or "megengine" (cpu.CONVOLUTIONS)

    def step_ms(self):
        return [sum(phase[i] for phase in self.phase_ms.values())
                for i in range(len(self.phase_ms["data"]))]

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
                  async_level=None, step=None, **options):
    """Phase times of ``steps`` training steps after ``warmup`` untimed ones, each on a new
    batch of synthetic ``short_size`` x ``max_size`` images (landscape, so the resize keeps
    them at that size), at MegEngine's ``async_level`` (by default the trainer's: 0 on the
    CPU, else MegEngine's own), with the trainer's ``step`` ("eager", "traced", or None: the
    trainer's default) and other ``TrainOptions`` (``convolutions``, ``precision``,
    ``threads``)."""
    on_cpu = not mge.is_cuda_available()
    if on_cpu:
        # as the trainer does
        cpu.prepare_cpu_process(quiet_cpu_workers(TrainOptions("", "", step=step, **options)))
    if async_level is None and on_cpu:
        async_level = cpu.CPU_TRAINING_ASYNC_LEVEL
    with cpu.async_level(mge.config.async_level if async_level is None else async_level):
        return _time_training(config_module, batch_size, steps, warmup, short_size, max_size,
                              seed, on_cpu, step, options)


def _time_training(config_module, batch_size, steps, warmup, short_size, max_size, seed,
                   on_cpu, step, options):
    cfg = config_module.Cfg()
    mge.random.seed(seed)
    model = config_module.Net(cfg)
    trainer = build_trainer(model, cfg, TrainOptions(dataset_dir="", output_dir="",
                                                     batch_size=batch_size, step=step,
                                                     **options),
                            on_cpu=on_cpu)
    model.train()
    transform = TrainTransform(short_size, max_size)
    rng = np.random.default_rng(seed)
    phase_ms = {}
    for number in range(warmup + steps):
        times = timed_step(trainer, transform, rng, batch_size, short_size, max_size)
        if number >= warmup:
            for phase, seconds in times.items():
                phase_ms.setdefault(phase, []).append(1000 * seconds)
    input_shape = (batch_size, 3, padded_side(short_size), padded_side(max_size))
    model.eval()  # counting records model.inference, whose convolutions training runs too
    step_flops = TRAIN_FLOPS_PER_FORWARD_FLOP * count_conv_flops(model, input_shape)
    onednn = any(isinstance(module, cpu.OneDNNConv2d) for module in model.modules())
    return TrainTiming(phase_ms, batch_size, input_shape, step_flops, mge.config.async_level,
                       "eager" if trainer.traced_step is None else "traced",
                       "onednn" if onednn else "megengine")


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


def timed_step(trainer, transform, rng, batch_size, height, width):
    """{phase: seconds} of data and the phases of ``run_step`` of one step of
    ``trainer``."""
    clock = PhaseClock()
    batch = collate_train([transform(synthetic_sample(rng, height, width, trainer.cfg.num_classes),
                                     rng) for _ in range(batch_size)])
    clock("data")
    trainer.run_step(batch, on_phase=clock)
    return clock.times
