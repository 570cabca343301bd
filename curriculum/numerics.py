"""The same arithmetic on every x86-64 machine: cap the instruction sets numeric libraries pick.

NumPy, OpenBLAS, PyTorch (ATen, MKL) and oneDNN (PyTorch's and TensorFlow's) choose their kernels
at run time from the CPU's features; an AVX-512 machine and an AVX2 machine then round
differently, and a training run drifts apart over a few hundred steps (measured here: image
classification test accuracy 0.984 vs 0.982). Every stage caps them at AVX2 -- the level nearly
every x86-64 machine of the last decade has -- through the libraries' documented variables, before
any of them is imported. Thread counts are the other half: ``train.threads`` pins them per project.

Each variable is only a default: one already set in the environment wins (and a machine without
AVX2 gets no OpenBLAS core type it cannot run). ``bench/numerics.py`` measures what the cap costs.
"""
from __future__ import annotations

import os
from pathlib import Path

KERNEL_CAPS = {
    "ATEN_CPU_CAPABILITY": "avx2",          # PyTorch's vectorised ATen kernels
    "ONEDNN_MAX_CPU_ISA": "AVX2",           # oneDNN inside PyTorch and TensorFlow (convolutions, matmuls)
    "MKL_CBWR": "AVX2",                      # MKL's conditional numerical reproducibility branch (PyTorch's BLAS)
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",  # NumPy's AVX-512 loops (NumPy 2.x names)
}
OPENBLAS_CAP = {"OPENBLAS_CORETYPE": "Haswell"}  # OpenBLAS (NumPy, SciPy): the AVX2 kernels


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def kernel_caps(flags: set[str]) -> dict[str, str]:
    """The variables to set on a machine with these CPU flags."""
    caps = dict(KERNEL_CAPS)
    if {"avx2", "fma"} <= flags:
        caps.update(OPENBLAS_CAP)
    return caps


def cap_kernels() -> dict[str, str]:
    """Set the caps not already set; return the ones in effect. Call before importing NumPy."""
    for name, value in kernel_caps(cpu_flags()).items():
        os.environ.setdefault(name, value)
    return {name: os.environ[name] for name in (*KERNEL_CAPS, *OPENBLAS_CAP) if name in os.environ}
