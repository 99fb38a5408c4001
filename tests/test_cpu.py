"""The MegEngine 1.13 CPU workarounds (official/vision/detection/cpu): MKL's AVX2 kernels on
AMD CPUs, chosen by the tools and hub entries but not by importing the package; CPU devices;
the fast training modules, which keep the model's tensors and results."""
import copy
import os
import subprocess
import sys

import megengine as mge
import megengine.module as M
import numpy as np
import pytest
from megengine.autodiff import GradManager

from official.vision.detection.cpu import (
    BF16_MIN_CHANNELS, CPU_TRAINING_ASYNC_LEVEL, FastBatchNorm2d, FastGradientConv2d,
    FastMaxPool2d, FusedBatchNorm2d, FusedGroupNorm, OneDNNConv2d, SignGradientReLU, async_level,
    default_cpu_threads, fast_training_modules
)
from official.vision.detection.cpu.mkl import needs_avx2_switch
from official.vision.detection.utils.machine import cpu_vendor_and_flags
from official.vision.detection.models import FCOS

from conftest import PROJECT_ROOT, tiny_config


# what the switch does to the environment is tested in fresh processes below: MKL reads the
# variable once, so setting it here would change the kernels of every later test
@pytest.mark.parametrize("vendor, flags, expected", [
    ("AuthenticAMD", "fpu avx avx2 fma", True),
    ("AuthenticAMD", "fpu avx", False),
    ("GenuineIntel", "fpu avx avx2 fma avx512f", False),
])
def test_mkl_avx2_kernels_are_requested_only_on_amd_with_avx2(tmp_path, vendor, flags,
                                                              expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("vendor_id\t: {}\nflags\t\t: {}\n".format(vendor, flags))
    assert needs_avx2_switch(str(cpuinfo)) is expected


def mkl_setting_in_a_fresh_process(code, user_setting=None):
    """MKL_DEBUG_CPU_TYPE after running ``code`` in a new Python (None if unset)."""
    env = {k: v for k, v in os.environ.items() if k != "MKL_DEBUG_CPU_TYPE"}
    if user_setting is not None:
        env["MKL_DEBUG_CPU_TYPE"] = user_setting
    result = subprocess.run(
        [sys.executable, "-c", code + "\nimport os; print(os.environ.get('MKL_DEBUG_CPU_TYPE'))"],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120, check=True)
    return result.stdout.strip().splitlines()[-1]


def lscpu_vendor_and_flags():
    """Vendor and flags as util-linux's lscpu reports them: an oracle independent of the
    package's /proc/cpuinfo parser, so a bug there cannot also bend the expectation."""
    env = dict(os.environ, LC_ALL="C")  # English field names
    output = subprocess.run(["lscpu"], env=env, capture_output=True, text=True, timeout=60,
                            check=True).stdout
    fields = {}
    for line in output.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())  # the first "Vendor ID" is the CPU's
    return fields["Vendor ID"], set(fields["Flags"].split())


def test_cpuinfo_parser_reads_the_vendor_and_flags_lscpu_reports():
    assert cpu_vendor_and_flags() == lscpu_vendor_and_flags()


def test_importing_the_package_and_every_module_changes_no_environment_variable():
    # OpenCV, MegEngine and Ray (which serve/ray_deployment.py imports) set variables of their
    # own when imported: they come first (a test that imported Ray before hid it)
    code = ("import os, pkgutil, importlib, cv2, megengine, megenginelite, ray.serve\n"
            "before = dict(os.environ)\n"
            "import official.vision.detection as package\n"
            "for module in pkgutil.walk_packages(package.__path__, package.__name__ + '.'):\n"
            "    importlib.import_module(module.name)\n"
            "assert dict(os.environ) == before, set(os.environ.items()) ^ set(before.items())")
    assert mkl_setting_in_a_fresh_process(code) == "None"


def expected_mkl_setting():
    """"5" where lscpu shows an AMD CPU with AVX2 and FMA, else unset."""
    vendor, flags = lscpu_vendor_and_flags()
    return "5" if vendor == "AuthenticAMD" and {"avx2", "fma"} <= flags else "None"


def test_building_a_released_model_requests_avx2_kernels_on_this_cpu_as_lscpu_says():
    code = "import hubconf\nhubconf.fcos_res18_coco_3x_800size()"
    assert mkl_setting_in_a_fresh_process(code) == expected_mkl_setting()
    assert mkl_setting_in_a_fresh_process(code, user_setting="4") == "4"


def test_the_tools_request_avx2_kernels_before_their_work_as_lscpu_says():
    code = ("from official.vision.detection.cli import run_cli\n"
            "run_cli(lambda: None)")
    assert mkl_setting_in_a_fresh_process(code) == expected_mkl_setting()


def sync_thread_policies_in_a_fresh_process(code):
    """Scheduling policies of MegEngine's CompNodeSync threads after ``code`` has run in a new
    Python and a model has then computed (a later operator must not bring a busy thread)."""
    code += ("\nimport os, megengine, numpy as np\n"
             "from official.vision.detection.cpu.sync_thread import SYNC_THREAD_NAME, thread_ids\n"
             "(megengine.tensor(np.ones((8, 8), 'float32')) * 2).numpy()\n"
             "print([os.sched_getscheduler(tid) for tid in thread_ids(SYNC_THREAD_NAME)])")
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True,
                            text=True, timeout=300, check=True)
    return result.stdout.strip().splitlines()[-1]


def test_megengine_polling_thread_runs_at_idle_priority_beside_the_engines(tiny_config_file):
    # at normal priority it polls every 10 us for the life of the process and took ~40% off
    # onnxruntime's and Lite's speed (docs/megengine_notes.md): one thread, idle, after what
    # tools/test.py, inference.py and benchmark.py call before an engine runs
    code = ("from official.vision.detection.deploy.detector import build_detector\n"
            "from official.vision.detection.utils.config_file import load_config_module\n"
            "build_detector(load_config_module({!r}), engine='eager')".format(tiny_config_file))
    assert sync_thread_policies_in_a_fresh_process(code) == str([os.SCHED_IDLE])


def test_megengine_polling_thread_runs_at_idle_priority_after_a_hub_entry():
    code = "import hubconf\nhubconf.fcos_res18_coco_3x_800size()"
    assert sync_thread_policies_in_a_fresh_process(code) == str([os.SCHED_IDLE])


def test_default_cpu_threads_applies_inside_the_block_only():
    before = mge.get_default_device()
    with default_cpu_threads(2):
        assert mge.get_default_device() == "multithread2:0"
        assert str(mge.tensor([1.0]).device).startswith("multithread2:0")
    assert mge.get_default_device() == before
    with default_cpu_threads(1):
        assert str(mge.tensor([1.0]).device).startswith("cpu0")


@pytest.mark.parametrize("level", [0, 1])
def test_an_async_level_applies_inside_the_block_only(level):
    before = mge.config.async_level
    with async_level(level):
        assert mge.config.async_level == level
    assert mge.config.async_level == before


def trained_for_a_step(model, batch):
    """The losses, the gradient of every parameter and the running averages after one
    training forward and backward of ``model`` on ``batch``."""
    model.train()
    params = list(model.parameters())
    gm = GradManager().attach(params)
    # at the level the trainer runs eager steps: at MegEngine's default, 2, eager steps now and
    # then compute wrong values (docs/megengine_notes.md); an inf gradient failed this test once
    # in a whole suite on a Zen 3 (2026-12-08), not again in 30 runs of it alone
    with async_level(CPU_TRAINING_ASYNC_LEVEL), gm:
        losses = model(**{name: mge.tensor(value) for name, value in batch.items()})
        gm.backward(losses["total_loss"])
    return ([float(v.item()) for v in losses.values()], [p.grad.numpy() for p in params],
            [v for k, v in model.state_dict().items() if "running" in k])


# the modules of each route: (convolutions, batch norms, max pooling, group norms)
ROUTE_MODULES = {"megengine": (FastGradientConv2d, FastBatchNorm2d, M.MaxPool2d, M.GroupNorm),
                 "onednn": (OneDNNConv2d, FusedBatchNorm2d, FastMaxPool2d, FusedGroupNorm)}


@pytest.mark.parametrize("convolutions", list(ROUTE_MODULES))
def test_the_fast_training_modules_keep_the_tensors_and_give_megengine_results(convolutions):
    mge.random.seed(5)
    model = FCOS(tiny_config())
    reference = copy.deepcopy(model)
    before = {name: value.copy() for name, value in model.state_dict().items()}
    parameters = [id(p) for p in model.parameters()]
    fast_training_modules(model, convolutions)
    assert [id(p) for p in model.parameters()] == parameters  # an optimizer built before works
    after = model.state_dict()
    assert list(after) == list(before)
    for name, value in before.items():
        np.testing.assert_array_equal(after[name], value, name)
    for base, route_module in zip((M.Conv2d, M.BatchNorm2d, M.MaxPool2d, M.GroupNorm),
                                  ROUTE_MODULES[convolutions]):
        modules = [m for m in model.modules() if isinstance(m, base)]
        assert modules and all(isinstance(m, route_module) for m in modules), base
    relus = [m for m in model.modules() if isinstance(m, M.ReLU)]
    assert relus and all(isinstance(m, SignGradientReLU) for m in relus)
    rng = np.random.RandomState(5)
    batch = dict(image=rng.uniform(0, 255, (2, 3, 64, 96)).astype("float32"),
                 im_info=np.array([[64, 96, 64, 96, 1]] * 2, "float32"),
                 gt_boxes=np.array([[[10, 8, 50, 40, 1]], [[30, 20, 90, 60, 2]]], "float32"))
    expected, actual = trained_for_a_step(reference, batch), trained_for_a_step(model, batch)
    np.testing.assert_allclose(actual[0], expected[0], rtol=1e-4)
    for want, got in zip(expected[2], actual[2]):  # running averages
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    # Gradients are compared as one vector: where a ReLU's input lies within rounding of 0,
    # the other order of float operations flips it, and a few weights of the head change by a
    # step (up to 8% of their size here with MKL's AVX2 kernels, as on AMD CPUs; 1.5% of the
    # whole gradient). Each layer's gradient is checked exactly in its own test file.
    want, got = (np.concatenate([g.ravel() for g in grads]) for grads in (expected[1], actual[1]))
    assert np.linalg.norm(got - want) <= 0.05 * np.linalg.norm(want)


def test_bf16_training_keeps_the_convolutions_of_few_channels_in_fp32():
    """The stem (3 colours in) and the prediction layers (1-4 out) stay fp32 in a bf16
    training; the rest take the precision asked for. Only the modules' setting: no bf16
    units needed."""
    model = fast_training_modules(FCOS(tiny_config()), "onednn", "bf16")
    convolutions = [m for m in model.modules() if isinstance(m, OneDNNConv2d)]
    for conv in convolutions:
        few = min(conv.in_channels, conv.out_channels) < BF16_MIN_CHANNELS
        assert conv.precision == ("fp32" if few else "bf16"), conv
    assert model.backbone.bottom_up.conv1.precision == "fp32"
    assert {model.head.cls_score.precision, model.head.ctrness.precision} == {"fp32"}
    assert model.head.cls_subnet[0].precision == "bf16"
