"""The model hub: from_pretrained / save_pretrained through a real huggingface_hub client against a loopback Hub,
strict and checked configs, model cards, pretrained registry entries (official Vision-RWKV files converted on
download), torch.hub entry points."""

import importlib.util
import json
import logging
import re
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from hub_server import HubClient, TinyDepth, client_env, forward, ok, perturbed

from rwkv_vision import hub
from rwkv_vision.convert.vision_rwkv import official_key
from rwkv_vision.models import RWKVViT
from rwkv_vision.registry import create_model, get_pretrained_cfg, list_models

REPO_ROOT = Path(__file__).resolve().parents[1]

# Every hub architecture, cheap settings: (registered name, overrides, input shape). One line per architecture.
ROUND_TRIP = [
    ("rwkv_vit_nano", dict(img_size=32, num_classes=7), (2, 3, 32, 32)),
    ("rwkv_vit_micro", dict(img_size=32, num_classes=7), (2, 3, 32, 32)),
    ("rwkv_vit_tiny", dict(img_size=32), (1, 3, 32, 48)),
    ("poster_rwkv_small", dict(embed_dim=32, depth=1), (1, 3, 112, 112)),
    ("poster_v2", dict(embed_dim=32, depth=1), (1, 3, 112, 112)),
    ("unet_depth_resnet18", dict(decoder_channels=(16, 8, 8, 8, 4)), (1, 3, 64, 64)),
    ("unet_depth_rwkv_tiny", dict(decoder_channels=(16, 8, 8, 8, 4)), (1, 3, 64, 64)),
]


def nano(seed: int = 0, **kwargs) -> RWKVViT:
    return perturbed(create_model("rwkv_vit_nano", **{"img_size": 32, "depth": 2, "num_classes": 10, **kwargs}), seed)


def saved(model: torch.nn.Module, folder: Path) -> Path:
    model.save_pretrained(folder)
    return folder


# ---------------------------------------------------------------------------------------------------------------------
# Downloads, cache, revisions, offline


def test_download_cache_and_pinned_revisions(loopback, client, tmp_path):
    old, new = nano(seed=1), nano(seed=2)
    commit_old = loopback.add("acme/nano", saved(old, tmp_path / "old"), ref="v1")
    loopback.add("acme/nano", saved(new, tmp_path / "new"))  # main
    assert forward(old) != forward(new)

    before = len(loopback.requests)
    result = ok(client.run("m = hub.from_pretrained('acme/nano'); result = [forward(m), m.training, type(m).__name__]"))
    assert result == [forward(new), False, "RWKVViT"]
    assert loopback.count("GET", "/acme/nano/") == 2  # config.json and model.safetensors
    main = loopback.refs["acme/nano"]["main"]  # the weights are fetched at the commit config.json resolved to
    assert {p for m, p in loopback.requests[before:] if m == "GET"} == {
        "/acme/nano/resolve/main/config.json", f"/acme/nano/resolve/{main}/model.safetensors"}

    # Second call: one HEAD to resolve main, nothing downloaded.
    before = len(loopback.requests)
    assert ok(client.run("result = forward(hub.from_pretrained('acme/nano'))")) == forward(new)
    assert loopback.requests[before:] == [("HEAD", "/acme/nano/resolve/main/config.json")]

    # A tag and a commit id pin the old weights; a cached commit needs no request at all.
    assert ok(client.run("result = forward(hub.from_pretrained('acme/nano', revision='v1'))")) == forward(old)
    assert ok(client.run("result = forward(hub.from_pretrained('hf-hub:acme/nano@v1'))")) == forward(old)
    before = len(loopback.requests)
    code = f"result = forward(create_model('rwkv_vit_nano', pretrained='hf-hub:acme/nano@{commit_old}'))"
    assert ok(client.run(code)) == forward(old)
    assert loopback.requests[before:] == []


def test_server_down_and_offline_use_the_cache(loopback, client, tmp_path):
    model = nano(seed=3)
    loopback.add("acme/offline", saved(model, tmp_path / "repo"))
    assert ok(client.run("result = forward(hub.from_pretrained('acme/offline'))")) == forward(model)
    loopback.stop()
    try:
        # Unreachable endpoint: huggingface_hub falls back to the cached snapshot of main.
        assert ok(client.run("result = forward(hub.from_pretrained('acme/offline'))")) == forward(model)
        offline = HubClient(client_env(loopback, client.home, offline=True), tmp_path / "offline.log")
        try:
            code = "m = rwkv_vision.hub.from_pretrained('acme/offline'); result = [forward(m), m.training]"
            assert ok(offline.run(code)) == [forward(model), False]
            never = offline.run("hub.from_pretrained('acme/never-downloaded')")
            assert not never["ok"] and never["type"] == "LocalEntryNotFoundError"
        finally:
            offline.close()
    finally:
        loopback.start()  # same port: the module's client keeps working


@pytest.fixture(scope="module")
def broken_repos(loopback, module_tmp):
    """Repositories that must fail, each with the cause it must be reported by."""
    root = module_tmp / "broken"
    root.mkdir()
    good = saved(nano(seed=4), root / "good")
    data = (good / "model.safetensors").read_bytes()
    config = json.loads((good / "config.json").read_text())

    def variant(name, weights=data, config_json=config, files=("config.json", "model.safetensors")):
        folder = root / name
        folder.mkdir()
        if "config.json" in files:
            (folder / "config.json").write_text(json.dumps(config_json))
        if "model.safetensors" in files:
            (folder / "model.safetensors").write_bytes(weights)
        loopback.add(f"acme/{name}", folder)

    variant("no-weights", files=("config.json",))
    variant("truncated", weights=data[: len(data) // 2])
    middle = len(data) // 2
    variant("corrupted", weights=data[:middle] + bytes(b ^ 0xFF for b in data[middle:middle + 64]) + data[middle + 64:])
    variant("truncated-unchecked", weights=data[: len(data) // 2], config_json={**config, "weights": {}})
    variant("unknown-arg", config_json={**config, "model_args": {**config["model_args"], "frobnicate": 3}})
    variant("unknown-field", config_json={**config, "optimizer_state": {}})
    variant("unknown-class", config_json={**config, "architecture": "ResNet"})
    saved(TinyDepth(), root / "depth")
    loopback.add("acme/depth", root / "depth")


@pytest.mark.parametrize("code, error, patterns", [
    ("hub.from_pretrained('acme/missing')", "RepositoryNotFoundError", ["Repository Not Found", "acme/missing"]),
    ("hub.from_pretrained('acme/no-weights')", "RemoteEntryNotFoundError", ["acme/no-weights", "model.safetensors"]),
    ("hub.from_pretrained('acme/no-weights', revision='v9')", "RevisionNotFoundError", ["v9"]),
    ("hub.from_pretrained('acme/truncated')", "ValueError", ["model.safetensors is corrupted or truncated", "sha256"]),
    ("hub.from_pretrained('acme/corrupted')", "ValueError", ["model.safetensors is corrupted or truncated", "sha256"]),
    ("hub.from_pretrained('acme/truncated-unchecked')", "ValueError",
     ["model.safetensors is not a readable safetensors file", "incomplete metadata"]),
    ("RWKVViT.from_pretrained('acme/depth')", "ValueError",
     ["acme/depth/config.json is for TinyDepth \\(depth-estimation\\), not RWKVViT \\(image-classification\\)"]),
    ("create_model('rwkv_vit_nano', pretrained='hf-hub:acme/depth')", "ValueError",
     ["acme/depth/config.json is for TinyDepth"]),
    ("hub.from_pretrained('acme/unknown-arg')", "ValueError",
     ["acme/unknown-arg/config.json: unknown RWKVViT argument\\(s\\) frobnicate"]),
    ("hub.from_pretrained('acme/unknown-field')", "ValueError", ["config.json: unknown field\\(s\\) optimizer_state"]),
    ("hub.from_pretrained('acme/unknown-class')", "ValueError",
     ["architecture 'ResNet', which is not an rwkv-vision model class"]),
    ("hub.from_pretrained('acme/depth', num_layers=3)", "ValueError",
     ["unknown override\\(s\\) num_layers; TinyDepth takes channels, dtype, max_depth"]),
])
def test_failures_name_their_cause(client, broken_repos, code, error, patterns):
    reply = client.run(code)
    assert not reply["ok"] and reply["type"] == error, reply
    for pattern in patterns:
        assert re.search(pattern, reply["message"]), (pattern, reply["message"])


def test_another_architecture_loads_by_its_config(client, broken_repos):
    result = ok(client.run("m = rwkv_vision.hub.from_pretrained('acme/depth'); "
                           "result = [type(m).__name__, repr(m.hub_config), m.pretrained_cfg['task']]"))
    assert result == ["TinyDepth", repr({"channels": (4, 8), "dtype": torch.float32, "max_depth": 10.0}),
                      "depth-estimation"]


# ---------------------------------------------------------------------------------------------------------------------
# Round trips and configuration


@pytest.mark.parametrize("name, overrides, shape", ROUND_TRIP, ids=[r[0] for r in ROUND_TRIP])
def test_round_trip_gives_identical_outputs(tmp_path, name, overrides, shape):
    model = perturbed(create_model(name, **overrides), seed=5)
    model.save_pretrained(tmp_path)
    for loaded in (hub.from_pretrained(tmp_path), create_model(name, pretrained=str(tmp_path))):
        assert type(loaded) is type(model) and not loaded.training
        assert loaded.hub_config == model.hub_config
        assert loaded.pretrained_cfg["architecture"] == name
        assert "loaded_from" not in loaded.pretrained_cfg  # a local folder is not a source worth publishing
        for key, value in model.state_dict().items():
            assert torch.equal(loaded.state_dict()[key], value), key
        assert forward(loaded, shape) == forward(model, shape)


def test_tuples_and_dtypes_round_trip(tmp_path):
    model = TinyDepth(channels=(3, 5), dtype=torch.float64, max_depth=7.5).eval()
    model.save_pretrained(tmp_path)
    args = json.loads((tmp_path / "config.json").read_text())["model_args"]
    assert args == {"channels": {"__tuple__": [3, 5]}, "dtype": {"__dtype__": "float64"}, "max_depth": 7.5}
    loaded = TinyDepth.from_pretrained(tmp_path)
    assert loaded.channels == (3, 5) and loaded.dtype is torch.float64
    assert loaded.body[0].weight.dtype is torch.float64 and forward(loaded) == forward(model)
    assert type(hub.from_pretrained(tmp_path)) is TinyDepth


def test_num_classes_override_replaces_the_head(tmp_path, caplog):
    source = nano(seed=6)
    source.pretrained_cfg.update(label_names=[f"c{i}" for i in range(10)], datasets=["RAF-DB"])
    source.save_pretrained(tmp_path / "ten")
    with caplog.at_level(logging.INFO, logger="rwkv_vision.hub"):
        model = RWKVViT.from_pretrained(tmp_path / "ten", num_classes=3)
    message = next(r.getMessage() for r in caplog.records if "replaces the pretrained head" in r.getMessage())
    assert "dropped head.weight (10, 96), head.bias (10,)" in message
    assert "new head.weight (3, 96), head.bias (3,)" in message
    assert model.head.weight.shape == (3, 96) and model.hub_config["num_classes"] == 3
    kept = {k: v for k, v in source.state_dict().items() if not k.startswith("head.")}
    assert all(torch.equal(model.state_dict()[k], v) for k, v in kept.items())
    assert model.pretrained_cfg["label_names"] is None and model.pretrained_cfg["base_model"] == str(tmp_path / "ten")
    assert model.pretrained_cfg["datasets"] == ["RAF-DB"]  # what the backbone was trained on still holds

    model.save_pretrained(tmp_path / "three")  # the new head count is what gets saved
    assert RWKVViT.from_pretrained(tmp_path / "three").head.weight.shape == (3, 96)
    headless = RWKVViT.from_pretrained(tmp_path / "ten", num_classes=0)
    assert isinstance(headless.head, torch.nn.Identity) and headless(torch.randn(1, 3, 32, 32)).shape == (1, 96)
    with pytest.raises(ValueError, match=r"head\.weight: file \(10, 96\) vs model \(3, 96\)"):
        create_model("rwkv_vit_nano", checkpoint_path=tmp_path / "ten" / "model.safetensors", img_size=32, depth=2,
                     num_classes=3)  # a bare checkpoint file stays strict


def test_save_is_atomic_and_refuses_what_it_cannot_record(tmp_path, monkeypatch):
    model = nano(seed=7)
    (tmp_path / "notes.txt").write_text("mine")
    model.save_pretrained(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert set(before) == {"notes.txt", "config.json", "model.safetensors", "README.md"}

    def fail(path):
        raise OSError(f"disk full while writing {path}")

    monkeypatch.setattr(hub, "_fsync", fail)
    with pytest.raises(OSError, match="disk full"):
        nano(seed=8).save_pretrained(tmp_path)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # untouched, no temporary files left

    class Wrapper(hub.HubModel):
        def __init__(self, inner: torch.nn.Module, scale: float = 1.0):
            super().__init__()
            self.inner, self.scale = inner, scale

    with pytest.raises(TypeError, match="Wrapper argument 'inner' = Linear cannot be stored in config.json"):
        Wrapper(torch.nn.Linear(2, 2)).save_pretrained(tmp_path / "wrapper")
    assert not (tmp_path / "wrapper" / "config.json").exists()
    with pytest.raises(ValueError, match="config.json is derived from the model"):
        model.save_pretrained(tmp_path, config={"a": 1})
    with pytest.raises(ValueError, match="label_names'\\] has 2 names but the model has 10 outputs"):
        model.pretrained_cfg["label_names"] = ["a", "b"]
        model.save_pretrained(tmp_path / "bad-labels")


def test_model_card(tmp_path):
    model = nano(seed=9, num_classes=3)
    model.pretrained_cfg.update(label_names=["neutral", "happy", "sad"], datasets=["RAF-DB"], license="cc-by-nc-4.0",
                                training="AdamW, 40 epochs.", input_size=(3, 32, 32), crop_pct=0.875,
                                results=[{"dataset": "RAF-DB", "split": "test", "metric": "accuracy", "value": 0.5,
                                          "source": "rwkv-vision evaluate"}])
    model.save_pretrained(tmp_path)
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.library_name == "rwkv-vision" and card.data.license == "cc-by-nc-4.0"
    assert card.data.pipeline_tag == "image-classification" and card.data.datasets == ["RAF-DB"]
    assert {"rwkv-vision", "rwkv_vit_nano", "vision-rwkv"} <= set(card.data.tags)
    result = card.data.eval_results[0]
    assert (result.dataset_name, result.dataset_split, result.metric_type, result.metric_value) == \
        ("RAF-DB", "test", "accuracy", 0.5)
    n = sum(p.numel() for p in model.parameters())
    for text in [f"| Parameters | {n / 1e6:.2f}M ({n:,}) |", "| Architecture | `RWKVViT` (`rwkv_vit_nano`) |",
                 "resize the short side to 36 px (bicubic), centre-crop 32x32",
                 "mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225)",
                 "3 classes, in output order: 0: neutral, 1: happy, 2: sad.", "AdamW, 40 epochs.",
                 "| RAF-DB | test | accuracy | 0.5 | rwkv-vision evaluate |",
                 f"rwkv_vision.from_pretrained({str(tmp_path)!r})", "not loaded from a published checkpoint",
                 "The weights: cc-by-nc-4.0. The rwkv-vision code: apache-2.0."]:
        assert text in card.text, text

    # A hand-written card survives a re-save; a generated one is refreshed.
    (tmp_path / "README.md").write_text("# my card\n")
    model.save_pretrained(tmp_path)
    assert (tmp_path / "README.md").read_text() == "# my card\n"
    card = model.generate_model_card(repo_id="acme/fer")  # what push_to_hub writes
    assert "rwkv_vision.from_pretrained('acme/fer')" in card.text and card.data.model_name == "acme/fer"


def test_model_card_notes_and_free_text_licence(tmp_path):
    model = nano(seed=9, num_classes=3)
    model.pretrained_cfg.update(license="research use only (the data set's terms)",
                                notes=["Posed faces from a lab.", "Not for decisions about people."])
    model.save_pretrained(tmp_path)
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.license == "other"  # the Hub's metadata only takes identifiers
    assert "The weights: research use only (the data set's terms)." in card.text
    assert "## Limitations and notes\n\nPosed faces from a lab.\n\nNot for decisions about people.\n" in card.text


# ---------------------------------------------------------------------------------------------------------------------
# Registry: pretrained entries


def test_pretrained_entries_are_the_published_files():
    assert list_models(pretrained=True) == ["rwkv_vit_base", "rwkv_vit_large", "rwkv_vit_small", "rwkv_vit_tiny",
                                            "unet_depth_mobilenet_v2", "unet_depth_resnet18", "unet_depth_resnet34",
                                            "unet_depth_resnet50", "unet_depth_rwkv_tiny"]
    assert list_models("rwkv_vit_t*", pretrained=True) == ["rwkv_vit_tiny"]
    cfg = get_pretrained_cfg("rwkv_vit_large")
    assert (cfg["hf_hub_id"], cfg["hf_hub_filename"], cfg["checkpoint_format"]) == \
        ("OpenGVLab/Vision-RWKV", "vrwkv_l_22kto1k_384.pth", "vision_rwkv")
    assert cfg["input_size"] == (3, 384, 384) and cfg["task"] == "image-classification"
    assert cfg["license"] == "apache-2.0" and cfg["interpolation"] == "bicubic"
    assert cfg["architecture"] == "rwkv_vit_large"
    labels = hub.label_names(get_pretrained_cfg("rwkv_vit_tiny"))
    assert len(labels) == len(set(labels)) == 1000 and labels[0] == "tench" and labels[999] == "toilet tissue"
    assert get_pretrained_cfg("rwkv_vit_nano")["hf_hub_id"] is None


def test_pretrained_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="rwkv_vit_nano has no pretrained weights .*rwkv_vit_tiny"):
        create_model("rwkv_vit_nano", pretrained=True)
    with pytest.raises(ValueError, match="neither 'hf-hub:org/name\\[@revision\\]' nor an existing folder"):
        create_model("rwkv_vit_nano", pretrained=str(tmp_path / "absent"))
    with pytest.raises(ValueError, match="pass pretrained= or checkpoint_path=, not both"):
        create_model("rwkv_vit_tiny", pretrained=True, checkpoint_path="x.pth")
    folder = saved(nano(seed=10), tmp_path / "nano")
    with pytest.raises(ValueError, match="holds rwkv_vit_nano, not rwkv_vit_tiny"):
        create_model("rwkv_vit_tiny", pretrained=folder)
    with pytest.raises(ValueError, match="is a local folder: revision='v1' applies to Hub repositories only"):
        hub.from_pretrained(folder, revision="v1")
    with pytest.raises(FileNotFoundError, match="has no model.safetensors"):
        (folder / "model.safetensors").unlink()
        hub.from_pretrained(folder)


def test_unreadable_checkpoint_files_are_named(tmp_path):
    model = nano(seed=12)
    torch.save(model.state_dict(), tmp_path / "model.pth")
    data = (tmp_path / "model.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 3])
    with pytest.raises(ValueError, match="cut.pth is not a readable torch checkpoint"):
        create_model("rwkv_vit_nano", checkpoint_path=tmp_path / "cut.pth", img_size=32, depth=2, num_classes=10)
    model.save_pretrained(tmp_path / "saved")
    data = (tmp_path / "saved" / "model.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:100])
    with pytest.raises(ValueError, match="cut.safetensors is not a readable safetensors file"):
        create_model("rwkv_vit_nano", checkpoint_path=tmp_path / "cut.safetensors", img_size=32, depth=2,
                     num_classes=10)


def test_official_vision_rwkv_file_converts_on_download(loopback, client, tmp_path):
    """An official-format VRWKV-T file (official key names, random values) served as OpenGVLab/Vision-RWKV."""
    reference = perturbed(create_model("rwkv_vit_tiny"), seed=11)
    official = {official_key(k): v for k, v in reference.state_dict().items()}
    assert "backbone.ln1.weight" in official and "head.fc.weight" in official and "backbone.pos_embed" in official
    folder = tmp_path / "official"
    folder.mkdir()
    torch.save({"meta": {"epoch": 300}, "state_dict": official}, folder / "vrwkv_t_in1k_224.pth")
    commit = loopback.add("OpenGVLab/Vision-RWKV", folder)
    shape = (1, 3, 64, 64)

    code = ("m = create_model('rwkv_vit_tiny', pretrained=True); "
            "result = [forward(m, %r), m.training, m.pretrained_cfg['loaded_from'], m.generate_model_card().text]")
    out, training, loaded_from, card = ok(client.run(code % (shape,)))
    assert out == forward(reference, shape) and not training
    assert loaded_from == {"repo": "OpenGVLab/Vision-RWKV", "revision": commit, "file": "vrwkv_t_in1k_224.pth",
                           "format": "vision_rwkv"}
    assert "converted from the `vision_rwkv` format" in card and "| imagenet-1k | validation | top-1 accuracy (%) | " \
        "75.1 | reported by the weights' authors |" in card and "0: tench, 1: goldfish" in card
    snapshot = client.home / "hub" / "models--OpenGVLab--Vision-RWKV" / "snapshots" / commit
    assert (snapshot / "vrwkv_t_in1k_224.pth.rwkv_vit_tiny.rwkv-vision.safetensors").is_file()

    # The conversion is cached: with the downloaded original zeroed out, the model still loads, from the cache.
    blob = (snapshot / "vrwkv_t_in1k_224.pth").resolve()
    blob.write_bytes(bytes(blob.stat().st_size))
    downloads = loopback.count("GET", "vrwkv_t_in1k_224.pth")
    code = ("m = create_model('rwkv_vit_tiny', pretrained=True, num_classes=5); "
            "result = [forward(m.forward_features, %r), list(m.head.weight.shape), m.pretrained_cfg['base_model']]")
    reply = client.run(code % (shape,))
    features, head_shape, base_model = ok(reply)
    assert features == forward(reference.forward_features, shape) and head_shape == [5, 192]
    assert base_model == "OpenGVLab/Vision-RWKV" and loopback.count("GET", "vrwkv_t_in1k_224.pth") == downloads
    assert any("dropped head.weight (1000, 192), head.bias (1000,); new head.weight (5, 192), head.bias (5,)" in line
               for line in reply["logs"]), reply["logs"]


# ---------------------------------------------------------------------------------------------------------------------
# torch.hub


def test_torch_hub_local_entry_points():
    model = torch.hub.load(str(REPO_ROOT), "rwkv_vit_nano", source="local", img_size=32, num_classes=4)
    assert isinstance(model, RWKVViT) and model.embed_dim == 96 and model.head.out_features == 4
    # What torch.hub.list / torch.hub.help report (they only take GitHub repositories): hubconf's public callables.
    spec = importlib.util.spec_from_file_location("hubconf_under_test", REPO_ROOT / "hubconf.py")
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    entry_points = {n for n in dir(hubconf) if callable(getattr(hubconf, n)) and not n.startswith("_")}
    assert entry_points == set(list_models())
    assert hubconf.dependencies == ["torch", "safetensors", "huggingface_hub"]
    assert "rwkv_vision.create_model('rwkv_vit_tiny'" in hubconf.rwkv_vit_tiny.__doc__


# ---------------------------------------------------------------------------------------------------------------------
# Publishing: push_to_hub and examples/push_to_hub.py against the loopback Hub's upload API

TOKEN = "t0ken"


def writes_since(loopback, before: int) -> list[tuple[str, str, str | None]]:
    """The write requests recorded since ``before``: (method, path, Authorization header)."""
    return [(m, p, a) for (m, p), a in zip(loopback.requests[before:], loopback.authorization[before:])
            if m == "POST"]


def test_push_to_hub_round_trip(loopback, client, tmp_path):
    model = nano(seed=20)
    folder = saved(model, tmp_path / "model")
    before = len(loopback.requests)
    url = ok(client.run(f"m = hub.from_pretrained({str(folder)!r}); "
                        f"result = str(m.push_to_hub('acme/pushed', token={TOKEN!r}, commit_message='first'))"))
    head = loopback.refs["acme/pushed"]["main"]
    assert url == f"{loopback.url}/acme/pushed/commit/{head}" and re.fullmatch(r"[0-9a-f]{40}", head)
    # What huggingface_hub sends (the card's YAML is validated once with hf_xet installed, twice without), every
    # request with the token.
    writes = writes_since(loopback, before)
    assert {a for _, _, a in writes} == {f"Bearer {TOKEN}"} and ("POST", "/api/validate-yaml") in loopback.requests
    assert [p for _, p, _ in writes if p != "/api/validate-yaml"] == [
        "/api/repos/create", "/api/models/acme/pushed/preupload/main", "/api/models/acme/pushed/commit/main"]
    commit = loopback.history["acme/pushed"][head]
    assert commit["summary"] == "first" and commit["parent"] is not None  # on top of create_repo's initial commit

    files = loopback.files("acme/pushed")
    assert set(files) == {".gitattributes", "README.md", "config.json", "model.safetensors"}
    assert files["model.safetensors"] == (folder / "model.safetensors").read_bytes()
    card = files["README.md"].decode()
    assert "rwkv_vision.from_pretrained('acme/pushed')" in card and card.startswith("---\nlibrary_name: rwkv-vision")

    code = ("m = rwkv_vision.from_pretrained('acme/pushed'); "
            "result = [forward(m), m.training, m.pretrained_cfg['loaded_from']]")
    out, training, loaded_from = ok(client.run(code))
    assert out == forward(model) and not training
    assert loaded_from == {"repo": "acme/pushed", "revision": head, "file": "model.safetensors",
                           "format": "rwkv-vision"}


def test_second_push_is_a_new_commit_and_an_unchanged_one_is_none(loopback, client, tmp_path):
    old, new = nano(seed=21), nano(seed=22)
    push = "result = str(hub.from_pretrained(%r).push_to_hub('acme/twice', token=%r))"
    ok(client.run(push % (str(saved(old, tmp_path / "old")), TOKEN)))
    first = loopback.refs["acme/twice"]["main"]
    ok(client.run(push % (str(saved(new, tmp_path / "new")), TOKEN)))
    second = loopback.refs["acme/twice"]["main"]
    assert second != first and loopback.history["acme/twice"][second]["parent"] == first

    assert ok(client.run("result = forward(rwkv_vision.from_pretrained('acme/twice'))")) == forward(new)
    code = f"result = forward(rwkv_vision.from_pretrained('acme/twice', revision={first!r}))"
    assert ok(client.run(code)) == forward(old)  # the old commit still serves the old files

    # The same files again: preupload reports their git blob ids, the client skips them, no commit is made.
    before = len(loopback.requests)
    url = ok(client.run(push % (str(tmp_path / "new"), TOKEN)))
    assert loopback.refs["acme/twice"]["main"] == second and url.endswith(f"/commit/{second}")
    assert not [p for _, p in loopback.requests[before:] if "/commit/" in p]
    assert ("GET", "/api/models/acme/twice/revision/main") in loopback.requests[before:]


def test_push_to_an_existing_branch(loopback, client, tmp_path):
    main, dev = nano(seed=23), nano(seed=24)
    ok(client.run(f"result = str(hub.from_pretrained({str(saved(main, tmp_path / 'main'))!r})"
                  f".push_to_hub('acme/branched', token={TOKEN!r}))"))
    ok(client.run(f"from huggingface_hub import HfApi; "
                  f"HfApi(token={TOKEN!r}).create_branch('acme/branched', branch='dev'); "
                  f"result = str(hub.from_pretrained({str(saved(dev, tmp_path / 'dev'))!r})"
                  f".push_to_hub('acme/branched', token={TOKEN!r}, branch='dev'))"))
    refs = loopback.refs["acme/branched"]
    assert refs["dev"] != refs["main"] and loopback.history["acme/branched"][refs["dev"]]["parent"] == refs["main"]
    code = "result = forward(rwkv_vision.from_pretrained('acme/branched', revision=%r))"
    assert ok(client.run(code % "dev")) == forward(dev)
    assert ok(client.run(code % "main")) == forward(main)


def test_push_to_a_new_branch(loopback, client, tmp_path):
    main, dev = nano(seed=25), nano(seed=30)
    ok(client.run(f"result = str(hub.from_pretrained({str(saved(main, tmp_path / 'main'))!r})"
                  f".push_to_hub('acme/new-branch', token={TOKEN!r}))"))
    # The Hub commits to existing branches only; push_to_hub creates the branch first.
    ok(client.run(f"result = str(hub.from_pretrained({str(saved(dev, tmp_path / 'dev'))!r})"
                  f".push_to_hub('acme/new-branch', token={TOKEN!r}, branch='dev'))"))
    code = "result = forward(rwkv_vision.from_pretrained('acme/new-branch', revision=%r))"
    assert ok(client.run(code % "dev")) == forward(dev)
    assert ok(client.run(code % "main")) == forward(main)


def test_push_without_a_valid_token_fails(loopback, client, tmp_path):
    folder = saved(nano(seed=26), tmp_path / "model")
    before = len(loopback.requests)
    reply = client.run(f"hub.from_pretrained({str(folder)!r}).push_to_hub('acme/no-token')")
    assert not reply["ok"] and reply["type"] == "HfHubHTTPError", reply
    assert "401 Unauthorized" in reply["message"] and "/api/repos/create" in reply["message"]
    assert "must be authenticated" in reply["message"]
    assert loopback.authorization[before] is None and "acme/no-token" not in loopback.commits
    assert loopback.count("POST", "/api/models/acme/no-token/commit") == 0

    # An existing public repository: create_repo(exist_ok=True) finds it, the preupload is refused.
    ok(client.run(f"result = str(hub.from_pretrained({str(folder)!r}).push_to_hub('acme/public', token={TOKEN!r}))"))
    head = loopback.refs["acme/public"]["main"]
    reply = client.run(f"hub.from_pretrained({str(folder)!r}).push_to_hub('acme/public')")
    assert not reply["ok"] and reply["type"] == "HfHubHTTPError" and "401 Unauthorized" in reply["message"], reply
    assert "/api/models/acme/public/preupload/main" in reply["message"] and loopback.refs["acme/public"]["main"] == head

    loopback.tokens = {TOKEN}  # a token the Hub does not know
    try:
        reply = client.run(f"hub.from_pretrained({str(folder)!r}).push_to_hub('acme/bad-token', token='wrong')")
    finally:
        loopback.tokens = None
    assert not reply["ok"] and reply["type"] == "HfHubHTTPError", reply
    assert "Invalid credentials in Authorization header" in reply["message"]


def test_push_private_repository(loopback, client, tmp_path):
    model = nano(seed=27)
    ok(client.run(f"result = str(hub.from_pretrained({str(saved(model, tmp_path / 'model'))!r})"
                  f".push_to_hub('acme/private', token={TOKEN!r}, private=True))"))
    created = [json.loads(body) for (m, p), body in zip(loopback.requests, loopback.bodies)
               if p == "/api/repos/create" and json.loads(body)["name"] == "private"]
    assert [(c["organization"], c["visibility"]) for c in created] == [("acme", "private")]
    assert loopback.private["acme/private"]
    reply = client.run("hub.from_pretrained('acme/private')")
    assert not reply["ok"] and reply["type"] == "RepositoryNotFoundError", reply
    code = f"result = forward(hub.from_pretrained('acme/private', token={TOKEN!r}))"
    assert ok(client.run(code)) == forward(model)


def test_pushed_files_name_no_local_paths(loopback, client, tmp_path):
    """examples/push_to_hub.py loads the folder, then pushes: the local folder must not be published."""
    folder = saved(nano(seed=28), tmp_path / "private-place")
    ok(client.run(f"result = str(hub.from_pretrained({str(folder)!r}).push_to_hub('acme/paths', token={TOKEN!r}))"))
    files = loopback.files("acme/paths")
    leaks = [name for name in ("config.json", "README.md") if str(tmp_path).encode() in files[name]]
    assert leaks == []
    assert b"trained or initialised locally" in files["README.md"]


def test_push_to_hub_example_script(loopback, client, tmp_path):
    import subprocess
    import sys

    model = nano(seed=29)
    folder = saved(model, tmp_path / "model")
    env = client_env(loopback, tmp_path / "script-home")
    script = [sys.executable, str(REPO_ROOT / "examples" / "push_to_hub.py"), str(folder), "acme/from-script",
              "--token", TOKEN, "--message", "from the script"]
    before = len(loopback.requests)
    # One process, importing rwkv_vision (most of the run time); the no-token failure is tested with the worker.
    done = subprocess.run(script, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    head = loopback.refs["acme/from-script"]["main"]
    assert f"pushed RWKVViT from {folder} to {loopback.url}/acme/from-script/commit/{head}" in done.stdout
    assert "load it with: rwkv_vision.from_pretrained('acme/from-script')" in done.stdout
    assert loopback.history["acme/from-script"][head]["summary"] == "from the script"
    assert all(a == f"Bearer {TOKEN}" for _, _, a in writes_since(loopback, before))
    card = loopback.files("acme/from-script")["README.md"].decode()
    assert "rwkv_vision.from_pretrained('acme/from-script')" in card
    assert ok(client.run("result = forward(rwkv_vision.from_pretrained('acme/from-script'))")) == forward(model)
