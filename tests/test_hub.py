"""The model card's code through the real megengine.hub loader, in a fresh interpreter.

The repository is placed where hub keeps its download of "megengine/models" (use_cache=True
finds it there), and weights are seeded where hub keeps downloaded weight files.
"""
import hashlib
import os
import shutil
import subprocess
import sys

import megengine
import pytest

from conftest import PROJECT_ROOT

RES18_URL = ("https://data.megengine.org.cn/models/weights/"
             "fcos_res18_coco_3x_800size_37dot6_adab0136.pkl")


def hub_cache_dir(mge_home, repo_info="megengine/models", branch="master"):
    """MGE_HOME/hub/<version>_<sha1(owner_repo_branch)[:16]>, as megengine.hub names it."""
    owner, name = repo_info.split("/")
    digest = hashlib.sha1("{}_{}_{}".format(owner, name, branch).encode()).hexdigest()[:16]
    return os.path.join(mge_home, "hub", "_".join(megengine.__version__.split(".")) + "_" + digest)


@pytest.fixture
def mge_home(tmp_path):
    home = tmp_path / "mge_home"
    target = hub_cache_dir(str(home))
    shutil.copytree(os.path.join(PROJECT_ROOT, "official"), os.path.join(target, "official"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(os.path.join(PROJECT_ROOT, "hubconf.py"), target)
    return home


def run_python(code, mge_home, tmp_path, **extra_env):
    """Run code in a new interpreter outside the project, with MGE_HOME set."""
    env = dict(os.environ, MGE_HOME=str(mge_home), PYTHONPATH="", **extra_env)
    result = subprocess.run([sys.executable, "-c", code], cwd=str(tmp_path), env=env,
                            capture_output=True, text=True, timeout=600)
    return result.returncode, result.stdout, result.stderr


def seed_weights(mge_home, tmp_path):
    """Write random res18 weights where hub caches RES18_URL; return the file's path."""
    code = """
import numpy as np, megengine as mge, megengine.hub as hub, os, hashlib
model = hub.import_module("megengine/models", git_host="github.com").fcos_res18_coco_3x_800size()
weights = {k: np.random.RandomState(0).normal(size=v.shape).astype(v.dtype)
           for k, v in model.state_dict().items()}
for k in weights:
    if "running_var" in k:
        weights[k] = np.abs(weights[k]) + 0.5
path = os.path.join(os.environ["MGE_HOME"], "serialized",
                    hashlib.sha256(URL.encode()).hexdigest()[:6] + "_" + os.path.basename(URL))
os.makedirs(os.path.dirname(path), exist_ok=True)
mge.save(weights, path)
print(path)
""".replace("URL", repr(RES18_URL))
    code_rc, out, err = run_python(code, mge_home, tmp_path)
    assert code_rc == 0, err
    return out.strip().splitlines()[-1]


MODEL_CARD = """
import cv2, numpy as np, megengine, megengine.hub as hub
model = hub.load("megengine/models", "fcos_res18_coco_3x_800size", pretrained=True)
api = hub.import_module("megengine/models", git_host="github.com")
img = np.random.RandomState(1).randint(0, 255, (120, 160, 3)).astype("uint8")
cv2.imwrite("cat.jpg", img)
data, im_info = api.DetEvaluator.process_inputs(cv2.imread("cat.jpg"), 160, 300)
scores, boxes = model(image=megengine.tensor(data), im_info=megengine.tensor(im_info))
print("outputs", scores.shape, boxes.shape)
dets = api.DetEvaluator(model).predict(image=data, im_info=im_info)
print("detections", dets.shape)
saved = megengine.load(WEIGHTS)
same = all(np.array_equal(v, saved[k]) for k, v in model.state_dict().items())
print("weights equal", same, len(saved) == len(model.state_dict()))
"""


def test_model_card_code_runs_with_seeded_weights(mge_home, tmp_path):
    weights_path = seed_weights(mge_home, tmp_path)
    code, out, err = run_python(MODEL_CARD.replace("WEIGHTS", repr(weights_path)), mge_home,
                                tmp_path)
    assert code == 0, err
    # 120x160 -> 160x213, padded 160x224: 20x28 + 10x14 + 5x7 + 3x4 + 2x2 points
    assert "outputs (751, 80) (751, 4)" in out
    assert "weights equal True True" in out
    detections = int(out.split("detections (")[1].split(",")[0])
    assert 0 < detections <= 100


def test_hub_lists_the_five_released_models(mge_home, tmp_path):
    code, out, err = run_python(
        "import megengine.hub as hub; print(sorted(e for e in hub.list('megengine/models') "
        "if e.startswith('fcos')))", mge_home, tmp_path)
    assert code == 0, err
    assert out.strip().splitlines()[-1] == str(sorted([
        "fcos_res18_coco_3x_800size", "fcos_res34_coco_3x_800size",
        "fcos_res50_coco_3x_800size", "fcos_res101_coco_3x_800size",
        "fcos_resx101_coco_2x_800size"]))


def test_pretrained_offline_without_cached_file_is_one_clear_error(mge_home, tmp_path):
    code = ("import megengine.hub as hub\n"
            "hub.load('megengine/models', 'fcos_res18_coco_3x_800size', pretrained=True)\n")
    # a proxy that refuses connections makes the download fail as on an offline machine
    rc, out, err = run_python(code, mge_home, tmp_path, HTTPS_PROXY="http://127.0.0.1:9",
                              https_proxy="http://127.0.0.1:9")
    assert rc != 0
    last_line = err.strip().splitlines()[-1]
    assert last_line.startswith("official.vision.detection.errors.WeightsUnavailableError")
    assert RES18_URL in last_line
    assert os.path.join(str(mge_home), "serialized") in last_line


OVERRIDE = """
import numpy as np, megengine, megengine.hub as hub
model = hub.load("megengine/models", "fcos_res18_coco_3x_800size", pretrained=True, num_classes=3)
saved = megengine.load(WEIGHTS)
state = model.state_dict()
print("classes", model.cfg.num_classes, state["head.cls_score.weight"].shape)
print("same", sorted(k for k in state if np.array_equal(state[k], saved[k])) == sorted(
    k for k in state if not k.startswith("head.cls_score")))
"""


def test_hub_overrides_keep_every_matching_published_tensor(mge_home, tmp_path):
    weights_path = seed_weights(mge_home, tmp_path)
    code, out, err = run_python(OVERRIDE.replace("WEIGHTS", repr(weights_path)), mge_home,
                                tmp_path)
    assert code == 0, err
    assert "classes 3 (3, 256, 3, 3)" in out and "same True" in out
    assert "re-initialized: head.cls_score.weight" in err
