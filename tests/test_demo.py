"""The demo and what it ships: sample photographs with face boxes, face crops, the bundled CK+48 model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import rwkv_vision
from rwkv_vision import weights
from rwkv_vision.data.faces import FaceBox, crop_face, detect_faces
from rwkv_vision.demo import SAMPLES, run_demo, sample_faces
from rwkv_vision.hub import from_pretrained

REPO = Path(__file__).resolve().parents[1]
BUNDLED = "ck48_rwkv_vit_nano"


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "rwkv_vision.cli", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd, env=env)


# ------------------------------------------------------------------------------------------------- faces


def test_face_box_from_dict_names_the_problem():
    assert FaceBox.from_dict({"left": 1, "top": 2, "width": 3, "height": 4}) == FaceBox(1, 2, 3, 4)
    with pytest.raises(ValueError, match="faces.json: x.jpg: missing height"):
        FaceBox.from_dict({"left": 1, "top": 2, "width": 3}, "faces.json: x.jpg")
    with pytest.raises(ValueError, match="must be positive"):
        FaceBox.from_dict({"left": 1, "top": 2, "width": 0, "height": 4})


def test_crop_face_geometry():
    # a 100x80 image whose columns encode x and rows encode y: the crop's corners say where it was taken
    y, x = np.mgrid[0:80, 0:100]
    image = Image.fromarray(np.stack([x * 2, y * 3, np.zeros_like(x)], -1).astype(np.uint8))
    crop = crop_face(image, FaceBox(30, 20, 40, 40), scale=1.0, size=40, grey=False)
    assert crop.size == (40, 40) and crop.mode == "RGB"
    a = np.asarray(crop).astype(int)
    assert a[0, 0, 0] == 60 and a[0, 0, 1] == 60 and a[-1, -1, 0] == 138 and a[-1, -1, 1] == 177
    # scale widens about the centre; grey gives three equal channels, 48 px by default
    wide = np.asarray(crop_face(image, FaceBox(30, 20, 40, 40), scale=1.5, grey=False)).astype(int)
    # (resampling 60 -> 48 px moves the corner sample by under a pixel: 2 and 3 levels per pixel here)
    assert wide.shape == (48, 48, 3) and abs(wide[0, 0, 0] - 40) <= 2 and abs(wide[0, 0, 1] - 30) <= 3
    grey = np.asarray(crop_face(image, FaceBox(30, 20, 40, 40)))
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()


def test_crop_face_replicates_borders_and_refuses_boxes_outside():
    image = Image.fromarray(np.full((50, 50, 3), 200, np.uint8))
    crop = np.asarray(crop_face(image, FaceBox(-10, -10, 30, 30), scale=2.0))
    assert (crop == 200).all()  # no black bars where the square leaves the image
    with pytest.raises(ValueError, match="outside the 50x50 image"):
        crop_face(image, FaceBox(60, 0, 10, 10))


def test_detector_finds_the_bundled_boxes():
    pytest.importorskip("skimage")
    for path, boxes in sample_faces().items():
        assert detect_faces(Image.open(path)) == boxes, path
    assert detect_faces(Image.fromarray(np.full((200, 200, 3), 128, np.uint8))) == []


def test_detector_without_scikit_image_says_which_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage", None)
    with pytest.raises(ImportError, match=r"rwkv-vision\[faces\]"):
        detect_faces(Image.new("RGB", (64, 64)))


def test_samples_have_a_notice_naming_source_and_licence():
    notice = (SAMPLES / "NOTICE.md").read_text()
    for name in json.loads((SAMPLES / "faces.json").read_text())["images"]:
        assert (SAMPLES / name).is_file() and f"`{name}`" in notice
    assert notice.count("Public domain") >= 2


# ------------------------------------------------------------------------------------------------- the bundled model


def test_bundled_model_loads_and_its_card_says_what_it_is():
    folder = weights.path(BUNDLED)
    assert weights.names() == [BUNDLED]
    size = sum(f.stat().st_size for f in folder.iterdir())
    assert size <= 5 * 2**20, f"{folder}: {size} bytes, the budget is 5 MB"
    model = from_pretrained(folder)
    assert type(model).__name__ == "RWKVViT" and not model.training
    cfg = model.pretrained_cfg
    assert cfg["label_names"] == ["anger", "contempt", "disgust", "fear", "happiness", "sadness", "surprise"]
    top1 = next(r["value"] for r in cfg["results"] if r["metric"] == "top-1 accuracy (%)")
    card = (folder / "README.md").read_text()
    for text in ["posed", "lab", "not in-the-wild", "subject-independent", "fold=0, num_folds=10",
                 f"| ckplus | test | top-1 accuracy (%) | {top1} |", "research use only", "no \"neutral\" class"]:
        assert text in card, text
    notice = (folder / "NOTICE.md").read_text()
    assert "rwkv-vision train --config configs/ck48_rwkv_vit.yaml" in notice
    with pytest.raises(KeyError, match="bundled: ck48_rwkv_vit_nano"):
        weights.path("nope")


def test_bundled_model_reproduces_its_card_on_ck48(shared_data, tmp_path):
    """The measured test accuracy in the card is what the shipped weights score (CK+48 fold 0 test)."""
    from rwkv_vision.evaluate import evaluate_command

    folder = weights.path(BUNDLED)
    cfg = from_pretrained(folder).pretrained_cfg
    result = evaluate_command(str(folder), ["ckplus", f"root={shared_data / 'ckplus48'}", "fold=0", "num_folds=10"],
                              output_dir=tmp_path)
    card = {r["metric"]: r["value"] for r in cfg["results"]}
    assert result["count"] == 99
    assert round(100 * result["top1"], 4) == card["top-1 accuracy (%)"]
    assert round(100 * result["macro_f1"], 4) == card["macro-F1 (%)"]


# ------------------------------------------------------------------------------------------------- the demo


def test_demo_command(tmp_path):
    proc = cli("demo", "--output", "out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("WKV backend on cpu: ")
    assert any(line.startswith("Expression model: ck48_rwkv_vit_nano (RWKVViT, 0.76M parameters)") for line in lines)
    faces = [line for line in lines if " face 1 at " in line]
    assert len(faces) == 2 and all("%" in line for line in faces)
    assert "Depth: skipped. No UNetDepth weights trained on real depth data" in proc.stdout
    result = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [Path(f["file"]).name for f in result["faces"]] == ["grace_hopper.jpg", "astronaut.jpg"]
    for face in result["faces"]:
        crop = Image.open(tmp_path / face["crop"])
        assert crop.size == (48, 48)
        scores = [p["score"] for p in face["predictions"]]
        assert len(scores) == 3 and scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1 + 1e-6
    assert result["depth"] is None
    # Eileen Collins smiles broadly: if the crop or the preprocessing were wrong, this is the first thing to go
    assert result["faces"][1]["predictions"][0]["label"] == "happiness"


def test_demo_on_your_own_photo_and_depth_model(tmp_path):
    pytest.importorskip("skimage")
    depth = rwkv_vision.create_model("unet_depth_resnet18")
    depth.pretrained_cfg.update(task="depth-estimation", input_size=(3, 64, 64))
    depth.save_pretrained(tmp_path / "depth")
    room = tmp_path / "room.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(room)
    result = run_demo(tmp_path / "out", images=[SAMPLES / "astronaut.jpg", room], depth_model=tmp_path / "depth",
                      depth_image=room, echo=lambda line: None)
    assert [(Path(f["file"]).name, f["face"]) for f in result["faces"]] == [("astronaut.jpg", 1)]
    color = Image.open(result["depth"]["color_png"])
    assert color.size == (80, 60) and color.mode == "RGB"


def test_demo_turns_photographs_upright_from_exif(tmp_path):
    """A phone photograph stored sideways with an EXIF orientation is classified upright (the detector and the
    model only know upright faces)."""
    pytest.importorskip("skimage")
    sideways = Image.open(SAMPLES / "astronaut.jpg").rotate(90, expand=True)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    sideways.save(tmp_path / "phone.jpg", exif=exif)
    result = run_demo(tmp_path / "out", images=[tmp_path / "phone.jpg"], echo=lambda line: None)
    assert len(result["faces"]) == 1 and result["faces"][0]["predictions"][0]["label"] == "happiness"


def test_demo_errors(tmp_path):
    proc = cli("demo", "--depth-model", "x", cwd=tmp_path)
    assert proc.returncode == 2 and "--depth-model and --depth-image go together" in proc.stderr
    proc = cli("demo", "--image", "missing.jpg", cwd=tmp_path)
    assert proc.returncode == 2 and "missing.jpg" in proc.stderr and "Traceback" not in proc.stderr
