"""The command line end to end on tiny synthetic data: train -> evaluate -> predict, for classification and depth."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rwkv_vision.cli import main
from rwkv_vision.data.nyu import read_depth_png
from rwkv_vision.pipelines import pipeline
from rwkv_vision.train import Trainer, config_from_dict
from test_train import make_faces, tiny_config


@pytest.fixture(scope="module")
def trained(module_tmp) -> tuple[Path, Path, dict]:
    """(data root, run folder, results.json) of a 4-epoch `rwkv-vision train` run from a YAML file."""
    import yaml

    faces = make_faces(module_tmp / "faces")
    run = module_tmp / "run"
    cfg = tiny_config(faces, run, train={"epochs": 4, "progress": "off"})
    (module_tmp / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", "--config", str(module_tmp / "cfg.yaml"), "optim.lr=1e-2", "train.export=last"]) == 0
    return faces, run, json.loads((run / "results.json").read_text())


def test_train_writes_the_run_folder(trained):
    _, run, results = trained
    for name in ("train_config.json", "metrics.jsonl", "checkpoint.pt", "best.pt", "results.json",
                 "confusion_matrix.json", "model/config.json", "model/model.safetensors", "model/README.md"):
        assert (run / name).is_file(), name
    assert results["exported"] == "last" and results["exported_epoch"] == 4
    assert json.loads((run / "train_config.json").read_text())["optim"]["lr"] == 1e-2  # the override was applied


def test_evaluate_matches_the_training_run(trained, tmp_path, capsys):
    faces, run, results = trained
    assert main(["evaluate", "--model", str(run / "model"), "--data", "imagefolder", f"root={faces}",
                 "--split", "test", "--output", str(tmp_path / "eval")]) == 0
    saved = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert saved["confusion_matrix"] == results["test"]["confusion_matrix"]
    assert saved["top1"] == pytest.approx(results["test"]["top1"])
    assert set(saved["per_class_accuracy"]) == {"anger", "happiness", "sadness"}
    assert json.loads((tmp_path / "eval" / "confusion_matrix.json").read_text())["rows"] == "true"
    png = tmp_path / "eval" / "confusion_matrix.png"
    assert png.is_file() or "matplotlib" in " ".join(saved.get("notes", []))
    assert f'"top1": {saved["top1"]}' in capsys.readouterr().out
    # the training config works as the data spec too
    assert main(["evaluate", "--model", str(run / "model"), "--data", str(run / "train_config.json"),
                 "--output", str(tmp_path / "eval2")]) == 0
    assert json.loads((tmp_path / "eval2" / "results.json").read_text())["top1"] == saved["top1"]


def test_evaluate_on_a_differently_ordered_set(trained, tmp_path):
    """A model scores a data set whose classes come in another order: outputs are matched by class name."""
    faces, run, results = trained
    assert main(["evaluate", "--model", str(run / "model"), "--data", "imagefolder", f"root={faces}",
                 'classes=["Sad", "Happy", "Angry"]', "--output", str(tmp_path / "eval")]) == 0
    saved = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert saved["class_names"] == ["sadness", "happiness", "anger"]
    assert saved["top1"] == pytest.approx(results["test"]["top1"])
    original = np.array(results["test"]["confusion_matrix"])  # order anger, happiness, sadness
    assert np.array_equal(np.array(saved["confusion_matrix"]), original[[2, 1, 0]][:, [2, 1, 0]])


def test_predict_table_and_json(trained, capsys):
    faces, run, _ = trained
    images = [str(faces / "test" / "Happy" / "0.png"), str(faces / "test" / "Angry" / "1.png")]
    assert main(["predict", "--model", str(run / "model"), *images, "--json", "--top-k", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["file"] for r in out] == images and all(len(r["predictions"]) == 2 for r in out)
    expected = pipeline("image-classification", str(run / "model"), top_k=2)(images[0])
    assert out[0]["predictions"] == expected
    assert main(["predict", "--model", str(run / "model"), images[0], "--top-k", "3"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0] == images[0] and len(table) == 4 and table[1].strip().startswith("1. ")


def test_cli_errors_name_the_problem(trained, tmp_path, capsys):
    _, run, _ = trained
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--config", str(run / "train_config.json"), "optim.lrr=1"])
    assert exit_info.value.code == 2 and "optim.lrr" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--config", str(tmp_path / "missing.yaml")])
    assert "missing.yaml" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["predict", "--model", str(run / "model"), str(tmp_path / "nope.png")])
    assert "nope.png" in capsys.readouterr().err


def _depth_pairs(root: Path, n: int = 6) -> Path:
    """NYU-format test pairs: RGB whose brightness encodes a left-to-right depth ramp (16-bit millimetres)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        depth = np.tile(np.linspace(1.0, 5.0, 40), (32, 1)) + rng.uniform(0, 0.5)
        grey = (depth / 6 * 255).astype(np.uint8)
        Image.fromarray(np.stack([grey] * 3, -1)).save(root / f"{i:05d}_colors.png")
        Image.fromarray((depth * 1000).astype(np.uint16)).save(root / f"{i:05d}_depth.png")
        rows.append(f"{i:05d}_colors.png,{i:05d}_depth.png")
    (root / "pairs.csv").write_text("\n".join(rows) + "\n")
    return root / "pairs.csv"


def test_depth_train_evaluate_predict(tmp_path, capsys):
    pairs = _depth_pairs(tmp_path / "nyu")
    cfg = tiny_config(tmp_path, tmp_path / "run", task="depth",
                      model={"name": "unet_depth_resnet18", "args": {"decoder_channels": [32, 16, 16, 8, 8]}},
                      data={"name": "nyu_csv", "args": {"train_csv": str(pairs), "test_csv": str(pairs)},
                            "batch_size": 3, "input_size": [32, 40], "mean": None, "std": None},
                      augment={"hflip": 0.5, "brightness": 0.1}, train={"epochs": 1, "progress": "off"})
    summary = Trainer(config_from_dict(cfg)).fit()
    test = summary["test"]
    assert test["images"] == 6 and 0 < test["abs_rel"] and 0 <= test["d1"] <= 1 and np.isfinite(test["rmse"])
    log = json.loads((tmp_path / "run" / "metrics.jsonl").read_text())
    assert set(log["val"]) >= {"abs_rel", "rmse", "d1", "silog", "ssim", "loss"}

    assert main(["evaluate", "--model", summary["model_dir"], "--data", "nyu_csv", f"train_csv={pairs}",
                 f"test_csv={pairs}", "--output", str(tmp_path / "eval"), "--panels", "2"]) == 0
    result = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert result["abs_rel"] == pytest.approx(test["abs_rel"], rel=1e-5)
    panels = Image.open(tmp_path / "eval" / "panels.png")
    assert panels.size == (3 * 40, 2 * 32)  # two rows of image | truth | prediction at the truth's size

    image = tmp_path / "nyu" / "00000_colors.png"
    capsys.readouterr()  # drop the training and evaluation output
    assert main(["predict", "--model", summary["model_dir"], str(image), "--json", "--output",
                 str(tmp_path / "pred")]) == 0
    [written] = json.loads(capsys.readouterr().out)
    depth_mm = read_depth_png(written["depth_png"])[0]
    expected = pipeline("depth-estimation", summary["model_dir"])(str(image))["predicted_depth"]
    torch.testing.assert_close(depth_mm, expected, atol=6e-4, rtol=0)  # millimetre rounding
    assert Image.open(written["color_png"]).size == (40, 32)
