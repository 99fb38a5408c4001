"""Let MegEngine's bundled MKL run its AVX2 kernels on AMD processors.

MegEngine 1.13 links MKL 2019.0.5, which chooses its kernels by CPU vendor: on a non-Intel CPU
its sgemm, which runs the im2col convolutions of MegEngine's x86 backend, falls back to generic
SSE code. On an AMD EPYC (Zen 4) a 3x3 conv 256->256 on 136x100 ran at 27 GFLOP/s on one thread
by default and at 86 GFLOP/s with MKL_DEBUG_CPU_TYPE=5, the switch MKL up to 2020.0 reads to
force its AVX2 kernels (4 selects AVX without FMA, 0-3 older SSE paths).
"""
import os

from ..utils.machine import cpu_vendor_and_flags

MKL_CPU_TYPE_VARIABLE = "MKL_DEBUG_CPU_TYPE"
MKL_AVX2 = "5"


def needs_avx2_switch(cpuinfo="/proc/cpuinfo"):
    """Whether MKL must be told to run its AVX2 kernels here: an AMD CPU with AVX2 and FMA.
    Intel CPUs are left alone (MKL already picks their best kernels, AVX-512 included)."""
    vendor, flags = cpu_vendor_and_flags(cpuinfo)
    return vendor == "AuthenticAMD" and {"avx2", "fma"} <= flags


def use_mkl_avx2_kernels():
    """Set MKL_DEBUG_CPU_TYPE=5 where ``needs_avx2_switch``, unless the variable is set;
    returns its value in effect (None when unset). Call it before the first convolution: MKL
    reads the variable when it first runs."""
    if needs_avx2_switch():
        os.environ.setdefault(MKL_CPU_TYPE_VARIABLE, MKL_AVX2)
    return os.environ.get(MKL_CPU_TYPE_VARIABLE)
