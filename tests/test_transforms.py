"""Evaluation preprocessing (against torchvision when installed), training augmentation, depth pipelines."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from rwkv_vision import create_model
from rwkv_vision.data.transforms import (DepthEvalTransform, EvalTransform, TrainTransform, depth_train_transform,
                                         eval_transform, resize, to_tensor)


def _image(h: int = 40, w: int = 60, seed: int = 0) -> torch.Tensor:
    return torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed))


def test_eval_transform_matches_torchvision():
    tv = pytest.importorskip("torchvision.transforms.v2")
    image = _image()
    ours = EvalTransform(32, crop_pct=0.875, interpolation="bilinear", mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    theirs = tv.Compose([tv.Resize(math.floor(32 / 0.875), interpolation=tv.InterpolationMode.BILINEAR,
                                   antialias=True),
                         tv.CenterCrop(32), tv.Normalize((0.5, 0.4, 0.3), (0.2, 0.25, 0.3))])
    out = ours(image)
    assert out.shape == (3, 32, 32)
    torch.testing.assert_close(out, theirs(image), atol=1e-5, rtol=0)


def test_eval_transform_from_model_cfg_and_errors():
    model = create_model("rwkv_vit_nano", num_classes=3)
    tf = eval_transform(model)
    assert tf.input_size == (112, 112) and tf.interpolation == "bicubic"
    assert eval_transform(model, input_size=(48, 64)).input_size == (48, 64)
    out = tf(torch.full((3, 50, 50), 0.5))
    expected = (0.5 - torch.tensor(model.pretrained_cfg["mean"])) / torch.tensor(model.pretrained_cfg["std"])
    torch.testing.assert_close(out[:, 60, 60], expected.float(), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="input_size"):
        EvalTransform.from_cfg({"mean": (0.5,), "std": (0.5,)})
    with pytest.raises(ValueError, match="crop_pct"):
        EvalTransform(32, crop_pct=1.5)


def test_resize_keeps_bicubic_inside_the_input_range():
    image = torch.zeros(3, 16, 16)
    image[:, :, 8:] = 1
    out = resize(image, (40, 40), "bicubic")
    assert out.min() >= 0 and out.max() <= 1 and out.shape == (3, 40, 40)


def test_to_tensor_accepts_pil_arrays_and_tensors():
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    a = to_tensor(grey)
    assert a.shape == (3, 3, 4) and torch.equal(a[0], a[2]) and a[0, 2, 3] == pytest.approx(11 / 255)
    assert torch.equal(to_tensor(Image.fromarray(grey)), a)
    assert torch.equal(to_tensor(torch.from_numpy(grey)[None]), a)
    la = np.stack([grey, np.full_like(grey, 255)], -1)
    assert torch.equal(to_tensor(la), a)  # grey + alpha: alpha dropped
    with pytest.raises(ValueError, match="uint8"):
        to_tensor(np.zeros((2, 2), dtype=np.float32))


def test_train_transform_is_reproducible_and_shaped():
    tf = TrainTransform(24, scale=(0.5, 1.0), rotation=15, brightness=0.3, contrast=0.3, saturation=0.3,
                        erasing=0.5)
    image = _image()
    torch.manual_seed(3)
    a = [tf(image) for _ in range(4)]
    torch.manual_seed(3)
    b = [tf(image) for _ in range(4)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert all(x.shape == (3, 24, 24) for x in a)
    assert not torch.equal(a[0], a[1])


def test_flip_without_other_augmentation_is_exact():
    image = _image(24, 24)
    tf = TrainTransform(24, scale=None, hflip=1.0, mean=(0, 0, 0), std=(1, 1, 1))
    torch.testing.assert_close(tf(image), image.flip(-1))


def test_rotation_moves_a_point_by_the_angle():
    image = torch.zeros(3, 33, 33)
    image[:, 16, 28] = 1  # 12 px right of the centre
    tf = TrainTransform(33, scale=None, hflip=0.0, rotation=90, mean=(0, 0, 0), std=(1, 1, 1))
    torch.manual_seed(0)
    out = tf(image)[0]
    y, x = divmod(int(out.argmax()), 33)
    angle = math.degrees(math.atan2(y - 16, x - 16))
    assert math.hypot(y - 16, x - 16) == pytest.approx(12, abs=1.5)
    assert -90 <= angle <= 90  # a rotation of at most 90 degrees either way


def test_random_resized_crop_box_respects_scale_and_ratio():
    tf = TrainTransform(16, scale=(0.3, 0.6), ratio=(0.75, 1.33))
    torch.manual_seed(0)
    for _ in range(200):
        top, left, h, w = tf._crop_box(50, 80)
        assert 0 <= top and top + h <= 50 and 0 <= left and left + w <= 80
        assert 0.3 * 0.9 <= h * w / 4000 <= 0.6 * 1.1
        assert 0.7 <= w / h <= 1.4


def test_random_erasing_blanks_a_rectangle():
    tf = TrainTransform(32, scale=None, hflip=0.0, erasing=1.0, mean=(0, 0, 0), std=(1, 1, 1))
    torch.manual_seed(1)
    image = torch.ones(3, 32, 32)
    out = tf(image)
    zero = (out == 0).all(0)
    rows, cols = zero.any(1).nonzero().flatten(), zero.any(0).nonzero().flatten()
    area = int(zero.sum())
    assert 0.02 * 1024 * 0.8 <= area <= 0.33 * 1024 * 1.2
    assert area == len(rows) * len(cols)  # one filled rectangle


def test_depth_transforms_keep_image_and_depth_aligned():
    depth = torch.linspace(0.5, 8, 30 * 40).view(1, 30, 40)
    image = (depth / 8).expand(3, -1, -1).clone()
    tf = depth_train_transform((30, 40), crop=(20, 20), hflip=1.0, mean=(0, 0, 0), std=(1, 1, 1))
    torch.manual_seed(0)
    out_image, out_depth = tf(image, depth)
    assert out_image.shape == (3, 20, 20) and out_depth.shape == (1, 20, 20)
    torch.testing.assert_close(out_image[0] * 8, out_depth[0])
    ev_image, ev_depth = DepthEvalTransform((15, 20), mean=(0, 0, 0), std=(1, 1, 1))(image, depth)
    assert ev_image.shape == (3, 15, 20) and torch.equal(ev_depth, depth)  # truth stays at full resolution
