"""Model registry: names -> constructor functions, in the style of timm.

Model files register their named configurations with ``@register_model``; ``create_model`` builds one by name with
keyword overrides and optionally loads a checkpoint file (``checkpoint_path=``). The hub layer extends entries with
pretrained sources.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Mapping
from typing import Callable

import torch
import torch.nn as nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: register ``fn`` (which returns a model from keyword overrides) under its function name."""
    if fn.__name__ in _MODELS:
        raise ValueError(f"model {fn.__name__!r} is registered twice")
    _MODELS[fn.__name__] = fn
    return fn


def _ensure_models_imported() -> None:
    from . import models  # noqa: F401  (importing the model files fills the registry)


def list_models(pattern: str = "*") -> list[str]:
    """Sorted registered names matching the shell-style ``pattern``."""
    _ensure_models_imported()
    return sorted(n for n in _MODELS if fnmatch.fnmatchcase(n, pattern))


def model_entrypoint(name: str) -> Callable[..., nn.Module]:
    _ensure_models_imported()
    if name not in _MODELS:
        close = fnmatch.filter(_MODELS, f"*{name.split('_')[0]}*")[:8]
        raise KeyError(f"unknown model {name!r}" + (f"; similar: {', '.join(sorted(close))}" if close else ""))
    return _MODELS[name]


def create_model(name: str, checkpoint_path: str | os.PathLike | None = None, **overrides) -> nn.Module:
    """Build the registered model ``name``; keyword arguments override its configuration.

    ``checkpoint_path``: a file loaded strictly with :func:`load_checkpoint` after building (our safetensors or
    ``.pth`` state dicts, or a foreign format the model converts, e.g. an official Vision-RWKV file).
    """
    model = model_entrypoint(name)(**overrides)
    if checkpoint_path is not None:
        load_checkpoint(model, checkpoint_path)
    return model


def read_checkpoint(path: str | os.PathLike) -> Mapping:
    """Read a checkpoint file on the CPU: ``.safetensors`` with safetensors, anything else with
    ``torch.load(weights_only=True)`` (tensors and plain containers only: no code from the file runs)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file
        return load_file(path, device="cpu")
    return torch.load(path, map_location="cpu", weights_only=True)


def load_checkpoint(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load the file ``path`` into ``model`` strictly and return ``model``.

    Two optional model hooks handle foreign formats: ``checkpoint_reader(path)`` reads files other than
    ``.safetensors`` (default: :func:`read_checkpoint`; e.g. a restricted unpickler for files that pickle objects),
    and ``checkpoint_filter_fn(checkpoint)`` turns the loaded object into the model's state dict (unwrapping,
    converting official formats); without it the file must hold the state dict itself.
    Raises ValueError naming the file and every missing, unexpected or mis-shaped key.
    """
    reader = read_checkpoint if str(path).endswith(".safetensors") else getattr(model, "checkpoint_reader",
                                                                                read_checkpoint)
    checkpoint = reader(path)
    filter_fn = getattr(model, "checkpoint_filter_fn", None)
    state_dict = filter_fn(checkpoint) if filter_fn is not None else checkpoint
    target = model.state_dict()
    missing = [k for k in target if k not in state_dict]
    unexpected = [k for k in state_dict if k not in target]
    mismatched = [f"{k}: file {tuple(v.shape)} vs model {tuple(target[k].shape)}"
                  for k, v in state_dict.items() if k in target and tuple(v.shape) != tuple(target[k].shape)]
    if missing or unexpected or mismatched:
        lines = [f"checkpoint {path} does not match {type(model).__name__}:"]
        for title, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                            ("shape mismatches", mismatched)):
            if keys:
                lines.append(f"  {title} ({len(keys)}): " + "; ".join(keys))
        raise ValueError("\n".join(lines))
    model.load_state_dict(state_dict, strict=True)
    return model
