"""IR-50 (stages 1-3) and MobileFaceNet: official key names and shapes, output shapes, freezing.

The ``*_official_shapes`` helpers spell out the official checkpoint layouts (from the official POSTER V2 / face.evoLVe
module definitions), independently of our module code; test_convert_poster.py builds its fake official files
from them.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from rwkv_vision.models.backbones.ir50 import IR50
from rwkv_vision.models.backbones.mobilefacenet import MobileFaceNet

Shapes = dict[str, tuple[int, ...]]


def bn_shapes(prefix: str, c: int) -> Shapes:
    return {f"{prefix}weight": (c,), f"{prefix}bias": (c,), f"{prefix}running_mean": (c,),
            f"{prefix}running_var": (c,), f"{prefix}num_batches_tracked": ()}


def ir50_official_shapes(layout: str = "poster", dead: bool = False) -> Shapes:
    """IR-50 keys: ``layout`` "poster" (body1..3, POSTER V2) or "flat" (body.0..23, face.evoLVe / POSTER);
    ``dead`` adds the output layer and, in the flat layout, the stage-4 units."""
    s: Shapes = {"input_layer.0.weight": (64, 3, 3, 3), **bn_shapes("input_layer.1.", 64),
                 "input_layer.2.weight": (64,)}
    stages = [(64, 64, 3), (64, 128, 4), (128, 256, 14)] + ([(256, 512, 3)] if dead and layout == "flat" else [])
    flat = 0
    for stage, (cin, cout, units) in enumerate(stages, start=1):
        for unit in range(units):
            i = cin if unit == 0 else cout
            p = f"body{stage}.{unit}." if layout == "poster" else f"body.{flat}."
            flat += 1
            s.update(bn_shapes(f"{p}res_layer.0.", i))
            s[f"{p}res_layer.1.weight"] = (cout, i, 3, 3)
            s[f"{p}res_layer.2.weight"] = (cout,)
            s[f"{p}res_layer.3.weight"] = (cout, cout, 3, 3)
            s.update(bn_shapes(f"{p}res_layer.4.", cout))
            if i != cout:
                s[f"{p}shortcut_layer.0.weight"] = (cout, i, 1, 1)
                s.update(bn_shapes(f"{p}shortcut_layer.1.", cout))
    if dead:
        s.update({**bn_shapes("output_layer.0.", 512), "output_layer.3.weight": (512, 512 * 7 * 7),
                  "output_layer.3.bias": (512,), **bn_shapes("output_layer.4.", 512)})
    return s


def mobilefacenet_official_shapes(dead: bool = False) -> Shapes:
    """MobileFaceNet([112, 112], 136) keys; ``dead`` adds the GDC landmark head (``output_layer``)."""
    s: Shapes = {}

    def conv_block(p, cin, cout, k=1, groups=1):
        s[f"{p}conv.weight"] = (cout, cin // groups, k, k)
        s.update(bn_shapes(f"{p}bn.", cout))
        s[f"{p}prelu.weight"] = (cout,)

    def depth_wise(p, cin, cout, hidden):
        conv_block(f"{p}conv.", cin, hidden)
        conv_block(f"{p}conv_dw.", hidden, hidden, 3, hidden)
        s[f"{p}project.conv.weight"] = (cout, hidden, 1, 1)
        s.update(bn_shapes(f"{p}project.bn.", cout))

    conv_block("conv1.", 3, 64, 3)
    conv_block("conv2_dw.", 64, 64, 3, 64)
    depth_wise("conv_23.", 64, 64, 128)
    for i in range(4):
        depth_wise(f"conv_3.model.{i}.", 64, 64, 128)
    depth_wise("conv_34.", 64, 128, 256)
    for i in range(6):
        depth_wise(f"conv_4.model.{i}.", 128, 128, 256)
    depth_wise("conv_45.", 128, 128, 512)
    for i in range(2):
        depth_wise(f"conv_5.model.{i}.", 128, 128, 256)
    conv_block("conv_6_sep.", 128, 512)
    if dead:
        s["output_layer.conv_6_dw.conv.weight"] = (512, 1, 7, 7)
        s.update(bn_shapes("output_layer.conv_6_dw.bn.", 512))
        s["output_layer.linear.weight"] = (136, 512)
        s.update(bn_shapes("output_layer.bn.", 136))
    return s


def shapes_of(module: nn.Module) -> Shapes:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def test_ir50_official_names_shapes_and_outputs():
    model = IR50().eval()
    assert shapes_of(model) == ir50_official_shapes("poster")
    assert sum(p.numel() for p in model.parameters()) == 17_611_968
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 112, 112))
    assert [tuple(o.shape) for o in outs] == [(1, 64, 56, 56), (1, 128, 28, 28), (1, 256, 14, 14)]


def test_mobilefacenet_official_names_shapes_and_outputs():
    model = MobileFaceNet()
    assert shapes_of(model) == mobilefacenet_official_shapes()
    with torch.no_grad():
        outs = model(torch.randn(2, 3, 112, 112))
    assert [tuple(o.shape) for o in outs] == [(2, 64, 28, 28), (2, 128, 14, 14), (2, 512, 7, 7)]


def _bn_buffers(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items() if "running" in k or "num_batches" in k}


def test_mobilefacenet_frozen_stays_in_eval_inside_a_training_parent():
    parent = nn.Sequential(MobileFaceNet())
    parent.train()
    landmarks = parent[0]
    assert parent.training and not any(m.training for m in landmarks.modules())
    assert not any(p.requires_grad for p in landmarks.parameters())
    before = _bn_buffers(landmarks)
    landmarks(torch.randn(2, 3, 112, 112))
    after = _bn_buffers(landmarks)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_mobilefacenet_drift_option_updates_bn_statistics_but_not_weights():
    model = MobileFaceNet(drift_bn_stats=True)
    assert not model.training          # frozen models start in eval
    model.train()
    assert model.training and not any(p.requires_grad for p in model.parameters())
    before = _bn_buffers(model)
    model(torch.randn(2, 3, 112, 112))
    after = _bn_buffers(model)
    assert not torch.equal(before["conv1.bn.running_mean"], after["conv1.bn.running_mean"])
    model.eval()
    assert not model.training


def test_mobilefacenet_unfrozen_trains_normally():
    model = MobileFaceNet(frozen=False)
    model.train()
    assert model.training and all(p.requires_grad for p in model.parameters())
    model(torch.randn(2, 3, 112, 112))[2].sum().backward()
    assert model.conv1.conv.weight.grad is not None
