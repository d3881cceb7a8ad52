"""Model families, one file each. Importing this package registers every named configuration."""

from .rwkv_vit import RWKVViT  # noqa: F401  (importing a model file registers its named configurations)
