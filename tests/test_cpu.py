"""MKL's AVX2 kernels on AMD CPUs: the switch, and that importing the package sets it."""
import os
import subprocess
import sys

import megengine as mge
import pytest

from official.vision.detection.utils.cpu import (
    cpu_vendor_and_flags, default_cpu_threads, synchronous_execution, use_mkl_avx2_kernels
)

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


def mkl_setting_after_importing_the_package(user_setting):
    env = {k: v for k, v in os.environ.items() if k != "MKL_DEBUG_CPU_TYPE"}
    if user_setting is not None:
        env["MKL_DEBUG_CPU_TYPE"] = user_setting
    result = subprocess.run(
        [sys.executable, "-c", "import os, official.vision.detection; "
         "print(os.environ.get('MKL_DEBUG_CPU_TYPE'))"],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120, check=True)
    return result.stdout.strip()


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


def test_importing_the_package_requests_avx2_kernels_on_this_cpu_as_lscpu_says():
    vendor, flags = lscpu_vendor_and_flags()
    amd_with_avx2 = vendor == "AuthenticAMD" and {"avx2", "fma"} <= flags
    assert mkl_setting_after_importing_the_package(None) == ("5" if amd_with_avx2 else "None")


def test_importing_the_package_keeps_a_users_mkl_setting():
    assert mkl_setting_after_importing_the_package("4") == "4"


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
