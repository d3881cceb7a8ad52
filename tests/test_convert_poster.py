"""Loading official POSTER V2 files: full checkpoints (``module.`` prefix, pickled ``__main__.RecorderMeter*``
objects, dead modules), the optimizer-only file of the official training bug, ``ir50.pth`` (both layouts) and
``mobilefacenet_model_best.pth.tar``; and the restricted unpickler refusing anything else.

Fake official files are built here from the official key layout (spelt out below and in test_fer_backbones.py from
the official module definitions), not from our modules' state dicts.
"""

from __future__ import annotations

import collections
import logging
import pathlib
import pickle
import sys
import types

import numpy as np
import pytest
import torch

from rwkv_vision.convert.poster import (convert_ir50_checkpoint, convert_mobilefacenet_checkpoint,
                                        convert_poster_checkpoint, read_poster_file, unwrap_poster_checkpoint)
from rwkv_vision.models.backbones.ir50 import IR50
from rwkv_vision.models.backbones.mobilefacenet import MobileFaceNet
from rwkv_vision.models.poster_v2 import CrossWindowAttention, PosterV2
from rwkv_vision.registry import create_model, load_checkpoint
from test_fer_backbones import Shapes, ir50_official_shapes, mobilefacenet_official_shapes

OFFICIAL_DEAD_SHAPES: Shapes = {
    "VIT.patch_embed.proj.weight": (768, 256, 1, 1), "VIT.patch_embed.proj.bias": (768,),
    "VIT.CON1.weight": (768, 256, 1, 1),
    "VIT.IRLinear1.weight": (768, 1024), "VIT.IRLinear1.bias": (768,),
    "VIT.IRLinear2.weight": (512, 768), "VIT.IRLinear2.bias": (512,),
    "VIT.eca_block.conv.weight": (1, 1, 5),
    **{f"VIT.blocks.{i}.conv.{n}": s for i in range(2) for n, s in (("weight", (148, 148, 1)), ("bias", (148,)))},
}


def poster_v2_official_shapes(num_classes: int = 7) -> Shapes:
    """Every key of the official ``pyramid_trans_expr2`` state dict, dead modules included."""
    s: Shapes = {f"ir_back.{k}": v for k, v in ir50_official_shapes("poster", dead=True).items()}
    s.update({f"face_landback.{k}": v for k, v in mobilefacenet_official_shapes(dead=True).items()})
    for i, (d, heads, grid) in enumerate(zip((64, 128, 256), (2, 4, 8), (28, 14, 7)), start=1):
        s.update({f"conv{i}.weight": (d, d, 3, 3), f"conv{i}.bias": (d,),
                  f"window{i}.norm.weight": (d,), f"window{i}.norm.bias": (d,),
                  f"attn{i}.relative_position_bias_table": ((2 * grid - 1) ** 2, heads),
                  f"attn{i}.relative_position_index": (grid * grid, grid * grid),
                  f"attn{i}.qkv.weight": (2 * d, d), f"attn{i}.qkv.bias": (2 * d,),
                  f"attn{i}.proj.weight": (d, d), f"attn{i}.proj.bias": (d,),
                  f"ffn{i}.gamma1": (d,), f"ffn{i}.gamma2": (d,),
                  f"ffn{i}.mlp.fc1.weight": (4 * d, d), f"ffn{i}.mlp.fc1.bias": (4 * d,),
                  f"ffn{i}.mlp.fc2.weight": (d, 4 * d), f"ffn{i}.mlp.fc2.bias": (d,),
                  f"ffn{i}.norm.weight": (d,), f"ffn{i}.norm.bias": (d,)})
    E = 768
    s.update({"last_face_conv.weight": (256, 512, 3, 3), "last_face_conv.bias": (256,),
              "embed_q.0.weight": (E, 64, 3, 3), "embed_q.0.bias": (E,), "embed_q.1.weight": (E, E, 3, 3),
              "embed_q.1.bias": (E,), "embed_k.0.weight": (E, 128, 3, 3), "embed_k.0.bias": (E,),
              "embed_v.proj.weight": (E, 256, 1, 1), "embed_v.proj.bias": (E,),
              "VIT.cls_token": (1, 1, E), "VIT.pos_embed": (1, 148, E), "VIT.norm.weight": (E,), "VIT.norm.bias": (E,),
              "VIT.se_block.linear1.weight": (E, E), "VIT.se_block.linear1.bias": (E,),
              "VIT.se_block.linear2.weight": (E, E), "VIT.se_block.linear2.bias": (E,),
              "VIT.head.linear.weight": (num_classes, E), "VIT.head.linear.bias": (num_classes,)})
    for b in range(2):
        p = f"VIT.blocks.{b}."
        s.update({f"{p}norm1.weight": (E,), f"{p}norm1.bias": (E,), f"{p}attn.qkv.weight": (3 * E, E),
                  f"{p}attn.qkv.bias": (3 * E,), f"{p}attn.proj.weight": (E, E), f"{p}attn.proj.bias": (E,),
                  f"{p}norm2.weight": (E,), f"{p}norm2.bias": (E,), f"{p}mlp.fc1.weight": (4 * E, E),
                  f"{p}mlp.fc1.bias": (4 * E,), f"{p}mlp.fc2.weight": (E, 4 * E), f"{p}mlp.fc2.bias": (E,)})
    s.update(OFFICIAL_DEAD_SHAPES)
    return s


def random_state(shapes: Shapes, prefix: str = "") -> collections.OrderedDict:
    g = torch.Generator().manual_seed(0)
    out = collections.OrderedDict()
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            out[prefix + key] = torch.tensor(7)
        elif key.endswith("relative_position_index"):
            out[prefix + key] = None   # filled by the caller with the real index
        else:
            out[prefix + key] = torch.randn(shape, generator=g)
    return out


def relative_position_index(grid: int) -> torch.Tensor:
    """index[i, j] for tokens i = (yi, xi), j = (yj, xj): (yi - yj + grid - 1) * (2 grid - 1) + (xi - xj + grid - 1)."""
    ys, xs = torch.arange(grid).repeat_interleave(grid), torch.arange(grid).repeat(grid)
    return (ys[:, None] - ys[None, :] + grid - 1) * (2 * grid - 1) + (xs[:, None] - xs[None, :] + grid - 1)


def _fake_main() -> types.ModuleType:
    """A throwaway module, to be registered as ``__main__``, holding the official RecorderMeter classes."""
    main = types.ModuleType("__main__")

    class RecorderMeter:
        def __init__(self, total_epoch):
            self.total_epoch = total_epoch
            self.epoch_losses = np.zeros((total_epoch, 2), dtype=np.float32)
            self.epoch_accuracy = np.ones((total_epoch, 2), dtype=np.float32)

    class RecorderMeter1(RecorderMeter):
        def update(self, output, target):
            self.y_pred, self.y_true = output, target

    for cls in (RecorderMeter, RecorderMeter1):
        cls.__module__, cls.__qualname__ = "__main__", cls.__name__
        setattr(main, cls.__name__, cls)
    return main


@pytest.fixture
def fake_main(monkeypatch):
    main = _fake_main()
    monkeypatch.setitem(sys.modules, "__main__", main)
    return main


@pytest.fixture(scope="module")
def official_checkpoint(module_tmp):
    """An official-style POSTER V2 model.pth: DataParallel keys, dead modules, recorders, optimizer, best_acc."""
    state = random_state(poster_v2_official_shapes(7), prefix="module.")
    for i, grid in enumerate((28, 14, 7), start=1):
        state[f"module.attn{i}.relative_position_index"] = relative_position_index(grid)
    param = torch.nn.Parameter(torch.zeros(3))
    optimizer = torch.optim.Adam([param])
    param.grad = torch.ones(3)
    optimizer.step()
    path = module_tmp / "model.pth"
    with pytest.MonkeyPatch.context() as patch:
        main = _fake_main()
        patch.setitem(sys.modules, "__main__", main)
        recorder1 = main.RecorderMeter1(200)
        recorder1.update(np.arange(8), np.arange(8)[::-1].copy())
        torch.save({"epoch": 12, "state_dict": state, "best_acc": torch.tensor([92.21]),
                    "optimizer": optimizer.state_dict(), "recorder1": recorder1,
                    "recorder": main.RecorderMeter(200)}, path)
    return path, state


def test_official_layout_spec_matches_our_model_plus_dead_keys():
    with torch.device("meta"):
        ours = {k: tuple(v.shape) for k, v in PosterV2(num_classes=8).state_dict().items()}
    official = poster_v2_official_shapes(8)
    assert ours == {k: v for k, v in official.items() if k not in OFFICIAL_DEAD_SHAPES
                    and not k.startswith(("ir_back.output_layer.", "face_landback.output_layer."))}
    for grid in (28, 14, 7):
        assert torch.equal(CrossWindowAttention._relative_position_index(grid), relative_position_index(grid))


def test_official_checkpoint_loads_strictly_and_lists_dead_modules(official_checkpoint, caplog):
    path, state = official_checkpoint
    model = PosterV2()
    with caplog.at_level(logging.INFO, logger="rwkv_vision.convert.poster"):
        load_checkpoint(model, path)
    _, dropped = convert_poster_checkpoint(read_poster_file(path))
    expected_dead = {k.removeprefix("module.") for k in state
                     if k.removeprefix("module.") in OFFICIAL_DEAD_SHAPES
                     or ".output_layer." in k}
    assert set(dropped) == expected_dead and len(dropped) == len(expected_dead)
    assert f"PosterV2: dropped {len(expected_dead)} key(s)" in caplog.text and "VIT.CON1.weight" in caplog.text
    ours = model.state_dict()
    for key, value in state.items():
        key = key.removeprefix("module.")
        if key not in expected_dead:
            assert torch.equal(ours[key], value), key
    assert len(ours) == len(state) - len(expected_dead)


def test_official_checkpoint_through_create_model(official_checkpoint):
    path, state = official_checkpoint
    model = create_model("poster_v2", num_classes=7, checkpoint_path=path)
    assert torch.equal(model.VIT.head.linear.weight, state["module.VIT.head.linear.weight"])
    assert not any(p.requires_grad for p in model.face_landback.parameters())   # loading keeps the freeze


def test_wrong_num_classes_is_a_shape_error(official_checkpoint):
    path, _ = official_checkpoint
    expected = r"model\.pth does not match PosterV2(.|\n)*VIT\.head\.linear\.weight: file \(7, 768\) vs model \(8, 768\)"
    with pytest.raises(ValueError, match=expected):
        load_checkpoint(PosterV2(num_classes=8), path)


def test_legacy_torch_save_format_loads(tmp_path, fake_main):
    state = random_state(mobilefacenet_official_shapes(dead=True))
    path = tmp_path / "mobilefacenet_model_best.pth.tar"
    torch.save({"epoch": 3, "state_dict": state, "recorder": fake_main.RecorderMeter(4)}, path,
               _use_new_zipfile_serialization=False)
    model = load_checkpoint(MobileFaceNet(), path)
    _, dropped = convert_mobilefacenet_checkpoint(read_poster_file(path))
    assert sorted(dropped) == sorted(k for k in state if k.startswith("output_layer."))
    assert torch.equal(model.conv_6_sep.prelu.weight, state["conv_6_sep.prelu.weight"])


def test_unknown_and_missing_keys_are_errors_naming_them(tmp_path):
    torch.manual_seed(0)
    state = {f"module.{k}": v for k, v in create_model("poster_rwkv_small").state_dict().items()}
    state["module.fusion.extra_adapter.weight"] = torch.zeros(3)
    path = tmp_path / "extra.pth"
    torch.save({"state_dict": state}, path)
    with pytest.raises(ValueError, match=r"extra\.pth.*\n.*unexpected keys \(1\): fusion\.extra_adapter\.weight"):
        create_model("poster_rwkv_small", checkpoint_path=path)
    del state["module.fusion.extra_adapter.weight"], state["module.ffn2.gamma1"]
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"missing keys \(1\): ffn2\.gamma1"):
        create_model("poster_rwkv_small", checkpoint_path=path)


def test_official_poster_v2_checkpoint_does_not_fit_poster_rwkv(official_checkpoint):
    path, _ = official_checkpoint
    with pytest.raises(ValueError, match=r"missing keys .*fusion\.(.|\n)*unexpected keys .*VIT\."):
        load_checkpoint(create_model("poster_rwkv_small"), path)


def test_poster_rwkv_state_dict_round_trip(tmp_path):
    torch.manual_seed(0)
    model = create_model("poster_rwkv_small", num_classes=8)
    path = tmp_path / "rwkv.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    loaded = create_model("poster_rwkv_small", num_classes=8, checkpoint_path=path).state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(loaded[key], value), key


def test_optimizer_only_file_is_a_clear_error(tmp_path):
    param = torch.nn.Parameter(torch.zeros(4))
    optimizer = torch.optim.Adam([param], lr=3.5e-5)
    param.grad = torch.ones(4)
    optimizer.step()
    path = tmp_path / "model_best.pth"
    torch.save(optimizer.state_dict(), path)          # what the official save_checkpoint writes as the best model
    with pytest.raises(ValueError, match=r"holds only an optimizer state.*training bug"):
        create_model("poster_v2", checkpoint_path=path)
    with pytest.raises(ValueError, match=r"holds only an optimizer state"):
        load_checkpoint(MobileFaceNet(), path)


@pytest.mark.parametrize("layout", ["poster", "flat"])
def test_ir50_file_loads_in_both_layouts(tmp_path, layout):
    shapes = ir50_official_shapes(layout, dead=True)
    state = random_state(shapes)
    path = tmp_path / "ir50.pth"
    torch.save(state, path)
    model = load_checkpoint(IR50(), path)
    _, dropped = convert_ir50_checkpoint(read_poster_file(path))
    dead = [k for k in shapes if k.startswith("output_layer.") or (layout == "flat" and int(k.split(".")[1]) >= 21
                                                                     if k.startswith("body.") else False)]
    assert sorted(dropped) == sorted(dead)
    # flat unit 7 is the first unit of stage 3 (3 + 4 units before it)
    source = "body3.0.shortcut_layer.0.weight" if layout == "poster" else "body.7.shortcut_layer.0.weight"
    assert torch.equal(model.body3[0].shortcut_layer[0].weight, state[source])


def test_backbone_files_through_create_model(tmp_path):
    ir50, mfn = tmp_path / "ir50.pth", tmp_path / "mobilefacenet_model_best.pth.tar"
    ir_state = random_state(ir50_official_shapes("poster", dead=True))
    mfn_state = random_state(mobilefacenet_official_shapes(dead=True), prefix="module.")
    torch.save(ir_state, ir50)
    torch.save({"epoch": 1, "state_dict": mfn_state}, mfn)
    model = create_model("poster_v2", ir50_path=ir50, mobilefacenet_path=mfn)
    assert torch.equal(model.ir_back.input_layer[0].weight, ir_state["input_layer.0.weight"])
    assert torch.equal(model.face_landback.conv1.conv.weight, mfn_state["module.conv1.conv.weight"])
    assert not model.face_landback.training and not model.face_landback.conv1.conv.weight.requires_grad
    small = create_model("poster_rwkv_small", mobilefacenet_path=mfn)   # both streams start from the file
    assert torch.equal(small.ir_back.conv_4.model[5].project.bn.running_var,
                       mfn_state["module.conv_4.model.5.project.bn.running_var"])
    assert small.ir_back.conv1.conv.weight.requires_grad
    with pytest.raises(ValueError, match="ir50_path given, but this model's image stream is 'mobilefacenet'"):
        create_model("poster_rwkv_small", ir50_path=ir50)


class _Exploit:
    """Pickles as a call that would write a marker file if the unpickler ran it."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.write_text, (self.marker, "code from the file ran")


def test_restricted_unpickler_never_runs_code(tmp_path):
    marker = tmp_path / "marker.txt"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": _Exploit(marker)}, path)
    with pytest.raises(ValueError, match=r"evil\.pth: refusing to load the global "):
        read_poster_file(path)
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError):        # sanity: the plain weights_only loader refuses it too
        torch.load(path, weights_only=True)
    assert not marker.exists()


def test_recorder_objects_are_skipped_and_tensors_kept(official_checkpoint):
    path, state = official_checkpoint
    top = read_poster_file(path)
    assert "RecorderMeter" not in repr(type(top["recorder1"])) and "skipped" in repr(top["recorder1"])
    assert torch.allclose(top["best_acc"], torch.tensor([92.21]))
    assert unwrap_poster_checkpoint(top).keys() == {k.removeprefix("module.") for k in state}
