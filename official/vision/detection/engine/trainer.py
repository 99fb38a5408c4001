"""The training loop: SGD with warm-up and step decay, a checkpoint per epoch, resume."""
import contextlib
import dataclasses
import math
import os
import time

import numpy as np
import megengine as mge
import megengine.distributed as dist
from megengine.autodiff import GradManager
from tqdm import tqdm

from ..backbones.resnet import IMAGENET_WEIGHTS
from ..data.coco import COCODetection, resolve_dataset_paths
from ..data.collate import collate_train
from ..data.loader import BatchLoader
from ..data.samplers import GroupedBatchSampler
from ..data.transforms import TrainTransform
from ..errors import (
    ConfigError, DatasetError, NonFiniteError, NonFiniteLossError, WeightsUnavailableError
)
from ..model_zoo import RELEASED_MODELS
from ..utils.config_file import load_config_module
from ..utils.cpu import default_cpu_threads, synchronous_execution
from ..weights import load_matching_weights, load_weight_file, state_dict_of
from .checkpoint import latest_checkpoint, load_checkpoint, resolve_weights, save_checkpoint
from .launch import launch, world_info
from .optimizer import InplaceSGD
from .schedule import learning_rate, steps_per_epoch

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
    synchronous: bool = False  # exactly repeatable on the CPU, ~2.5x slower (utils/cpu.py)
    non_finite_retries: int = 1  # repeats of an epoch that ends in NaN/Inf (run_epoch)


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
        rng = np.random.default_rng([self.seed, self.rank, epoch, number])
        return collate_train([self.transform(self.dataset[i], rng) for i in indices])


def build_train_dataset(cfg, dataset_dir):
    root, ann_file = resolve_dataset_paths(cfg.train_dataset, dataset_dir)
    dataset = COCODetection(root, ann_file, cfg.train_dataset.get(
        "remove_images_without_annotations", True))
    if len(dataset.category_ids) != cfg.num_classes:
        raise DatasetError("cfg.num_classes is {} but {} has {} categories; set num_classes = "
                           "{}".format(cfg.num_classes, ann_file, len(dataset.category_ids),
                                       len(dataset.category_ids)))
    return dataset


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


class Trainer:
    def __init__(self, model, cfg, dataset, options, world_size=1, rank=0):
        self.model, self.cfg, self.dataset, self.options = model, cfg, dataset, options
        self.world_size, self.rank = world_size, rank
        self.total_batch_size = options.batch_size * world_size
        self.steps_per_epoch = steps_per_epoch(cfg, self.total_batch_size)
        params = model.trainable_parameters()
        self.optimizer = InplaceSGD(params, lr=learning_rate(cfg, 0, 0, self.total_batch_size),
                                    momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        callbacks = [dist.make_allreduce_cb("mean")] if world_size > 1 else None
        self.grad_manager = GradManager().attach(params, callbacks=callbacks)
        self.start_epoch = 0
        self.iteration = 0  # optimizer steps done so far, over all epochs
        self.losses = []  # total loss of every step of this run

    def resume(self, path):
        checkpoint = load_checkpoint(path)
        self.model.load_state_dict(checkpoint["state_dict"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.start_epoch = checkpoint["epoch"] + 1
        self.iteration = checkpoint["iteration"]
        logger.info("resumed from %s: epoch %d, iteration %d", path, self.start_epoch,
                    self.iteration)

    def train(self):
        self.model.train()
        if self.world_size > 1:
            dist.bcast_list_(self.model.tensors())
        sampler = GroupedBatchSampler(
            [self.dataset.aspect_ratio_group(i) for i in range(len(self.dataset))],
            self.options.batch_size, self.options.seed, self.world_size, self.rank)
        transform = TrainTransform(self.cfg.train_image_short_size, self.cfg.train_image_max_size)
        make_batch = TrainBatches(self.dataset, transform, self.options.seed, self.rank)
        with BatchLoader(make_batch, self.options.num_workers) as loader:
            for epoch in range(self.start_epoch, self.cfg.max_epoch):
                self.run_epoch(epoch, sampler, loader)

    def run_epoch(self, epoch, sampler, loader):
        """Train an epoch and save its checkpoint. On a NaN/Inf loss or weights a
        single-process run repeats the epoch from the last checkpoint (up to
        ``options.non_finite_retries`` times), as ``--resume`` would: MegEngine 1.13's
        asynchronous CPU execution now and then corrupts values, and the repeat runs the same
        batches. A run that diverges fails the repeat too and stops with the error."""
        losses_before = len(self.losses)
        for attempt in range(self.options.non_finite_retries + 1):
            try:
                batches = sampler.epoch_batches(epoch, self.steps_per_epoch)
                tasks = [(epoch, number, indices) for number, indices in enumerate(batches)]
                self.train_epoch(epoch, loader.iterate(tasks))
                if self.rank == 0:
                    path = save_checkpoint(self.options.output_dir, self.model, self.optimizer,
                                           epoch, self.iteration)
                    logger.info("saved %s", path)
                return
            except NonFiniteError as error:
                latest = latest_checkpoint(self.options.output_dir)
                if attempt == self.options.non_finite_retries or latest is None \
                        or self.world_size > 1:
                    raise
                logger.warning("%s; repeating epoch %d from %s", error, epoch, latest)
                self.resume(latest)
                del self.losses[losses_before:]

    def train_epoch(self, epoch, batches):
        progress = tqdm(total=self.steps_per_epoch, desc="epoch {}".format(epoch),
                        disable=self.rank != 0, dynamic_ncols=True)
        data_start = time.time()
        for step, batch in enumerate(batches):
            data_time = time.time() - data_start
            lr = learning_rate(self.cfg, epoch, self.iteration, self.total_batch_size)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            step_start = time.time()
            losses = self.step(batch, epoch, step)
            self.losses.append(losses["total_loss"])
            self.iteration += 1
            progress.update()
            progress.set_postfix(loss="{:.3f}".format(losses["total_loss"]))
            if self.rank == 0 and (step % self.cfg.log_interval == 0
                                   or step == self.steps_per_epoch - 1):
                progress.write("epoch {} step {}/{} lr {:.5f} {} data {:.3f}s step {:.3f}s".format(
                    epoch, step, self.steps_per_epoch, lr,
                    " ".join("{} {:.4f}".format(k, v) for k, v in losses.items()),
                    data_time, time.time() - step_start))
            data_start = time.time()
        progress.close()

    def step(self, batch, epoch, step):
        """One optimizer step; raises NonFiniteLossError before updating on a NaN/Inf loss."""
        with self.grad_manager:
            losses = self.model(image=mge.tensor(batch["image"]),
                                im_info=mge.tensor(batch["im_info"]),
                                gt_boxes=mge.tensor(batch["gt_boxes"]))
            self.grad_manager.backward(losses["total_loss"])
        values = {name: float(value.item()) for name, value in losses.items()}
        if not all(math.isfinite(v) for v in values.values()):
            self.optimizer.clear_grad()
            latest = latest_checkpoint(self.options.output_dir)
            raise NonFiniteLossError(
                "non-finite loss at epoch {} step {} (iteration {}): {}; the last good "
                "checkpoint is {}".format(epoch, step, self.iteration, values, latest))
        self.optimizer.step().clear_grad()
        return values


def train_worker(config_file, options):
    """Build everything from the config file and train on this process's device: a GPU, or
    without one ``options.threads`` CPU threads."""
    with contextlib.ExitStack() as stack:
        if world_info()[0] == 1 and not mge.is_cuda_available():
            stack.enter_context(default_cpu_threads(options.threads))
        if options.synchronous:
            stack.enter_context(synchronous_execution())
        return _train(config_file, options)


def _train(config_file, options):
    world_size, rank = world_info()
    module = load_config_module(config_file)
    cfg = module.Cfg()
    mge.random.seed(options.seed)  # the same initial weights on every run and rank
    model = module.Net(cfg)
    trainer = Trainer(model, cfg, build_train_dataset(cfg, options.dataset_dir), options,
                      world_size, rank)
    latest = latest_checkpoint(options.output_dir) if options.resume else None
    if options.resume and latest is None and not options.finetune:
        raise FileNotFoundError("--resume: no epoch_<N>.pkl checkpoint in {}".format(
            options.output_dir))
    if latest is not None:
        trainer.resume(latest)
    elif options.finetune:
        load_finetune_weights(model, options.finetune)
    elif options.backbone_weights or cfg.backbone_pretrained:
        load_backbone_weights(model, options.backbone_weights or _imagenet_url(cfg.backbone))
    trainer.train()
    return trainer.losses


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
