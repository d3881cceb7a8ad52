"""NYU Depth V2 readers and joint image/depth transforms.

Readers return ``(image, depth)``: image float32 [3, H, W] RGB in [0, 1], depth float32 [1, H, W] in metres
(0 where the sensor gave nothing). Normalise the image for the encoder with :class:`Normalize`.

* :class:`NYUDepthCSV`: the Kaggle / DenseDepth copy, a csv without header of ``rgb path, depth path`` rows.
  Depth PNG encodings: 8-bit train maps (depth_m = value / 255 * 10) and 16-bit test maps in millimetres
  (depth_m = value / 1000); detected from the PNG's bit depth, or forced with ``depth_encoding``.
* :class:`NYUDepthV2Labeled`: the official ``nyu_depth_v2_labeled.mat`` (1449 frames, MATLAB v7.3 = HDF5), through
  the optional ``h5py``; the 795 / 654 split comes from the official ``splits.mat`` (needs ``scipy``).

Transforms take and return the ``(image, depth)`` pair so both stay aligned; they are plain PyTorch (no
torchvision) and draw their randomness from torch's global generator, so ``torch.manual_seed`` reproduces them.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

Sample = tuple[torch.Tensor, torch.Tensor]
Transform = Callable[[torch.Tensor, torch.Tensor], Sample]
DEPTH_ENCODINGS = ("auto", "uint8_10m", "uint16_mm")


def read_rgb(path: str | Path) -> torch.Tensor:
    """An 8-bit RGB image file -> float32 [3, H, W] in [0, 1]. Raises ``OSError`` naming the file if unreadable."""
    try:
        with Image.open(path) as img:
            array = np.asarray(img.convert("RGB"))
    except OSError as exc:
        raise OSError(f"cannot read RGB image {path}: {exc}") from exc
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255.0


def read_depth_png(path: str | Path, encoding: str = "auto") -> torch.Tensor:
    """A NYU depth PNG -> float32 [1, H, W] in metres.

    ``encoding``: ``"uint8_10m"`` (8-bit, value / 255 * 10 m: DenseDepth train maps), ``"uint16_mm"`` (16-bit
    millimetres: the test maps), or ``"auto"``: from the PNG's bit depth. Raises ``OSError`` naming the file if it
    cannot be read and ``ValueError`` naming it if it is not a single-channel map of the expected bit depth.
    """
    if encoding not in DEPTH_ENCODINGS:
        raise ValueError(f"depth encoding must be one of {DEPTH_ENCODINGS}, got {encoding!r}")
    try:
        with Image.open(path) as img:
            mode = img.mode
            array = np.asarray(img)
    except OSError as exc:
        raise OSError(f"cannot read depth map {path}: {exc}") from exc
    # Pillow opens 16-bit greyscale PNGs as "I;16" (sometimes "I", 32-bit); 8-bit ones as "L"
    bits = 8 if mode == "L" else 16 if mode in ("I;16", "I;16B", "I") else None
    if bits is None:
        raise ValueError(f"depth map {path} has PIL mode {mode!r}; expected a single-channel 8- or 16-bit PNG")
    if encoding == "auto":
        encoding = "uint8_10m" if bits == 8 else "uint16_mm"
    expected_bits = 8 if encoding == "uint8_10m" else 16
    if bits != expected_bits:
        raise ValueError(f"depth map {path} is {bits}-bit (mode {mode!r}) but encoding {encoding!r} needs "
                         f"{expected_bits}-bit")
    depth = torch.from_numpy(array.astype(np.float32))
    depth = depth / 255.0 * 10.0 if encoding == "uint8_10m" else depth / 1000.0
    return depth[None]


class NYUDepthCSV(Dataset):
    """NYU Depth V2 as the Kaggle / DenseDepth copy: a csv (no header) of ``rgb path, depth path`` per row.

    Args:
        csv_file: e.g. ``data/nyu2_train.csv`` or ``nyu2_test.csv``.
        root: directory the csv paths are relative to; default: the csv's directory. The Kaggle archive's csvs name
            ``data/nyu2_train/...``, so there ``root`` is the folder that holds ``data/``.
        depth_encoding: ``"auto"`` (8-bit -> value / 255 * 10 m, 16-bit -> mm), ``"uint8_10m"`` or ``"uint16_mm"``.
        transform: joint transform applied to ``(image, depth)``.

    Every listed file must exist: a missing one raises ``FileNotFoundError`` at construction, naming it and its row.
    """

    def __init__(self, csv_file: str | Path, root: str | Path | None = None, depth_encoding: str = "auto",
                 transform: Transform | None = None):
        self.csv_file = Path(csv_file)
        self.root = Path(root) if root is not None else self.csv_file.parent
        if depth_encoding not in DEPTH_ENCODINGS:
            raise ValueError(f"depth_encoding must be one of {DEPTH_ENCODINGS}, got {depth_encoding!r}")
        self.depth_encoding = depth_encoding
        self.transform = transform
        self.samples: list[tuple[Path, Path]] = []
        with open(self.csv_file, newline="") as f:
            for row_number, row in enumerate(csv.reader(f), start=1):
                if not row or not "".join(row).strip():
                    continue
                if len(row) != 2:
                    raise ValueError(f"{self.csv_file} row {row_number}: expected 'rgb path, depth path', got {row}")
                pair = tuple(self.root / p.strip() for p in row)
                for path in pair:
                    if not path.is_file():
                        raise FileNotFoundError(f"{self.csv_file} row {row_number}: file {path} does not exist")
                self.samples.append(pair)
        if not self.samples:
            raise ValueError(f"{self.csv_file} lists no image pairs")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Sample:
        rgb_path, depth_path = self.samples[index]
        image, depth = read_rgb(rgb_path), read_depth_png(depth_path, self.depth_encoding)
        if image.shape[-2:] != depth.shape[-2:]:
            raise ValueError(f"{rgb_path} is {tuple(image.shape[-2:])} but {depth_path} is {tuple(depth.shape[-2:])}")
        return self.transform(image, depth) if self.transform is not None else (image, depth)


class NYUDepthV2Labeled(Dataset):
    """The official labelled NYU Depth V2 (``nyu_depth_v2_labeled.mat``, 1449 frames of 480x640).

    Args:
        mat_file: path to ``nyu_depth_v2_labeled.mat`` (HDF5; read lazily with h5py, one frame per item).
        split: ``"all"`` (1449), ``"train"`` (795) or ``"test"`` (654, the standard test set).
        splits_file: the official ``splits.mat`` (``trainNdxs``, ``testNdxs``, 1-based); needed for train/test and
            read with scipy. Without scipy, use ``split="all"`` and ``torch.utils.data.Subset`` with the indices.
        transform: joint transform applied to ``(image, depth)``.

    In the file, MATLAB's column-major arrays appear transposed: ``images`` [N, 3, 640, 480] uint8 and ``depths``
    [N, 640, 480] float32 metres; items are returned as [3, 480, 640] and [1, 480, 640].
    """

    def __init__(self, mat_file: str | Path, split: str = "all", splits_file: str | Path | None = None,
                 transform: Transform | None = None):
        try:
            import h5py
        except ImportError as exc:
            raise ImportError("reading nyu_depth_v2_labeled.mat needs h5py: pip install h5py") from exc
        self.mat_file = Path(mat_file)
        if not self.mat_file.is_file():
            raise FileNotFoundError(f"NYU labelled file {self.mat_file} does not exist")
        try:
            with h5py.File(self.mat_file, "r") as f:
                for key in ("images", "depths"):
                    if key not in f:
                        raise KeyError(f"{self.mat_file} has no dataset {key!r} (found: {sorted(f.keys())})")
                count = f["images"].shape[0]
                if f["images"].shape[1] != 3 or f["depths"].shape != (count,) + f["images"].shape[2:]:
                    raise ValueError(f"{self.mat_file}: images {f['images'].shape} and depths {f['depths'].shape} "
                                     "do not match the [N, 3, W, H] / [N, W, H] layout")
        except OSError as exc:
            raise OSError(f"cannot read {self.mat_file} as HDF5 (MATLAB v7.3): {exc}") from exc
        self.indices = self._split_indices(split, splits_file, count)
        self.transform = transform
        self._file = None  # opened on first access, in each DataLoader worker

    @staticmethod
    def _split_indices(split: str, splits_file: str | Path | None, count: int) -> list[int]:
        if split == "all":
            return list(range(count))
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'all', 'train' or 'test', got {split!r}")
        if splits_file is None:
            raise ValueError(f"split={split!r} needs splits_file (the official splits.mat)")
        try:
            from scipy.io import loadmat
        except ImportError as exc:
            raise ImportError("reading splits.mat needs scipy (pip install scipy); or use split='all' with "
                              "torch.utils.data.Subset") from exc
        key = "trainNdxs" if split == "train" else "testNdxs"
        splits = loadmat(str(splits_file))
        if key not in splits:
            raise KeyError(f"{splits_file} has no {key!r}")
        indices = [int(i) - 1 for i in np.asarray(splits[key]).ravel()]  # MATLAB indices are 1-based
        if not all(0 <= i < count for i in indices):
            raise ValueError(f"{splits_file} {key} holds indices outside 1..{count}")
        return indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Sample:
        if self._file is None:
            import h5py
            self._file = h5py.File(self.mat_file, "r")
        i = self.indices[index]
        image = torch.from_numpy(self._file["images"][i].transpose(0, 2, 1).copy()).float() / 255.0
        depth = torch.from_numpy(self._file["depths"][i].T.copy()).float()[None]
        return self.transform(image, depth) if self.transform is not None else (image, depth)

    def __getstate__(self) -> dict:
        # h5py handles cannot be pickled into DataLoader workers; each worker reopens the file
        return {**self.__dict__, "_file": None}


class Compose:
    """Apply joint transforms in order."""

    def __init__(self, transforms: Sequence[Transform]):
        self.transforms = list(transforms)

    def __call__(self, image: torch.Tensor, depth: torch.Tensor) -> Sample:
        for t in self.transforms:
            image, depth = t(image, depth)
        return image, depth


def _check_pair(image: torch.Tensor, depth: torch.Tensor) -> None:
    if image.ndim != 3 or depth.ndim != 3 or image.shape[-2:] != depth.shape[-2:]:
        raise ValueError(f"expected image [C, H, W] and depth [1, H, W] of the same size, got {tuple(image.shape)} "
                         f"and {tuple(depth.shape)}")


def _crop_room(image: torch.Tensor, depth: torch.Tensor, size: tuple[int, int], name: str):
    """Check an image/depth pair and that a ``size`` window fits; return ((H, W), (crop H, crop W))."""
    _check_pair(image, depth)
    (h, w), (th, tw) = image.shape[-2:], size
    if th > h or tw > w:
        raise ValueError(f"{name} size {size} exceeds the image size {(h, w)}")
    return (h, w), (th, tw)


class RandomCrop:
    """Crop the same random (height, width) window from image and depth."""

    def __init__(self, size: tuple[int, int]):
        self.size = tuple(size)

    def __call__(self, image: torch.Tensor, depth: torch.Tensor) -> Sample:
        (h, w), (th, tw) = _crop_room(image, depth, self.size, "RandomCrop")
        top = int(torch.randint(0, h - th + 1, ()))
        left = int(torch.randint(0, w - tw + 1, ()))
        return image[:, top:top + th, left:left + tw], depth[:, top:top + th, left:left + tw]


class CenterCrop:
    """Crop the central (height, width) window from image and depth."""

    def __init__(self, size: tuple[int, int]):
        self.size = tuple(size)

    def __call__(self, image: torch.Tensor, depth: torch.Tensor) -> Sample:
        (h, w), (th, tw) = _crop_room(image, depth, self.size, "CenterCrop")
        top, left = (h - th) // 2, (w - tw) // 2
        return image[:, top:top + th, left:left + tw], depth[:, top:top + th, left:left + tw]


class RandomHorizontalFlip:
    """Mirror image and depth together with probability ``p``."""

    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, image: torch.Tensor, depth: torch.Tensor) -> Sample:
        _check_pair(image, depth)
        if float(torch.rand(())) < self.p:
            return image.flip(-1), depth.flip(-1)
        return image, depth


class Resize:
    """Resize to (height, width): image bilinear (antialiased when shrinking), depth nearest.

    Depth must not be interpolated: blending across an object edge invents depths that exist nowhere in the scene,
    and blending with invalid zeros invents near depths. "nearest-exact" samples pixel centres, the same grid as the
    image's bilinear resize, so the two stay aligned.
    """

    def __init__(self, size: tuple[int, int]):
        self.size = tuple(size)

    def __call__(self, image: torch.Tensor, depth: torch.Tensor) -> Sample:
        _check_pair(image, depth)
        image = F.interpolate(image[None], size=self.size, mode="bilinear", align_corners=False, antialias=True)[0]
        depth = F.interpolate(depth[None], size=self.size, mode="nearest-exact")[0]
        return image, depth


class ColorJitter:
    """Random brightness, contrast and saturation on the image only (depth unchanged).

    Each factor is drawn uniformly from [1 - x, 1 + x] and applied in that order, as torchvision does:
    brightness scales the image, contrast blends with its mean grey level, saturation with its greyscale version.
    Expects RGB in [0, 1] (before :class:`Normalize`).
    """

    def __init__(self, brightness: float = 0.0, contrast: float = 0.0, saturation: float = 0.0):
        for name, value in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
            if not 0 <= value < 1:
                raise ValueError(f"ColorJitter {name} must be in [0, 1), got {value}")
        self.brightness, self.contrast, self.saturation = brightness, contrast, saturation

    @staticmethod
    def _factor(amount: float) -> float:
        return 1.0 + (2 * float(torch.rand(())) - 1) * amount

    @staticmethod
    def _grey(image: torch.Tensor) -> torch.Tensor:
        r, g, b = image.unbind(0)
        return (0.299 * r + 0.587 * g + 0.114 * b)[None]  # ITU-R 601 luma, as PIL and torchvision

    def __call__(self, image: torch.Tensor, depth: torch.Tensor) -> Sample:
        _check_pair(image, depth)
        if image.shape[0] != 3:
            raise ValueError(f"ColorJitter needs an RGB image [3, H, W], got {tuple(image.shape)}")
        if self.brightness:
            image = (image * self._factor(self.brightness)).clamp(0, 1)
        if self.contrast:
            mean = self._grey(image).mean()
            image = torch.lerp(mean, image, self._factor(self.contrast)).clamp(0, 1)
        if self.saturation:
            image = torch.lerp(self._grey(image), image, self._factor(self.saturation)).clamp(0, 1)
        return image, depth


class Normalize:
    """(image - mean) / std per channel on the image only; defaults: ImageNet statistics on the [0, 1] scale."""

    def __init__(self, mean: Sequence[float] = (0.485, 0.456, 0.406), std: Sequence[float] = (0.229, 0.224, 0.225)):
        if any(s <= 0 for s in std) or len(mean) != len(std):
            raise ValueError(f"Normalize needs positive std of the same length as mean, got {mean}, {std}")
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)

    def __call__(self, image: torch.Tensor, depth: torch.Tensor) -> Sample:
        _check_pair(image, depth)
        return (image - self.mean) / self.std, depth
