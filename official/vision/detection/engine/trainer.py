"""Training: one optimizer step (``Trainer.run_step``) in a loop over epochs that calls hooks
(learning-rate schedule, checkpoints, progress log, hooks.py; metrics, validation and their
files, training_logs.py), and ``run_training``, which builds all of it from a config file on
every device."""
import contextlib
import dataclasses
import math
import os

import numpy as np
import megengine as mge
import megengine.distributed as dist
from megengine.autodiff import GradManager
from megengine.optimizer import SGD, AdamW

from .. import cpu
from ..backbones.resnet import IMAGENET_WEIGHTS
from ..boxes import padded_side
from ..data.build import build_test_dataset, build_train_dataset, check_dataset
from ..data.collate import collate_train
from ..data.loader import BatchLoader
from ..data.samplers import GroupedBatchSampler
from ..data.transforms import TrainTransform
from ..errors import ConfigError, NonFiniteError, NonFiniteLossError, WeightsUnavailableError
from ..model_zoo import RELEASED_MODELS
from ..utils.config_file import load_config_module
from ..weights import load_matching_weights, load_weight_file, state_dict_of
from .checkpoint import (
    latest_checkpoint, newest_checkpoint, resolve_weights, resume_position,
    save_checkpoint
)
from .hooks import EpochCheckpoint, LearningRateSchedule, ProgressLog, StepCheckpoint
from .launch import launch, world_info
from .schedule import learning_rate, steps_per_epoch
from .training_logs import training_log_hooks

logger = mge.get_logger(__name__)


@dataclasses.dataclass
class TrainOptions:
    dataset_dir: str
    output_dir: str
    batch_size: int = 2  # images per device
    backbone_weights: str = None  # ImageNet (or other) weights for the backbone
    resume: bool = False  # continue from the newest checkpoint in output_dir
    # start from a trained detector: a weight file or URL, a hub entry name or a checkpoint
    finetune: str = None
    num_workers: int = 2  # data-loading processes per device
    seed: int = 0
    threads: int = 2  # kernel threads of a single-process run on a machine without GPU
    # the training step: "traced" (one static graph, cpu/traced_step.py; single-process CPU
    # runs only) or "eager" (MegEngine's operators one by one); None: on the CPU the one
    # cpu/step_plan.py chooses for the run's batches, eager on GPUs (docs/training.md)
    step: str = None
    # MegEngine's async_level: None is cpu.CPU_TRAINING_ASYNC_LEVEL on the CPU, else 2
    async_level: int = None
    non_finite_retries: int = 1  # CPU: repeats of an epoch that ends in NaN/Inf (cpu/guard.py)
    cpu_kernels: bool = True  # CPU: the fast training modules and in-place SGD of cpu/
    # CPU: what runs the convolutions, one of cpu.CONVOLUTIONS ("auto": oneDNN where built)
    convolutions: str = "auto"
    # CPU: "fp32", or "bf16": the convolutions in bfloat16 on oneDNN (CPUs with bf16 units),
    # weights, gradients and the optimizer's state in float32
    precision: str = "fp32"
    log_every: int = None  # steps between log records; None: the config's log_interval
    # steps between step checkpoints; None: the config's checkpoint_interval, 0: none
    checkpoint_every: int = None
    eval_every_epoch: bool = False  # COCO metrics of the config's test split after each epoch
    extra_hooks: tuple = ()  # HookBase objects called after the standard ones


class Trainer:
    """A model, its optimizer and gradient manager, and the progress of training
    (``epoch``, ``iteration`` = steps done over all epochs, ``step_in_epoch`` = the number of
    the running step in its epoch, or of the next one to run).

    ``train(epoch_batches)`` runs the epochs from (``epoch``, ``step_in_epoch``) to
    ``cfg.max_epoch``; the hooks do everything around the steps. The training benchmark runs
    the same ``run_step``.
    """

    def __init__(self, model, optimizer, cfg, batch_size, output_dir, hooks=(), world_size=1,
                 rank=0, traced=False, step_plan=None):
        self.model, self.optimizer, self.cfg = model, optimizer, cfg
        self.output_dir = output_dir
        self.hooks = list(hooks)
        self.world_size, self.rank = world_size, rank
        self.total_batch_size = batch_size * world_size
        self.steps_per_epoch = steps_per_epoch(cfg, self.total_batch_size)
        callbacks = [dist.make_allreduce_cb("mean")] if world_size > 1 else None
        params = [p for group in optimizer.param_groups for p in group["params"]]
        self.grad_manager = GradManager().attach(params, callbacks=callbacks)
        if traced and world_size > 1:
            raise ConfigError("the traced training step runs single-process CPU training only")
        # the step as one static graph (cpu/traced_step.py) padding batches to the plan's
        # canvases (cpu/step_plan.py), or MegEngine's eager operators
        self.traced_step = cpu.TracedStep(model, optimizer, self.grad_manager,
                                          step_plan) if traced else None
        self.epoch = 0
        self.iteration = 0
        self.step_in_epoch = 0
        self.step_losses = {}  # name -> value of the last step
        self.total_losses = {}  # iteration -> total loss, of this run's steps
        # [{"id", "name"}] of the training set's categories in label order, kept in checkpoints
        self.categories = None

    def run_step(self, batch, on_phase=None):
        """One optimizer step on a collated batch (NumPy arrays); returns its losses as
        floats. A NaN/Inf loss raises NonFiniteLossError before the weights change.
        ``on_phase(name)`` is called after "forward", "backward" and "optimizer" (eager), or
        after "step" (traced: one graph)."""
        mark = on_phase or (lambda phase: None)
        if self.traced_step is not None:
            losses = self.traced_step(batch)  # holds the update itself on a NaN/Inf loss
            mark("step")
        else:
            with self.grad_manager:
                losses = self.model(**{name: mge.tensor(value) for name, value in batch.items()})
                mark("forward")
                self.grad_manager.backward(losses["total_loss"])
            mark("backward")
        values = {name: float(value.item()) for name, value in losses.items()}
        if not all(math.isfinite(v) for v in values.values()):
            self.optimizer.clear_grad()
            raise NonFiniteLossError(
                "non-finite loss at epoch {} step {} (iteration {}): {}; the last good "
                "checkpoint is {}".format(self.epoch, self.step_in_epoch, self.iteration, values,
                                          self.latest_checkpoint()))
        if self.traced_step is None:
            self.optimizer.step().clear_grad()
            mark("optimizer")
        return values

    def train(self, epoch_batches):
        """Train from ``epoch`` to the last epoch; ``epoch_batches(epoch, start)`` yields the
        collated batches of an epoch from its batch number ``start`` on (0, or where a resumed
        run continues). An epoch ending in NaN/Inf runs again from the checkpoint a hook
        recovers, else the error propagates."""
        self.model.train()
        if self.world_size > 1:
            dist.bcast_list_(self.model.tensors())
        self._call("before_train")
        while self.epoch < self.cfg.max_epoch:
            try:
                self._train_epoch(epoch_batches(self.epoch, self.step_in_epoch))
            except NonFiniteError as error:
                if not any(hook.recover(self, error) for hook in self.hooks
                           if hasattr(hook, "recover")):
                    raise
                continue
            self.epoch += 1
            self.step_in_epoch = 0
        self._call("after_train")

    def _train_epoch(self, batches):
        self._call("before_epoch")
        for self.step_in_epoch, batch in enumerate(batches, self.step_in_epoch):
            self._call("before_step")
            self.step_losses = self.run_step(batch)
            self.total_losses[self.iteration] = self.step_losses["total_loss"]
            self.iteration += 1
            self._call("after_step")
        self._call("after_epoch")

    def _call(self, point):
        for hook in self.hooks:
            method = getattr(hook, point, None)  # HookBase has them all; others may not
            if method is not None:
                method(self)

    def save_checkpoint(self, step=None):
        """Write epoch_<epoch>.pkl, or with ``step`` (steps done in the epoch) a step
        checkpoint (see checkpoint.save_checkpoint); its path."""
        return save_checkpoint(self.output_dir, self.model, self.optimizer, self.epoch,
                               self.iteration, step, self.categories)

    def _continue_from(self, checkpoint):
        """Load the weights and optimizer state of ``checkpoint``; the traced step traces its
        graphs again (their inputs are the tensors they were traced with)."""
        self.model.load_state_dict(checkpoint["state_dict"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        if self.traced_step is not None:
            self.traced_step.reset()

    def latest_checkpoint(self):
        """Path of the furthest checkpoint in the output folder (not read), or None."""
        return latest_checkpoint(self.output_dir)

    def resume(self):
        """Continue after the newest checkpoint of the output folder that loads
        (checkpoint.newest_checkpoint): weights, optimizer, epoch, iteration and step in the
        epoch. Its path, or None when the folder has no checkpoint."""
        found = newest_checkpoint(self.output_dir)
        if found is None:
            return None
        path, checkpoint = found
        epoch, step = resume_position(checkpoint)
        if step >= self.steps_per_epoch:
            raise ConfigError(
                "{} is {} steps into epoch {}, but an epoch now has {} steps: resume with the "
                "batch size, number of devices and nr_images_epoch of the run that wrote it"
                .format(path, step, epoch, self.steps_per_epoch))
        saved_keys = [set(group) for group in checkpoint["optimizer"]["param_groups"]]
        if saved_keys != [set(group) for group in self.optimizer.param_groups]:
            raise ConfigError(
                "{} holds the state of another optimizer than this config's {!r}: resume with "
                "the cfg.optimizer of the run that wrote it".format(path, self.cfg.optimizer))
        self._continue_from(checkpoint)
        self.epoch, self.step_in_epoch = epoch, step
        self.iteration = checkpoint["iteration"]
        logger.info("resumed from %s: epoch %d, step %d, iteration %d", path, self.epoch,
                    self.step_in_epoch, self.iteration)
        return path


def build_trainer(model, cfg, options, world_size=1, rank=0, on_cpu=False, eval_dataset=None,
                  step_plan=None):
    """The trainer of ``model``: the config's optimizer (``build_optimizer``) over its trainable
    parameters, the standard hooks, the training logs (training_logs.py; validation on
    ``eval_dataset`` after every epoch) and ``options.extra_hooks``. ``on_cpu`` turns on the
    MegEngine 1.13 CPU workarounds: the repeat of an epoch ending in NaN/Inf, the traced step
    (``training_step``, with the canvases of ``step_plan``, a cpu.StepPlan) and, with
    ``options.cpu_kernels``, the fast training modules (``cpu.prepare_training``; in-place SGD
    in the eager step)."""
    sgd = SGD
    hooks = [LearningRateSchedule(), EpochCheckpoint(), ProgressLog()]
    traced = training_step(options, on_cpu, step_plan) == "traced"
    if options.precision != "fp32" and not (on_cpu and options.cpu_kernels):
        raise ConfigError("--precision {} trains on the CPU with the package's CPU kernels "
                          "only".format(options.precision))
    if on_cpu:
        hooks.append(cpu.RepeatNonFiniteEpoch(options.non_finite_retries, world_size))
        if options.cpu_kernels:
            in_place_sgd = cpu.prepare_training(model, options.convolutions, options.precision,
                                                options.threads)
            sgd = SGD if traced else in_place_sgd  # the traced step updates as SGD does
    hooks += training_log_hooks(options.output_dir, rank, eval_dataset, options.batch_size,
                                options.num_workers)
    # after the log hooks: a step's record is in metrics.jsonl before its checkpoint exists, so
    # a run killed in between and resumed from that checkpoint still has the record
    hooks.append(StepCheckpoint())
    hooks += list(options.extra_hooks)
    total_batch_size = options.batch_size * world_size
    optimizer = build_optimizer(model.trainable_parameters(), cfg,
                                learning_rate(cfg, 0, 0, total_batch_size), sgd)
    return Trainer(model, optimizer, cfg, options.batch_size, options.output_dir, hooks,
                   world_size, rank, traced, step_plan)


def build_optimizer(params, cfg, lr, sgd=SGD):
    """The optimizer ``cfg.optimizer`` names, over ``params``: momentum SGD, built by the class
    ``sgd``, or AdamW with betas (``cfg.momentum``, 0.999). Both decay weights by
    ``cfg.weight_decay``; AdamW's decay is decoupled from the gradient (param -= lr *
    weight_decay * param)."""
    if cfg.optimizer == "sgd":
        return sgd(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return AdamW(params, lr=lr, betas=(cfg.momentum, 0.999), weight_decay=cfg.weight_decay)
    raise ConfigError("cfg.optimizer is 'sgd' or 'adamw', not {!r}".format(cfg.optimizer))


def training_step(options, on_cpu, step_plan=None):
    """``options.step``, "eager" or "traced" (on the CPU only: cpu/traced_step.py); by
    default on the CPU the step of ``step_plan`` (a cpu.StepPlan, logged with its reason), or
    traced without one; eager on GPUs."""
    if options.step is None and on_cpu and step_plan is not None:
        logger.info("training step: %s", step_plan.reason)
        return step_plan.step
    if options.step is None:
        return "traced" if on_cpu else "eager"
    if options.step not in ("traced", "eager"):
        raise ConfigError("the training step is 'traced' or 'eager', not {!r}".format(options.step))
    if options.step == "traced" and not on_cpu:
        raise ConfigError("the traced training step runs single-process CPU training only: use "
                          "--step eager")
    if options.step == "traced" and step_plan is not None:
        logger.info("training step: traced, as asked; the default's plan: %s", step_plan.reason)
    return options.step


def quiet_cpu_workers(options, step_plan=None):
    """Whether a CPU training keeps MegEngine's idle workers from spinning: for the traced step
    (asked for, or the default's ``step_plan``) with the package's operators (each waits for
    the queue to drain, and a spinning worker took a core from it); the eager step at level 0
    waits after every operator, and a worker that sleeps at once then has to be woken for
    each (docs/megengine_notes.md)."""
    step = options.step or (step_plan.step if step_plan else "traced")
    return options.cpu_kernels and step == "traced" and cpu.custom_operators_available()


class TrainBatches:
    """Task (epoch, batch number, indices) -> collated batch; the augmentation draws depend
    only on (seed, rank, epoch, batch number), so a resumed run repeats them and each device
    draws its own scales and flips."""

    def __init__(self, dataset, transform, seed, rank=0):
        self.dataset = dataset
        self.transform = transform
        self.seed = seed
        self.rank = rank

    def __call__(self, task):
        epoch, number, indices = task
        rng = self._rng(epoch, number)
        return collate_train([self.transform(self.dataset[i], rng) for i in indices])

    def padded_size(self, task):
        """(height, width) of the batch of ``task`` padded to the model's multiples of 32,
        from the annotations' image sizes and the draws ``__call__`` makes (no image is
        read)."""
        epoch, number, indices = task
        rng = self._rng(epoch, number)
        sizes = [self.transform.resized_size(*self.dataset.image_size(i), rng) for i in indices]
        return tuple(padded_side(max(side)) for side in zip(*sizes))

    def _rng(self, epoch, number):
        return np.random.default_rng([self.seed, self.rank, epoch, number])


def training_batches(cfg, dataset, batch_size, seed, world_size=1, rank=0):
    """(sampler, make_batch) of a training run: the sampler's ``epoch_batches(epoch, count)``
    lists each batch's indices, ``make_batch((epoch, number, indices))`` loads and augments
    it (multi-scale resize and flips of the config)."""
    sampler = GroupedBatchSampler([dataset.aspect_ratio_group(i) for i in range(len(dataset))],
                                  batch_size, seed, world_size, rank)
    transform = TrainTransform(cfg.train_image_short_size, cfg.train_image_max_size)
    return sampler, TrainBatches(dataset, transform, seed, rank)


def cpu_step_plan(cfg, dataset, sampler, make_batch, batch_size):
    """The training step and canvases of a one-process CPU run (cpu/step_plan.py), from the
    padded size of every batch of every epoch of the run, known from the annotations: the
    same whether the run starts or resumes."""
    num_steps = steps_per_epoch(cfg, batch_size)
    return cpu.plan_cpu_step([make_batch.padded_size((epoch, number, indices))
                              for epoch in range(cfg.max_epoch)
                              for number, indices in enumerate(
                                  sampler.epoch_batches(epoch, num_steps))],
                             batch_size, dataset.max_boxes())


def train_worker(config_file, options):
    """Build everything from the config file and train on this process's device: a GPU, or
    without one ``options.threads`` CPU threads. Returns the total loss of every step."""
    world_size, rank = world_info()
    on_cpu = not mge.is_cuda_available()
    # the data and the step's plan first: the plan decides how the CPU process is prepared,
    # before its first operator
    module = load_config_module(config_file)
    cfg = training_config(module, options)
    dataset, eval_dataset = training_datasets(cfg, options, rank)
    sampler, make_batch = training_batches(cfg, dataset, options.batch_size, options.seed,
                                           world_size, rank)
    plan = None
    if on_cpu and world_size == 1 and options.step != "eager":
        plan = cpu_step_plan(cfg, dataset, sampler, make_batch, options.batch_size)
    with contextlib.ExitStack() as stack:
        if on_cpu:
            cpu.prepare_cpu_process(quiet_workers=quiet_cpu_workers(options, plan))
            if world_size == 1:
                stack.enter_context(cpu.default_cpu_threads(options.threads))
        level = options.async_level
        if level is None and on_cpu:
            level = cpu.CPU_TRAINING_ASYNC_LEVEL
        if level is not None:
            stack.enter_context(cpu.async_level(level))
        mge.random.seed(options.seed)  # the same initial weights on every run and rank
        model = module.Net(cfg)
        trainer = build_trainer(model, cfg, options, world_size, rank, on_cpu, eval_dataset,
                                plan)
        trainer.categories = dataset.categories
        start_weights(trainer, options)
        with BatchLoader(make_batch, options.num_workers) as loader:
            def epoch_batches(epoch, start):
                # the batches before ``start`` are not loaded: a batch depends only on its
                # task, so batch ``start`` is the one an uninterrupted run would draw
                batches = sampler.epoch_batches(epoch, trainer.steps_per_epoch)
                return loader.iterate([(epoch, number, batches[number])
                                       for number in range(start, len(batches))])

            trainer.train(epoch_batches)
        return [loss for _, loss in sorted(trainer.total_losses.items())]


def training_config(module, options):
    """The config module's Cfg, ``options.log_every`` replacing its ``log_interval`` and
    ``options.checkpoint_every`` its ``checkpoint_interval``."""
    cfg = module.Cfg()
    if options.log_every is not None:
        cfg.update(log_interval=options.log_every)
    if options.checkpoint_every is not None:
        cfg.update(checkpoint_interval=options.checkpoint_every)
    if cfg.log_interval < 1:
        raise ConfigError("the log interval must be at least 1 step, not {}".format(
            cfg.log_interval))
    if cfg.checkpoint_interval < 0:
        raise ConfigError("the checkpoint interval must be 0 (no step checkpoints) or a "
                          "number of steps, not {}".format(cfg.checkpoint_interval))
    return cfg


def training_datasets(cfg, options, rank=0):
    """The training split and, with ``options.eval_every_epoch``, the validation split (the
    config's test_dataset), each checked first (data/check.py, files looked up, not decoded):
    errors stop the run with their summary before any step, warnings are logged."""
    splits = [cfg.train_dataset] + ([cfg.test_dataset] if options.eval_every_epoch else [])
    for split in splits:
        report = check_dataset(split, options.dataset_dir)
        report.raise_for_errors()
        if rank == 0:
            for finding in report.warnings:
                logger.warning("%s: %s", report.ann_file, finding.line())
    return (build_train_dataset(cfg, options.dataset_dir),
            build_test_dataset(cfg, options.dataset_dir) if options.eval_every_epoch else None)


def start_weights(trainer, options):
    """Where training starts: the newest checkpoint that loads with ``resume``, else a trained
    detector with ``finetune``, else the backbone weights (given, or ImageNet's for the
    backbone when ``cfg.backbone_pretrained``), else the random initialization."""
    cfg, model = trainer.cfg, trainer.model
    if options.resume and trainer.resume() is not None:
        return
    if options.resume and not options.finetune:
        raise FileNotFoundError("--resume: no epoch_<N>.pkl or epoch_<N>_step_<S>.pkl "
                                "checkpoint in {}".format(options.output_dir))
    if options.finetune:
        load_finetune_weights(model, options.finetune)
    elif options.backbone_weights or cfg.backbone_pretrained:
        load_backbone_weights(model, options.backbone_weights or _imagenet_url(cfg.backbone))


def load_backbone_weights(model, path):
    """Load ImageNet-style weights (a state_dict, classifier included or not) into the
    backbone. Every backbone tensor must come from the file: a run whose backbone is partly
    random would train on silently, so a tensor left out is an error naming it."""
    report = load_matching_weights(model.backbone.bottom_up, state_dict_of(load_weight_file(path)))
    if report.reinitialized:
        unloaded = ["{} ({})".format(name, reason)
                    for name, reason in sorted(report.reinitialized.items())]
        raise WeightsUnavailableError(
            "backbone weights {} leave {} backbone tensor(s) unloaded: {}{}; give a file with "
            "this backbone's tensor names and shapes".format(
                path, len(unloaded), "; ".join(unloaded[:6]),
                "; ..." if len(unloaded) > 6 else ""))
    logger.info("backbone weights from %s: %s", path, report.table())


def finetune_source(name):
    """A weight file or URL as given, the newest checkpoint of a training output folder, or
    the published weights of a hub entry name."""
    if os.path.exists(name) or "://" in name:
        return resolve_weights(name)
    if name not in RELEASED_MODELS:
        raise FileNotFoundError("--finetune {}: neither a file, a URL nor a hub entry ({})".format(
            name, ", ".join(RELEASED_MODELS)))
    return RELEASED_MODELS[name].url


def load_finetune_weights(model, name):
    """Every tensor of a trained detector whose name and shape match; the rest keep their
    fresh initialization (e.g. the classifier, with its prior-probability bias, when the
    number of classes differs). Training state in a checkpoint is ignored: the run starts at
    epoch 0 with a new optimizer."""
    source = finetune_source(name)
    report = load_matching_weights(model, state_dict_of(load_weight_file(source)))
    logger.info("fine-tuning from %s\n%s", source, report.table())
    return report


def _imagenet_url(backbone):
    if backbone not in IMAGENET_WEIGHTS:
        raise ConfigError("no ImageNet weights are known for {}: pass -w BACKBONE_WEIGHTS or set "
                          "cfg.backbone_pretrained = False".format(backbone))
    return IMAGENET_WEIGHTS[backbone]


def run_training(config_file, options, num_devices=1, num_machines=1, machine_rank=0,
                 master_ip="localhost", port=0):
    """Train on every device; returns the total loss of each step (of rank 0)."""
    os.makedirs(options.output_dir, exist_ok=True)
    results = launch(train_worker, (config_file, options), num_devices, num_machines,
                     machine_rank, master_ip, port)
    return results if num_devices * num_machines == 1 else results[0]
