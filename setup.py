"""Packaging glue beyond pyproject.toml: ship the kernel sources, and optionally build the extension ahead of time.

``pip install .`` makes a pure-Python wheel (the kernel is then built just-in-time on first use, or the PyTorch path
runs). ``RWKV_VISION_BUILD_EXT=1 pip install --no-build-isolation .`` (torch already installed) compiles
``rwkv_vision._C`` now: CPU kernels always, CUDA kernels too when torch is a CUDA build and the toolkit is found
(``RWKV_VISION_BUILD_CUDA=0`` turns that off; ``TORCH_CUDA_ARCH_LIST`` picks the architectures).
"""

import os
import runpy
from pathlib import Path

from setuptools import find_namespace_packages, setup

ROOT = Path(__file__).resolve().parent


def extension_args() -> dict:
    if os.environ.get("RWKV_VISION_BUILD_EXT", "0") != "1":
        return {}
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

    cfg = runpy.run_path(str(ROOT / "rwkv_vision" / "ops" / "build_config.py"))
    src = Path("csrc") / "wkv"
    sources = [str(src / s) for s in cfg["CPU_SOURCES"]]
    want_cuda = os.environ.get("RWKV_VISION_BUILD_CUDA", "auto") != "0"
    if want_cuda and torch.version.cuda is not None and CUDA_HOME is not None:
        ext = CUDAExtension("rwkv_vision._C", sources + [str(src / s) for s in cfg["CUDA_SOURCES"]],
                            extra_compile_args={"cxx": cfg["cxx_flags"]() + ["-DWITH_CUDA"],
                                                "nvcc": cfg["nvcc_flags"]()},
                            extra_link_args=cfg["ld_flags"]())
    else:
        ext = CppExtension("rwkv_vision._C", sources, extra_compile_args={"cxx": cfg["cxx_flags"]()},
                           extra_link_args=cfg["ld_flags"]())
    return {"ext_modules": [ext], "cmdclass": {"build_ext": BuildExtension}}


# Every folder under rwkv_vision/ is a package, data folders (hub_data, samples, bundled weights) included: setuptools
# then ships their files without warning that they look importable. The kernel sources live in csrc/ at the top
# level and are shipped as rwkv_vision/_csrc for just-in-time builds.
PACKAGES = find_namespace_packages(include=["rwkv_vision", "rwkv_vision.*"], exclude=["*.__pycache__"])

setup(
    packages=PACKAGES + ["rwkv_vision._csrc", "rwkv_vision._csrc.wkv"],
    package_dir={"rwkv_vision._csrc": "csrc"},
    package_data={"rwkv_vision._csrc.wkv": ["*.h", "*.cpp", "*.cu"], "rwkv_vision.hub_data": ["*.txt"],
                  "rwkv_vision.samples": ["*.jpg", "*.json", "*.md"],
                  "rwkv_vision.weights.ck48_rwkv_vit_nano": ["*.json", "*.safetensors", "*.md"]},
    **extension_args(),
)
