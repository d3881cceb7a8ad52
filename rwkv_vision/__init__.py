"""rwkv-vision: vision models built on RWKV (linear-time, attention-free token mixing)."""

__version__ = "0.1.0"

from . import ops  # noqa: E402
from .models.rwkv_vit import RWKVViT  # noqa: E402
from .registry import create_model, list_models  # noqa: E402

__all__ = ["RWKVViT", "create_model", "list_models", "ops", "__version__"]
