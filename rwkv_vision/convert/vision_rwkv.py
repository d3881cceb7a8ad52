"""Official Vision-RWKV checkpoints (OpenGVLab/Vision-RWKV, mmcls) -> RWKVViT state dicts.

Key map (everything else in the file is an error):
    backbone.ln1.*                  -> norm.*            (the final norm; a block's own ln1 is backbone.layers.{i}.ln1)
    backbone.<name>                 -> <name>            (patch_embed.projection, pos_embed, layers.{i}.*)
    head.fc.{weight,bias}           -> head.{weight,bias}
    head.{0,2}.{weight,bias}        -> head.{0,2}.*      (the VRWKV-L MLP head)
The position embedding is resized bicubically from its (square) grid to the model's grid when they differ (the L file
holds a 12x12 grid, trained at 192, for a 24x24 model at 384).

Files are read by ``rwkv_vision.registry.read_checkpoint`` (``torch.load(weights_only=True)``) and loaded with
``rwkv_vision.create_model(name, checkpoint_path=...)``, which recognises official files and converts them here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import torch
import torch.nn as nn

from ..layers import resample_pos_embed

__all__ = ["convert_vision_rwkv", "is_vision_rwkv_state_dict", "official_key", "our_key", "unwrap_checkpoint"]

WRAPPER_KEYS = ("state_dict", "model", "module")
_L_HEAD = re.compile(r"head\.[02]\.(weight|bias)")


def unwrap_checkpoint(checkpoint: Mapping) -> dict[str, torch.Tensor]:
    """The flat {name: tensor} dict inside a checkpoint, found under ``state_dict``, ``model`` or ``module`` if
    present (training files also hold ``meta``, ``optimizer``, ...)."""
    if not isinstance(checkpoint, Mapping):
        raise TypeError(f"a checkpoint must be a dict; got {type(checkpoint).__name__}")
    state_dict = checkpoint
    for wrapper in WRAPPER_KEYS:
        if isinstance(checkpoint.get(wrapper), Mapping):
            state_dict = checkpoint[wrapper]
            break
    bad = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"checkpoint entries that are not tensors (expected a state dict, or one under "
                         f"{', '.join(WRAPPER_KEYS)}): {', '.join(map(str, bad[:20]))}")
    return dict(state_dict)


def is_vision_rwkv_state_dict(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """True for official (mmcls) Vision-RWKV keys: the backbone under ``backbone.`` (our keys never have it)."""
    return any(k.startswith("backbone.") for k in state_dict)


def our_key(key: str) -> str | None:
    """RWKVViT name of an official key, or None if the key has no counterpart."""
    if key.startswith("backbone.ln1."):
        return "norm." + key[len("backbone.ln1."):]
    if key.startswith("backbone."):
        return key[len("backbone."):]
    if key in ("head.fc.weight", "head.fc.bias"):
        return "head." + key[len("head.fc."):]
    if _L_HEAD.fullmatch(key):
        return key
    return None


def official_key(key: str) -> str:
    """Official name of an RWKVViT key (the inverse of :func:`our_key`), used in error messages."""
    if key.startswith("norm."):
        return "backbone.ln1." + key[len("norm."):]
    if key in ("head.weight", "head.bias"):
        return "head.fc." + key[len("head."):]
    if _L_HEAD.fullmatch(key):
        return key
    return "backbone." + key


def convert_vision_rwkv(checkpoint: Mapping, model: nn.Module) -> dict[str, torch.Tensor]:
    """Map an official Vision-RWKV checkpoint onto ``model`` (an RWKVViT), strictly.

    Args:
        checkpoint: the loaded file (wrapped or flat state dict with official names).
        model: the target; its state dict gives the expected names and shapes, ``model.grid_size`` the position grid.
    Returns:
        A state dict that ``model.load_state_dict(..., strict=True)`` accepts, tensors as in the file.
    Raises:
        ValueError listing every checkpoint key with no place in the model, every model key the checkpoint lacks, and
        every shape mismatch (e.g. a 1000-class head for a model built with another ``num_classes``).
    """
    source = unwrap_checkpoint(checkpoint)
    target = model.state_dict()
    converted: dict[str, torch.Tensor] = {}
    unmapped = []
    for key, value in source.items():
        name = our_key(key)
        if name is None or name not in target:
            unmapped.append(key if name is None else f"{key} (-> {name})")
        else:
            converted[name] = value
    pos = converted.get("pos_embed")
    if pos is not None and pos.dim() == 3 and pos.shape[1] != target["pos_embed"].shape[1]:
        side = math.isqrt(pos.shape[1])
        if side * side == pos.shape[1]:  # official grids are square; anything else is reported as a mismatch below
            converted["pos_embed"] = resample_pos_embed(pos, (side, side), model.grid_size)
    missing = [f"{k} (official {official_key(k)})" for k in target if k not in converted]
    mismatched = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(target[k].shape)}"
                  for k, v in converted.items() if v.shape != target[k].shape]
    if unmapped or missing or mismatched:
        lines = [f"the Vision-RWKV checkpoint does not match {type(model).__name__}"
                 f"(embed_dim={getattr(model, 'embed_dim', '?')}, depth={len(getattr(model, 'layers', ()))}, "
                 f"num_classes={getattr(model, 'num_classes', '?')}):"]
        for title, keys in (("checkpoint keys with no place in the model", unmapped),
                            ("model keys missing from the checkpoint", missing),
                            ("shape mismatches", mismatched)):
            if keys:
                lines.append(f"  {title} ({len(keys)}): " + "; ".join(keys))
        raise ValueError("\n".join(lines))
    return converted

