"""rwkv-vision: vision models built on RWKV (linear-time, attention-free token mixing)."""

__version__ = "0.1.0"

from . import ops, weights  # noqa: E402
from .hub import HubModel, from_pretrained  # noqa: E402
from .models import PosterRWKV, PosterV2, RWKVViT, UNetDepth  # noqa: E402
from .pipelines import pipeline  # noqa: E402
from .registry import create_model, list_models  # noqa: E402

__all__ = ["HubModel", "PosterRWKV", "PosterV2", "RWKVViT", "UNetDepth", "create_model", "from_pretrained",
           "list_models", "ops", "pipeline", "weights", "__version__"]
