import pytest

from official.vision.detection.engine.schedule import learning_rate, steps_per_epoch
from official.vision.detection.models import FCOSConfig


def test_warm_up_is_linear_then_the_lr_decays_at_the_stages():
    cfg = FCOSConfig().update(basic_lr=0.01 / 16, warm_iters=100, lr_decay_stages=[2, 3],
                              lr_decay_rate=0.1)
    assert learning_rate(cfg, 0, 0, 16) == pytest.approx(0.01 / 100)
    assert learning_rate(cfg, 0, 49, 16) == pytest.approx(0.005)
    assert learning_rate(cfg, 1, 100, 16) == pytest.approx(0.01)
    assert learning_rate(cfg, 2, 500, 16) == pytest.approx(0.001)
    assert learning_rate(cfg, 3, 900, 16) == pytest.approx(0.0001)
    assert learning_rate(cfg, 1, 100, 32) == pytest.approx(0.02)  # scaled by the batch size


def test_steps_per_epoch_need_a_full_batch():
    assert steps_per_epoch(FCOSConfig().update(nr_images_epoch=80000), 16) == 5000
    with pytest.raises(ValueError, match="nr_images_epoch"):
        steps_per_epoch(FCOSConfig().update(nr_images_epoch=4), 8)
