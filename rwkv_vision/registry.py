"""Model registry: names -> constructor functions and pretrained configurations, in the style of timm.

Model files register their named configurations with ``@register_model`` and describe each name's weights and
preprocessing in a module-level ``default_cfgs = {name: {...}}`` (timm's ``pretrained_cfg``; see
:data:`PRETRAINED_CFG_DEFAULTS` for the fields). ``create_model`` builds one by name with keyword overrides, and loads
weights: ``pretrained=True`` (the entry's published weights), ``pretrained="hf-hub:org/name@revision"`` or a folder
saved by ``save_pretrained`` (see :mod:`rwkv_vision.hub`), or a checkpoint file (``checkpoint_path=``).
"""

from __future__ import annotations

import fnmatch
import os
import sys
from collections.abc import Mapping
from typing import Any, Callable

import torch
import torch.nn as nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}

RWKV_VISION_FORMAT = "rwkv-vision"  # a repository written by save_pretrained: config.json + model.safetensors

# Fields of a pretrained configuration. An entry with weights sets hf_hub_id, hf_hub_filename and checkpoint_format:
# RWKV_VISION_FORMAT (our repositories; hf_hub_filename unused) or a foreign format that the model's
# checkpoint_filter_fn converts on load (e.g. "vision_rwkv": official Vision-RWKV files), cached as safetensors.
# With pretrained_submodule, a foreign file holds the weights of that submodule only (e.g. an ImageNet encoder of a
# depth model): its checkpoint_filter_fn converts it and it alone is loaded, strictly; the rest stays initialised.
PRETRAINED_CFG_DEFAULTS: dict[str, Any] = {
    "hf_hub_id": None,          # Hub repository of the weights (None: no published weights)
    "hf_hub_filename": None,    # file in it, for foreign formats
    "hf_hub_revision": None,    # branch, tag or commit (None: main)
    "checkpoint_format": None,
    "pretrained_submodule": None,  # e.g. "encoder": the foreign file loads into model.get_submodule(...) only
    "task": None,               # Hub pipeline tag, e.g. "image-classification", "depth-estimation"
    "license": None,            # of the weights
    "num_classes": None,
    "input_size": None,         # (C, H, W) of evaluation
    "interpolation": None,      # resize filter, e.g. "bicubic"
    "crop_pct": None,           # evaluation: resize the short side to H / crop_pct, then crop
    "crop_mode": None,          # "center"
    "mean": None,               # per-channel normalisation on the 0-1 scale
    "std": None,
    "label_names": None,        # class names in output order
    "label_set": None,          # or a named set resolved by rwkv_vision.hub.label_names, e.g. "imagenet-1k"
}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: register ``fn`` (which returns a model from keyword overrides) under its function name."""
    if fn.__name__ in _MODELS:
        raise ValueError(f"model {fn.__name__!r} is registered twice")
    _MODELS[fn.__name__] = fn
    return fn


def _ensure_models_imported() -> None:
    from . import models  # noqa: F401  (importing the model files fills the registry)


def list_models(pattern: str = "*", pretrained: bool = False) -> list[str]:
    """Sorted registered names matching the shell-style ``pattern``; with ``pretrained=True`` only those with published
    weights (``create_model(name, pretrained=True)`` works)."""
    _ensure_models_imported()
    names = sorted(n for n in _MODELS if fnmatch.fnmatchcase(n, pattern))
    return [n for n in names if get_pretrained_cfg(n)["hf_hub_id"]] if pretrained else names


def model_entrypoint(name: str) -> Callable[..., nn.Module]:
    _ensure_models_imported()
    if name not in _MODELS:
        close = fnmatch.filter(_MODELS, f"*{name.split('_')[0]}*")[:8]
        raise KeyError(f"unknown model {name!r}" + (f"; similar: {', '.join(sorted(close))}" if close else ""))
    return _MODELS[name]


def get_pretrained_cfg(name: str) -> dict[str, Any]:
    """The pretrained configuration of the registered ``name``: :data:`PRETRAINED_CFG_DEFAULTS` updated with the
    entry in its model file's ``default_cfgs``, plus ``architecture`` (the name). A copy."""
    cfgs = getattr(sys.modules[model_entrypoint(name).__module__], "default_cfgs", {})
    cfg = {**PRETRAINED_CFG_DEFAULTS, **cfgs.get(name, {}), "architecture": name}
    if cfg["hf_hub_id"] and not cfg["checkpoint_format"]:
        raise ValueError(f"pretrained config of {name}: hf_hub_id is set but checkpoint_format is not")
    return cfg


def create_model(name: str, pretrained: bool | str | os.PathLike = False,
                 checkpoint_path: str | os.PathLike | None = None, **overrides) -> nn.Module:
    """Build the registered model ``name``; keyword arguments override its configuration.

    Args:
        pretrained: False (initialised weights); True (the entry's published weights, see
            ``list_models(pretrained=True)``); ``"hf-hub:org/name@revision"`` or a folder written by
            ``save_pretrained``, holding this architecture. Pretrained models come back in eval mode; a different
            ``num_classes`` keeps every weight but the head, which is new (logged). See
            :func:`rwkv_vision.hub.load_pretrained`.
        checkpoint_path: a file loaded strictly with :func:`load_checkpoint` after building (our safetensors or
            ``.pth`` state dicts, or a foreign format the model converts, e.g. an official Vision-RWKV file).
    """
    if pretrained is not False and pretrained is not None:
        if checkpoint_path is not None:
            raise ValueError(f"create_model({name!r}): pass pretrained= or checkpoint_path=, not both")
        from .hub import load_pretrained  # the hub layer imports this module
        return load_pretrained(name, pretrained, **overrides)
    model = model_entrypoint(name)(**overrides)
    if getattr(model, "pretrained_cfg", None) is None:  # model files may set their own (e.g. from default_cfgs)
        model.pretrained_cfg = get_pretrained_cfg(name)
    if checkpoint_path is not None:
        load_checkpoint(model, checkpoint_path)
    return model


def read_checkpoint(path: str | os.PathLike) -> Mapping:
    """Read a checkpoint file on the CPU: ``.safetensors`` with safetensors, anything else with
    ``torch.load(weights_only=True)`` (tensors and plain containers only: no code from the file runs).
    Raises FileNotFoundError, or ValueError naming a file that cannot be read (truncated, corrupted)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if str(path).endswith(".safetensors"):
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            return load_file(path, device="cpu")
        except SafetensorError as err:
            raise ValueError(f"{path} is not a readable safetensors file (truncated or corrupted?): {err}") from err
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, ValueError) as err:  # torch reports damaged archives as RuntimeError
        raise ValueError(f"{path} is not a readable torch checkpoint (truncated or corrupted?): {err}") from err


def read_state_dict(model: nn.Module, path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict for ``model`` in the file ``path``, through the model's hooks.

    Two optional model hooks handle foreign formats: ``checkpoint_reader(path)`` reads files other than
    ``.safetensors`` (default: :func:`read_checkpoint`; e.g. a restricted unpickler for files that pickle objects),
    and ``checkpoint_filter_fn(checkpoint)`` turns the loaded object into the model's state dict (unwrapping,
    converting official formats); without it the file must hold the state dict itself. ``model`` may live on the meta
    device: the hooks only need its names and shapes.
    """
    reader = read_checkpoint if str(path).endswith(".safetensors") else getattr(model, "checkpoint_reader",
                                                                                read_checkpoint)
    checkpoint = reader(path)
    filter_fn = getattr(model, "checkpoint_filter_fn", None)
    return filter_fn(checkpoint) if filter_fn is not None else checkpoint


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor],
                           source: str | os.PathLike) -> nn.Module:
    """``model.load_state_dict(state_dict)`` after checking names and shapes; returns ``model``.
    Raises ValueError naming ``source`` (the file) and every missing, unexpected or mis-shaped key."""
    target = model.state_dict()
    missing = [k for k in target if k not in state_dict]
    unexpected = [k for k in state_dict if k not in target]
    mismatched = [f"{k}: file {tuple(v.shape)} vs model {tuple(target[k].shape)}"
                  for k, v in state_dict.items() if k in target and tuple(v.shape) != tuple(target[k].shape)]
    if missing or unexpected or mismatched:
        lines = [f"checkpoint {source} does not match {type(model).__name__}:"]
        for title, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                            ("shape mismatches", mismatched)):
            if keys:
                lines.append(f"  {title} ({len(keys)}): " + "; ".join(keys))
        raise ValueError("\n".join(lines))
    model.load_state_dict(state_dict, strict=True)
    return model


def load_checkpoint(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load the file ``path`` into ``model`` strictly (:func:`read_state_dict`, then :func:`load_state_dict_strict`)
    and return ``model``. Raises ValueError naming the file and every missing, unexpected or mis-shaped key."""
    return load_state_dict_strict(model, read_state_dict(model, path), path)
