"""Image transforms in plain PyTorch (no torchvision): deterministic evaluation preprocessing from a model's
pretrained config, training augmentation for classification, and image/depth pipelines for depth.

Images are float32 tensors [C, H, W] with values in [0, 1] until normalisation (:func:`to_tensor` converts PIL
images and uint8 arrays). Random transforms draw from torch's global generator, so ``torch.manual_seed`` reproduces
them and a training checkpoint's RNG state resumes them exactly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from . import nyu
from .fer import pil_to_tensor

__all__ = ["EvalTransform", "TrainTransform", "DepthEvalTransform", "center_crop", "depth_train_transform",
           "eval_transform", "resize", "to_tensor"]

INTERPOLATIONS = ("nearest", "bilinear", "bicubic")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _size2(size: int | Sequence[int]) -> tuple[int, int]:
    return (int(size), int(size)) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))


def to_tensor(image) -> torch.Tensor:
    """PIL image, uint8 array [H, W] / [H, W, C], or float tensor [C, H, W] -> float32 [3, H, W] in [0, 1].

    Grey is repeated to RGB, palette and alpha images are converted to RGB (alpha dropped)."""
    if isinstance(image, torch.Tensor):
        if image.ndim != 3 or image.shape[0] not in (1, 3):
            raise ValueError(f"expected an image tensor [1 or 3, H, W]; got shape {tuple(image.shape)}")
        image = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
        return image.expand(3, -1, -1).contiguous()
    if hasattr(image, "convert"):  # PIL
        return pil_to_tensor(image)
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim not in (2, 3):
        raise ValueError(f"expected a uint8 array [H, W] or [H, W, C]; got {array.dtype} {array.shape}")
    array = array[:, :, None] if array.ndim == 2 else array[:, :, :1] if array.shape[2] < 3 else array[:, :, :3]
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0).expand(3, -1, -1).contiguous()


def resize(image: torch.Tensor, size: tuple[int, int], interpolation: str = "bilinear") -> torch.Tensor:
    """[C, H, W] -> [C, size[0], size[1]]; antialiased when shrinking (as PIL), values kept inside the input range."""
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}; got {interpolation!r}")
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    smooth = interpolation != "nearest"
    out = F.interpolate(image[None], size=size, mode=interpolation if smooth else "nearest-exact",
                        align_corners=False if smooth else None, antialias=smooth)[0]
    # bicubic overshoots at edges
    return out.clamp(image.min(), image.max()) if interpolation == "bicubic" else out


def center_crop(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The central size[0] x size[1] window of [C, H, W] (zero-padded first if the image is smaller)."""
    (h, w), (th, tw) = image.shape[-2:], size
    if th > h or tw > w:
        pad_h, pad_w = max(th - h, 0), max(tw - w, 0)
        image = F.pad(image, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        h, w = image.shape[-2:]
    top, left = (h - th) // 2, (w - tw) // 2
    return image[:, top:top + th, left:left + tw]


def _normalise(image: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (image - mean) / std


class EvalTransform:
    """Deterministic preprocessing (timm's evaluation transform): resize, centre crop, normalise.

    The image is resized so that the crop covers ``crop_pct`` of it: square inputs resize the shorter side to
    floor(size / crop_pct) keeping the aspect ratio; others resize to floor(input / crop_pct) on each axis. Then the
    central ``input_size`` window is taken and (x - mean) / std applied per channel.

    Args:
        input_size: (H, W) of the model input, or an int for square.
        crop_pct: fraction of the resized image kept by the crop (1.0: no margin).
        interpolation: "bilinear", "bicubic" or "nearest".
        mean, std: per-channel statistics on the [0, 1] scale.
    Call: image float [3, H, W] in [0, 1] -> [3, input_size[0], input_size[1]] normalised.
    """

    def __init__(self, input_size: int | Sequence[int], crop_pct: float = 1.0, interpolation: str = "bilinear",
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        if not 0 < crop_pct <= 1:
            raise ValueError(f"crop_pct must be in (0, 1]; got {crop_pct}")
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}; got {interpolation!r}")
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ValueError(f"mean and std need one value per channel and std > 0; got {mean}, {std}")
        self.input_size, self.crop_pct, self.interpolation = _size2(input_size), float(crop_pct), interpolation
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    @classmethod
    def from_cfg(cls, cfg: Mapping, **overrides) -> EvalTransform:
        """From a timm-style pretrained config (``input_size`` (C, H, W), ``crop_pct``, ``interpolation``, ``mean``,
        ``std``); keyword overrides win, and missing keys take the defaults of :class:`EvalTransform`."""
        args = {}
        if "input_size" in cfg:
            args["input_size"] = tuple(cfg["input_size"])[-2:]
        for key in ("crop_pct", "interpolation", "mean", "std"):
            if cfg.get(key) is not None:
                args[key] = cfg[key]
        args.update({k: v for k, v in overrides.items() if v is not None})
        if "input_size" not in args:
            raise ValueError("EvalTransform.from_cfg: the config has no input_size and none was given")
        return cls(**args)

    def resize_crop(self, image: torch.Tensor) -> torch.Tensor:
        """The geometric part alone: [C, H, W] -> [C, input_size[0], input_size[1]], not normalised."""
        h, w = self.input_size
        sh, sw = math.floor(h / self.crop_pct), math.floor(w / self.crop_pct)
        if h == w:
            H, W = image.shape[-2:]
            short = min(H, W)
            sh, sw = max(1, round(H * sh / short)), max(1, round(W * sw / short))
        return center_crop(resize(image, (sh, sw), self.interpolation), self.input_size)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return _normalise(self.resize_crop(image), self.mean, self.std)

    def __repr__(self) -> str:
        return (f"EvalTransform(input_size={self.input_size}, crop_pct={self.crop_pct}, "
                f"interpolation={self.interpolation!r}, mean={self.mean.flatten().tolist()}, "
                f"std={self.std.flatten().tolist()})")


def eval_transform(model_or_cfg, **overrides) -> EvalTransform:
    """:class:`EvalTransform` from a model (its ``pretrained_cfg``) or a config mapping; keyword overrides win."""
    cfg = getattr(model_or_cfg, "pretrained_cfg", model_or_cfg)
    if not isinstance(cfg, Mapping):
        raise TypeError(f"eval_transform needs a model with a pretrained_cfg or a mapping; got "
                        f"{type(model_or_cfg).__name__}")
    return EvalTransform.from_cfg(cfg, **overrides)


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand(()))


class TrainTransform:
    """Classification training augmentation, in this order:

    1. random resized crop to ``input_size`` (torchvision's algorithm: area fraction in ``scale``, aspect ratio
       log-uniform in ``ratio``, 10 tries then a centre crop); with ``scale=None`` the evaluation geometry instead
       (resize shorter side, centre crop);
    2. horizontal flip with probability ``hflip``;
    3. rotation by an angle uniform in [-rotation, rotation] degrees about the centre (bilinear, zero fill);
    4. colour jitter: brightness, contrast, saturation factors uniform in [1 - x, 1 + x];
    5. normalisation by ``mean`` / ``std``;
    6. random erasing with probability ``erasing``: a rectangle covering a fraction of the area uniform in
       ``erasing_scale``, aspect log-uniform in 0.3-3.3, set to 0 (the mean colour); torchvision's algorithm.

    Call: image float [3, H, W] in [0, 1] -> [3, input_size[0], input_size[1]] normalised.
    """

    def __init__(self, input_size: int | Sequence[int], scale: Sequence[float] | None = (0.08, 1.0),
                 ratio: Sequence[float] = (3 / 4, 4 / 3), hflip: float = 0.5, rotation: float = 0.0,
                 brightness: float = 0.0, contrast: float = 0.0, saturation: float = 0.0, erasing: float = 0.0,
                 erasing_scale: Sequence[float] = (0.02, 0.33), interpolation: str = "bilinear",
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        if scale is not None and not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"scale must satisfy 0 < min <= max <= 1; got {scale}")
        if not 0 < erasing_scale[0] <= erasing_scale[1] < 1:
            raise ValueError(f"erasing_scale must satisfy 0 < min <= max < 1; got {erasing_scale}")
        if not 0 < ratio[0] <= ratio[1]:
            raise ValueError(f"ratio must satisfy 0 < min <= max; got {ratio}")
        for name, p in (("hflip", hflip), ("erasing", erasing)):
            if not 0 <= p <= 1:
                raise ValueError(f"{name} is a probability in [0, 1]; got {p}")
        for name, x in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
            if not 0 <= x < 1:
                raise ValueError(f"{name} must be in [0, 1); got {x}")
        self.geometry = EvalTransform(input_size, 1.0, interpolation, mean, std)
        self.input_size, self.interpolation = self.geometry.input_size, interpolation
        self.scale = tuple(scale) if scale is not None else None
        self.log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
        self.hflip, self.rotation, self.erasing = hflip, float(rotation), erasing
        self.erasing_scale = tuple(erasing_scale)
        self.brightness, self.contrast, self.saturation = brightness, contrast, saturation

    def _crop_box(self, H: int, W: int) -> tuple[int, int, int, int]:
        """(top, left, height, width) of a random resized crop."""
        area = H * W
        for _ in range(10):
            target = area * _uniform(*self.scale)
            aspect = math.exp(_uniform(*self.log_ratio))
            w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
            if 0 < w <= W and 0 < h <= H:
                top = int(torch.randint(0, H - h + 1, ()))
                left = int(torch.randint(0, W - w + 1, ()))
                return top, left, h, w
        # fallback: the largest centred crop with the ratio clamped into range
        lo, hi = math.exp(self.log_ratio[0]), math.exp(self.log_ratio[1])
        aspect = W / H
        w, h = (W, round(W / lo)) if aspect < lo else (round(H * hi), H) if aspect > hi else (W, H)
        return (H - h) // 2, (W - w) // 2, h, w

    def _rotate(self, image: torch.Tensor) -> torch.Tensor:
        angle = math.radians(_uniform(-self.rotation, self.rotation))
        H, W = image.shape[-2:]
        c, s = math.cos(angle), math.sin(angle)
        # rotation in pixel units, expressed in the [-1, 1] coordinates of affine_grid (differs when H != W)
        theta = torch.tensor([[c, -s * H / W, 0.0], [s * W / H, c, 0.0]], dtype=image.dtype)[None]
        grid = F.affine_grid(theta, [1, *image.shape], align_corners=False)
        return F.grid_sample(image[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]

    def _jitter(self, image: torch.Tensor) -> torch.Tensor:
        def grey(x: torch.Tensor) -> torch.Tensor:
            return (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])[None]  # ITU-R 601 luma, as PIL

        if self.brightness:
            image = (image * _uniform(1 - self.brightness, 1 + self.brightness)).clamp(0, 1)
        if self.contrast:
            image = torch.lerp(grey(image).mean(), image, _uniform(1 - self.contrast, 1 + self.contrast)).clamp(0, 1)
        if self.saturation:
            image = torch.lerp(grey(image), image, _uniform(1 - self.saturation, 1 + self.saturation)).clamp(0, 1)
        return image

    def _erase(self, image: torch.Tensor) -> torch.Tensor:
        H, W = image.shape[-2:]
        for _ in range(10):
            target = H * W * _uniform(*self.erasing_scale)
            aspect = math.exp(_uniform(math.log(0.3), math.log(1 / 0.3)))
            h, w = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
            if h < H and w < W:
                top = int(torch.randint(0, H - h + 1, ()))
                left = int(torch.randint(0, W - w + 1, ()))
                image = image.clone()
                image[:, top:top + h, left:left + w] = 0
                return image
        return image

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"TrainTransform expects an RGB image [3, H, W]; got shape {tuple(image.shape)}")
        if self.scale is None:
            image = self.geometry.resize_crop(image)
        else:
            top, left, h, w = self._crop_box(*image.shape[-2:])
            image = resize(image[:, top:top + h, left:left + w], self.input_size, self.interpolation)
        if self.hflip and float(torch.rand(())) < self.hflip:
            image = image.flip(-1)
        if self.rotation:
            image = self._rotate(image)
        image = _normalise(self._jitter(image), self.geometry.mean, self.geometry.std)
        if self.erasing and float(torch.rand(())) < self.erasing:
            image = self._erase(image)
        return image


class DepthEvalTransform:
    """Depth evaluation: the image resized to ``input_size`` and normalised; the depth map [1, H, W] kept at its
    own resolution (predictions are resized to it for scoring). Call: (image, depth) -> (image', depth)."""

    def __init__(self, input_size: int | Sequence[int], mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD):
        self.input_size = _size2(input_size)
        self.normalize = nyu.Normalize(mean, std)

    def __call__(self, image: torch.Tensor, depth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        image, _ = self.normalize(image, depth)
        return resize(image, self.input_size, "bilinear"), depth


def depth_train_transform(input_size: int | Sequence[int], crop: int | Sequence[int] | None = None,
                          hflip: float = 0.5, brightness: float = 0.0, contrast: float = 0.0,
                          saturation: float = 0.0, mean: Sequence[float] = IMAGENET_MEAN,
                          std: Sequence[float] = IMAGENET_STD) -> nyu.Compose:
    """Joint image/depth training augmentation: resize both to ``input_size`` (depth nearest), optional random
    ``crop``, horizontal flip, colour jitter on the image, normalisation. Returns a callable
    (image [3, H, W], depth [1, H, W]) -> (image, depth) at the crop (else input) size."""
    steps = [nyu.Resize(_size2(input_size))]
    if crop is not None:
        steps.append(nyu.RandomCrop(_size2(crop)))
    if hflip:
        steps.append(nyu.RandomHorizontalFlip(hflip))
    if brightness or contrast or saturation:
        steps.append(nyu.ColorJitter(brightness, contrast, saturation))
    steps.append(nyu.Normalize(mean, std))
    return nyu.Compose(steps)
