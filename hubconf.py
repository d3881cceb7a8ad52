"""torch.hub entry points: one per registered rwkv-vision model.

    model = torch.hub.load("<owner>/rwkv-vision", "rwkv_vit_tiny", pretrained=True)         # from GitHub
    model = torch.hub.load("/path/to/rwkv-vision", "rwkv_vit_nano", source="local", num_classes=7)

Each entry point is ``rwkv_vision.create_model(name, pretrained=False, **kwargs)``: ``pretrained`` may be True (the
published weights, see ``rwkv_vision.list_models(pretrained=True)``), ``"hf-hub:org/name@revision"`` or a folder
written by ``save_pretrained``; keyword arguments override the model's configuration.
"""

from rwkv_vision.registry import create_model as _create_model
from rwkv_vision.registry import list_models as _list_models
from rwkv_vision.registry import model_entrypoint as _model_entrypoint

dependencies = ["torch", "safetensors", "huggingface_hub"]


def _entry_point(name: str):
    def entry(pretrained=False, **kwargs):
        return _create_model(name, pretrained=pretrained, **kwargs)

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = (f"rwkv_vision.create_model({name!r}, pretrained=False, **kwargs).\n\n"
                     + (_model_entrypoint(name).__doc__ or ""))
    return entry


globals().update({_name: _entry_point(_name) for _name in _list_models()})
