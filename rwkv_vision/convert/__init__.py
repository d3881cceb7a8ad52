"""Converters from other projects' checkpoints to rwkv-vision state dicts."""

from .vision_rwkv import convert_vision_rwkv, is_vision_rwkv_state_dict

__all__ = ["convert_vision_rwkv", "is_vision_rwkv_state_dict"]
