"""Shared layers: Q-Shift, spatial and channel mix, the RWKV block, the attention block, patch embedding, DropPath."""

import math

import pytest
import torch
import torch.nn.functional as F
from wkv_oracle import dense_wkv

from rwkv_vision.layers import (Attention, AttentionBlock, ChannelMix, DropPath, PatchEmbed, QShift, RWKVBlock,
                                SpatialMix, q_shift, resample_pos_embed)

BASE = torch.tensor([[1., 2., 3.], [4., 5., 6.], [7., 8., 9.]])


def grid_tokens(maps: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> tokens [B, H*W, C] in raster order."""
    return maps.flatten(2).transpose(1, 2)


def token_maps(tokens: torch.Tensor, hw) -> torch.Tensor:
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *hw)


# -- Q-Shift ----------------------------------------------------------------------------------------------------------

def test_q_shift_moves_each_quarter_by_hand():
    # Channel c holds BASE + 10 c on a 3x3 grid; four channels, so one channel per quarter (g = 1).
    maps = torch.stack([BASE + 10 * c for c in range(4)])[None].repeat(2, 1, 1, 1)
    out = token_maps(q_shift(grid_tokens(maps), (3, 3)), (3, 3))
    left = torch.tensor([[0., 1., 2.], [0., 4., 5.], [0., 7., 8.]])        # takes x - 1
    right = torch.tensor([[12., 13., 0.], [15., 16., 0.], [18., 19., 0.]])  # takes x + 1
    above = torch.tensor([[0., 0., 0.], [21., 22., 23.], [24., 25., 26.]])  # takes y - 1
    below = torch.tensor([[34., 35., 36.], [37., 38., 39.], [0., 0., 0.]])  # takes y + 1
    expected = torch.stack([left, right, above, below])
    assert torch.equal(out[0], expected) and torch.equal(out[1], expected)


def test_q_shift_leaves_channels_beyond_four_groups_and_honours_shift_pixel():
    maps = torch.stack([BASE + 10 * c for c in range(6)])[None]  # C = 6, gamma 1/4 -> g = 1: channels 4, 5 stay
    out = token_maps(QShift(shift_pixel=2)(grid_tokens(maps), (3, 3)), (3, 3))[0]
    assert torch.equal(out[0], torch.tensor([[0., 0., 1.], [0., 0., 4.], [0., 0., 7.]]))
    assert torch.equal(out[3], torch.tensor([[37., 38., 39.], [0., 0., 0.], [0., 0., 0.]]))
    assert torch.equal(out[4:], maps[0, 4:])
    # a shift wider than the grid empties the shifted groups instead of wrapping
    wide = token_maps(q_shift(grid_tokens(maps), (3, 3), shift_pixel=5), (3, 3))[0]
    assert torch.equal(wide[:4], torch.zeros(4, 3, 3)) and torch.equal(wide[4:], maps[0, 4:])


def test_q_shift_rejects_bad_grids_and_settings():
    with pytest.raises(ValueError, match=r"hw=\(3, 4\) has 12 cells.*N=10"):
        q_shift(torch.zeros(1, 10, 4), (3, 4))
    with pytest.raises(ValueError, match="channel_gamma"):
        QShift(channel_gamma=0.3)
    with pytest.raises(ValueError, match="shift_pixel"):
        QShift(shift_pixel=0)


# -- spatial and channel mix -----------------------------------------------------------------------------------------

def _mixed(x, xx, mu):
    return x * mu + xx * (1 - mu)


@pytest.mark.parametrize("causal", [False, True])
def test_spatial_mix_matches_the_dense_formula(causal):
    torch.manual_seed(0)
    mix = SpatialMix(8, layer_id=1, depth=3, key_norm=True, causal=causal)
    with torch.no_grad():  # move the init away from symmetric values so that a wrong w / u would show
        mix.key_norm.weight.uniform_(0.5, 1.5)
    x, hw = torch.randn(2, 6, 8), (2, 3)
    xx = q_shift(x, hw)
    k = mix.key(_mixed(x, xx, mix.spatial_mix_k))
    v = mix.value(_mixed(x, xx, mix.spatial_mix_v))
    r = mix.receptance(_mixed(x, xx, mix.spatial_mix_r))
    if causal:  # RWKV-4: per-token decay exp(spatial_decay), bonus spatial_first, not scaled by T
        y = dense_wkv(k, v, mix.spatial_decay.exp(), mix.spatial_first, bidirectional=False)
    else:       # Vision-RWKV: w / T and u / T
        y = dense_wkv(k, v, mix.spatial_decay / 6, mix.spatial_first / 6, bidirectional=True)
    expected = mix.output(torch.sigmoid(r) * mix.key_norm(y.float()))
    torch.testing.assert_close(mix(x, hw), expected, atol=2e-5, rtol=1e-4)


def test_channel_mix_formula_and_shift_pixel_zero():
    torch.manual_seed(0)
    ffn = ChannelMix(8, hidden_rate=2, key_norm=True)
    x, hw = torch.randn(2, 6, 8), (3, 2)
    xx = q_shift(x, hw)
    k = ffn.key_norm(torch.relu(ffn.key(_mixed(x, xx, ffn.spatial_mix_k))) ** 2)
    expected = torch.sigmoid(ffn.receptance(_mixed(x, xx, ffn.spatial_mix_r))) * ffn.value(k)
    torch.testing.assert_close(ffn(x, hw), expected)
    assert ffn.key.weight.shape == (16, 8) and ffn.value.weight.shape == (8, 16)
    plain = ChannelMix(8, shift_pixel=0)  # no shift: the mix parameters do not exist (as official)
    assert plain.shift is None and not hasattr(plain, "spatial_mix_k")
    assert "spatial_mix_k" not in dict(SpatialMix(8, shift_pixel=0).named_parameters())


def test_fancy_init_is_the_reference_formula_exactly():
    C, L = 10, 4
    for layer in range(L):
        att = SpatialMix(C, layer_id=layer, depth=L)
        ffn = ChannelMix(C, layer_id=layer, depth=L)
        r01, r10 = layer / (L - 1), 1 - layer / L
        decay = [-5 + 8 * (i / (C - 1)) ** (0.7 + 1.3 * r01) for i in range(C)]
        first = [math.log(0.3) + 0.5 * ((i + 1) % 3 - 1) for i in range(C)]
        ramp = torch.tensor([i / C for i in range(C)])
        assert torch.equal(att.spatial_decay, torch.tensor(decay))
        torch.testing.assert_close(att.spatial_first, torch.tensor(first), atol=0, rtol=1e-7)
        assert torch.equal(att.spatial_mix_k.flatten(), ramp ** r10)
        assert torch.equal(att.spatial_mix_v.flatten(), ramp ** r10 + 0.3 * r01)
        assert torch.equal(att.spatial_mix_r.flatten(), ramp ** (0.5 * r10))
        assert torch.equal(ffn.spatial_mix_k.flatten(), ramp ** r10)
        assert torch.equal(ffn.spatial_mix_r.flatten(), ramp ** r10)
    big = SpatialMix(256)
    assert abs(big.key.weight.std().item() - 0.02) < 0.002 and big.key.weight.abs().max() < 0.2
    with pytest.raises(ValueError, match="layer_id"):
        SpatialMix(8, layer_id=3, depth=3)


# -- the RWKV block ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("post_norm", [False, True])
def test_rwkv_block_residual_structure(post_norm):
    torch.manual_seed(0)
    block = RWKVBlock(8, layer_id=0, depth=2, post_norm=post_norm, init_values=0.5).eval()
    with torch.no_grad():
        block.gamma1.uniform_(0.1, 1.0)
        block.gamma2.uniform_(0.1, 1.0)
    x, hw = torch.randn(2, 6, 8), (2, 3)
    h = block.ln0(x)
    if post_norm:
        h = h + block.gamma1 * block.ln1(block.att(h, hw))
        h = h + block.gamma2 * block.ln2(block.ffn(h, hw))
    else:
        h = h + block.gamma1 * block.att(block.ln1(h), hw)
        h = h + block.gamma2 * block.ffn(block.ln2(h), hw)
    torch.testing.assert_close(block(x, hw), h)


def test_rwkv_block_options_and_backward():
    first, later = RWKVBlock(8, layer_id=0, depth=2), RWKVBlock(8, layer_id=1, depth=2, drop_path=0.2)
    assert first.ln0 is not None and later.ln0 is None and first.gamma1 is None
    assert RWKVBlock(8, layer_id=1, depth=2, use_ln0=True).ln0 is not None
    assert isinstance(later.drop_path, DropPath)
    names = set(dict(RWKVBlock(8, init_values=1e-5, key_norm=True).named_parameters()))
    assert {"gamma1", "gamma2", "att.key_norm.weight", "ffn.key_norm.weight", "att.spatial_decay"} <= names
    x = torch.randn(2, 12, 8, requires_grad=True)
    later.train()(x, (3, 4)).square().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert later.att.spatial_decay.grad is not None and later.att.spatial_decay.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="grid"):
        later(x, (4, 4))


@pytest.mark.parametrize("autocast", [False, True])
def test_in_place_inference_path_matches_autograd_path(autocast):
    """Without autograd the mixers compute in place: same output as with autograd (also under bf16 autocast), and
    the block's input is left alone."""
    torch.manual_seed(0)
    block = RWKVBlock(8, layer_id=1, depth=2, key_norm=True).eval()
    x, hw = torch.randn(2, 12, 8), (3, 4)
    x_before = x.clone()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        with torch.inference_mode():
            inferred = block(x, hw)
        assert torch.equal(x, x_before)
        out = block(x.clone().requires_grad_(), hw)
    torch.testing.assert_close(inferred, out, atol=0, rtol=0)


def test_mixers_with_autograd_keep_gradients_hooks_and_forward_ad():
    """With autograd on nothing is overwritten: gradients equal the out-of-place formula's, module backward hooks on
    the inner Linear layers work, and forward-mode AD gives the directional derivative."""
    torch.manual_seed(0)
    ffn = ChannelMix(8, layer_id=1, depth=2, key_norm=True)
    x, hw = torch.randn(2, 12, 8, requires_grad=True), (3, 4)
    seen = []
    for linear in (ffn.key, ffn.receptance):
        linear.register_full_backward_hook(lambda module, gin, gout: seen.append(module))
    gy = torch.randn(2, 12, 8)
    grads = torch.autograd.grad(ffn(x, hw), (x, ffn.key.weight, ffn.receptance.weight), gy)
    assert len(seen) == 2
    xx = q_shift(x, hw)
    k = ffn.key_norm(torch.relu(ffn.key(_mixed(x, xx, ffn.spatial_mix_k))) ** 2)
    ref = torch.sigmoid(ffn.receptance(_mixed(x, xx, ffn.spatial_mix_r))) * ffn.value(k)
    for got, want in zip(grads, torch.autograd.grad(ref, (x, ffn.key.weight, ffn.receptance.weight), gy)):
        torch.testing.assert_close(got, want)

    import torch.autograd.forward_ad as fwAD

    x0, t = x.detach().double(), torch.randn(2, 12, 8, dtype=torch.float64)
    ffn = ffn.double().requires_grad_(False)
    with torch.no_grad(), fwAD.dual_level():  # the in-place path
        tangent = fwAD.unpack_dual(ffn(fwAD.make_dual(x0, t), hw)).tangent
    eps = 1e-6
    finite = (ffn(x0 + eps * t, hw) - ffn(x0 - eps * t, hw)) / (2 * eps)
    torch.testing.assert_close(tangent, finite, atol=1e-6, rtol=1e-5)


# -- attention block --------------------------------------------------------------------------------------------------

def test_attention_is_scaled_softmax_attention():
    torch.manual_seed(0)
    attn = Attention(8, num_heads=2)
    x = torch.randn(2, 5, 8)
    q, k, v = attn.qkv(x).reshape(2, 5, 3, 2, 4).permute(2, 0, 3, 1, 4)
    weights = torch.softmax(q @ k.transpose(-1, -2) / 2.0, dim=-1)  # sqrt(head_dim 4) = 2
    expected = attn.proj((weights @ v).transpose(1, 2).reshape(2, 5, 8))
    torch.testing.assert_close(attn(x), expected, atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="divisible"):
        Attention(10, num_heads=4)


def test_attention_block_matches_rwkv_block_interface():
    block = AttentionBlock(8, num_heads=2, init_values=1e-5).eval()
    x = torch.randn(2, 6, 8)
    assert block(x, (2, 3)).shape == x.shape
    h = x + block.gamma1 * block.attn(block.norm1(x))
    torch.testing.assert_close(block(x), h + block.gamma2 * block.mlp(block.norm2(h)))
    assert block.mlp.fc1.weight.shape == (32, 8)


# -- patch embedding and position embedding ---------------------------------------------------------------------------

def test_patch_embed_pads_bottom_right_and_checks_input():
    torch.manual_seed(0)
    embed = PatchEmbed(patch_size=16, in_chans=3, embed_dim=8)
    x = torch.randn(2, 3, 200, 150)
    tokens, hw = embed(x)
    assert hw == (13, 10) and tokens.shape == (2, 130, 8)
    padded = torch.zeros(2, 3, 208, 160)
    padded[:, :, :200, :150] = x
    torch.testing.assert_close(tokens, grid_tokens(embed.projection(padded)))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]; got shape \(2, 1, 32, 32\)"):
        embed(torch.zeros(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"got shape \(3, 32, 32\)"):
        embed(torch.zeros(3, 32, 32))


def test_conv_stem_strides_to_the_patch_grid():
    embed = PatchEmbed(patch_size=16, in_chans=3, embed_dim=32, stem="conv")
    tokens, hw = embed(torch.randn(2, 3, 200, 150))
    assert hw == (13, 10) and tokens.shape == (2, 130, 32)
    assert embed.projection.kernel_size == (4, 4) and embed.stem[0].stride == (2, 2)
    with pytest.raises(ValueError, match="multiple of 4"):
        PatchEmbed(patch_size=6, stem="conv")
    with pytest.raises(ValueError, match="stem"):
        PatchEmbed(stem="vit")


def test_resample_pos_embed_is_bicubic_and_exact_on_the_same_grid():
    torch.manual_seed(0)
    pos = torch.randn(1, 12, 5)
    assert resample_pos_embed(pos, (3, 4), (3, 4)) is pos
    out = resample_pos_embed(pos, (3, 4), (5, 2))
    grid = pos.reshape(1, 3, 4, 5).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(5, 2), mode="bicubic", align_corners=False).flatten(2).transpose(1, 2)
    torch.testing.assert_close(out, expected)
    const = resample_pos_embed(torch.full((1, 12, 5), 0.7), (3, 4), (7, 9))
    torch.testing.assert_close(const, torch.full((1, 63, 5), 0.7))
    assert resample_pos_embed(pos.half(), (3, 4), (6, 6)).dtype == torch.float16
    with pytest.raises(ValueError, match=r"\[1, 3\*3, C\]"):
        resample_pos_embed(pos, (3, 3), (4, 4))


def test_drop_path_drops_whole_samples():
    torch.manual_seed(0)
    dp = DropPath(0.5)
    x = torch.ones(64, 3, 4)
    assert torch.equal(dp.eval()(x), x)
    y = dp.train()(x)
    per_sample = y.flatten(1)
    assert set(per_sample.unique().tolist()) == {0.0, 2.0}
    assert torch.equal(per_sample.min(1).values, per_sample.max(1).values)  # all-or-nothing per sample
    with pytest.raises(ValueError):
        DropPath(1.0)
