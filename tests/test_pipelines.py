"""``rwkv_vision.pipeline``: transformers-shaped outputs for classification and depth, colour maps, depth PNGs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from rwkv_vision import create_model
from rwkv_vision.data.nyu import read_depth_png
from rwkv_vision.data.transforms import eval_transform
from rwkv_vision.pipelines import colorize_depth, pipeline
from rwkv_vision.predict import save_depth_png

LABELS = ["anger", "happiness", "sadness", "surprise"]


@pytest.fixture(scope="module")
def classifier() -> nn.Module:
    torch.manual_seed(0)
    model = create_model("rwkv_vit_nano", num_classes=4, img_size=16, patch_size=4, embed_dim=32, depth=2).eval()
    model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, 16, 16), "label_names": LABELS,
                            "task": "image-classification", "interpolation": "bilinear"}
    return model


def _face(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (20, 24, 3), dtype=np.uint8)


def test_classification_output_shape_and_values(classifier, tmp_path):
    classify = pipeline("image-classification", classifier, top_k=3)
    array = _face()
    out = classify(array)
    assert [sorted(r) for r in out] == [["label", "score"]] * 3
    assert all(r["label"] in LABELS for r in out)
    scores = [r["score"] for r in out]
    assert scores == sorted(scores, reverse=True) and sum(scores) <= 1 + 1e-6
    image = torch.from_numpy(array).permute(2, 0, 1).float() / 255
    with torch.no_grad():
        probs = classifier(eval_transform(classifier)(image)[None])[0].softmax(-1)
    best = int(probs.argmax())
    assert out[0] == {"label": LABELS[best], "score": pytest.approx(float(probs[best]), abs=1e-6)}
    # the same image as a file, a PIL image and a tensor; a list gives a list; top_k per call
    Image.fromarray(array).save(tmp_path / "face.png")
    assert classify(str(tmp_path / "face.png")) == out
    assert classify(Image.fromarray(array)) == out
    assert classify(image) == out
    batch = classify([array, _face(1)], top_k=4)
    assert len(batch) == 2 and len(batch[0]) == 4
    assert sum(r["score"] for r in batch[0]) == pytest.approx(1.0, abs=1e-5)


def test_classification_from_a_saved_folder(classifier, tmp_path):
    classifier.save_pretrained(tmp_path / "model")
    from_folder = pipeline("classification", str(tmp_path / "model"))
    assert from_folder(_face()) == pipeline("image-classification", classifier)(_face())


class _GradientDepth(nn.Module):
    """A stand-in depth model: depth = 1 + 4 x (normalised column position) metres, at the input's size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        return (1 + 4 * torch.linspace(0, 1, W)).expand(B, 1, H, W).clone()


def test_depth_output_shape_and_scaling():
    model = _GradientDepth()
    model.pretrained_cfg = {"task": "depth-estimation", "input_size": (3, 16, 16)}
    out = pipeline("depth-estimation", model)(_face())
    assert sorted(out) == ["depth", "predicted_depth"]
    depth = out["predicted_depth"]
    assert depth.shape == (20, 24) and depth.dtype == torch.float32  # back at the image's own size
    assert 1.0 <= float(depth.min()) < 1.5 and 4.5 < float(depth.max()) <= 5.0
    grey = np.asarray(out["depth"])
    assert out["depth"].mode == "L" and grey.shape == (20, 24) and grey.max() == 255
    assert np.all(np.diff(grey[0].astype(int)) >= 0)  # far (right) is bright


def test_unknown_task():
    with pytest.raises(ValueError, match="segmentation"):
        pipeline("segmentation", nn.Identity())


def test_colorize_depth_ends_and_invalid_pixels():
    depth = torch.tensor([[1.4, 4.6, 3.0]])  # 10% and 90% of the range
    rgb = colorize_depth(depth, 1.0, 5.0, valid=torch.tensor([[True, True, False]]))
    assert rgb.shape == (1, 3, 3) and rgb.dtype == np.uint8
    near, far = rgb[0, 0].astype(int), rgb[0, 1].astype(int)
    assert near[2] > near[0] + 100 and far[0] > far[2] + 100  # near blue, far red (turbo)
    assert rgb[0, 2].tolist() == [0, 0, 0]


def test_depth_png_is_millimetres(tmp_path):
    depth = torch.tensor([[0.0, 1.2346, 9.999]])
    path = save_depth_png(depth, tmp_path / "d.png")
    assert Image.open(path).mode.startswith("I;16")
    torch.testing.assert_close(read_depth_png(path)[0], torch.tensor([[0.0, 1.235, 9.999]]), atol=1e-6, rtol=0)
