"""Weights that ship inside the package, one folder each (config.json, model.safetensors, README.md model card,
NOTICE.md saying how they were made), loaded with :func:`rwkv_vision.from_pretrained`::

    import rwkv_vision
    from rwkv_vision import weights

    model = rwkv_vision.from_pretrained(weights.path("ck48_rwkv_vit_nano"))
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["names", "path"]

_HERE = Path(__file__).resolve().parent


def names() -> list[str]:
    """The bundled models' names, sorted."""
    return sorted(p.name for p in _HERE.iterdir() if (p / "config.json").is_file())


def path(name: str) -> Path:
    """The folder of the bundled model ``name`` (pass it to ``rwkv_vision.from_pretrained``)."""
    folder = _HERE / name
    if not (folder / "config.json").is_file():
        raise KeyError(f"no bundled model {name!r}; bundled: {', '.join(names()) or 'none'}")
    return folder
