"""Converters from other projects' checkpoints to rwkv-vision state dicts."""

from .poster import (convert_ir50_checkpoint, convert_mobilefacenet_checkpoint, convert_poster_checkpoint,
                     load_backbone_files, read_poster_file)
from .smp import from_smp_unet
from .timm import TIMM_ENCODER_NAMES, timm_to_encoder_state_dict
from .vision_rwkv import convert_vision_rwkv, is_vision_rwkv_state_dict

__all__ = ["convert_ir50_checkpoint", "convert_mobilefacenet_checkpoint", "convert_poster_checkpoint",
           "convert_vision_rwkv", "from_smp_unet", "is_vision_rwkv_state_dict", "load_backbone_files",
           "read_poster_file", "timm_to_encoder_state_dict", "TIMM_ENCODER_NAMES"]
