"""The CPUs a process may use: affinity capped by the cgroup quota (v1 and v2 files)."""
import os
import subprocess
import sys

import pytest

from official.vision.detection.utils.machine import cgroup_cpu_limit, cpu_model_name


def cgroup_files(tmp_path, proc_lines, files):
    """A fake /proc/self/cgroup and cgroup file system under tmp_path."""
    proc = tmp_path / "cgroup"
    proc.write_text("".join(line + "\n" for line in proc_lines))
    root = tmp_path / "fs"
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return str(proc), str(root)


@pytest.mark.parametrize("proc_lines, files, expected", [
    (["0::/job"], {"job/cpu.max": "150000 100000\n"}, 1.5),  # v2 with a quota
    (["0::/job"], {"job/cpu.max": "max 100000\n"}, None),  # v2 without
    (["4:cpu,cpuacct:/job", "3:memory:/job"],
     {"cpu,cpuacct/job/cpu.cfs_quota_us": "300000", "cpu,cpuacct/job/cpu.cfs_period_us": "100000"},
     3.0),  # v1, the controllers mounted together
    (["1:cpu:/", "0::/"], {"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"},
     None),  # v1 without a quota, as on this project's machines
])
def test_the_cgroup_quota_is_read_from_v1_and_v2_files(tmp_path, proc_lines, files, expected):
    proc, root = cgroup_files(tmp_path, proc_lines, files)
    assert cgroup_cpu_limit(proc, root) == expected


def test_a_process_pinned_to_one_cpu_uses_one():
    # as under taskset: os.cpu_count() still counts every CPU of the machine
    code = ("import os\nos.sched_setaffinity(0, {min(os.sched_getaffinity(0))})\n"
            "from official.vision.detection.utils.machine import usable_cpus\n"
            "print(usable_cpus(), os.cpu_count())")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=True)
    usable, count = result.stdout.split()
    assert usable == "1" and int(count) == os.cpu_count()


def test_cpu_model_name_carries_family_and_model(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\ncpu family\t: 25\nmodel\t\t: 1\n"
                       "model name\t: AMD EPYC 7B13\nprocessor\t: 1\nmodel name\t: other\n")
    assert cpu_model_name(str(cpuinfo)) == "AMD EPYC 7B13, family 25, model 1"
    assert cpu_model_name(str(tmp_path / "missing")) == "unknown CPU"
