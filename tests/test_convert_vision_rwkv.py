"""Official Vision-RWKV checkpoints: files built here with the official key names load strictly and correctly."""

import pytest
import torch

from rwkv_vision.convert import convert_vision_rwkv, is_vision_rwkv_state_dict
from rwkv_vision.convert.vision_rwkv import official_key, our_key
from rwkv_vision.layers import resample_pos_embed
from rwkv_vision.models import RWKVViT
from rwkv_vision.registry import create_model

C, DEPTH, CLASSES = 16, 2, 10


def official_state_dict(grid=4, key_norm=False, layer_scale=True, head_hidden=None, seed=0):
    """A random state dict with the official names and shapes (REFERENCE section 2), hidden rate 4."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=g)

    sd = {"backbone.patch_embed.projection.weight": rand(C, 3, 16, 16),
          "backbone.patch_embed.projection.bias": rand(C),
          "backbone.pos_embed": rand(1, grid * grid, C)}
    for i in range(DEPTH):
        p = f"backbone.layers.{i}."
        norms = ["ln1", "ln2"] + (["ln0"] if i == 0 else [])
        norms += ["att.key_norm"] if key_norm else []
        for norm in norms:
            sd[p + norm + ".weight"], sd[p + norm + ".bias"] = rand(C), rand(C)
        if key_norm:
            sd[p + "ffn.key_norm.weight"], sd[p + "ffn.key_norm.bias"] = rand(4 * C), rand(4 * C)
        if layer_scale:
            sd[p + "gamma1"], sd[p + "gamma2"] = rand(C), rand(C)
        sd[p + "att.spatial_decay"], sd[p + "att.spatial_first"] = rand(C), rand(C)
        for mu in ("k", "v", "r"):
            sd[p + f"att.spatial_mix_{mu}"] = torch.rand(1, 1, C, generator=g)
        for name in ("key", "value", "receptance", "output"):
            sd[p + f"att.{name}.weight"] = rand(C, C) * 0.2
        sd[p + "ffn.spatial_mix_k"], sd[p + "ffn.spatial_mix_r"] = torch.rand(1, 1, C, generator=g), \
            torch.rand(1, 1, C, generator=g)
        sd[p + "ffn.key.weight"] = rand(4 * C, C) * 0.2
        sd[p + "ffn.receptance.weight"] = rand(C, C) * 0.2
        sd[p + "ffn.value.weight"] = rand(C, 4 * C) * 0.2
    sd["backbone.ln1.weight"], sd["backbone.ln1.bias"] = rand(C), rand(C)
    if head_hidden:
        sd["head.0.weight"], sd["head.0.bias"] = rand(head_hidden, C), rand(head_hidden)
        sd["head.2.weight"], sd["head.2.bias"] = rand(CLASSES, head_hidden), rand(CLASSES)
    else:
        sd["head.fc.weight"], sd["head.fc.bias"] = rand(CLASSES, C), rand(CLASSES)
    return sd


def model_args(**kwargs):
    return dict(embed_dim=C, depth=DEPTH, img_size=64, num_classes=CLASSES, **kwargs)


@torch.no_grad()
def load_by_hand(model: RWKVViT, sd: dict, head_hidden=None) -> RWKVViT:
    """Copy every official tensor into its module by hand, one assignment per parameter."""
    model.patch_embed.projection.weight.copy_(sd["backbone.patch_embed.projection.weight"])
    model.patch_embed.projection.bias.copy_(sd["backbone.patch_embed.projection.bias"])
    model.pos_embed.copy_(sd["backbone.pos_embed"])
    for i, block in enumerate(model.layers):
        p = f"backbone.layers.{i}."
        norms = [block.ln1, block.ln2] + ([block.ln0] if i == 0 else [])
        names = ["ln1", "ln2"] + (["ln0"] if i == 0 else [])
        if block.att.key_norm is not None:
            norms += [block.att.key_norm, block.ffn.key_norm]
            names += ["att.key_norm", "ffn.key_norm"]
        for norm, name in zip(norms, names):
            norm.weight.copy_(sd[p + name + ".weight"])
            norm.bias.copy_(sd[p + name + ".bias"])
        if block.gamma1 is not None:
            block.gamma1.copy_(sd[p + "gamma1"])
            block.gamma2.copy_(sd[p + "gamma2"])
        att, ffn = block.att, block.ffn
        att.spatial_decay.copy_(sd[p + "att.spatial_decay"])
        att.spatial_first.copy_(sd[p + "att.spatial_first"])
        att.spatial_mix_k.copy_(sd[p + "att.spatial_mix_k"])
        att.spatial_mix_v.copy_(sd[p + "att.spatial_mix_v"])
        att.spatial_mix_r.copy_(sd[p + "att.spatial_mix_r"])
        att.key.weight.copy_(sd[p + "att.key.weight"])
        att.value.weight.copy_(sd[p + "att.value.weight"])
        att.receptance.weight.copy_(sd[p + "att.receptance.weight"])
        att.output.weight.copy_(sd[p + "att.output.weight"])
        ffn.spatial_mix_k.copy_(sd[p + "ffn.spatial_mix_k"])
        ffn.spatial_mix_r.copy_(sd[p + "ffn.spatial_mix_r"])
        ffn.key.weight.copy_(sd[p + "ffn.key.weight"])
        ffn.receptance.weight.copy_(sd[p + "ffn.receptance.weight"])
        ffn.value.weight.copy_(sd[p + "ffn.value.weight"])
    model.norm.weight.copy_(sd["backbone.ln1.weight"])
    model.norm.bias.copy_(sd["backbone.ln1.bias"])
    if head_hidden:
        model.head[0].weight.copy_(sd["head.0.weight"])
        model.head[0].bias.copy_(sd["head.0.bias"])
        model.head[2].weight.copy_(sd["head.2.weight"])
        model.head[2].bias.copy_(sd["head.2.bias"])
    else:
        model.head.weight.copy_(sd["head.fc.weight"])
        model.head.bias.copy_(sd["head.fc.bias"])
    return model


@pytest.mark.parametrize("wrapper", ["state_dict", "model", "module", None])
def test_official_file_loads_strictly_and_matches_loading_by_hand(tmp_path, wrapper):
    sd = official_state_dict()
    path = tmp_path / "vrwkv_t_in1k_224.pth"
    torch.save({"meta": {"epoch": 300}, wrapper: sd} if wrapper else sd, path)
    model = create_model("rwkv_vit_tiny", checkpoint_path=path, **model_args(init_values=1.0)).eval()
    reference = load_by_hand(RWKVViT(**model_args(init_values=1.0)), sd).eval()
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))
    # the final norm and the blocks' own ln1 land in different places
    assert torch.equal(model.norm.weight, sd["backbone.ln1.weight"])
    assert torch.equal(model.layers[1].ln1.weight, sd["backbone.layers.1.ln1.weight"])


def test_large_layout_mlp_head_key_norm_and_pos_grid_resize(tmp_path):
    sd = official_state_dict(grid=2, key_norm=True, head_hidden=24)  # a 2x2 grid file for a 4x4 model
    path = tmp_path / "vrwkv_l_22kto1k_384.pth"
    torch.save({"state_dict": sd}, path)
    args = model_args(post_norm=True, init_values=1e-5, key_norm=True, head_hidden_dim=24)
    model = create_model("rwkv_vit_large", checkpoint_path=path, **args).eval()
    resized = resample_pos_embed(sd["backbone.pos_embed"], (2, 2), (4, 4))
    torch.testing.assert_close(model.pos_embed, resized, atol=0, rtol=0)
    reference = load_by_hand(RWKVViT(**args), {**sd, "backbone.pos_embed": resized}, head_hidden=24).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))


def test_extra_or_missing_keys_are_named(tmp_path):
    model = RWKVViT(**model_args(init_values=1.0))
    extra = {**official_state_dict(), "backbone.layers.0.att.time_mix_g": torch.zeros(C),
             "neck.avgpool": torch.zeros(1)}
    with pytest.raises(ValueError, match="no place in the model") as err:
        convert_vision_rwkv({"state_dict": extra}, model)
    assert "backbone.layers.0.att.time_mix_g (-> layers.0.att.time_mix_g)" in str(err.value)
    assert "neck.avgpool" in str(err.value)
    missing = official_state_dict()
    del missing["backbone.layers.1.ffn.value.weight"]
    with pytest.raises(ValueError, match="missing from the checkpoint") as err:
        convert_vision_rwkv(missing, model)
    assert "layers.1.ffn.value.weight (official backbone.layers.1.ffn.value.weight)" in str(err.value)
    # a model without layer scale: the file's gamma keys have no place
    with pytest.raises(ValueError, match=r"backbone\.layers\.0\.gamma1"):
        convert_vision_rwkv(official_state_dict(), RWKVViT(**model_args()))
    # a head for another number of classes is a shape mismatch, named with both shapes
    with pytest.raises(ValueError, match=r"head\.weight: checkpoint \(10, 16\) vs model \(7, 16\)"):
        convert_vision_rwkv(official_state_dict(), RWKVViT(**{**model_args(init_values=1.0), "num_classes": 7}))
    path = tmp_path / "broken.pth"
    torch.save({"state_dict": missing}, path)
    with pytest.raises(ValueError, match=r"layers\.1\.ffn\.value\.weight"):
        create_model("rwkv_vit_tiny", checkpoint_path=path, **model_args(init_values=1.0))


def test_key_maps_and_format_detection():
    assert our_key("backbone.ln1.bias") == "norm.bias"
    assert our_key("backbone.layers.3.ln1.bias") == "layers.3.ln1.bias"
    assert our_key("head.fc.weight") == "head.weight" and our_key("head.2.bias") == "head.2.bias"
    assert our_key("head.1.weight") is None and our_key("data_preprocessor.mean") is None
    for key in ("norm.weight", "layers.0.att.spatial_decay", "head.bias", "head.0.weight", "pos_embed"):
        assert our_key(official_key(key)) == key
    assert is_vision_rwkv_state_dict(official_state_dict())
    assert not is_vision_rwkv_state_dict(RWKVViT(**model_args()).state_dict())
    # our own state dicts pass through the model's checkpoint filter untouched
    model = RWKVViT(**model_args())
    own = model.state_dict()
    assert model.checkpoint_filter_fn({"state_dict": own}).keys() == own.keys()


def test_files_are_read_without_running_code(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    path = tmp_path / "evil.pth"
    torch.save({"state_dict": official_state_dict(), "meta": Payload()}, path)
    with pytest.raises(Exception, match="weights_only|Unsupported|global"):
        create_model("rwkv_vit_tiny", checkpoint_path=path, **model_args(init_values=1.0))
