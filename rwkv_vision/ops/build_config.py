"""Sources and compiler flags of the WKV extension, shared by the just-in-time loader and ``setup.py``.

This file imports nothing from the package so that ``setup.py`` can load it without importing torch models.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

CPU_SOURCES = ("ops.cpp", "wkv_cpu.cpp")
CUDA_SOURCES = ("wkv_cuda.cu",)
HEADERS = ("wkv_math.h", "wkv_cpu.h", "wkv_cuda.h")


def csrc_dir() -> Path:
    """Folder holding the kernel sources: inside an installed wheel, or ``csrc/wkv`` of a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "_csrc" / "wkv", here.parents[1] / "csrc" / "wkv"):
        if (candidate / "wkv_math.h").is_file():
            return candidate
    raise FileNotFoundError(f"WKV kernel sources not found next to {here}")


def cxx_flags() -> list[str]:
    # -ffast-math lets gcc call glibc's vector expf/logf inside the '#pragma omp simd' channel loops; the kernels
    # never use inf or NaN (empty sums carry a finite -1e38 exponent). It is a compile flag only: linking with
    # it would flush denormals for the whole process.
    # -fopenmp: at::parallel_for is an inline '#pragma omp parallel' in torch's headers (its OpenMP backend), so
    # without it the kernels run on one thread whatever torch.get_num_threads() says.
    flags = ["-O3", "-ffast-math", "-fopenmp" if _openmp() else "-fopenmp-simd"]
    arch = os.environ.get("RWKV_VISION_CPU_ARCH", "native")  # set to "" for a portable build
    if arch:
        flags.append(f"-march={arch}")
    return flags


def _openmp() -> bool:
    # Linux, where torch ships libgomp.so.1 and loads it first: linking against the same soname shares its runtime.
    return sys.platform.startswith("linux")


def ld_flags() -> list[str]:
    return ["-fopenmp"] if _openmp() else []


def nvcc_flags() -> list[str]:
    # No -arch/-gencode here: any flag containing "arch" makes torch ignore TORCH_CUDA_ARCH_LIST.
    return ["-O3", "-DWITH_CUDA"]
