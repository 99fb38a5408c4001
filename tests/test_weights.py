import os

import numpy as np
import pytest
import megengine as mge
from megengine import hub

from official.vision.detection.models import FCOS
from official.vision.detection.weights import (
    WeightsUnavailableError, load_matching_weights, load_weight_file, state_dict_of,
    weight_cache_path,
)

from conftest import tiny_config

UNREACHABLE_URL = "http://127.0.0.1:9/weights/fcos_tiny.pkl"


@pytest.fixture
def mge_home(tmp_path, monkeypatch):
    monkeypatch.setenv("MGE_HOME", str(tmp_path))
    return tmp_path


def test_cache_path_is_where_megengine_hub_looks(mge_home):
    url = "https://example.com/models/fcos_x.pkl"
    path = weight_cache_path(url)
    assert path.startswith(str(mge_home / "serialized")) and path.endswith("_fcos_x.pkl")
    os.makedirs(os.path.dirname(path))
    mge.save({"marker": np.arange(3)}, path)
    # megengine.hub finds the file there and does not try to download it
    np.testing.assert_array_equal(hub.load_serialized_obj_from_url(url)["marker"], [0, 1, 2])


def test_offline_download_names_the_url_and_the_cache_path(mge_home):
    with pytest.raises(WeightsUnavailableError) as info:
        load_weight_file(UNREACHABLE_URL)
    message = str(info.value)
    assert UNREACHABLE_URL in message and weight_cache_path(UNREACHABLE_URL) in message
    assert "\n" not in message
    assert os.listdir(mge_home / "serialized") == []  # no partial download left behind


def test_truncated_cached_file_is_reported(mge_home):
    path = weight_cache_path(UNREACHABLE_URL)
    os.makedirs(os.path.dirname(path))
    with open(path, "wb") as f:
        f.write(b"\x80\x04not a pickle")
    with pytest.raises(WeightsUnavailableError, match="truncated"):
        load_weight_file(UNREACHABLE_URL)


def test_missing_local_file_is_reported(tmp_path):
    with pytest.raises(WeightsUnavailableError, match="weight file not found"):
        load_weight_file(str(tmp_path / "nope.pkl"))


def test_checkpoints_and_plain_state_dicts_are_both_accepted():
    weights = {"a": np.zeros(2)}
    assert state_dict_of(weights) is weights
    assert state_dict_of({"state_dict": weights, "epoch": 3}) is weights
    with pytest.raises(WeightsUnavailableError, match="expected a state_dict"):
        state_dict_of([1, 2])


def test_matching_load_keeps_same_shaped_tensors_and_reports_the_rest():
    source = FCOS(tiny_config(num_classes=5))
    target = FCOS(tiny_config(num_classes=3))
    fresh_cls_weight = target.head.cls_score.weight.numpy().copy()
    weights = dict(source.state_dict())
    weights["extra.tensor"] = np.zeros(1, np.float32)
    report = load_matching_weights(target, weights)
    assert sorted(report.reinitialized) == ["head.cls_score.bias", "head.cls_score.weight"]
    assert report.unused == ["extra.tensor"]
    assert not report.complete and "re-initialized" in report.table()
    np.testing.assert_array_equal(target.head.cls_score.weight.numpy(), fresh_cls_weight)
    np.testing.assert_array_equal(target.head.bbox_pred.weight.numpy(),
                                  weights["head.bbox_pred.weight"])
