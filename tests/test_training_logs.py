"""Training logs read back: metrics.jsonl, the TensorBoard event file and curves.png, after a
plain run, after a resume and after an epoch repeated by the NaN guard."""
import collections
import glob
import json
import os
import shutil
import struct
import subprocess
import sys

import cv2
import numpy as np
import pytest
from tensorboardX.proto.event_pb2 import Event, SessionLog
from tensorboardX.record_writer import masked_crc32c

from official.vision.detection.data.synthetic import make_synthetic_coco
from official.vision.detection.engine.coco_evaluation import EvalOptions, run_test
from official.vision.detection.engine.curves import CURVES_SIZE
from official.vision.detection.engine.hooks import HookBase
from official.vision.detection.engine.schedule import learning_rate
from official.vision.detection.engine.trainer import TrainOptions, run_training
from official.vision.detection.errors import ConfigError, NonFiniteLossError
from official.vision.detection.utils.config_file import load_config_module

from conftest import PROJECT_ROOT, write_config

# write_config's run: 8 images per epoch at batch 2, so 4 steps in each of 2 epochs; with a
# record every 3 steps and at each epoch's end the records are at these steps
LOG_EVERY = 3
STEPS = [3, 4, 6, 8]
LOSSES = ("total_loss", "loss_cls", "loss_bbox", "loss_ctr")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(config, dataset dir, output dir, total loss of each step) of a run validated after
    every epoch."""
    root = tmp_path_factory.mktemp("logs")
    make_synthetic_coco(str(root / "shapes"), num_train=10, num_val=4, image_size=64,
                        num_classes=3, seed=1)
    config = write_config(root / "logged.py")
    output_dir = str(root / "run")
    losses = run_training(config, TrainOptions(str(root), output_dir, batch_size=2,
                                               num_workers=0, log_every=LOG_EVERY,
                                               eval_every_epoch=True))
    return config, str(root), output_dir, losses


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def read_events(logdir):
    """Every event of the TensorBoard files in ``logdir``, in file-name order as TensorBoard
    reads them, from the TFRecord framing (length, its masked CRC-32C, the Event proto, its
    masked CRC-32C)."""
    events = []
    for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
        with open(path, "rb") as f:
            data = f.read()
        offset = 0
        while offset < len(data):
            header = data[offset:offset + 8]
            (length,) = struct.unpack("<Q", header)
            assert struct.unpack("<I", data[offset + 8:offset + 12])[0] == masked_crc32c(header)
            payload = data[offset + 12:offset + 12 + length]
            end = offset + 12 + length
            assert struct.unpack("<I", data[end:end + 4])[0] == masked_crc32c(payload)
            events.append(Event.FromString(payload))
            offset = end + 4
    return events


def visible_scalars(events):
    """{tag: [(step, value)]} as TensorBoard shows them: a SessionLog START at step s hides
    the earlier events of steps >= s (how TensorBoard purges a restarted run's stale steps)."""
    scalars = collections.defaultdict(list)
    for event in events:
        if event.HasField("session_log") and event.session_log.status == SessionLog.START:
            for tag, points in scalars.items():
                scalars[tag] = [(step, value) for step, value in points if step < event.step]
        for value in event.summary.value:
            scalars[value.tag].append((event.step, value.simple_value))
    return scalars


def assert_events_show_the_records(output_dir, records):
    scalars = visible_scalars(read_events(output_dir))
    names = {name for record in records for name in record} - {"step", "epoch"}
    assert set(scalars) == names
    for name in names:
        expected = [(r["step"], r[name]) for r in records if name in r]
        assert [step for step, _ in scalars[name]] == [step for step, _ in expected], name
        np.testing.assert_allclose([v for _, v in scalars[name]], [v for _, v in expected],
                                   rtol=1e-6, err_msg=name)


def test_a_run_logs_losses_rate_speed_and_validation_to_jsonl_tensorboard_and_curves(trained):
    config, dataset_dir, output_dir, losses = trained
    records = read_jsonl(os.path.join(output_dir, "metrics.jsonl"))
    assert [r["step"] for r in records] == STEPS
    assert [r["epoch"] for r in records] == [0, 0, 1, 1]
    # each loss is the mean since the previous record, windows ending at each epoch's end
    windows = [losses[0:3], losses[3:4], losses[4:6], losses[6:8]]
    assert [r["total_loss"] for r in records] == pytest.approx([np.mean(w) for w in windows])
    for record in records:
        assert all(name in record for name in LOSSES)
        assert record["images_per_second"] > 0
        cfg = load_config_module(config).Cfg()
        assert record["lr"] == pytest.approx(learning_rate(cfg, record["epoch"],
                                                           record["step"] - 1, 2))

    # the validation after each epoch joins that epoch's last record, and scores the weights
    # of its checkpoint as tools/test.py does
    assert ["bbox/AP" in r for r in records] == [False, True, False, True]
    last = os.path.join(output_dir, "epoch_1.pkl")
    table = run_test(config, EvalOptions(dataset_dir, [last], num_workers=0,
                                         results_path=os.path.join(output_dir, "r.json")))
    assert {name: records[-1]["bbox/" + name] for name in table[last]} == pytest.approx(
        table[last], abs=1e-6)

    assert_events_show_the_records(output_dir, records)
    curves = cv2.imread(os.path.join(output_dir, "curves.png"))
    assert curves.shape == (CURVES_SIZE[1], CURVES_SIZE[0], 3)
    assert curves.std() > 0


def test_resume_after_a_crash_continues_the_logs_without_repeating_a_step(trained, tmp_path):
    config, dataset_dir, finished, _ = trained
    output_dir = str(tmp_path / "crashed")
    shutil.copytree(finished, output_dir)
    # as if the run had died in its second epoch, in the middle of writing a line
    os.remove(os.path.join(output_dir, "epoch_1.pkl"))
    metrics = os.path.join(output_dir, "metrics.jsonl")
    before = read_jsonl(metrics)
    with open(metrics, "a") as f:
        f.write('{"step":9,"epoch":1,"total_lo')

    result = subprocess.run(
        [sys.executable, os.path.join(PROJECT_ROOT, "tools", "train.py"), "-f", config, "-d",
         dataset_dir, "-o", output_dir, "-b", "2", "--workers", "0", "--resume",
         "--log-every", str(LOG_EVERY), "--eval-every-epoch"],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    records = read_jsonl(metrics)
    assert [r["step"] for r in records] == STEPS
    assert records[:2] == before[:2]  # the records up to the checkpoint stay as they were
    assert "bbox/AP" in records[-1]
    # the first run's file still holds steps 6 and 8; the resumed run's marker hides them
    raw_steps = [e.step for e in read_events(output_dir)
                 if any(v.tag == "total_loss" for v in e.summary.value)]
    assert raw_steps == STEPS + STEPS[2:]
    assert_events_show_the_records(output_dir, records)


class NonFiniteOnce(HookBase):
    """Fails the step after ``iteration`` steps once, as a NaN loss would."""

    def __init__(self, iteration):
        self.iteration = iteration
        self.failed = False

    def after_step(self, trainer):
        if trainer.iteration == self.iteration and not self.failed:
            self.failed = True
            raise NonFiniteLossError("injected NaN at iteration {}".format(self.iteration))


def test_an_epoch_repeated_after_a_nan_is_logged_once(trained, tmp_path, caplog):
    config, dataset_dir, _, _ = trained
    output_dir = str(tmp_path / "repeated")
    # step 6 of epoch 1 is logged, then fails: the guard repeats epoch 1 from epoch_0.pkl
    run_training(config, TrainOptions(dataset_dir, output_dir, batch_size=2, num_workers=0,
                                      log_every=LOG_EVERY, extra_hooks=(NonFiniteOnce(6),)))
    assert caplog.text.count("repeating epoch 1 from") == 1
    records = read_jsonl(os.path.join(output_dir, "metrics.jsonl"))
    assert [r["step"] for r in records] == STEPS
    raw_steps = [e.step for e in read_events(output_dir)
                 if any(v.tag == "total_loss" for v in e.summary.value)]
    assert raw_steps == [3, 4, 6, 6, 8]
    assert_events_show_the_records(output_dir, records)


def test_a_log_interval_below_one_step_is_refused_before_training(trained, tmp_path):
    config, dataset_dir, _, _ = trained
    with pytest.raises(ConfigError, match="log interval must be at least 1 step, not 0"):
        run_training(config, TrainOptions(dataset_dir, str(tmp_path / "run"), log_every=0))
    assert not os.listdir(str(tmp_path / "run"))
