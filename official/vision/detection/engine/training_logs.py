"""What training measures and where it goes, one hook per concern (see docs/observing.md).

Measuring hooks put values into the record of the current step:
- ``StepMetrics``: at the logged steps (``hooks.is_log_step``), the mean of each loss over the
  steps since the previous record, the learning rate of the last step and the images per
  second over those steps (wall time, data loading included).
- ``EpochEvaluation``: after every epoch, the COCO metrics of the validation split.

``MetricRecords`` merges them into one record per step, ``{"step": steps done, "epoch": N,
name: value, ...}``, and hands it to the writers: ``MetricsFile`` (metrics.jsonl) and
``TensorboardWriter`` (event files); ``CurvesPlot`` draws curves.png from metrics.jsonl.
Only rank 0 writes.

A run that starts at step N (0, or a checkpoint's iteration with --resume) and an epoch
repeated from the last checkpoint (cpu/guard.py) continue the same logs: the records past N are
dropped from metrics.jsonl (rewritten atomically) and hidden in TensorBoard, so no step appears
twice.
"""
import collections
import json
import os
import time

import megengine as mge

from ..data.coco import coco_results
from ..predictor import Predictor
from ..utils.files import json_line, write_jsonl_atomic
from .coco_evaluation import cocoeval_metrics, detect_and_gather, metrics_table
from .hooks import HookBase, is_log_step
from .metric_keys import PROGRESS_KEYS, VALIDATION_PREFIX

logger = mge.get_logger(__name__)

METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"


class MetricRecords(HookBase):
    """The record of the current step: measuring hooks ``put`` values into it, and it goes to
    every writer ``subscribe``d once the step's hooks have run (after an epoch's last step,
    once the epoch's hooks have run, so the validation metrics join that step's record)."""

    def __init__(self):
        self.pending = {}
        self.writers = []

    def subscribe(self, write):
        self.writers.append(write)

    def put(self, trainer, values):
        """Add ``values`` {name: number} to the record of the trainer's current step."""
        if not self.pending:
            self.pending = {"step": trainer.iteration, "epoch": trainer.epoch}
        self.pending.update(values)

    def before_epoch(self, trainer):
        self.pending = {}  # what an epoch that failed before its end had put

    def after_step(self, trainer):
        if trainer.step_in_epoch < trainer.steps_per_epoch - 1:
            self._publish()

    def after_epoch(self, trainer):
        self._publish()

    def _publish(self):
        if self.pending:
            for write in self.writers:
                write(self.pending)
            self.pending = {}


class StepMetrics(HookBase):
    """Losses, learning rate and throughput at the logged steps, averaged since the previous
    record. A window never spans two epochs (the last step of each is logged), so checkpoint
    and validation time stay out of the throughput."""

    def __init__(self, records):
        self.records = records
        self.loss_sums = collections.defaultdict(float)
        self.steps = 0
        self.start = 0.0

    def before_epoch(self, trainer):
        self._new_window()

    def after_step(self, trainer):
        self.steps += 1
        for name, value in trainer.step_losses.items():
            self.loss_sums[name] += value
        if not is_log_step(trainer):
            return
        seconds = time.perf_counter() - self.start
        values = {name: total / self.steps for name, total in self.loss_sums.items()}
        values["lr"] = trainer.optimizer.param_groups[0]["lr"]
        values["images_per_second"] = self.steps * trainer.total_batch_size / seconds
        self.records.put(trainer, values)
        self._new_window()

    def _new_window(self):
        self.loss_sums.clear()
        self.steps = 0
        self.start = time.perf_counter()


class EpochEvaluation(HookBase):
    """After every epoch, the 12 COCO metrics of the model on ``dataset`` (the validation
    split) as ``bbox/<metric>`` values of the epoch's last record. Every rank detects its share
    of the images and rank 0 scores them (``records`` is only needed there)."""

    def __init__(self, dataset, records=None, batch_size=1, num_workers=2):
        self.dataset = dataset
        self.records = records
        self.batch_size = batch_size
        self.num_workers = num_workers

    def after_epoch(self, trainer):
        trainer.model.eval()
        try:
            detections = detect_and_gather(Predictor(trainer.model), self.dataset,
                                           self.batch_size, False, self.num_workers,
                                           trainer.output_dir, trainer.world_size, trainer.rank)
        finally:
            trainer.model.train()
        if trainer.rank != 0:
            return
        metrics = cocoeval_metrics(self.dataset.coco,
                                   coco_results(detections, self.dataset.category_ids),
                                   [r["image_id"] for r in detections])
        logger.info("validation after epoch %d:\n%s", trainer.epoch,
                    metrics_table({"epoch_{}.pkl".format(trainer.epoch): metrics}))
        self.records.put(trainer, {VALIDATION_PREFIX + name: value
                                   for name, value in metrics.items()})


def read_metrics(path):
    """The records of a metrics.jsonl file in order ([] when there is none). A line that is
    not a whole record, the one a crash tore while it was being written, is left out."""
    if not os.path.exists(path):
        return []
    records = []
    with open(path) as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("step"), int):
                records.append(record)
    return records


class MetricsFile(HookBase):
    """metrics.jsonl: one record per line, appended and flushed as it comes, so a crash can at
    worst tear the line being written. At the start of a run, and when an epoch runs again
    from the last checkpoint, the file is first rewritten atomically with only the whole
    records up to the trainer's step."""

    def __init__(self, records, path):
        records.subscribe(self.write)
        self.path = path
        self.file = None
        self.last_step = 0

    def before_train(self, trainer):
        self._keep_until(trainer.iteration)

    def before_epoch(self, trainer):
        if self.last_step > trainer.iteration:  # the epoch repeats from the last checkpoint
            self._keep_until(trainer.iteration)

    def write(self, record):
        self.file.write(json_line(record))
        self.file.flush()
        self.last_step = record["step"]

    def after_train(self, trainer):
        self.file.close()

    def _keep_until(self, step):
        if self.file is not None:
            self.file.close()
        kept = [record for record in read_metrics(self.path) if record["step"] <= step]
        write_jsonl_atomic(kept, self.path)
        self.file = open(self.path, "a")  # pylint: disable=consider-using-with
        self.last_step = kept[-1]["step"] if kept else 0


class TensorboardWriter(HookBase):
    """TensorBoard event files in ``logdir``: every value of a record as a scalar at the
    record's step, the tag being the record's key. Each run writes a new file that starts with
    a restart marker at its first step; an epoch repeated from the last checkpoint writes one
    too. TensorBoard then hides the events of later steps written before the marker (its way
    of purging what a crashed run logged past its checkpoint)."""

    def __init__(self, records, logdir):
        records.subscribe(self.write)
        self.logdir = logdir
        self.writer = None
        self.last_step = 0

    def before_train(self, trainer):
        # imported here: tensorboardX and its protobuf modules take ~0.4 s to import, which
        # only training runs should pay
        from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel

        # TensorBoard reads event files in name order, and a name only has the second it was
        # made in: the microseconds keep two runs of one second apart, and in order
        self.writer = SummaryWriter(self.logdir, filename_suffix=".{:06d}".format(
            int(time.time() * 1e6) % 1000000))
        self._restart_at(trainer.iteration)

    def before_epoch(self, trainer):
        if self.last_step > trainer.iteration:
            self._restart_at(trainer.iteration)

    def write(self, record):
        for name, value in record.items():
            if name not in PROGRESS_KEYS:
                self.writer.add_scalar(name, value, record["step"])
        self.writer.flush()
        self.last_step = record["step"]

    def after_train(self, trainer):
        self.writer.close()

    def _restart_at(self, step):
        """Mark a (re)start after ``step`` steps: TensorBoard drops the events of steps after
        ``step`` that came before this marker."""
        from tensorboardX.proto.event_pb2 import (  # pylint: disable=import-outside-toplevel
            Event, SessionLog
        )

        self.writer.file_writer.add_event(Event(
            step=step + 1, wall_time=time.time(),
            session_log=SessionLog(status=SessionLog.START)))
        self.last_step = step


class CurvesPlot(HookBase):
    """curves.png, drawn from metrics.jsonl (``curves.plot_curves``) after every epoch and at
    the end of training, when the file has new records."""

    def __init__(self, metrics_path, png_path):
        self.metrics_path = metrics_path
        self.png_path = png_path
        self.plotted = None

    def after_epoch(self, trainer):
        self._plot()

    def after_train(self, trainer):
        self._plot()

    def _plot(self):
        # imported here: matplotlib takes ~1 s to import, which only training runs should pay
        from .curves import plot_curves  # pylint: disable=import-outside-toplevel

        records = read_metrics(self.metrics_path)
        if records != self.plotted:
            plot_curves(records, self.png_path)
            self.plotted = records


def training_log_hooks(output_dir, rank=0, eval_dataset=None, batch_size=1, num_workers=2):
    """The hooks that measure training and write metrics.jsonl, TensorBoard event files and
    curves.png into ``output_dir`` (rank 0), in the order they must run; with
    ``eval_dataset``, the validation after every epoch (on every rank)."""
    records = MetricRecords() if rank == 0 else None
    hooks = [StepMetrics(records)] if rank == 0 else []
    if eval_dataset is not None:
        hooks.append(EpochEvaluation(eval_dataset, records, batch_size, num_workers))
    if rank == 0:
        metrics_path = os.path.join(output_dir, METRICS_FILE)
        hooks += [records, MetricsFile(records, metrics_path),
                  TensorboardWriter(records, output_dir),
                  CurvesPlot(metrics_path, os.path.join(output_dir, CURVES_FILE))]
    return hooks
