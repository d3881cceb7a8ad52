"""The model registry: names, overrides, and strict checkpoint loading through create_model(checkpoint_path=...)."""

import pytest
import torch
from safetensors.torch import save_file

from rwkv_vision.models import RWKVViT
from rwkv_vision.registry import create_model, list_models, load_checkpoint, model_entrypoint, register_model

SMALL = dict(embed_dim=16, depth=2, img_size=32, patch_size=8, num_classes=3)


def test_list_and_create_with_overrides():
    names = list_models("rwkv_vit_*")
    assert {"rwkv_vit_nano", "rwkv_vit_micro", "rwkv_vit_tiny", "rwkv_vit_small", "rwkv_vit_base",
            "rwkv_vit_large"} <= set(names)
    assert names == sorted(names) and "rwkv_vit_tiny" in list_models()
    assert list_models("no_such_model*") == []
    model = create_model("rwkv_vit_small", **SMALL)
    assert isinstance(model, RWKVViT) and model.embed_dim == 16 and len(model.layers) == 2
    assert model.layers[0].post_norm and model.num_classes == 3  # the entry's own settings stay
    assert model_entrypoint("rwkv_vit_tiny").__name__ == "rwkv_vit_tiny"


def test_unknown_and_duplicate_names():
    with pytest.raises(KeyError, match="unknown model 'rwkv_vit_tyni'.*similar: .*rwkv_vit_tiny"):
        create_model("rwkv_vit_tyni")

    def rwkv_vit_tiny():  # same name as a registered entry
        raise AssertionError("never called")

    with pytest.raises(ValueError, match="registered twice"):
        register_model(rwkv_vit_tiny)
    assert model_entrypoint("rwkv_vit_tiny") is not rwkv_vit_tiny


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_own_checkpoints_round_trip(tmp_path, suffix):
    torch.manual_seed(0)
    source = create_model("rwkv_vit_tiny", **SMALL).eval()
    with torch.no_grad():
        source.pos_embed.normal_()
    path = tmp_path / f"model{suffix}"
    if suffix == ".safetensors":
        save_file(source.state_dict(), path)
    else:
        torch.save(source.state_dict(), path)
    loaded = create_model("rwkv_vit_tiny", checkpoint_path=path, **SMALL).eval()
    x = torch.randn(2, 3, 32, 40)
    with torch.no_grad():
        assert torch.equal(loaded(x), source(x))


def test_strict_loading_names_the_problem(tmp_path):
    state = create_model("rwkv_vit_tiny", **SMALL).state_dict()
    incomplete = {k: v for k, v in state.items() if k != "layers.1.ffn.key.weight"}
    incomplete["layers.1.ffn.extra"] = torch.zeros(1)
    path = tmp_path / "incomplete.safetensors"
    save_file(incomplete, path)
    with pytest.raises(ValueError) as err:
        create_model("rwkv_vit_tiny", checkpoint_path=path, **SMALL)
    message = str(err.value)
    assert str(path) in message and "missing keys (1): layers.1.ffn.key.weight" in message
    assert "unexpected keys (1): layers.1.ffn.extra" in message
    with pytest.raises(ValueError, match=r"head\.weight: file \(3, 16\) vs model \(5, 16\)"):
        create_model("rwkv_vit_tiny", checkpoint_path=tmp_path / "incomplete.safetensors",
                     **{**SMALL, "num_classes": 5})
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        create_model("rwkv_vit_tiny", checkpoint_path=tmp_path / "nowhere.pth", **SMALL)


def test_load_checkpoint_into_a_plain_module(tmp_path):
    linear = torch.nn.Linear(4, 2)
    path = tmp_path / "linear.safetensors"
    save_file({"weight": torch.ones(2, 4), "bias": torch.zeros(2)}, path)
    assert load_checkpoint(linear, path) is linear and torch.equal(linear.weight, torch.ones(2, 4))
    save_file({"weight": torch.ones(2, 4)}, path)
    with pytest.raises(ValueError, match="missing keys \\(1\\): bias"):
        load_checkpoint(linear, path)


def test_model_hooks_read_and_filter_foreign_files(tmp_path):
    class Custom(torch.nn.Linear):
        """Reads a text file 'w b' and fills every weight with w and every bias with b."""

        @staticmethod
        def checkpoint_reader(path):
            return [float(v) for v in open(path).read().split()]

        def checkpoint_filter_fn(self, values):
            return {"weight": torch.full((2, 4), values[0]), "bias": torch.full((2,), values[1])}

    path = tmp_path / "custom.txt"
    path.write_text("0.5 -1")
    model = load_checkpoint(Custom(4, 2), path)
    assert torch.equal(model.weight, torch.full((2, 4), 0.5)) and torch.equal(model.bias, torch.full((2,), -1.0))
