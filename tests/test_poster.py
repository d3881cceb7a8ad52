"""PosterV2 and PosterRWKV: sizes, output shapes, 224 -> 112 resizing, the frozen landmark stream in training, the
cross mixers and the map-wise Q-Shift, and that a few training steps lower the loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from rwkv_vision.layers import SpatialMix, q_shift
from rwkv_vision.models.poster_rwkv import CrossSpatialMix, MapwiseQShift, PosterRWKV
from rwkv_vision.models.poster_v2 import CrossWindowAttention, PosterV2
from rwkv_vision.registry import create_model

OFFICIAL_PARAMS = 43.85e6            # POSTER V2 executed parameters (REFERENCE section 3)
LANDMARK_HEAD_PARAMS = 96_016        # official MobileFaceNet GDC head: run, output discarded; not built here


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def meta_model(name: str, **kwargs) -> torch.nn.Module:
    with torch.device("meta"):
        return create_model(name, **kwargs)


def test_poster_v2_parameter_count_matches_official():
    n = n_params(meta_model("poster_v2"))
    assert n == 43_753_941
    assert abs(n - OFFICIAL_PARAMS) / OFFICIAL_PARAMS < 0.005
    assert round((n + LANDMARK_HEAD_PARAMS) / 1e4) == 4385     # 43.85M once the unused head is counted


def test_poster_rwkv_parameter_counts():
    counts = {name: n_params(meta_model(name)) for name in ("poster_rwkv", "poster_rwkv_small")}
    print("parameters:", counts)
    assert counts == {"poster_rwkv": 45_007_111, "poster_rwkv_small": 7_186_759}
    assert n_params(meta_model("poster_rwkv", landmark_key=True)) == 45_007_111 + 64**2 + 128**2 + 256**2


def test_poster_rwkv_small_is_under_one_gmac_per_face():
    model = create_model("poster_rwkv_small").eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.randn(1, 3, 112, 112))
    macs = counter.get_total_flops() / 2
    assert 0.5e9 < macs <= 1.0e9, macs


@pytest.mark.parametrize("name", ["poster_v2", "poster_rwkv", "poster_rwkv_small"])
def test_output_shapes_and_224_is_resized_to_112(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7).eval()
    x112 = torch.randn(1, 3, 112, 112)
    x224 = x112.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)   # nearest downsampling gives back x112
    with torch.no_grad():
        y112, y224 = model(x112), model(x224)
        y8 = create_model(name, num_classes=8).eval()(x224)
    assert y112.shape == y224.shape == (1, 7) and y8.shape == (1, 8)
    assert torch.isfinite(y112).all() and torch.isfinite(y8).all()
    torch.testing.assert_close(y224, y112)


def test_grey_input_is_rejected_with_a_clear_error():
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\].*grey images"):
        create_model("poster_rwkv_small")(torch.randn(1, 1, 112, 112))


def _landmark_buffers(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.face_landback.state_dict().items()}


@pytest.fixture(scope="module", params=["poster_v2", "poster_rwkv"])
def trained(request):
    """Two Adam steps on one synthetic batch of two faces; records what the tests below check."""
    torch.manual_seed(0)
    model = create_model(request.param, num_classes=7)
    model.train()
    x, y = torch.randn(2, 3, 112, 112), torch.tensor([1, 5])
    buffers = _landmark_buffers(model)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    losses = []
    for _ in range(2):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    with torch.no_grad():
        losses.append(F.cross_entropy(model(x), y).item())
    return model, buffers, losses


def test_training_steps_lower_the_loss(trained):
    _, _, losses = trained
    assert losses[-1] < losses[0] - 0.1, losses


def test_landmark_stream_gets_no_gradient_and_keeps_its_statistics(trained):
    model, buffers, _ = trained
    assert model.training and not model.face_landback.training
    assert all(p.grad is None and not p.requires_grad for p in model.face_landback.parameters())
    after = model.face_landback.state_dict()
    assert all(torch.equal(buffers[k], after[k]) for k in buffers)
    # the rest trains, including the cross mixers fed by the landmark tokens
    for p in (model.ir_back.input_layer[0].weight, model.last_face_conv.weight, model.attn1.proj.weight
              if isinstance(model, PosterV2) else model.attn1.receptance.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_drift_option_lets_landmark_statistics_update():
    model = create_model("poster_rwkv_small", drift_landmark_bn=True)
    model.train()
    assert model.face_landback.training
    before = _landmark_buffers(model)
    model(torch.randn(2, 3, 112, 112))
    assert not torch.equal(before["conv1.bn.running_mean"], model.face_landback.conv1.bn.running_mean)
    assert not any(p.requires_grad for p in model.face_landback.parameters())


def test_cross_window_attention_matches_the_explicit_formula():
    torch.manual_seed(0)
    attn = CrossWindowAttention(dim=64, num_heads=2, window=4)
    x, lm = torch.randn(2, 16, 64), torch.randn(2, 16, 64)
    k, v = attn.qkv(x).split(64, dim=-1)
    heads = lambda t: t.view(2, 16, 2, 32).transpose(1, 2)   # noqa: E731
    q, k, v = heads(lm), heads(k), heads(v)
    bias = torch.empty(2, 16, 16)
    for i in range(16):
        for j in range(16):
            dy, dx = i // 4 - j // 4, i % 4 - j % 4
            bias[:, i, j] = attn.relative_position_bias_table[(dy + 3) * 7 + (dx + 3)]
    weights = torch.softmax(q @ k.transpose(-2, -1) / 32 ** 0.5 + bias, dim=-1)
    expected = attn.proj((weights @ v).transpose(1, 2).reshape(2, 16, 64))
    torch.testing.assert_close(attn(x, lm, (4, 4)), expected)


def test_cross_spatial_mix_reuses_spatial_mix():
    torch.manual_seed(0)
    cross, plain = CrossSpatialMix(64), SpatialMix(64)
    plain.load_state_dict(cross.state_dict())
    x = torch.randn(2, 49, 64)
    # with the landmark stream equal to the image stream it is exactly the Vision-RWKV spatial mix
    torch.testing.assert_close(cross(x, x, (7, 7)), plain(x, (7, 7)))
    lm = torch.randn(2, 49, 64, requires_grad=True)
    y = cross(x, lm, (7, 7))
    assert not torch.allclose(y, plain(x, (7, 7)))
    y.sum().backward()
    assert lm.grad.abs().sum() > 0


def test_landmark_key_option_changes_the_key():
    torch.manual_seed(0)
    with_key = CrossSpatialMix(64, landmark_key=True)
    without = CrossSpatialMix(64)
    without.load_state_dict({k: v for k, v in with_key.state_dict().items() if not k.startswith("landmark_key")})
    x, lm = torch.randn(1, 49, 64), torch.randn(1, 49, 64)
    assert not torch.allclose(with_key(x, lm, (7, 7)), without(x, lm, (7, 7)))
    with torch.no_grad():
        with_key.landmark_key.weight.zero_()
    torch.testing.assert_close(with_key(x, lm, (7, 7)), without(x, lm, (7, 7)))


def test_mapwise_qshift_stays_inside_each_map():
    x = torch.randn(2, 147, 16)
    shifted = MapwiseQShift()(x, (7, 7))
    per_map = torch.cat([q_shift(x[:, i * 49:(i + 1) * 49], (7, 7)) for i in range(3)], dim=1)
    torch.testing.assert_close(shifted, per_map)
    # a plain shift over the stacked 21x7 grid would pull the first map's bottom row from the second map
    assert not torch.allclose(q_shift(x, (21, 7)), per_map)


def test_fusion_blocks_use_the_mapwise_shift():
    model = PosterRWKV(embed_dim=64, depth=2, image_backbone="mobilefacenet")
    for block in model.fusion.blocks:
        assert isinstance(block.att.shift, MapwiseQShift) and isinstance(block.ffn.shift, MapwiseQShift)
