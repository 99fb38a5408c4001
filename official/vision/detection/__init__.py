"""FCOS object detection for MegEngine, compatible with the official model-hub weights."""
from .utils.cpu import use_mkl_avx2_kernels

# MKL fixes its kernels at its first call, and every module and tool of the package imports this
# package before it computes anything
use_mkl_avx2_kernels()
