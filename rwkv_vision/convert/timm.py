"""timm classification weights -> UNetDepth CNN encoders.

Our ResNet and MobileNetV2 encoders use timm's parameter names, so the conversion drops the classifier and checks
that every remaining key and shape matches the encoder; it never renames. Works for a full timm model's state dict
(as stored on the Hub: ``timm/resnet50.a1_in1k``, ``timm/mobilenetv2_100.ra_in1k``, ...) and, for ResNets, for a
``features_only`` model's. timm's MobileNetV2 ``features_only`` model drops ``conv_head``/``bn2``, which our encoder
keeps (its stride-32 level is the 1280-channel head output), so convert the full model's weights.
"""

from __future__ import annotations

from typing import Mapping

import torch

from ..models.unet_depth import create_encoder

# our encoder name -> timm architecture name
TIMM_ENCODER_NAMES = {
    "resnet18": "resnet18",
    "resnet34": "resnet34",
    "resnet50": "resnet50",
    "mobilenet_v2": "mobilenetv2_100",
}
_CLASSIFIER_PREFIXES = ("fc.", "classifier.")


def timm_to_encoder_state_dict(state_dict: Mapping[str, torch.Tensor], encoder: str) -> dict[str, torch.Tensor]:
    """Return the part of a timm ``state_dict`` that our encoder ``encoder`` (e.g. ``"mobilenet_v2"``) loads strictly.

    The classifier (``fc.*``, ``classifier.*``) is dropped. Raises ``KeyError`` naming the missing and unexpected keys,
    or ``ValueError`` naming a key whose shape differs (e.g. another width or ``in_chans``); the input channels are
    taken from the first convolution, so 1- or 4-channel timm weights convert too.
    """
    if encoder not in TIMM_ENCODER_NAMES:
        raise ValueError(f"no timm conversion for encoder {encoder!r}; available: {', '.join(TIMM_ENCODER_NAMES)}")
    converted = {k: v for k, v in state_dict.items() if not k.startswith(_CLASSIFIER_PREFIXES)}
    stem_key = "conv1.weight" if encoder.startswith("resnet") else "conv_stem.weight"
    if stem_key not in converted:
        raise KeyError(f"timm {TIMM_ENCODER_NAMES[encoder]} state dict has no {stem_key!r}; is it a "
                       f"{TIMM_ENCODER_NAMES[encoder]} state dict (keys start with: {sorted(converted)[:3]})?")
    with torch.device("meta"):  # only names and shapes are needed
        expected = create_encoder(encoder, in_chans=converted[stem_key].shape[1]).state_dict()
    missing = sorted(expected.keys() - converted.keys())
    unexpected = sorted(converted.keys() - expected.keys())
    if missing or unexpected:
        raise KeyError(f"timm {TIMM_ENCODER_NAMES[encoder]} state dict does not match encoder {encoder!r}: "
                       f"missing {missing[:8]}{' ...' if len(missing) > 8 else ''} ({len(missing)}), "
                       f"unexpected {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''} ({len(unexpected)})")
    for key, ref in expected.items():
        if converted[key].shape != ref.shape:
            raise ValueError(f"timm {TIMM_ENCODER_NAMES[encoder]} key {key!r} has shape {tuple(converted[key].shape)},"
                             f" encoder {encoder!r} expects {tuple(ref.shape)}")
    return converted
