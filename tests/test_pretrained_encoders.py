"""UNetDepth's pretrained encoders through the registry: ``create_model("unet_depth_*", pretrained=True)`` downloads
timm's ImageNet encoder (``timm/<arch>.<tag>``, ``model.safetensors``) or the official VRWKV-T file
(``OpenGVLab/Vision-RWKV``), converts it, caches the conversion and loads it strictly into the encoder (the RWKV
encoder's blocks) alone. The files are served by a loopback Hub under the real repository names, to a real
huggingface_hub client in a worker process (``HF_ENDPOINT``), as in test_hub.py."""

import pytest
import torch
from hub_server import LoopbackHub, ok, perturbed
from safetensors.torch import save_file

from rwkv_vision.convert.vision_rwkv import official_key
from rwkv_vision.registry import create_model, get_pretrained_cfg, list_models

timm = pytest.importorskip("timm")

SHAPE = (1, 3, 64, 96)
ENCODERS = {"unet_depth_resnet18": "resnet18", "unet_depth_resnet34": "resnet34", "unet_depth_resnet50": "resnet50",
            "unet_depth_mobilenet_v2": "mobilenetv2_100"}


def publish(loopback: LoopbackHub, folder, repo: str, filename: str, state: dict) -> str:
    folder.mkdir()
    if filename.endswith(".safetensors"):
        save_file({k: v.contiguous() for k, v in state.items()}, folder / filename)
    else:
        torch.save({"meta": {"epoch": 300}, "state_dict": state}, folder / filename)
    return loopback.add(repo, folder)


def test_entries_point_at_the_published_imagenet_weights():
    assert list_models("unet_depth_*", pretrained=True) == sorted([*ENCODERS, "unet_depth_rwkv_tiny"])
    for name, arch in ENCODERS.items():
        cfg, theirs = get_pretrained_cfg(name), timm.models.get_pretrained_cfg(arch)  # timm's default tag
        assert (cfg["hf_hub_id"], cfg["hf_hub_filename"], cfg["checkpoint_format"], cfg["pretrained_submodule"]) == \
            (theirs.hf_hub_id, "model.safetensors", "timm", "encoder")
        assert cfg["license"] == theirs.license and (cfg["mean"], cfg["std"]) == (theirs.mean, theirs.std)
        assert cfg["task"] == "depth-estimation" and create_model(name).pretrained_cfg["hf_hub_id"] == theirs.hf_hub_id
    cfg = get_pretrained_cfg("unet_depth_rwkv_tiny")
    assert (cfg["hf_hub_id"], cfg["hf_hub_filename"], cfg["checkpoint_format"], cfg["pretrained_submodule"]) == \
        ("OpenGVLab/Vision-RWKV", "vrwkv_t_in1k_224.pth", "vision_rwkv", "encoder.blocks")


def test_timm_encoder_downloads_converts_and_loads_into_the_encoder(loopback, client, tmp_path):
    repo = get_pretrained_cfg("unet_depth_resnet18")["hf_hub_id"]
    full = perturbed(timm.create_model("resnet18", pretrained=False), seed=1)
    commit = publish(loopback, tmp_path / "good", repo, "model.safetensors", full.state_dict())
    features_only = timm.create_model("resnet18", pretrained=False, features_only=True).eval()
    features_only.load_state_dict({k: v for k, v in full.state_dict().items() if not k.startswith("fc.")})
    fresh = create_model("unet_depth_resnet18").state_dict()

    code = ("m = create_model('unet_depth_resnet18', pretrained=True)\n"
            "x = torch.randn(*%r, generator=torch.Generator().manual_seed(0))\n"
            "with torch.no_grad(): feats = [f.tolist() for f in m.encoder(x)]\n"
            "result = [feats, m.training, m.pretrained_cfg['loaded_from'], m.pretrained_cfg['base_model'], "
            "m.generate_model_card().text, m.state_dict()['decoder.blocks.0.conv1.conv.weight'].std().item()]")
    reply = client.run(code % (SHAPE,))
    feats, training, loaded_from, base_model, card, decoder_std = ok(reply)
    with torch.no_grad():
        want = features_only(torch.randn(*SHAPE, generator=torch.Generator().manual_seed(0)))
    assert len(feats) == len(want) == 5 and not training
    for level, (a, b) in enumerate(zip(feats, want)):
        torch.testing.assert_close(torch.tensor(a), b, rtol=1e-5, atol=1e-5, msg=f"level {level}")
    assert loaded_from == {"repo": repo, "revision": commit, "file": "model.safetensors", "format": "timm",
                           "submodule": "encoder"}
    assert base_model == repo and "weights of `encoder` only" in card and "freshly initialised" in card
    assert "converted from the `timm` format" in card and "apache-2.0" in card
    # the decoder is freshly initialised (Kaiming-scale), not loaded from anything
    assert decoder_std == pytest.approx(fresh["decoder.blocks.0.conv1.conv.weight"].std().item(), rel=0.2)
    assert any("loaded timm/resnet18.a1_in1k/model.safetensors into encoder only; everything else (decoder, head)"
               in line for line in reply["logs"]), reply["logs"]
    snapshot = client.home / "hub" / "models--timm--resnet18.a1_in1k" / "snapshots" / commit
    assert (snapshot / "model.safetensors.unet_depth_resnet18.rwkv-vision.safetensors").is_file()

    # a file with a missing and a foreign key: the conversion refuses it, naming both
    state = dict(full.state_dict())
    state["layer9.weight"] = state.pop("layer1.0.conv1.weight")
    publish(loopback, tmp_path / "bad", repo, "model.safetensors", state)
    reply = client.run("create_model('unet_depth_resnet18', pretrained=True)")
    assert not reply["ok"] and reply["type"] == "KeyError", reply
    assert "'layer1.0.conv1.weight'" in reply["message"] and "'layer9.weight'" in reply["message"]


def test_vision_rwkv_blocks_load_into_the_rwkv_encoder(loopback, client, tmp_path):
    reference = perturbed(create_model("rwkv_vit_tiny"), seed=2)
    official = {official_key(k): v for k, v in reference.state_dict().items()}
    commit = publish(loopback, tmp_path / "good", "OpenGVLab/Vision-RWKV", "vrwkv_t_in1k_224.pth", official)
    expected = tmp_path / "blocks.pt"
    torch.save(reference.layers.state_dict(), expected)

    code = ("m = create_model('unet_depth_rwkv_tiny', pretrained=True)\n"
            "want, got = torch.load(%r), m.encoder.blocks.state_dict()\n"
            "result = [sorted(want) == sorted(got) and all(torch.equal(got[k], v) for k, v in want.items()), "
            "m.pretrained_cfg['loaded_from']]" % str(expected))
    reply = client.run(code)
    same, loaded_from = ok(reply)
    assert same and loaded_from["submodule"] == "encoder.blocks" and loaded_from["revision"] == commit
    assert any("into encoder.blocks only; everything else (decoder, head, encoder.stem, encoder.embed16, "
               "encoder.embed32, encoder.norm16, encoder.norm32)" in line for line in reply["logs"]), reply["logs"]

    # an official key outside the blocks and the explicit list of unused keys is an error naming it
    publish(loopback, tmp_path / "extra", "OpenGVLab/Vision-RWKV", "vrwkv_t_in1k_224.pth",
            {**official, "backbone.cls_token": torch.zeros(1, 1, 192)})
    reply = client.run("create_model('unet_depth_rwkv_tiny', pretrained=True)")
    assert not reply["ok"] and "keys with no place in the RWKV encoder's blocks (1): backbone.cls_token" in \
        reply["message"], reply
    # a block key missing from the file: the strict load names it and where it was going
    publish(loopback, tmp_path / "missing", "OpenGVLab/Vision-RWKV", "vrwkv_t_in1k_224.pth",
            {k: v for k, v in official.items() if k != "backbone.layers.11.ffn.value.weight"})
    reply = client.run("create_model('unet_depth_rwkv_tiny', pretrained=True)")
    assert not reply["ok"] and "(loaded into unet_depth_rwkv_tiny.encoder.blocks)" in reply["message"] and \
        "missing keys (1): 11.ffn.value.weight" in reply["message"], reply
