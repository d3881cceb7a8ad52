"""Official POSTER V2 files -> rwkv-vision POSTER models (``PosterV2``, ``PosterRWKV``) and their backbones.

Three official file kinds:

- full checkpoints written by the official ``main.py``: ``{'epoch', 'state_dict', 'best_acc', 'optimizer',
  'recorder', 'recorder1'}``, keys prefixed ``module.`` (DataParallel), ``recorder*`` being pickled
  ``__main__.RecorderMeter`` / ``RecorderMeter1`` objects holding numpy arrays. Its ``model_best.pth`` holds only the
  optimizer state (the script saves ``state.pop('optimizer')``): that file is refused with a message saying so.
- ``ir50.pth``: IR-50 pretrained on MS-Celeb-1M, with POSTER V2's stage names (``body1..3``) or the flat
  face.evoLVe / POSTER layout (``body.0..23``);
- ``mobilefacenet_model_best.pth.tar``: the landmark MobileFaceNet, weights under ``state_dict``.

Files are read by :func:`read_poster_file`, a restricted unpickler: it builds tensors and plain containers only,
replaces the official ``__main__.RecorderMeter*`` objects (and the numpy arrays inside them) with an inert placeholder
and refuses every other global, so no code from the file ever runs. The ``convert_*`` functions drop the modules that
the official code builds but whose output never reaches the logits (returned, and logged at INFO by the models'
``checkpoint_filter_fn``); any other key that does not fit the model is an error naming it, raised by the strict load
of :func:`rwkv_vision.registry.load_checkpoint`. The POSTER models and both backbones declare
``checkpoint_reader = read_poster_file`` and a ``checkpoint_filter_fn`` built on these converters.

Entry points: ``create_model("poster_v2", checkpoint_path=..., ir50_path=..., mobilefacenet_path=...)``, or
``rwkv_vision.registry.load_checkpoint(module, path)`` for any POSTER module (a whole model or one backbone).
"""

from __future__ import annotations

import codecs
import collections
import logging
import os
import pickle
import re
import types
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn

from ..registry import load_checkpoint
from .vision_rwkv import unwrap_checkpoint

__all__ = ["POSTER_V2_DEAD_KEYS", "IR50_DEAD_KEYS", "MOBILEFACENET_DEAD_KEYS", "read_poster_file",
           "unwrap_poster_checkpoint", "convert_poster_checkpoint", "convert_ir50_checkpoint",
           "convert_mobilefacenet_checkpoint", "log_dropped", "load_backbone_files"]

_log = logging.getLogger(__name__)

# Modules the official code builds whose output never reaches the logits: (key pattern without "module.", why).
POSTER_V2_DEAD_KEYS: tuple[tuple[str, str], ...] = (
    (r"ir_back\.output_layer\.", "IR-50 embedding head (12.85M parameters): built, never run"),
    (r"ir_back\.body4\.", "IR-50 stage 4: not used by POSTER V2"),
    (r"face_landback\.output_layer\.", "MobileFaceNet landmark regressor: run, output discarded"),
    (r"VIT\.patch_embed\.", "fusion ViT patch embedding: never run"),
    (r"VIT\.CON1\.", "fusion ViT 1x1 conv: never run"),
    (r"VIT\.IRLinear[12]\.", "fusion ViT linears: never run"),
    (r"VIT\.eca_block\.", "fusion ViT ECA block: never run"),
    (r"VIT\.blocks\.\d+\.conv\.", "Conv1d built in each fusion ViT block: never run"),
)
IR50_DEAD_KEYS = ((r"output_layer\.", "IR-50 embedding head: not used by POSTER"),
                  (r"body4\.", "IR-50 stage 4: not used by POSTER"))
MOBILEFACENET_DEAD_KEYS = ((r"output_layer\.", "landmark regressor head: its output is not used by POSTER"),)
IR50_FLAT_STAGES = (3, 4, 14, 3)    # units per stage in the flat ``body.N`` layout; the 4th stage is dead


# ----------------------------------------------------------------------------------------------- restricted unpickling

class _Skipped:
    """Inert stand-in for a skipped pickled object: accepts any construction and state, holds nothing."""

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass

    def __repr__(self) -> str:
        return "<skipped pickled object>"


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("_codecs", "encode"): codecs.encode,      # how pickle protocol 2 stores bytes (numpy data in the recorders)
    ("torch", "Size"): torch.Size,
    **{("torch._utils", name): getattr(torch._utils, name)
       for name in ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter",
                    "_rebuild_parameter_with_state") if hasattr(torch._utils, name)},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Builds tensors and containers; official ``__main__.RecorderMeter*`` objects and numpy values become
    :class:`_Skipped`; refuses any other global. (torch's wrapper resolves ``*Storage`` names before this.)"""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return _ALLOWED_GLOBALS[module, name]
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if (module == "__main__" and name.startswith("RecorderMeter")) or module.split(".")[0] == "numpy":
            return _Skipped
        raise pickle.UnpicklingError(f"refusing to load the global {module}.{name}: only tensors, containers and "
                                     "the official __main__.RecorderMeter* objects are accepted")


_RESTRICTED_PICKLE = types.ModuleType("rwkv_vision_restricted_pickle")
_RESTRICTED_PICKLE.Unpickler = _RestrictedUnpickler
_RESTRICTED_PICKLE.load = lambda file, **kwargs: _RestrictedUnpickler(file, **kwargs).load()


def read_poster_file(path: str | os.PathLike) -> Any:
    """Unpickle an official POSTER-family file (zip or legacy ``torch.save`` format) on the CPU, safely.

    Returns the top-level object with its tensors, ``RecorderMeter*`` objects replaced by placeholders.
    Raises ``ValueError`` naming the file and the global when the file needs anything else.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        # weights_only=False because torch's weights_only unpickler cannot skip unknown classes; the restricted
        # pickle module above enforces the allow-list instead.
        return torch.load(path, map_location="cpu", pickle_module=_RESTRICTED_PICKLE, weights_only=False)
    except pickle.UnpicklingError as e:
        raise ValueError(f"{os.fspath(path)}: {e}") from None


# -------------------------------------------------------------------------------------------------------- converters

def unwrap_poster_checkpoint(checkpoint: Any) -> dict[str, torch.Tensor]:
    """The weights inside a loaded POSTER file (under ``state_dict`` / ``model`` / ``module`` when present), with the
    DataParallel ``module.`` prefix removed. Raises ``ValueError`` for an optimizer-only file."""
    if isinstance(checkpoint, Mapping) and {"state", "param_groups"} <= checkpoint.keys() \
            and "state_dict" not in checkpoint:
        raise ValueError(
            "the checkpoint holds only an optimizer state (keys 'state' and 'param_groups'), not model weights: the "
            "official POSTER V2 main.py saves state.pop('optimizer') as model_best.pth (a known training bug). "
            "Load the model.pth checkpoint written by the same run instead.")
    return {key.removeprefix("module."): value for key, value in unwrap_checkpoint(checkpoint).items()}


def _split_dead(state_dict: dict[str, torch.Tensor], dead: tuple[tuple[str, str], ...]
                ) -> tuple[dict[str, torch.Tensor], list[str]]:
    patterns = [re.compile(pattern) for pattern, _ in dead]
    kept, dropped = {}, []
    for key, value in state_dict.items():
        if any(p.match(key) for p in patterns):
            dropped.append(key)
        else:
            kept[key] = value
    return kept, dropped


def convert_poster_checkpoint(checkpoint: Any) -> tuple[dict[str, torch.Tensor], list[str]]:
    """A loaded official POSTER V2 checkpoint (or one of our POSTER state dicts) -> (state dict, dropped keys of the
    official dead modules :data:`POSTER_V2_DEAD_KEYS`)."""
    return _split_dead(unwrap_poster_checkpoint(checkpoint), POSTER_V2_DEAD_KEYS)


def _ir50_key(key: str) -> str | None:
    """Map a flat ``body.N.`` key to ``body{1,2,3}.M.`` (other keys unchanged); None for a stage-4 unit."""
    match = re.match(r"body\.(\d+)\.(.*)", key)
    if not match:
        return key
    unit, rest = int(match[1]), match[2]
    for stage, units in enumerate(IR50_FLAT_STAGES[:3], start=1):
        if unit < units:
            return f"body{stage}.{unit}.{rest}"
        unit -= units
    return None


def convert_ir50_checkpoint(checkpoint: Any) -> tuple[dict[str, torch.Tensor], list[str]]:
    """A loaded ``ir50.pth`` (POSTER V2 ``body1..3`` or flat ``body.0..23`` names) -> (IR50 state dict, dropped keys:
    the output layer and stage 4)."""
    state_dict, dropped = _split_dead(unwrap_poster_checkpoint(checkpoint), IR50_DEAD_KEYS)
    kept = {}
    for key, value in state_dict.items():
        new_key = _ir50_key(key)
        if new_key is None:
            dropped.append(key)
        else:
            kept[new_key] = value
    return kept, dropped


def convert_mobilefacenet_checkpoint(checkpoint: Any) -> tuple[dict[str, torch.Tensor], list[str]]:
    """A loaded ``mobilefacenet_model_best.pth.tar`` -> (MobileFaceNet state dict, dropped landmark-head keys)."""
    return _split_dead(unwrap_poster_checkpoint(checkpoint), MOBILEFACENET_DEAD_KEYS)


def log_dropped(converted: tuple[dict[str, torch.Tensor], list[str]], what: str) -> dict[str, torch.Tensor]:
    """Log the dropped keys of a ``convert_*`` result at INFO and return its state dict."""
    state_dict, dropped = converted
    if dropped:
        _log.info("%s: dropped %d key(s) of modules the official code never uses: %s", what, len(dropped),
                  ", ".join(dropped))
    return state_dict


# ---------------------------------------------------------------------------------------------------------- loaders

def load_backbone_files(model: nn.Module, ir50_path: str | os.PathLike | None = None,
                        mobilefacenet_path: str | os.PathLike | None = None) -> None:
    """Load the official pretrained backbone files strictly into a POSTER-family model.

    ``ir50_path`` -> ``model.ir_back`` (IR-50 image streams only); ``mobilefacenet_path`` -> ``model.face_landback``,
    and also ``model.ir_back`` when the image stream is a MobileFaceNet (``poster_rwkv_small``). Each file goes
    through :func:`rwkv_vision.registry.load_checkpoint` with the backbone's ``checkpoint_reader`` and
    ``checkpoint_filter_fn``; freezing (``requires_grad``, eval mode) belongs to the module and is kept.
    """
    if ir50_path is not None:
        if model.image_backbone != "ir50":
            raise ValueError(f"ir50_path given, but this model's image stream is {model.image_backbone!r}; "
                             "use mobilefacenet_path to initialise it")
        load_checkpoint(model.ir_back, ir50_path)
    if mobilefacenet_path is not None:
        load_checkpoint(model.face_landback, mobilefacenet_path)
        if model.image_backbone == "mobilefacenet":
            load_checkpoint(model.ir_back, mobilefacenet_path)
