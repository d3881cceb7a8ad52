"""segmentation_models_pytorch ``Unet`` -> :class:`~rwkv_vision.models.unet_depth.UNetDepth`.

Supported: ``smp.Unet`` with a ``resnet18``/``resnet34``/``resnet50``/``mobilenet_v2`` encoder, ``encoder_depth=5``,
``classes=1``, batch-norm decoder without attention, nearest upsampling, any ``decoder_channels`` and ``in_channels``.
Resnet keys are already timm's names; smp's ``mobilenet_v2`` is torchvision's (``features.N.conv.*``) and is renamed
to timm's (``blocks.S.N.conv_pw`` ...). An auxiliary classification head (``aux_params``) is dropped.
"""

from __future__ import annotations

import re
from typing import Mapping

import torch
import torch.nn as nn

from ..models.backbones.mobilenet_v2 import MOBILENET_V2_STAGES
from ..models.unet_depth import HEAD_ACTIVATIONS, UNetDepth

# Block layouts of the supported ResNets: (bottleneck?, blocks per stage) -> name.
_RESNETS = {(False, (2, 2, 2, 2)): "resnet18", (False, (3, 4, 6, 3)): "resnet34", (True, (3, 4, 6, 3)): "resnet50"}
# torchvision InvertedResidual submodule -> timm name, without and with the expansion conv.
_TV_DEPTHWISE_SEPARABLE = {"conv.0.0": "conv_dw", "conv.0.1": "bn1", "conv.1": "conv_pw", "conv.2": "bn2"}
_TV_INVERTED_RESIDUAL = {"conv.0.0": "conv_pw", "conv.0.1": "bn1", "conv.1.0": "conv_dw", "conv.1.1": "bn2",
                         "conv.2": "conv_pwl", "conv.3": "bn3"}


def _torchvision_mobilenet_v2_names() -> dict[str, str]:
    """torchvision ``features.*`` module paths -> timm ``mobilenetv2_100`` module paths (stem, 17 blocks, head)."""
    names = {"features.0.0": "conv_stem", "features.0.1": "bn1"}
    index = 1
    for stage, (expansion, _, repeats, _) in enumerate(MOBILENET_V2_STAGES):
        table = _TV_DEPTHWISE_SEPARABLE if expansion == 1 else _TV_INVERTED_RESIDUAL
        for block in range(repeats):
            for tv, timm_name in table.items():
                names[f"features.{index}.{tv}"] = f"blocks.{stage}.{block}.{timm_name}"
            index += 1
    names[f"features.{index}.0"] = "conv_head"
    names[f"features.{index}.1"] = "bn2"
    return names


def _rename_module(key: str, names: Mapping[str, str]) -> str:
    """Rename ``key`` = module path + '.' + tensor name through the module-path table ``names``."""
    module, _, leaf = key.rpartition(".")
    if module not in names:
        raise KeyError(f"smp mobilenet_v2 key 'encoder.{key}' has no timm counterpart")
    return f"{names[module]}.{leaf}"


def _infer_encoder(state_dict: Mapping[str, torch.Tensor]) -> str:
    if "encoder.features.0.0.weight" in state_dict:
        return "mobilenet_v2"
    if "encoder.conv1.weight" not in state_dict:
        raise ValueError("smp Unet state dict has neither 'encoder.conv1.weight' (resnet) nor "
                         "'encoder.features.0.0.weight' (mobilenet_v2): unsupported encoder")
    depths = []
    for stage in range(1, 5):
        blocks = {int(m.group(1)) for k in state_dict if (m := re.match(rf"encoder\.layer{stage}\.(\d+)\.", k))}
        depths.append(len(blocks))
    layout = ("encoder.layer1.0.conv3.weight" in state_dict, tuple(depths))
    if layout not in _RESNETS:
        raise ValueError(f"smp Unet resnet encoder with {'bottleneck' if layout[0] else 'basic'} blocks {layout[1]} "
                         f"is not supported; supported: resnet18, resnet34, resnet50")
    return _RESNETS[layout]


def _smp_head_activation(model: nn.Module) -> str:
    """The output activation of an smp ``Unet`` module, as a UNetDepth head activation."""
    head = model.segmentation_head
    if not isinstance(head[1], nn.Identity):
        raise ValueError("smp Unet segmentation head upsamples (upsampling > 1); UNetDepth has no such head")
    activation = head[2].activation
    if isinstance(activation, nn.Identity):
        return "identity"
    if isinstance(activation, nn.Sigmoid):
        return "sigmoid"
    raise ValueError(f"smp Unet activation {type(activation).__name__} has no UNetDepth counterpart "
                     "(supported: None/identity, sigmoid)")


def _check_smp_module(model: nn.Module) -> None:
    """Reject smp options that change the computation but leave no trace in the state dict."""
    if not all(hasattr(model, name) for name in ("encoder", "decoder", "segmentation_head")):
        raise TypeError(f"expected an smp.Unet (encoder, decoder, segmentation_head), got {type(model).__name__}")
    for i, block in enumerate(model.decoder.blocks):
        mode = getattr(block, "interpolation_mode", "nearest")
        if mode != "nearest":
            raise ValueError(f"smp Unet decoder block {i} upsamples with {mode!r}; UNetDepth uses 'nearest'")


def from_smp_unet(smp_model_or_state_dict: nn.Module | Mapping[str, torch.Tensor], *,
                  head_activation: str | None = None, min_depth: float = 1e-3, max_depth: float = 10.0) -> UNetDepth:
    """Convert an ``smp.Unet`` (module or its state dict, e.g. from ``model.safetensors``) into a UNetDepth.

    "The same output" is defined as what ``smp_model(x)`` returns. smp's depth-regression UNets return the raw
    logits of their last conv (``activation=None``); our default head instead bounds the output with a sigmoid. So
    by default (``head_activation=None``) the converted model keeps smp's activation: ``"identity"`` for
    ``activation=None`` (and for a bare state dict, which does not record it), and ``"sigmoid"`` with
    ``min_depth=0, max_depth=1`` for ``activation="sigmoid"``, which is exactly ``torch.sigmoid``. Then
    ``converted(x) == smp_model(x)`` for inputs whose sides are multiples of 32 (up to float rounding; the tests
    require < 1e-5). For other sides the outputs differ near the bottom/right border: smp runs on the unpadded
    image, UNetDepth pads to a multiple of 32 and crops.

    Pass ``head_activation="sigmoid"`` (with ``min_depth``/``max_depth``) to get a bounded metric head instead,
    e.g. to fine-tune: the conv that produces the logits is the same, only the activation differs.

    Returns the model in eval mode. Raises ``ValueError`` for an unsupported configuration (encoder, encoder depth,
    classes, attention, centre block, upsampling) and ``KeyError``/``RuntimeError`` naming unexpected tensors.
    """
    if isinstance(smp_model_or_state_dict, nn.Module):
        _check_smp_module(smp_model_or_state_dict)
        detected = _smp_head_activation(smp_model_or_state_dict)
        state_dict = smp_model_or_state_dict.state_dict()
    else:
        detected = "identity"
        state_dict = smp_model_or_state_dict
    if head_activation is None:
        head_activation = detected
        if detected == "sigmoid":
            min_depth, max_depth = 0.0, 1.0
    elif head_activation not in HEAD_ACTIVATIONS:
        raise ValueError(f"head_activation must be None or one of {HEAD_ACTIVATIONS}, got {head_activation!r}")

    for key in state_dict:
        if key.startswith("decoder.center.") or ".attention" in key:
            raise ValueError(f"smp Unet key {key!r}: centre blocks (vgg encoders) and scse attention are not supported")
    encoder = _infer_encoder(state_dict)
    if "decoder.blocks.4.conv1.0.weight" not in state_dict or "decoder.blocks.5.conv1.0.weight" in state_dict:
        raise ValueError("smp Unet must have encoder_depth=5 (decoder.blocks.0-4)")
    if "decoder.blocks.0.conv1.1.running_mean" not in state_dict:
        raise ValueError("smp Unet decoder must use batch norm (decoder_use_norm='batchnorm')")
    head_weight = state_dict["segmentation_head.0.weight"]
    if head_weight.shape[0] != 1:
        raise ValueError(f"smp Unet has classes={head_weight.shape[0]}; depth needs classes=1")
    decoder_channels = tuple(state_dict[f"decoder.blocks.{i}.conv1.0.weight"].shape[0] for i in range(5))
    stem = "encoder.features.0.0.weight" if encoder == "mobilenet_v2" else "encoder.conv1.weight"

    mobilenet_names = _torchvision_mobilenet_v2_names() if encoder == "mobilenet_v2" else {}
    converted = {}
    for key, value in state_dict.items():
        if key.startswith("classification_head."):
            continue
        if key.startswith("encoder.") and mobilenet_names:
            key = "encoder." + _rename_module(key[len("encoder."):], mobilenet_names)
        elif key.startswith("decoder."):
            key = re.sub(r"(conv[12])\.0\.", r"\1.conv.", key)
            key = re.sub(r"(conv[12])\.1\.", r"\1.bn.", key)
        elif key.startswith("segmentation_head.0."):
            key = "head.conv." + key[len("segmentation_head.0."):]
        converted[key] = value

    model = UNetDepth(encoder=encoder, decoder_channels=decoder_channels, min_depth=min_depth, max_depth=max_depth,
                      in_chans=state_dict[stem].shape[1], head_activation=head_activation)
    model.load_state_dict(converted, strict=True)
    return model.eval()
