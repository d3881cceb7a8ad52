"""Finding, building and loading the compiled WKV extension, and choosing the backend that runs.

Order: the ahead-of-time build (``rwkv_vision/_C*.so``, made by ``RWKV_VISION_BUILD_EXT=1 pip install``), else a
just-in-time ninja build into the torch extensions cache on first use (in a subprocess with a time limit, so a
stale lock from a killed build cannot hang the caller; its log is kept), else the pure-PyTorch path with one warning.
Nothing here runs at import time.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import build_config

BACKENDS = ("auto", "cpp", "cuda", "torch")
_ENV_BACKEND = "RWKV_VISION_WKV_BACKEND"
_ENV_TIMEOUT = "RWKV_VISION_BUILD_TIMEOUT"  # seconds a just-in-time build may take (default 900)


@dataclass
class ExtensionStatus:
    loaded: bool = False
    path: str | None = None
    source: str | None = None  # "prebuilt" or "jit"
    has_cuda: bool = False
    reason: str = "not loaded yet"
    log: str | None = None
    tried: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


STATUS = ExtensionStatus()
_warned = False


def requested_backend() -> str:
    value = os.environ.get(_ENV_BACKEND, "auto").strip().lower() or "auto"
    if value not in BACKENDS:
        raise ValueError(f"{_ENV_BACKEND}={value!r} is not one of {', '.join(BACKENDS)}")
    return value


def _prebuilt() -> str | None:
    package_dir = Path(__file__).resolve().parent.parent
    found = sorted(glob.glob(str(package_dir / "_C*.so")) + glob.glob(str(package_dir / "_C*.pyd")))
    return found[0] if found else None


def _jit_name(with_cuda: bool) -> tuple[str, list[str], dict]:
    src = build_config.csrc_dir()
    sources = [str(src / s) for s in build_config.CPU_SOURCES]
    if with_cuda:
        sources += [str(src / s) for s in build_config.CUDA_SOURCES]
    digest = hashlib.sha256()
    for path in sources + [str(src / h) for h in build_config.HEADERS]:
        digest.update(Path(path).read_bytes())
    kwargs = {
        "extra_cflags": build_config.cxx_flags() + (["-DWITH_CUDA"] if with_cuda else []),
        "extra_cuda_cflags": build_config.nvcc_flags() if with_cuda else None,
        "extra_ldflags": build_config.ld_flags(),
    }
    digest.update(repr((kwargs, torch.__version__, os.environ.get("TORCH_CUDA_ARCH_LIST"))).encode())
    name = f"rwkv_vision_wkv_{'cuda' if with_cuda else 'cpu'}_{digest.hexdigest()[:10]}"
    return name, sources, kwargs


def cuda_home() -> str | None:
    """The CUDA toolkit root: $CUDA_HOME / $CUDA_PATH, else the first /usr/local/cuda* holding bin/nvcc.

    (torch guesses the parent of the ``nvcc`` on PATH, which is wrong when that ``nvcc`` is a wrapper script.)
    """
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            return os.environ[var]
    for root in ["/usr/local/cuda", *sorted(glob.glob("/usr/local/cuda-*"), reverse=True)]:
        if os.path.isfile(os.path.join(root, "bin", "nvcc")):
            return root
    return None


def jit_build(with_cuda: bool, timeout: float | None = None) -> str:
    """Build the extension into the torch extensions cache (if not built yet) and return the library path.

    Runs ``torch.utils.cpp_extension.load`` in a subprocess killed after ``timeout`` seconds; the compiler output is
    saved to ``build.log`` in the build folder. Raises RuntimeError naming the log on failure.
    """
    import logging

    # Importing cpp_extension logs a CUDA_HOME guess even when nothing is built; keep it out of users' output.
    cpp_log = logging.getLogger("torch.utils.cpp_extension")
    level = cpp_log.level
    cpp_log.setLevel(logging.ERROR)
    try:
        from torch.utils.cpp_extension import _get_build_directory
    finally:
        cpp_log.setLevel(level)

    name, sources, kwargs = _jit_name(with_cuda)
    build_dir = Path(_get_build_directory(name, verbose=False))
    library = build_dir / f"{name}.so"
    if library.is_file():
        return str(library)
    timeout = float(os.environ.get(_ENV_TIMEOUT, "900")) if timeout is None else timeout
    lock = build_dir / "lock"
    if lock.exists() and time.time() - lock.stat().st_mtime > timeout:
        lock.unlink(missing_ok=True)  # left by a build that was killed: torch would wait on it forever
    log = build_dir / "build.log"
    STATUS.log = str(log)
    script = (
        "import sys, json; from torch.utils.cpp_extension import load; "
        "a = json.loads(sys.argv[1]); "
        "load(name=a['name'], sources=a['sources'], build_directory=a['dir'], is_python_module=False, "
        "verbose=True, extra_cflags=a['cflags'], extra_cuda_cflags=a['cuda_cflags'], extra_ldflags=a['ldflags'])"
    )
    args = json.dumps({"name": name, "sources": sources, "dir": str(build_dir), "cflags": kwargs["extra_cflags"],
                       "cuda_cflags": kwargs["extra_cuda_cflags"], "ldflags": kwargs["extra_ldflags"]})
    env = dict(os.environ)
    if with_cuda:
        if cuda_home() is None:
            raise RuntimeError("no CUDA toolkit found (set CUDA_HOME to the folder above bin/nvcc)")
        env["CUDA_HOME"] = cuda_home()
    with open(log, "w") as out:
        try:
            proc = subprocess.run([sys.executable, "-c", script, args], stdout=out, stderr=subprocess.STDOUT,
                                  timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            lock.unlink(missing_ok=True)
            raise RuntimeError(f"building the WKV extension took over {timeout:.0f} s (log: {log})") from None
    if proc.returncode != 0 or not library.is_file():
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(f"building the WKV extension failed (log: {log}): " + " | ".join(tail))
    return str(library)


def load_extension() -> ExtensionStatus:
    """Load the compiled extension once per process (prebuilt, else just-in-time). Never raises."""
    with STATUS.lock:
        if STATUS.tried:
            return STATUS
        STATUS.tried = True
        prebuilt, failures = _prebuilt(), []
        # A prebuilt library that no longer loads (built against another torch) gets a just-in-time build instead.
        for source in (["prebuilt"] if prebuilt else []) + ["jit"]:
            try:
                path = prebuilt if source == "prebuilt" else jit_build(
                    with_cuda=torch.cuda.is_available() and torch.version.cuda is not None)
                torch.ops.load_library(path)
            except Exception as exc:  # any failure means: try the next source, else fall back to PyTorch
                failures.append((source, exc))
                continue
            try:
                info = torch.ops.rwkv_vision.build_info()
            except Exception as exc:  # loaded but broken: a second library would clash with its op namespace
                failures.append((source, exc))
                break
            STATUS.loaded, STATUS.path, STATUS.source = True, path, source
            STATUS.has_cuda = "cuda" in info
            STATUS.reason = f"{source} extension {Path(path).name} ({info})" + (
                f"; the prebuilt library failed to load: {failures[0][1]}" if failures else "")
            return STATUS
        STATUS.reason = "compiled extension unavailable: " + "; ".join(
            f"{source}: {exc}" if prebuilt else str(exc) for source, exc in failures)
        return STATUS


def resolve(device_type: str) -> str:
    """The backend that runs for tensors on ``device_type``: "cpp", "cuda" or "torch"."""
    global _warned
    wanted = requested_backend()
    if wanted == "torch":
        return "torch"
    compiled = "cuda" if device_type == "cuda" else "cpp"
    if wanted != "auto" and wanted != compiled:
        raise RuntimeError(f"{_ENV_BACKEND}={wanted} cannot run on {device_type} tensors")
    if device_type not in ("cpu", "cuda"):
        if wanted != "auto":
            raise RuntimeError(f"{_ENV_BACKEND}={wanted}: no compiled WKV kernel for {device_type} tensors")
        return "torch"
    status = load_extension()
    available = status.loaded and (device_type == "cpu" or status.has_cuda)
    if available:
        return compiled
    why = status.reason if not status.loaded else "the loaded extension was built without CUDA"
    if wanted != "auto":
        raise RuntimeError(f"{_ENV_BACKEND}={wanted} was requested but {why}")
    if not _warned:
        _warned = True
        warnings.warn(f"rwkv_vision: {why}; using the pure-PyTorch WKV path (slower)", RuntimeWarning,
                      stacklevel=_user_stacklevel())
    return "torch"


def _user_stacklevel() -> int:
    """The warnings stacklevel, seen from its caller, of the first frame outside rwkv_vision and torch: the line of
    user code that first ran WKV (the call reaches here through the model, the op wrapper and maybe torch.compile)."""
    inside = (str(Path(__file__).resolve().parents[1]) + os.sep, str(Path(torch.__file__).resolve().parent) + os.sep)
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and os.path.realpath(frame.f_code.co_filename).startswith(inside):
        frame, level = frame.f_back, level + 1  # stops at the outermost frame if every frame is inside
    return level


def explain(device_type: str) -> str:
    """One line: which backend runs on ``device_type`` and why."""
    try:
        backend = resolve(device_type)
    except (RuntimeError, ValueError) as exc:  # a forced backend that cannot run, or a bad setting
        return f"error: {exc}"
    wanted = requested_backend()
    if backend == "torch":
        why = f"forced by {_ENV_BACKEND}=torch" if wanted == "torch" else STATUS.reason
    else:
        why = STATUS.reason + (f" (forced by {_ENV_BACKEND}={wanted})" if wanted != "auto" else "")
    return f"{backend}: {why}"
