"""segmentation_models_pytorch Unet -> UNetDepth: the converted model gives smp's output."""

from __future__ import annotations

import pytest
import torch

from rwkv_vision.convert.smp import from_smp_unet
from rwkv_vision.models.unet_depth import UNetDepth
from test_unet_depth import randomize_batchnorm

smp = pytest.importorskip("segmentation_models_pytorch")


def _smp_unet(encoder: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return randomize_batchnorm(smp.Unet(encoder, encoder_weights=None, classes=1, **kwargs)).eval()


@pytest.mark.parametrize("encoder", ["resnet18", "resnet34", "resnet50", "mobilenet_v2"])
def test_converted_model_equals_smp_unet(encoder):
    reference = _smp_unet(encoder)
    converted = from_smp_unet(reference)
    assert isinstance(converted, UNetDepth) and not converted.training
    assert converted.head.activation == "identity"
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        want, got = reference(x), converted(x)
    assert got.shape == want.shape == (2, 1, 64, 96)
    assert want.abs().max() > 0.1  # a non-trivial output, so the comparison means something
    assert (got - want).abs().max() < 1e-5


def test_state_dict_in_channels_and_decoder_widths_are_inferred():
    reference = _smp_unet("resnet18", in_channels=1, decoder_channels=(128, 64, 32, 16, 8))
    converted = from_smp_unet(reference.state_dict())
    assert converted.encoder.conv1.in_channels == 1
    assert [b.conv2.conv.out_channels for b in converted.decoder.blocks] == [128, 64, 32, 16, 8]
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        assert (converted(x) - reference(x)).abs().max() < 1e-5


def test_sigmoid_activation_is_kept_and_a_metric_head_can_be_requested():
    reference = _smp_unet("mobilenet_v2", activation="sigmoid")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        want = reference(x)
        same = from_smp_unet(reference)
        assert same.head.activation == "sigmoid"
        assert (same(x) - want).abs().max() < 1e-5
        # a bounded metric head over the same logits: min + (max - min) * sigmoid(logit)
        metric = from_smp_unet(reference, head_activation="sigmoid", min_depth=0.1, max_depth=10.0)
        assert (metric(x) - (0.1 + 9.9 * want)).abs().max() < 1e-5


def test_aux_classification_head_is_dropped():
    reference = _smp_unet("resnet18", aux_params={"classes": 4})
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        mask, _ = reference(x)
        assert (from_smp_unet(reference)(x) - mask).abs().max() < 1e-5


@pytest.mark.parametrize("kwargs,match", [
    ({"decoder_attention_type": "scse"}, "attention"),
    ({"classes": 3}, "classes=3"),
    ({"encoder_depth": 4, "decoder_channels": (128, 64, 32, 16)}, "encoder_depth=5"),
    ({"decoder_use_norm": False}, "batch norm"),
    ({"decoder_interpolation": "bilinear"}, "'bilinear'"),
    ({"activation": "tanh"}, "Tanh"),
])
def test_unsupported_configurations_are_rejected(kwargs, match):
    options = {"classes": 1, **kwargs}
    reference = smp.Unet("resnet18", encoder_weights=None, **options)
    with pytest.raises(ValueError, match=match):
        from_smp_unet(reference)


def test_not_an_smp_unet_is_a_type_error():
    with pytest.raises(TypeError, match="expected an smp.Unet.*got UNetDepth"):
        from_smp_unet(UNetDepth(encoder="resnet18"))


def test_unsupported_encoder_is_named():
    reference = smp.Unet("resnet101", encoder_weights=None, classes=1)
    with pytest.raises(ValueError, match=r"bottleneck blocks \(3, 4, 23, 3\)"):
        from_smp_unet(reference.state_dict())
