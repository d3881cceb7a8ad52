"""Model registry: names -> constructor functions, in the style of timm.

Model files register their named configurations with ``@register_model``; ``create_model`` builds one by name with
keyword overrides. The hub layer extends entries with pretrained sources.
"""

from __future__ import annotations

import fnmatch
from typing import Callable

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


def create_model(name: str, **overrides) -> nn.Module:
    """Build the registered model ``name``; keyword arguments override its configuration."""
    return model_entrypoint(name)(**overrides)
