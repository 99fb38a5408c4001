"""Training end to end on a tiny synthetic COCO-format dataset, with an official-style config."""
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import megengine as mge
import megengine.module as M
import pytest
from megengine.optimizer import SGD, AdamW

from official.vision.detection.boxes import padded_side
from official.vision.detection.data.build import build_train_dataset
from official.vision.detection.data.coco import COCODetection
from official.vision.detection.data.synthetic import make_synthetic_coco
from official.vision.detection.data.transforms import TrainTransform
from official.vision.detection.engine import checkpoint as checkpoint_module
from official.vision.detection.engine.checkpoint import (
    STEP_CHECKPOINTS_KEPT, checkpoint_path, epoch_checkpoints, load_checkpoint, newest_checkpoint,
    save_checkpoint, step_checkpoints
)
from official.vision.detection.engine.coco_evaluation import COCO_METRICS, EvalOptions, run_test
from official.vision.detection.engine.hooks import HookBase
from official.vision.detection.engine.launch import launch
from official.vision.detection.cpu.sgd import InplaceSGD
from official.vision.detection.engine.trainer import (
    NonFiniteLossError, TrainBatches, TrainOptions, build_optimizer, build_trainer,
    cpu_step_plan, load_backbone_weights, run_training, training_batches
)
from official.vision.detection.errors import (
    ConfigError, DatasetError, NonFiniteError, WeightsUnavailableError
)
from official.vision.detection.models import FCOS
from official.vision.detection.utils.config_file import load_config_module

from conftest import PROJECT_ROOT, tiny_config, write_config


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    make_synthetic_coco(str(root / "shapes"), num_train=10, num_val=4, image_size=64,
                        num_classes=3, seed=1)
    return str(root)


@pytest.fixture(scope="module")
def varied_dataset_dir(tmp_path_factory):
    """Images of varied sizes and aspect ratios: at the configs' short side 64 and long side
    96 the batches of two take several padded sizes."""
    root = tmp_path_factory.mktemp("varied")
    make_synthetic_coco(str(root / "shapes"), num_train=12, num_val=2,
                        image_size=((40, 100), (40, 100)), num_classes=3, seed=2)
    return str(root)


def test_official_style_config_trains_and_its_checkpoints_evaluate(dataset_dir, tmp_path):
    config = write_config(tmp_path / "my_fcos.py")
    output_dir = str(tmp_path / "log")
    run_training(config, TrainOptions(dataset_dir, output_dir, batch_size=2, num_workers=1))
    checkpoints = epoch_checkpoints(output_dir)
    assert sorted(checkpoints) == [0, 1]
    last = load_checkpoint(checkpoints[1])
    assert last["epoch"] == 1 and last["iteration"] == 8  # 2 epochs x 8 images / batch 2

    table = run_test(config, EvalOptions(dataset_dir, [checkpoints[0], checkpoints[1]],
                                         num_workers=0))
    assert set(table[checkpoints[1]]) == set(COCO_METRICS)
    assert os.path.isfile(os.path.join(output_dir, "epoch_1_coco_results.json"))


def train_command(config, dataset_dir, output_dir, *extra):
    return [sys.executable, os.path.join(PROJECT_ROOT, "tools", "train.py"), "-f", config,
            "-d", dataset_dir, "-o", output_dir, "-b", "2", "--workers", "0", *extra]


class StepRouteAndAsyncLevel(HookBase):
    def __init__(self):
        self.levels, self.routes = set(), set()

    def before_step(self, trainer):
        self.levels.add(mge.config.async_level)
        self.routes.add("eager" if trainer.traced_step is None else "traced")


@pytest.mark.parametrize("asked, step, expected", [
    (None, "eager", 0), (1, "eager", 1), (None, "traced", 0),
])
def test_cpu_steps_run_eager_at_level_0_by_default_or_as_asked(dataset_dir, tmp_path, asked,
                                                                step, expected):
    # level 0 is the only one at which identical eager CPU trainings never went wrong; the
    # traced step (one graph per step) is asked for
    config = write_config(tmp_path / "levels.py", nr_images=4)
    seen = StepRouteAndAsyncLevel()
    before = mge.config.async_level
    run_training(config, TrainOptions(dataset_dir, str(tmp_path / "out"), batch_size=2,
                                      num_workers=0, async_level=asked, step=step,
                                      extra_hooks=(seen,)))
    assert seen.levels == {expected} and seen.routes == {step}
    assert mge.config.async_level == before  # restored after training


# write_config(nr_images=16) at batch 2: 8 steps in each of 2 epochs; a step checkpoint every
# 3 steps of the run (iterations 3, 6, 9, 12, 15) is 3 and 6 steps into epoch 0 and 1, 4 and 7
# steps into epoch 1
CHECKPOINT_EVERY = 3


def assert_same_weights(checkpoint, expected):
    """Equal within 1e-6: the runs are deterministic at the trainer's CPU async level 0
    (cpu/device.py), so a resumed run matches the uninterrupted one."""
    assert checkpoint["iteration"] == expected["iteration"] == 16
    for name, value in expected["state_dict"].items():
        np.testing.assert_allclose(checkpoint["state_dict"][name], value, rtol=0, atol=1e-6,
                                   err_msg=name)


def step_records(output_dir):
    """metrics.jsonl without the throughput, which is wall time."""
    with open(os.path.join(output_dir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    return [{k: v for k, v in record.items() if k != "images_per_second"} for record in records]


def test_resume_after_a_kill_at_a_step_matches_an_uninterrupted_run(dataset_dir, tmp_path):
    config = write_config(tmp_path / "resumable.py", nr_images=16)
    straight, interrupted = str(tmp_path / "straight"), str(tmp_path / "interrupted")
    every = ("--checkpoint-every", str(CHECKPOINT_EVERY))
    subprocess.run(train_command(config, dataset_dir, straight, *every), check=True,
                   capture_output=True, timeout=600)
    # the last STEP_CHECKPOINTS_KEPT step checkpoints stay, with every epoch checkpoint
    assert STEP_CHECKPOINTS_KEPT == 2
    assert sorted(step_checkpoints(straight)) == [(1, 4), (1, 7)]
    assert sorted(epoch_checkpoints(straight)) == [0, 1]

    # SIGKILL once the checkpoint 6 steps into epoch 0 is there: mid-epoch, between checkpoints
    process = subprocess.Popen(train_command(config, dataset_dir, interrupted, *every),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    reached = checkpoint_path(interrupted, 0, 6)
    deadline = time.time() + 600
    while not os.path.exists(reached) and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert os.path.exists(reached) and not os.path.exists(checkpoint_path(interrupted, 1))

    result = subprocess.run(train_command(config, dataset_dir, interrupted, *every, "--resume"),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "resumed from {}".format(checkpoint_path(interrupted, 0, 6)) in result.stderr
    assert_same_weights(load_checkpoint(checkpoint_path(interrupted, 1)),
                        load_checkpoint(checkpoint_path(straight, 1)))
    # the same records: those past the checkpoint were dropped and written again
    assert step_records(interrupted) == step_records(straight)
    assert [r["step"] for r in step_records(straight)] == [3, 4, 6, 8, 9, 12, 15, 16]


class Stopped(Exception):
    pass


class StopAtIteration(HookBase):
    """Ends the run with ``Stopped`` after the step that completes ``iteration`` steps."""

    def __init__(self, iteration):
        self.iteration = iteration

    def after_step(self, trainer):
        if trainer.iteration == self.iteration:
            raise Stopped


def train_in_process(config, dataset_dir, output_dir, **options):
    run_training(config, TrainOptions(dataset_dir, output_dir, batch_size=2, num_workers=0,
                                      checkpoint_every=CHECKPOINT_EVERY, **options))
    return load_checkpoint(checkpoint_path(output_dir, 1))


def test_a_truncated_newest_checkpoint_is_reported_and_the_previous_one_resumed(
        dataset_dir, tmp_path, caplog):
    config = write_config(tmp_path / "resumable.py", nr_images=16)
    expected = train_in_process(config, dataset_dir, str(tmp_path / "straight"))
    output_dir = str(tmp_path / "cut")
    with pytest.raises(Stopped):  # at iteration 14, after the checkpoint at 12
        train_in_process(config, dataset_dir, output_dir, extra_hooks=(StopAtIteration(14),))
    assert sorted(step_checkpoints(output_dir)) == [(1, 1), (1, 4)]
    newest = checkpoint_path(output_dir, 1, 4)
    with open(newest, "r+b") as f:  # a write cut short, as by a power loss
        f.truncate(os.path.getsize(newest) // 2)

    caplog.clear()
    with caplog.at_level(logging.INFO):
        resumed = train_in_process(config, dataset_dir, output_dir, resume=True)
    warnings = [r.getMessage() for r in caplog.records
                if r.levelno >= logging.WARNING and r.name == checkpoint_module.__name__]
    assert warnings == ["skipping checkpoint {}: cannot be read (UnpicklingError: pickle data "
                        "was truncated)".format(newest)]
    assert "resumed from {}: epoch 1, step 1, iteration 9".format(
        checkpoint_path(output_dir, 1, 1)) in caplog.text
    assert_same_weights(resumed, expected)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_a_traced_run_resumed_mid_epoch_ends_with_the_uninterrupted_runs_weights(
        varied_dataset_dir, tmp_path, optimizer):
    # a graph recorded on loaded tensors computed ~1e-6 apart from one recorded on the tensors
    # training made: the uninterrupted run continues from its checkpoints too, as this one
    # does; the batches of varied sizes are padded to canvases, the same in both runs
    config = write_config(tmp_path / "resumable.py", nr_images=16, optimizer=optimizer)
    path = tmp_path / "resumable.py"  # multi-scale training: more padded sizes
    path.write_text(path.read_text().replace("short_size = (64,)", "short_size = (32, 64)"))
    dataset_dir = varied_dataset_dir
    sizes, plan = run_plan(config, dataset_dir)
    assert len(set(sizes)) > len(plan.canvases)  # some batches padded beyond their size
    expected = train_in_process(config, dataset_dir, str(tmp_path / "straight"), step="traced")
    output_dir = str(tmp_path / "cut")
    with pytest.raises(Stopped):  # at iteration 7, after the checkpoint 6 steps into epoch 0
        train_in_process(config, dataset_dir, output_dir, step="traced",
                         extra_hooks=(StopAtIteration(7),))
    resumed = train_in_process(config, dataset_dir, output_dir, step="traced", resume=True)
    assert_same_weights(resumed, expected)


def test_a_step_checkpoint_replaces_the_older_ones_but_one_and_those_past_it(tmp_path):
    output_dir = str(tmp_path)
    model = M.Linear(2, 2)
    optimizer = InplaceSGD(model.parameters(), lr=0.1)
    for step in (2, 4):
        save_checkpoint(output_dir, model, optimizer, 0, step, step)
    save_checkpoint(output_dir, model, optimizer, 0, 8)
    shutil.copy(checkpoint_path(output_dir, 0, 2), checkpoint_path(output_dir, 1, 2))  # past
    (tmp_path / ".tmp-abc-epoch_0_step_8.pkl").write_bytes(b"a write cut short by a kill")
    save_checkpoint(output_dir, model, optimizer, 0, 6, 6)
    assert sorted(os.listdir(output_dir)) == [
        "epoch_0.pkl", "epoch_0_step_4.pkl", "epoch_0_step_6.pkl"]
    assert newest_checkpoint(output_dir)[0] == checkpoint_path(output_dir, 0)


def test_no_readable_checkpoint_is_a_one_line_error_naming_each_file(tmp_path, caplog):
    output_dir = str(tmp_path)
    model = FCOS(tiny_config())
    good = save_checkpoint(output_dir, model, InplaceSGD(model.parameters(), lr=0.1), 0, 4)
    with open(good, "r+b") as f:
        f.truncate(1000)
    with open(checkpoint_path(output_dir, 1, 2), "wb") as f:
        f.write(b"not a pickle")
    caplog.clear()
    with pytest.raises(WeightsUnavailableError) as error:
        newest_checkpoint(output_dir)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("no checkpoint in {} can be read: epoch_1_step_2.pkl (".format(
        output_dir))
    assert "; epoch_0.pkl (UnpicklingError: pickle data was truncated)" in message
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "skipping checkpoint " + checkpoint_path(output_dir, 1, 2),
        "skipping checkpoint " + checkpoint_path(output_dir, 0)]


def test_non_finite_loss_stops_training_and_keeps_the_last_checkpoint(dataset_dir, tmp_path,
                                                                     caplog):
    output_dir = str(tmp_path / "log")
    run_training(write_config(tmp_path / "first_epoch.py"), TrainOptions(
        dataset_dir, output_dir, batch_size=2, num_workers=0))
    os.remove(os.path.join(output_dir, "epoch_1.pkl"))
    before = open(os.path.join(output_dir, "epoch_0.pkl"), "rb").read()
    exploding = write_config(tmp_path / "exploding.py", basic_lr=1e30)
    caplog.clear()
    with pytest.raises(NonFiniteLossError, match=r"epoch 1 step \d+ .*epoch_0.pkl"):
        run_training(exploding, TrainOptions(dataset_dir, output_dir, batch_size=2,
                                             num_workers=0, resume=True))
    # a diverging run fails the one repeat from the last checkpoint too
    assert caplog.text.count("repeating epoch 1 from") == 1
    assert open(os.path.join(output_dir, "epoch_0.pkl"), "rb").read() == before
    assert not os.path.exists(os.path.join(output_dir, "epoch_1.pkl"))


def test_non_finite_weights_are_not_saved_and_the_error_names_the_last_checkpoint(tmp_path):
    model = FCOS(tiny_config())
    optimizer = InplaceSGD(model.parameters(), lr=0.1, momentum=0.9)
    good = save_checkpoint(str(tmp_path), model, optimizer, 0, 10)
    before = open(good, "rb").read()
    weight = model.head.cls_score.weight
    weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match=r"epoch 1 .* 1 tensor\(s\) \(head.cls_score.weight\)"
                       r".*epoch_0.pkl"):
        save_checkpoint(str(tmp_path), model, optimizer, 1, 20)
    assert not os.path.exists(checkpoint_path(str(tmp_path), 1))
    assert open(good, "rb").read() == before


def test_resuming_with_another_optimizer_is_a_one_line_error_naming_the_checkpoint(tmp_path):
    model = FCOS(tiny_config())
    path = save_checkpoint(str(tmp_path), model,
                           build_optimizer(model.trainable_parameters(), model.cfg, 0.1), 0, 10)
    cfg = tiny_config().update(optimizer="adamw")
    trainer = build_trainer(FCOS(cfg), cfg, TrainOptions("", str(tmp_path), step="eager"))
    with pytest.raises(ConfigError, match="{} holds the state of another optimizer than this "
                       "config's 'adamw'".format(path)):
        trainer.resume()


def test_backbone_weights_load_by_name_and_report_the_classifier(tmp_path):
    source = FCOS(tiny_config())
    weights = dict(source.backbone.bottom_up.state_dict())
    weights["fc.weight"] = np.zeros((1000, 512), np.float32)  # an ImageNet classifier
    path = str(tmp_path / "imagenet.pkl")
    mge.save(weights, path)
    target = FCOS(tiny_config())
    load_backbone_weights(target, path)
    np.testing.assert_array_equal(target.backbone.bottom_up.conv1.weight.numpy(),
                                  weights["conv1.weight"])


@pytest.mark.parametrize("files, error", [
    ({}, "error: --resume: no epoch_<N>.pkl or epoch_<N>_step_<S>.pkl checkpoint in "),
    ({"epoch_0.pkl": b"\x80\x04\x95 cut"}, "error: no checkpoint in "),
])
def test_resume_without_a_checkpoint_that_loads_is_a_one_line_error(dataset_dir, tmp_path,
                                                                     files, error):
    output_dir = tmp_path / "run"
    output_dir.mkdir()
    for name, content in files.items():
        (output_dir / name).write_bytes(content)
    result = subprocess.run(
        train_command(write_config(tmp_path / "c.py"), dataset_dir, str(output_dir),
                      "--resume"), capture_output=True, text=True, timeout=600)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(error) and "Traceback" not in result.stderr
    assert all("{} (".format(name) in last for name in files)


def test_the_optimizer_is_the_configs_and_an_unknown_one_is_a_one_line_error():
    params = FCOS(tiny_config()).trainable_parameters()
    adamw = build_optimizer(params, tiny_config().update(optimizer="adamw", momentum=0.8), 0.1)
    assert isinstance(adamw, AdamW) and adamw.param_groups[0]["betas"] == (0.8, 0.999)
    assert isinstance(build_optimizer(params, tiny_config(), 0.1), SGD)
    with pytest.raises(ConfigError, match="cfg.optimizer is 'sgd' or 'adamw', not 'adam'"):
        build_optimizer(params, tiny_config().update(optimizer="adam"), 0.1)


def test_several_devices_on_a_cpu_machine_are_refused():
    with pytest.raises(ConfigError, match="GPU"):
        launch(print, ("never",), num_devices=2)


def tiny_batch(labels):
    """One 64x64 image with a box per label, in the training forward's format."""
    boxes = [[4 + 10 * i, 4, 30 + 10 * i, 40, label] for i, label in enumerate(labels)]
    return dict(image=np.full((1, 3, 64, 64), 100, np.float32),
                im_info=np.array([[64, 64, 64, 64, len(labels)]], np.float32),
                gt_boxes=np.array([boxes], np.float32))


@pytest.mark.parametrize("label", [3, -1, 1.5])
def test_a_class_label_outside_the_zero_based_range_is_refused(label):
    model = FCOS(tiny_config(num_classes=3))
    with pytest.raises(DatasetError, match=r"class label {:g} is outside \[0, 3\): training "
                       "takes 0-based class indices.*1-based labels: subtract 1".format(label)):
        model(**tiny_batch([0, label]))


def test_padding_rows_after_the_boxes_of_an_image_are_not_labels():
    batch = tiny_batch([2, 0])
    batch["im_info"][0, 4] = 1  # the second row is padding: its label 0 is not read
    batch["gt_boxes"][0, 1, 4] = 7
    losses = FCOS(tiny_config(num_classes=3))(**batch)
    assert np.isfinite(losses["total_loss"].numpy()).all()


def test_devices_draw_their_own_scales_and_flips_for_the_same_batch(dataset_dir):
    dataset = COCODetection(os.path.join(dataset_dir, "shapes", "train"),
                            os.path.join(dataset_dir, "shapes", "annotations", "train.json"))
    transform = TrainTransform((48, 56, 64, 72, 80), 200)
    task = (3, 5, list(range(6)))

    def draws(rank):
        batch = TrainBatches(dataset, transform, seed=0, rank=rank)(task)
        return batch["im_info"][:, :2].tolist(), batch["gt_boxes"][:, :, 0].tolist()

    assert draws(0) == draws(0)  # a resumed run repeats its draws
    assert draws(1) == draws(1)
    assert draws(0) != draws(1)


def run_plan(config, dataset_dir, batch_size=2):
    """The padded size of each batch of a one-process run of ``config``, and its step plan."""
    cfg = load_config_module(config).Cfg()
    dataset = build_train_dataset(cfg, dataset_dir)
    sampler, make_batch = training_batches(cfg, dataset, batch_size, seed=0)
    sizes = [make_batch.padded_size((epoch, number, indices)) for epoch in range(cfg.max_epoch)
             for number, indices in enumerate(sampler.epoch_batches(epoch, cfg.nr_images_epoch
                                                                     // batch_size))]
    return sizes, cpu_step_plan(cfg, dataset, sampler, make_batch, batch_size)


def test_a_batchs_padded_size_is_known_from_the_annotations(varied_dataset_dir):
    dataset = COCODetection(os.path.join(varied_dataset_dir, "shapes", "train"),
                            os.path.join(varied_dataset_dir, "shapes", "annotations",
                                         "train.json"))
    make_batch = TrainBatches(dataset, TrainTransform((32, 64, 96), 128), seed=0)
    sizes = []
    for number in range(8):
        task = (1, number, [(number + k) % len(dataset) for k in range(3)])
        sizes.append(make_batch.padded_size(task))
        image = make_batch(task)["image"]
        assert sizes[-1] == (padded_side(image.shape[2]), padded_side(image.shape[3]))
    assert len(set(sizes)) > 2


def test_the_default_cpu_step_is_the_plans_and_says_why(varied_dataset_dir, tmp_path, caplog):
    config = tmp_path / "short.py"  # one step: too few to pay for a graph
    write_config(config, nr_images=2)
    config.write_text(config.read_text().replace("self.max_epoch = 2", "self.max_epoch = 1"))
    sizes, plan = run_plan(config, varied_dataset_dir)
    assert len(sizes) == 1 and plan.step == "eager"
    assert run_plan(write_config(tmp_path / "long.py", nr_images=16),
                    varied_dataset_dir)[1].step == "traced"
    seen = StepRouteAndAsyncLevel()
    with caplog.at_level(logging.INFO):
        run_training(config, TrainOptions(varied_dataset_dir, str(tmp_path / "out"),
                                          batch_size=2, num_workers=0, extra_hooks=(seen,)))
    assert seen.routes == {"eager"} and seen.levels == {0}
    assert ["training step: " + plan.reason] == [
        r.getMessage() for r in caplog.records if r.getMessage().startswith("training step")]


def imagenet_style_weights(model):
    """The backbone tensors of ``model`` as an ImageNet file of MegEngine 1.1+ stores them:
    BatchNorm weight/bias/statistics as [1, C, 1, 1] (FrozenBN keeps them as [C]), plus a
    classifier."""
    weights = dict(model.backbone.bottom_up.state_dict())  # NumPy arrays
    rng = np.random.default_rng(0)
    for name, value in weights.items():
        if value.ndim == 1:  # values unlike a fresh layer's, so loading them shows
            weights[name] = rng.uniform(0.5, 1.5, (1, len(value), 1, 1)).astype(np.float32)
    weights["fc.weight"] = np.zeros((1000, 512), np.float32)
    weights["fc.bias"] = np.zeros(1000, np.float32)
    return weights


def test_backbone_batchnorm_tensors_stored_as_4d_load_like_megengine_does(tmp_path):
    frozen_bn = tiny_config().update(backbone_norm="FrozenBN")
    weights = imagenet_style_weights(FCOS(frozen_bn))
    assert weights["bn1.running_var"].shape == (1, 64, 1, 1)
    path = str(tmp_path / "imagenet.pkl")
    mge.save(weights, path)
    target = FCOS(frozen_bn)
    assert target.backbone.bottom_up.bn1.running_var.shape == (64,)
    load_backbone_weights(target, path)
    for name, value in target.backbone.bottom_up.state_dict().items():
        np.testing.assert_array_equal(value, weights[name].reshape(value.shape), name)


def test_backbone_weights_that_leave_a_backbone_tensor_unloaded_stop_training(tmp_path):
    weights = imagenet_style_weights(FCOS(tiny_config()))
    del weights["layer3.0.conv2.weight"]
    # as many numbers as the model's [64, 64, 3, 3], in another layout: not loadable
    weights["layer1.0.conv1.weight"] = weights["layer1.0.conv1.weight"].reshape(64, 64, 9)
    path = str(tmp_path / "partial.pkl")
    mge.save(weights, path)
    with pytest.raises(WeightsUnavailableError, match=(
            r"leave 2 backbone tensor\(s\) unloaded: layer1.0.conv1.weight \(shape \(64, 64, 9\) "
            r"in the file.*layer3.0.conv2.weight \(missing from the file\)")):
        load_backbone_weights(FCOS(tiny_config()), path)
