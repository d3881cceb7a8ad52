"""Model families, one file each. Importing this package registers every named configuration."""

# Importing a model file registers its named configurations.
from .poster_rwkv import PosterRWKV  # noqa: F401
from .poster_v2 import PosterV2  # noqa: F401
from .rwkv_vit import RWKVViT  # noqa: F401
from .unet_depth import UNetDepth  # noqa: F401
