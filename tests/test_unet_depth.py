"""UNetDepth: shapes, gradients and output range per encoder; padding; timm-compatible CNN encoders; RWKV encoder."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from rwkv_vision.models.unet_depth import ENCODERS, RWKVHybridEncoder, UNetDepth, create_encoder
from rwkv_vision.registry import create_model

ALL_ENCODERS = ("resnet18", "resnet34", "resnet50", "mobilenet_v2", "rwkv_tiny")


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial affine parameters and running statistics, so that eval-mode comparisons
    exercise them (a fresh BN in eval mode is almost the identity)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model


def test_encoder_table_matches_the_issue():
    assert set(ENCODERS) == set(ALL_ENCODERS)


@pytest.mark.parametrize("encoder", ALL_ENCODERS)
def test_shapes_backward_and_range_224(encoder):
    torch.manual_seed(0)
    model = create_model(f"unet_depth_{encoder}", max_depth=10.0).train()
    x = torch.randn(2, 3, 224, 224)
    y = model(x)
    assert y.shape == (2, 1, 224, 224)
    assert torch.all(y >= 1e-3) and torch.all(y <= 10.0)
    y.mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    first_conv = next(m for m in model.encoder.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.weight.grad.abs().sum() > 0  # the gradient reaches the encoder input layer
    assert model.head.conv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("encoder", ALL_ENCODERS)
def test_shape_and_range_480x640(encoder):
    torch.manual_seed(0)
    model = UNetDepth(encoder=encoder, min_depth=0.5, max_depth=8.0).eval()
    with torch.no_grad():
        y = model(torch.randn(1, 3, 480, 640))
    assert y.shape == (1, 1, 480, 640)
    assert torch.all(y >= 0.5) and torch.all(y <= 8.0)


def test_output_never_leaves_the_range_even_for_huge_logits():
    model = UNetDepth(encoder="resnet18", min_depth=1e-3, max_depth=10.0).eval()
    x = torch.randn(1, 3, 64, 64)
    for bias, expected in ((1e4, 10.0), (-1e4, 1e-3)):
        with torch.no_grad():
            model.head.conv.bias.fill_(bias)
            y = model(x)
        assert torch.allclose(y, torch.full_like(y, expected))


def test_any_input_size_is_padded_and_cropped_back():
    torch.manual_seed(0)
    model = randomize_batchnorm(UNetDepth(encoder="resnet18")).eval()
    x = torch.randn(1, 3, 100, 150)
    with torch.no_grad():
        y = model(x)
        # the same computation done by hand: replicate-pad to 128x160, run, crop
        padded = torch.nn.functional.pad(x, (0, 10, 0, 28), mode="replicate")
        ref = model.head(model.decoder(model.encoder(padded)))[..., :100, :150]
    assert y.shape == (1, 1, 100, 150)
    torch.testing.assert_close(y, ref, rtol=0, atol=0)


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown UNetDepth encoder 'resnet101'"):
        UNetDepth(encoder="resnet101")
    with pytest.raises(ValueError, match="5 encoder and 5 decoder"):
        UNetDepth(encoder="resnet18", decoder_channels=(128, 64, 32, 16))
    with pytest.raises(ValueError, match="min_depth < max_depth"):
        UNetDepth(encoder="resnet18", min_depth=10.0, max_depth=1.0)
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        UNetDepth(encoder="resnet18")(torch.randn(3, 64, 64))


@pytest.mark.parametrize("encoder,channels", [
    ("resnet18", (64, 64, 128, 256, 512)), ("resnet50", (64, 256, 512, 1024, 2048)),
    ("mobilenet_v2", (16, 24, 32, 96, 1280)), ("rwkv_tiny", (32, 64, 128, 192, 192)),
])
def test_encoder_feature_strides_and_channels(encoder, channels):
    enc = create_encoder(encoder, in_chans=4)
    with torch.no_grad():
        features = enc.eval()(torch.randn(1, 4, 64, 96))
    assert enc.out_channels == channels
    assert [tuple(f.shape) for f in features] == [(1, c, 64 // s, 96 // s) for c, s in zip(channels, enc.reductions)]


def test_rwkv_encoder_blocks_follow_the_vision_rwkv_layout():
    enc = create_encoder("rwkv_tiny")
    assert isinstance(enc, RWKVHybridEncoder) and enc.depths == (8, 4)
    keys = enc.state_dict().keys()
    # one stack of 12 C=192 blocks, ln0 on block 0 only: VRWKV-T's backbone.layers.{i} map by prefix
    assert {int(k.split(".")[1]) for k in keys if k.startswith("blocks.")} == set(range(12))
    assert [i for i in range(12) if f"blocks.{i}.ln0.weight" in keys] == [0]
    assert enc.state_dict()["blocks.11.ffn.key.weight"].shape == (768, 192)
    assert enc.blocks[11].att.layer_id == 11 and enc.blocks[11].att.depth == 12


TIMM_CASES = [("resnet18", "resnet18"), ("resnet34", "resnet34"), ("resnet50", "resnet50"),
              ("mobilenet_v2", "mobilenetv2_100")]


@pytest.mark.parametrize("encoder,timm_name", TIMM_CASES)
def test_cnn_encoder_with_timm_weights_gives_timm_feature_maps(encoder, timm_name):
    timm = pytest.importorskip("timm")
    from rwkv_vision.convert.timm import TIMM_ENCODER_NAMES, timm_to_encoder_state_dict

    assert TIMM_ENCODER_NAMES[encoder] == timm_name
    torch.manual_seed(0)
    full = randomize_batchnorm(timm.create_model(timm_name, pretrained=False)).eval()
    features_only = timm.create_model(timm_name, pretrained=False, features_only=True).eval()
    # timm's features_only MobileNetV2 has no conv_head/bn2: load the shared part of the full model's weights
    missing, unexpected = features_only.load_state_dict(full.state_dict(), strict=False)
    assert not missing and all(k.startswith(("fc.", "classifier.", "conv_head.", "bn2.")) for k in unexpected)

    ours = create_encoder(encoder).eval()
    ours.load_state_dict(timm_to_encoder_state_dict(full.state_dict(), encoder), strict=True)
    x = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        got, want = ours(x), features_only(x)
        if encoder == "mobilenet_v2":  # our stride-32 level is the head output, timm's forward_features
            want = want[:4] + [full.forward_features(x)]
    assert len(got) == len(want) == 5
    for level, (a, b) in enumerate(zip(got, want)):
        assert a.shape == b.shape, f"level {level}"
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=f"level {level}")


def test_timm_conversion_errors_name_the_problem():
    timm = pytest.importorskip("timm")
    from rwkv_vision.convert.timm import timm_to_encoder_state_dict

    features_only = timm.create_model("mobilenetv2_100", pretrained=False, features_only=True)
    with pytest.raises(KeyError, match="conv_head.weight"):
        timm_to_encoder_state_dict(features_only.state_dict(), "mobilenet_v2")
    with pytest.raises(KeyError, match="conv1.weight"):
        timm_to_encoder_state_dict(features_only.state_dict(), "resnet18")
    resnet34 = timm.create_model("resnet34", pretrained=False).state_dict()
    with pytest.raises(KeyError, match="unexpected"):  # resnet34 has more blocks than resnet18
        timm_to_encoder_state_dict(resnet34, "resnet18")
    resnet34["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    with pytest.raises(ValueError, match=r"layer1\.0\.conv1\.weight.*\(64, 64, 1, 1\)"):
        timm_to_encoder_state_dict(resnet34, "resnet34")
    grey = timm.create_model("resnet18", pretrained=False, in_chans=1).state_dict()
    assert timm_to_encoder_state_dict(grey, "resnet18")["conv1.weight"].shape == (64, 1, 7, 7)
