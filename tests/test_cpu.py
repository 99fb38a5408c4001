"""The MegEngine 1.13 CPU workarounds (official/vision/detection/cpu): MKL's AVX2 kernels on
AMD CPUs, chosen by the tools and hub entries but not by importing the package; CPU devices;
the fast training modules, which keep the model's tensors and results."""
import os
import subprocess
import sys

import megengine as mge
import numpy as np
import pytest

from official.vision.detection.cpu import (
    default_cpu_threads, synchronous_execution
)
from official.vision.detection.cpu.mkl import cpu_vendor_and_flags, use_mkl_avx2_kernels

from conftest import PROJECT_ROOT


@pytest.mark.parametrize("vendor, flags, expected", [
    ("AuthenticAMD", "fpu avx avx2 fma", "5"),
    ("AuthenticAMD", "fpu avx", None),
    ("GenuineIntel", "fpu avx avx2 fma avx512f", None),
])
def test_mkl_avx2_kernels_are_requested_only_on_amd_with_avx2(tmp_path, monkeypatch, vendor,
                                                              flags, expected):
    monkeypatch.delenv("MKL_DEBUG_CPU_TYPE", raising=False)
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("vendor_id\t: {}\nflags\t\t: {}\n".format(vendor, flags))
    assert use_mkl_avx2_kernels(str(cpuinfo)) == expected


def test_a_users_mkl_setting_is_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("MKL_DEBUG_CPU_TYPE", "4")
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("vendor_id\t: AuthenticAMD\nflags\t\t: avx2 fma\n")
    assert use_mkl_avx2_kernels(str(cpuinfo)) == "4"


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
    # OpenCV and MegEngine set variables of their own when imported: they come first
    code = ("import os, pkgutil, importlib, cv2, megengine, megenginelite\n"
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
    code = ("from official.vision.detection.utils.cli import run_cli\n"
            "run_cli(lambda: None)")
    assert mkl_setting_in_a_fresh_process(code) == expected_mkl_setting()


def test_default_cpu_threads_applies_inside_the_block_only():
    before = mge.get_default_device()
    with default_cpu_threads(2):
        assert mge.get_default_device() == "multithread2:0"
        assert str(mge.tensor([1.0]).device).startswith("multithread2:0")
    assert mge.get_default_device() == before
    with default_cpu_threads(1):
        assert str(mge.tensor([1.0]).device).startswith("cpu0")


def test_synchronous_execution_applies_inside_the_block_only():
    before = mge.config.async_level
    with synchronous_execution():
        assert mge.config.async_level == 0
    assert mge.config.async_level == before
