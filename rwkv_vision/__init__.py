"""rwkv-vision: vision models built on RWKV (linear-time, attention-free token mixing)."""

__version__ = "0.1.0"

from . import ops  # noqa: E402

__all__ = ["ops", "__version__"]
