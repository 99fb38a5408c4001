"""What the machine gives this process: its CPUs (affinity and cgroup quota), their name and
instruction sets."""
import math
import os

from ..errors import ConfigError

CGROUP_ROOT = "/sys/fs/cgroup"


def cgroup_cpu_limit(proc_cgroup="/proc/self/cgroup", root=CGROUP_ROOT):
    """CPUs the cgroup quota allows this process (quota / period, may be fractional), or None
    without a quota. Reads cgroup v2 (cpu.max) and v1 (cpu.cfs_quota_us / cpu.cfs_period_us)."""
    if not os.path.exists(proc_cgroup):
        return None
    with open(proc_cgroup) as f:
        entries = [line.rstrip("\n").split(":", 2) for line in f if line.count(":") >= 2]
    for _, controllers, path in entries:
        path = path.lstrip("/")
        if controllers == "":  # v2: one hierarchy
            value = _read(os.path.join(root, path, "cpu.max"))
            if value and value.split()[0] != "max":
                quota, period = value.split()
                return int(quota) / int(period)
        elif "cpu" in controllers.split(","):  # v1: the cpu controller's hierarchy
            for mount in (controllers, "cpu", "cpu,cpuacct"):
                quota = _read(os.path.join(root, mount, path, "cpu.cfs_quota_us"))
                period = _read(os.path.join(root, mount, path, "cpu.cfs_period_us"))
                if quota and period and int(quota) > 0:
                    return int(quota) / int(period)
    return None


def usable_cpus():
    """How many CPUs this process may keep busy: those it may run on (affinity), capped by the
    cgroup quota (rounded up), at least 1. os.cpu_count() counts the machine's, which a
    container or taskset may not grant."""
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)
    limit = cgroup_cpu_limit()
    return max(1, min(allowed, math.ceil(limit)) if limit else allowed)


def cpu_model_name(cpuinfo="/proc/cpuinfo"):
    """The CPU's model name with its family and model numbers, as lscpu shows them, e.g.
    "Intel(R) Xeon(R) Processor, family 6, model 207"; "unknown CPU" without /proc/cpuinfo."""
    fields = {}
    if os.path.exists(cpuinfo):
        with open(cpuinfo) as f:
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    if "model name" not in fields:
        return "unknown CPU"
    return "{}, family {}, model {}".format(fields["model name"], fields.get("cpu family", "?"),
                                            fields.get("model", "?"))


def cpu_vendor_and_flags(cpuinfo="/proc/cpuinfo"):
    """("AuthenticAMD", {"avx2", ...}) of the first CPU; ("", set()) if unknown."""
    vendor, flags = "", set()
    if not os.path.exists(cpuinfo):
        return vendor, flags
    with open(cpuinfo) as f:
        for line in f:
            key, _, value = line.partition(":")
            if key.strip() == "vendor_id" and not vendor:
                vendor = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    return vendor, flags


# /proc/cpuinfo flags of bf16 arithmetic units; OpenVINO and oneDNN use either
BF16_FLAGS = {"amx_bf16": "AMX-BF16", "avx512_bf16": "AVX512-BF16"}


def require_bf16_units(cpuinfo="/proc/cpuinfo"):
    """Raise a one-line ``ConfigError`` unless this CPU has bf16 units: without them bf16
    would be slow emulation, or an fp32 run under the bf16 name."""
    _, flags = cpu_vendor_and_flags(cpuinfo)
    if not flags & set(BF16_FLAGS):
        raise ConfigError(
            "--precision bf16 needs a CPU with bf16 units ({}), which this CPU lacks (no "
            "{} in /proc/cpuinfo flags): use --precision fp32".format(
                " or ".join(BF16_FLAGS.values()), " or ".join(BF16_FLAGS)))


def _read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None
