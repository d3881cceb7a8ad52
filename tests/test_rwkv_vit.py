"""RWKVViT: sizes, shapes at any input size, position-embedding resizing and its cache, variants, heads, compile."""

import copy

import pytest
import torch
import torch.nn.functional as F

from rwkv_vision.layers import resample_pos_embed
from rwkv_vision.models import RWKVViT
from rwkv_vision.models.rwkv_vit import default_cfgs
from rwkv_vision.registry import create_model


def tiny(**kwargs) -> RWKVViT:
    args = dict(img_size=32, patch_size=8, embed_dim=16, depth=2, num_classes=5)
    return RWKVViT(**{**args, **kwargs})


def randomise_pos(model: RWKVViT) -> RWKVViT:
    with torch.no_grad():
        model.pos_embed.normal_()
    return model


def manual_features(model: RWKVViT, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """forward_features written out: embed, add the given position table, blocks, final norm."""
    tokens, hw = model.patch_embed(x)
    h = tokens + pos
    for block in model.layers:
        h = block(h, hw)
    return model.norm(h)


# -- sizes and configurations -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, params", [("rwkv_vit_tiny", 6.2e6), ("rwkv_vit_small", 23.8e6),
                                          ("rwkv_vit_base", 93.7e6), ("rwkv_vit_large", 334.9e6)])
def test_parameter_counts_match_the_reference_table(name, params):
    with torch.device("meta"):
        model = create_model(name)
    count = sum(p.numel() for p in model.parameters())
    assert abs(count - params) / params < 0.01, f"{name}: {count} parameters vs {params:.0f} in the table"


def test_named_configurations():
    with torch.device("meta"):
        small, large = create_model("rwkv_vit_small"), create_model("rwkv_vit_large")
        nano, micro = create_model("rwkv_vit_nano", num_classes=7), create_model("rwkv_vit_micro", num_classes=7)
    assert small.layers[3].post_norm and small.layers[3].gamma1 is not None and small.layers[0].ln0 is not None
    assert small.layers[3].ln0 is None and small.layers[-1].drop_path.drop_prob == pytest.approx(0.3)
    assert large.layers[0].att.key_norm is not None and large.head[0].out_features == 3072
    assert large.grid_size == (24, 24) and large.layers[-1].drop_path.drop_prob == pytest.approx(0.1)
    assert nano.grid_size == micro.grid_size == (14, 14) and nano.head.out_features == 7
    assert sum(p.numel() for p in nano.parameters()) < 1e6 < sum(p.numel() for p in micro.parameters()) < 3e6


def test_pretrained_configs_record_the_official_preprocessing():
    cfg = create_model("rwkv_vit_tiny", depth=1).pretrained_cfg
    assert cfg["hf_hub_id"] == "OpenGVLab/Vision-RWKV" and cfg["hf_hub_filename"] == "vrwkv_t_in1k_224.pth"
    assert cfg["checkpoint_format"] == "vision_rwkv" and cfg["architecture"] == "rwkv_vit_tiny"
    assert cfg["interpolation"] == "bicubic" and cfg["crop_pct"] == 224 / 256 and cfg["input_size"] == (3, 224, 224)
    torch.testing.assert_close(torch.tensor(cfg["mean"]) * 255, torch.tensor([123.675, 116.28, 103.53]))
    torch.testing.assert_close(torch.tensor(cfg["std"]) * 255, torch.tensor([58.395, 57.12, 57.375]))
    assert default_cfgs["rwkv_vit_large"]["hf_hub_filename"] == "vrwkv_l_22kto1k_384.pth"
    assert default_cfgs["rwkv_vit_nano"]["hf_hub_id"] is None
    model = tiny(img_size=(32, 48))
    assert model.default_cfg is model.pretrained_cfg and model.pretrained_cfg["input_size"] == (3, 32, 48)


def test_fancy_init_follows_the_layer_position():
    model = tiny(depth=3)
    last = model.layers[-1].att  # r01 = 1, r10 = 1/3
    C = 16
    assert torch.equal(last.spatial_decay, torch.tensor([-5 + 8 * (i / (C - 1)) ** 2.0 for i in range(C)]))
    assert torch.equal(last.spatial_mix_r.flatten(), torch.tensor([i / C for i in range(C)]) ** (0.5 / 3))
    assert torch.equal(model.pos_embed, torch.zeros(1, 16, 16))
    assert abs(model.head.weight.std().item() - 0.02) < 0.005 and torch.equal(model.head.bias, torch.zeros(5))


# -- shapes, sizes and the position embedding ------------------------------------------------------------------------

@pytest.mark.parametrize("size, grid", [((224, 224), (14, 14)), ((256, 320), (16, 20)), ((200, 150), (13, 10))])
def test_shapes_and_backward_at_any_input_size(size, grid):
    torch.manual_seed(0)
    model = RWKVViT(img_size=224, embed_dim=16, depth=2, num_classes=4, post_norm=True, init_values=1e-2)
    x = torch.randn(2, 3, *size)
    features = model.forward_features(x)
    assert features.shape == (2, grid[0] * grid[1], 16)
    logits = model.forward_head(features)
    assert logits.shape == (2, 4)
    logits.square().sum().backward()
    for name in ("pos_embed", "patch_embed.projection.weight", "layers.1.att.spatial_decay", "head.weight"):
        grad = model.get_parameter(name).grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name


def test_non_divisible_input_is_zero_padded_bottom_right():
    torch.manual_seed(0)
    model = randomise_pos(tiny()).eval()
    x = torch.randn(1, 3, 30, 19)
    padded = F.pad(x, (0, 5, 0, 2))
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(padded))


def test_pos_embed_is_exact_on_the_trained_grid_and_bicubic_elsewhere():
    torch.manual_seed(0)
    model = randomise_pos(tiny()).eval()
    assert model._resized_pos_embed((4, 4)) is model.pos_embed
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(x), manual_features(model, x, model.pos_embed),
                                   atol=0, rtol=0)
        wide = torch.randn(2, 3, 40, 56)
        resized = resample_pos_embed(model.pos_embed, (4, 4), (5, 7))
        torch.testing.assert_close(model.forward_features(wide), manual_features(model, wide, resized))
    # with autograd the resized table is recomputed, so gradients reach pos_embed
    model.forward_features(wide).sum().backward()
    assert model.pos_embed.grad.abs().sum() > 0


def test_pos_cache_follows_pos_embed_and_stays_out_of_state_dict():
    torch.manual_seed(0)
    model = randomise_pos(tiny()).eval()
    x = torch.randn(1, 3, 48, 40)
    with torch.no_grad():
        first = model(x)
        table = model._pos_cache[(6, 5)]
        model(x)
        assert model._pos_cache[(6, 5)] is table  # reused
        assert set(model.state_dict()) == set(dict(model.named_parameters())) | {
            k for k, _ in model.named_buffers()}
        # an edit that does not bump the tensor version (as fused optimizers do) still invalidates the cache
        model.pos_embed.data.mul_(-2.0)  # (a constant shift would vanish in ln0)
        expected = resample_pos_embed(model.pos_embed, (4, 4), (6, 5))
        torch.testing.assert_close(model._resized_pos_embed((6, 5)), expected)
        assert not torch.allclose(model(x), first)
        # loading a state dict, copying and moving to another dtype all see the current values
        fresh = randomise_pos(tiny()).eval()
        model.load_state_dict(fresh.state_dict())
        torch.testing.assert_close(model(x), fresh(x))
        clone = copy.deepcopy(model).double()
        torch.testing.assert_close(clone(x.double()), fresh(x).double(), atol=1e-5, rtol=1e-4)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), fresh(x))
    with torch.no_grad():  # a table made under inference mode is usable afterwards
        torch.testing.assert_close(model(x), fresh(x))


def test_bad_inputs_give_clear_errors():
    model = tiny()
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]; got shape \(2, 1, 32, 32\)"):
        model(torch.zeros(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"got shape \(3, 32, 32\)"):
        model(torch.zeros(3, 32, 32))
    with pytest.raises(ValueError, match=r"\[B, N, 16\]; got shape \(2, 16\)"):
        model.forward_head(torch.zeros(2, 16))
    for kwargs, message in ((dict(mixer="mamba"), "mixer"), (dict(pool="cls"), "pool"), (dict(stem="vit"), "stem"),
                            (dict(mixer="attention", post_norm=True), "post_norm"),
                            (dict(num_heads=2), "num_heads"), (dict(depth=0), "depth")):
        with pytest.raises(ValueError, match=message):
            tiny(**kwargs)


# -- heads and features -----------------------------------------------------------------------------------------------

def test_heads_pooling_and_reset_classifier():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    model = tiny(num_classes=0).eval()
    assert isinstance(model.head, torch.nn.Identity) and model.num_features == 16
    with torch.no_grad():
        features = model.forward_features(x)
        torch.testing.assert_close(model(x), features.mean(1))
        model.reset_classifier(3)
        assert model.num_classes == 3 and model(x).shape == (2, 3)
        torch.testing.assert_close(model.forward_head(features, pre_logits=True), features.mean(1))
        last = tiny(pool="last").eval()
        torch.testing.assert_close(last.forward_head(features, pre_logits=True), features[:, -1])
    mlp = tiny(head_hidden_dim=24)
    assert [type(m).__name__ for m in mlp.head] == ["Linear", "Tanh", "Linear"]
    assert {"head.0.weight", "head.2.bias"} <= set(mlp.state_dict())
    mlp.reset_classifier(0)
    assert isinstance(mlp.get_classifier(), torch.nn.Identity)


def test_forward_intermediates_maps():
    torch.manual_seed(0)
    model = tiny(depth=3).eval()
    x = torch.randn(2, 3, 40, 24)  # grid 5 x 3
    with torch.no_grad():
        final, maps = model.forward_intermediates(x, indices=[0, -1])
        assert [m.shape for m in maps] == [(2, 16, 5, 3)] * 2
        torch.testing.assert_close(final, model.forward_features(x))
        normed = model.forward_intermediates(x, indices=1, norm=True, intermediates_only=True)
        assert len(normed) == 1
        torch.testing.assert_close(normed[0], final.transpose(1, 2).reshape(2, 16, 5, 3))
        assert len(model.forward_intermediates(x, intermediates_only=True)) == 3
        # the map is the token grid: token (row 1, col 2) is at [.., 1, 2]
        tokens, hw = model.patch_embed(x)
        h = model.layers[0](tokens + model._resized_pos_embed(hw), hw)
        torch.testing.assert_close(maps[0][:, :, 1, 2], h[:, 1 * 3 + 2])
    with pytest.raises(ValueError, match="out of range"):
        model.forward_intermediates(x, indices=[3])
    with pytest.raises(ValueError, match="last n blocks"):
        model.forward_intermediates(x, indices=4)
    with pytest.raises(ValueError, match="no block index"):
        model.forward_intermediates(x, indices=[])


def test_grad_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = tiny()
    x = torch.randn(2, 3, 32, 32)
    model(x).sum().backward()
    reference = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.set_grad_checkpointing()
    assert model.grad_checkpointing
    model(x).sum().backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, reference[name], msg=name)


# -- variants train, and compile --------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", [dict(mixer="bi_wkv", pool="mean"), dict(mixer="bi_wkv", pool="last"),
                                     dict(mixer="causal_wkv", pool="last"), dict(mixer="causal_wkv", pool="mean"),
                                     dict(mixer="attention", pool="mean"), dict(mixer="attention", pool="last"),
                                     dict(stem="conv", post_norm=True, init_values=1e-2)])
def test_every_variant_trains(variant):
    torch.manual_seed(0)
    model = RWKVViT(img_size=16, patch_size=4, embed_dim=32, depth=2, num_classes=4, **variant)
    x, y = torch.randn(16, 3, 16, 16), torch.arange(16) % 4
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(10):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], f"{variant}: losses {losses}"


@pytest.mark.slow  # inductor's first C++ build of the graph takes 30-70 s on 2 cores; a few s from its cache
def test_torch_compile_matches_eager():
    torch.manual_seed(0)
    model = randomise_pos(RWKVViT(img_size=32, patch_size=8, embed_dim=16, depth=1, num_classes=3)).eval()
    x = torch.randn(2, 3, 40, 24)  # another grid than the trained one: the resize runs inside the graph
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("mixer", ["bi_wkv", "attention"])
def test_cuda_forward_and_gradients_match_cpu(mixer, monkeypatch):
    """The whole model on the GPU (the CUDA WKV kernel inside) against the same model on the CPU."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # TF32 patch-embedding convolutions: ~1e-3 off
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    torch.manual_seed(0)
    model = randomise_pos(create_model("rwkv_vit_tiny", mixer=mixer, img_size=64, num_classes=7))
    gpu_model = copy.deepcopy(model).cuda()
    x = torch.randn(2, 3, 80, 48)
    outs, grads = [], []
    for m, xx in ((model, x), (gpu_model, x.cuda())):
        out = m(xx)
        out.square().sum().backward()
        outs.append(out.detach().cpu())
        grads.append({n: p.grad.cpu() for n, p in m.named_parameters() if p.grad is not None})
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-4, atol=1e-4)
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 0
    for name, g in grads[0].items():
        err = (grads[1][name] - g).abs().max().item()
        assert err <= 1e-3 * g.abs().max().item() + 1e-6, f"{name}: max abs error {err:.3g}"
