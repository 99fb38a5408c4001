"""Fine-tuning a trained detector on a dataset with other classes."""
import megengine as mge
import numpy as np
import pytest

from official.vision.detection.data.synthetic import make_synthetic_coco
from official.vision.detection.engine.checkpoint import epoch_checkpoints, load_checkpoint
from official.vision.detection.engine.trainer import (
    TrainOptions, finetune_source, load_finetune_weights, run_training
)
from official.vision.detection.models import FCOS

from conftest import tiny_config, write_config


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune")
    make_synthetic_coco(str(root / "shapes"), num_train=10, num_val=2, image_size=64,
                        num_classes=3, seed=5)
    make_synthetic_coco(str(root / "two_shapes"), num_train=10, num_val=2, image_size=64,
                        num_classes=2, seed=6)
    return str(root)


def two_class_config(path, nr_images):
    text = open(write_config(path, nr_images=nr_images)).read()
    text = text.replace('name="shapes"', 'name="two_shapes"').replace(
        "self.num_classes = 3", "self.num_classes = 2")
    path.write_text(text)
    return str(path)


def test_finetune_reports_what_loaded_and_keeps_the_new_classifier_fresh(tmp_path):
    source = FCOS(tiny_config(num_classes=5))
    path = str(tmp_path / "coco_like.pkl")
    mge.save({"state_dict": source.state_dict(), "epoch": 53, "iteration": 999,
              "optimizer": {}}, path)
    target = FCOS(tiny_config(num_classes=3))
    prior_bias = target.head.cls_score.bias.numpy().copy()
    report = load_finetune_weights(target, path)
    assert sorted(report.reinitialized) == ["head.cls_score.bias", "head.cls_score.weight"]
    np.testing.assert_array_equal(target.head.cls_score.bias.numpy(), prior_bias)
    np.testing.assert_allclose(prior_bias, -np.log(99), rtol=1e-6)
    np.testing.assert_array_equal(target.head.bbox_pred.weight.numpy(),
                                  source.head.bbox_pred.weight.numpy())


def test_hub_entry_names_resolve_to_their_published_url():
    assert finetune_source("fcos_res50_coco_3x_800size").endswith(
        "fcos_res50_coco_3x_800size_42dot2_b16f9c8b.pkl")
    with pytest.raises(FileNotFoundError, match="hub entry"):
        finetune_source("fcos_res9000")


def test_a_training_output_folder_finetunes_from_its_newest_checkpoint(tmp_path):
    for epoch in (2, 10):
        (tmp_path / "epoch_{}.pkl".format(epoch)).write_bytes(b"")
    assert finetune_source(str(tmp_path)) == str(tmp_path / "epoch_10.pkl")


def test_finetuned_model_trains_from_epoch_zero_and_its_loss_decreases(datasets, tmp_path):
    pretrain_dir, finetune_dir = str(tmp_path / "pretrain"), str(tmp_path / "finetune")
    run_training(write_config(tmp_path / "three.py", nr_images=16),
                 TrainOptions(datasets, pretrain_dir, batch_size=2, num_workers=0))
    trained = epoch_checkpoints(pretrain_dir)[1]
    assert load_checkpoint(trained)["iteration"] == 16

    losses = run_training(two_class_config(tmp_path / "two.py", nr_images=16),
                          TrainOptions(datasets, finetune_dir, batch_size=2, num_workers=0,
                                       finetune=trained))
    assert sorted(epoch_checkpoints(finetune_dir)) == [0, 1]
    first = load_checkpoint(epoch_checkpoints(finetune_dir)[0])
    assert first["epoch"] == 0 and first["iteration"] == 8  # no epoch/iteration leaked
    assert len(losses) == 16
    assert np.mean(losses[-4:]) < np.mean(losses[:4])
