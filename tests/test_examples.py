"""Every script in examples/ runs, as a user would run it (a fresh process), on tiny synthetic data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import rwkv_vision
from test_convert_vision_rwkv import model_args, official_state_dict
from test_train import make_faces

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


def run_example(name: str, *args: str, cwd: Path | None = None, timeout: float = 600) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=env)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def make_nyu_kaggle(root: Path, train: int = 6, test: int = 3, size=(48, 64), seed: int = 0) -> Path:
    """The Kaggle / DenseDepth layout with learnable fake frames: depth grows from top to bottom, the image's
    brightness follows it. Training maps 8-bit (value / 255 * 10 m), test maps 16-bit millimetres, as in the real
    copy."""
    rng = np.random.default_rng(seed)
    h, w = size
    rows = {"train": [], "test": []}
    for split, n in (("train", train), ("test", test)):
        for i in range(n):
            folder = root / "data" / f"nyu2_{split}" / f"scene_{i}"
            folder.mkdir(parents=True, exist_ok=True)
            depth = np.linspace(1.0, 6.0, h)[:, None] * np.ones((1, w)) * rng.uniform(0.8, 1.2)
            image = np.repeat((255 - depth * 40).astype(np.uint8)[..., None], 3, axis=2)
            Image.fromarray(image).save(folder / "1.jpg")
            if split == "train":
                Image.fromarray(np.round(depth / 10 * 255).astype(np.uint8)).save(folder / "1.png")
            else:
                Image.fromarray(np.round(depth * 1000).astype(np.uint16)).save(folder / "1.png")
            rows[split].append(f"data/nyu2_{split}/scene_{i}/1.jpg,data/nyu2_{split}/scene_{i}/1.png")
    for split, lines in rows.items():
        (root / "data" / f"nyu2_{split}.csv").write_text("\n".join(lines) + "\n")
    return root


def test_quickstart():
    out = run_example("quickstart.py")
    assert "RWKVViT: 762,079 parameters" in out
    assert "astronaut.jpg face 1 " in out and "grace_hopper.jpg face 1 " in out
    assert "logits (1, 10) features [(1, 96, 48, 48), (1, 96, 48, 48)]" in out


def test_finetune_fer(tmp_path):
    data = make_faces(tmp_path / "faces", train=8, test=4)
    out = run_example("finetune_fer.py", "--data", str(data), "--output", str(tmp_path / "run"), "--epochs", "2",
                      "--batch-size", "8", "--threads", "1")
    assert "test top-1 " in out
    model = rwkv_vision.from_pretrained(tmp_path / "run" / "model")
    # started from the bundled CK+48 model with a new 3-class head, in the data set's (alphabetical) label order
    assert model.num_classes == 3 and model.pretrained_cfg["label_names"] == ["anger", "happiness", "sadness"]
    bundled = rwkv_vision.from_pretrained(rwkv_vision.weights.path("ck48_rwkv_vit_nano"))
    assert model.pretrained_cfg["base_model"] == str(rwkv_vision.weights.path("ck48_rwkv_vit_nano"))
    # two epochs at a small learning rate move the body, but it is recognisably the bundled one
    a, b = model.patch_embed.projection.weight, bundled.patch_embed.projection.weight
    assert not torch.equal(a, b) and torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), 0) > 0.9


def test_depth_nyu(tmp_path):
    data = make_nyu_kaggle(tmp_path / "nyu")
    out = run_example("depth_nyu.py", "--data", str(data), "--encoder", "resnet18", "--epochs", "1",
                      "--batch-size", "3", "--size", "64", "64", "--workers", "0", "--threads", "1",
                      "--output", str(tmp_path / "run"))
    assert "3 test frames: d1 " in out
    results = json.loads((tmp_path / "run" / "eval" / "results.json").read_text())
    assert results["images"] == 3 and 0 <= results["d1"] <= 1 and results["rmse"] > 0
    assert (tmp_path / "run" / "eval" / "panels.png").is_file()
    model = rwkv_vision.from_pretrained(tmp_path / "run" / "model")
    assert type(model).__name__ == "UNetDepth" and model.pretrained_cfg["task"] == "depth-estimation"


def test_convert_official_vision_rwkv(tmp_path):
    sd = official_state_dict()
    torch.save({"state_dict": sd, "meta": {"epoch": 300}}, tmp_path / "vrwkv.pth")
    args = model_args(init_values=1.0)
    overrides = [f"--set={k}={json.dumps(v)}" for k, v in args.items()]
    out = run_example("convert_official.py", "vision-rwkv", str(tmp_path / "vrwkv.pth"), str(tmp_path / "out"),
                      "--model", "rwkv_vit_tiny", *overrides)
    assert "reload checked" in out
    converted = rwkv_vision.from_pretrained(tmp_path / "out")
    direct = rwkv_vision.create_model("rwkv_vit_tiny", checkpoint_path=tmp_path / "vrwkv.pth", **args).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(converted(x), direct(x))
    assert "Converted from the official file(s)" in (tmp_path / "out" / "README.md").read_text()


def test_convert_official_errors_name_the_key(tmp_path):
    sd = official_state_dict()
    sd.pop("backbone.pos_embed")
    torch.save({"state_dict": sd}, tmp_path / "broken.pth")
    proc = subprocess.run([sys.executable, str(EXAMPLES / "convert_official.py"), "vision-rwkv",
                           str(tmp_path / "broken.pth"), str(tmp_path / "out"), "--model", "rwkv_vit_tiny",
                           *[f"--set={k}={json.dumps(v)}" for k, v in model_args(init_values=1.0).items()]],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode != 0 and "pos_embed" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_convert_official_poster_v2(tmp_path):
    from test_convert_poster import poster_v2_official_shapes, random_state, relative_position_index

    state = random_state(poster_v2_official_shapes(7), prefix="module.")  # DataParallel names, as released
    for i, grid in enumerate((28, 14, 7), start=1):
        state[f"module.attn{i}.relative_position_index"] = relative_position_index(grid)
    for key in state:
        if key.endswith("running_var"):
            state[key] = state[key].abs() + 0.5  # a valid variance
    torch.save({"epoch": 12, "state_dict": state, "best_acc": torch.tensor([92.21])}, tmp_path / "rafdb.pth")
    out = run_example("convert_official.py", "poster-v2", str(tmp_path / "rafdb.pth"), str(tmp_path / "out"),
                      "--labels", "rafdb")
    assert "reload checked" in out
    model = rwkv_vision.from_pretrained(tmp_path / "out")
    assert type(model).__name__ == "PosterV2"
    assert model.pretrained_cfg["label_names"] == ["surprise", "fear", "disgust", "happiness", "sadness", "anger",
                                                   "neutral"]
    assert "0: surprise, 1: fear" in (tmp_path / "out" / "README.md").read_text()
