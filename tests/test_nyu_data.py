"""NYU readers (Kaggle/DenseDepth csv, official labelled .mat) and joint transforms; the real test samples."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rwkv_vision.data import (CenterCrop, ColorJitter, Compose, Normalize, NYUDepthCSV, NYUDepthV2Labeled,
                              RandomCrop, RandomHorizontalFlip, Resize, read_depth_png)
from rwkv_vision.metrics import DepthMetrics

SHARED = Path(os.environ.get("RWKV_VISION_SHARED", Path(__file__).resolve().parents[2] / "shared"))
NYU_SAMPLES = SHARED / "data" / "nyu2_test_samples"


# ---------------------------------------------------------------------------------------------- the real samples


@pytest.fixture(scope="module")
def nyu_samples() -> NYUDepthCSV:
    if not (NYU_SAMPLES / "nyu2_test.csv").is_file():
        pytest.skip(f"NYU test samples not found at {NYU_SAMPLES} (set RWKV_VISION_SHARED)")
    return NYUDepthCSV(NYU_SAMPLES / "nyu2_test.csv", root=NYU_SAMPLES / "nyu2_test")


@pytest.fixture(scope="module")
def nyu_depths(nyu_samples) -> torch.Tensor:
    return torch.stack([nyu_samples[i][1] for i in range(len(nyu_samples))])


def test_real_pairs_load_with_plausible_depth(nyu_samples, nyu_depths):
    assert len(nyu_samples) == 50
    image, depth = nyu_samples[0]
    assert image.shape == (3, 480, 640) and image.dtype == torch.float32
    assert 0.0 <= image.min() and image.max() <= 1.0 and image.std() > 0.05
    assert nyu_depths.shape == (50, 1, 480, 640)
    # 16-bit millimetres read as metres: an indoor range, dense (the Kaggle test maps are filled)
    assert 0.5 < nyu_depths.min() < 1.0 and 9.0 < nyu_depths.max() < 10.0
    assert 2.0 < nyu_depths.median() < 3.0
    assert (nyu_depths > 0).all()
    # the 16-bit encoding was detected: forcing the 8-bit one must fail, naming the file
    depth_path = nyu_samples.samples[0][1]
    with pytest.raises(ValueError, match=f"{depth_path.name}.*16-bit"):
        read_depth_png(depth_path, "uint8_10m")


def test_constant_median_predictor_scores(nyu_depths):
    # the median depth of the 50 maps is 2.475 m; predict it everywhere and score with the NYU protocol
    assert nyu_depths.median().item() == pytest.approx(2.475, abs=1e-6)
    metrics = DepthMetrics()
    for batch in nyu_depths.split(10):  # batch by batch, as an evaluation loop would
        metrics.update(torch.full_like(batch, 2.475), batch)
    got = metrics.compute()
    assert got["images"] == 50 and got["skipped"] == 0
    # computed once with this protocol (Eigen crop, clamp, per image then mean); a regression check
    expected = {"d1": 0.354232, "d2": 0.671141, "d3": 0.830142, "abs_rel": 0.385585, "sq_rel": 0.645785,
                "rmse": 1.460603, "rmse_log": 0.458019, "log10": 0.169419, "silog": 34.891031, "ssim": 0.877402}
    for name, value in expected.items():
        assert math.isfinite(got[name])
        assert got[name] == pytest.approx(value, rel=1e-3), name


# ------------------------------------------------------------------------------------------- synthetic files


def _write_png(path: Path, array: np.ndarray) -> Path:
    Image.fromarray(array).save(path)
    return path


def test_depth_png_encodings(tmp_path):
    eight = _write_png(tmp_path / "d8.png", np.array([[0, 128, 255]], dtype=np.uint8))
    sixteen = _write_png(tmp_path / "d16.png", np.array([[0, 1500, 9999]], dtype=np.uint16))
    torch.testing.assert_close(read_depth_png(eight), torch.tensor([[[0.0, 128 / 255 * 10, 10.0]]]))
    torch.testing.assert_close(read_depth_png(sixteen), torch.tensor([[[0.0, 1.5, 9.999]]]))
    torch.testing.assert_close(read_depth_png(sixteen, "uint16_mm"), read_depth_png(sixteen))
    with pytest.raises(ValueError, match=r"d8\.png is 8-bit"):
        read_depth_png(eight, "uint16_mm")
    rgb = _write_png(tmp_path / "rgb.png", np.zeros((2, 2, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"rgb\.png has PIL mode 'RGB'"):
        read_depth_png(rgb)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(OSError, match=r"broken\.png"):
        read_depth_png(broken)


def _csv_dataset(tmp_path: Path, rows: list[str]) -> Path:
    folder = tmp_path / "nyu2_train"
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(2):
        _write_png(folder / f"{i}.jpg", rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
        _write_png(folder / f"{i}.png", rng.integers(1, 256, (12, 16), dtype=np.uint8))
    csv_file = tmp_path / "nyu2_train.csv"
    csv_file.write_text("\n".join(rows) + "\n")
    return csv_file


def test_csv_reader_kaggle_layout(tmp_path):
    # the Kaggle csv names paths from the archive root: data/nyu2_train/...
    csv_file = _csv_dataset(tmp_path, ["nyu2_train/0.jpg,nyu2_train/0.png", "nyu2_train/1.jpg,nyu2_train/1.png"])
    ds = NYUDepthCSV(csv_file, root=tmp_path)
    image, depth = ds[1]
    assert len(ds) == 2 and image.shape == (3, 12, 16) and depth.shape == (1, 12, 16)
    raw = np.asarray(Image.open(tmp_path / "nyu2_train" / "1.png"))
    torch.testing.assert_close(depth[0], torch.from_numpy(raw.astype(np.float32)) / 255 * 10)
    flipped = NYUDepthCSV(csv_file, root=tmp_path, transform=RandomHorizontalFlip(p=1.0))[1]
    torch.testing.assert_close(flipped[1], depth.flip(-1))


def test_csv_row_naming_a_missing_file_fails_at_construction(tmp_path):
    csv_file = _csv_dataset(tmp_path, ["nyu2_train/0.jpg,nyu2_train/0.png", "nyu2_train/1.jpg,nyu2_train/7.png"])
    with pytest.raises(FileNotFoundError, match=r"row 2: file .*nyu2_train/7\.png does not exist"):
        NYUDepthCSV(csv_file, root=tmp_path)
    bad = _csv_dataset(tmp_path, ["nyu2_train/0.jpg"])
    with pytest.raises(ValueError, match="row 1: expected 'rgb path, depth path'"):
        NYUDepthCSV(bad, root=tmp_path)


def test_unreadable_image_fails_naming_it(tmp_path):
    csv_file = _csv_dataset(tmp_path, ["nyu2_train/0.jpg,nyu2_train/0.png"])
    (tmp_path / "nyu2_train" / "0.jpg").write_bytes(b"\x00" * 10)
    with pytest.raises(OSError, match=r"nyu2_train/0\.jpg"):
        NYUDepthCSV(csv_file, root=tmp_path)[0]


def test_labelled_mat_reader_orientation(tmp_path):
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 3, 8, 6), dtype=np.uint8)  # [N, 3, W, H] as MATLAB v7.3 stores it
    depths = rng.uniform(0.5, 9.5, (3, 8, 6)).astype(np.float32)  # [N, W, H]
    mat = tmp_path / "nyu_depth_v2_labeled.mat"
    with h5py.File(mat, "w") as f:
        f["images"] = images
        f["depths"] = depths
    ds = NYUDepthV2Labeled(mat)
    image, depth = ds[2]
    assert len(ds) == 3 and image.shape == (3, 6, 8) and depth.shape == (1, 6, 8)
    # pixel (row y, column x) of channel c is stored at [c, x, y]
    assert image[1, 4, 7] == pytest.approx(images[2, 1, 7, 4] / 255)
    assert depth[0, 4, 7] == depths[2, 7, 4]
    with pytest.raises(ValueError, match="needs splits_file"):
        NYUDepthV2Labeled(mat, split="test")


def test_labelled_mat_split_file(tmp_path):
    h5py = pytest.importorskip("h5py")
    mat = tmp_path / "labelled.mat"
    with h5py.File(mat, "w") as f:
        f["images"] = np.zeros((4, 3, 8, 6), dtype=np.uint8)
        f["depths"] = np.arange(4, dtype=np.float32)[:, None, None] * np.ones((4, 8, 6), dtype=np.float32)
    splits = tmp_path / "splits.mat"
    try:
        from scipy.io import savemat
    except ImportError:
        splits.write_bytes(b"")
        with pytest.raises(ImportError, match="needs scipy"):
            NYUDepthV2Labeled(mat, split="test", splits_file=splits)
        return
    savemat(splits, {"trainNdxs": np.array([[1], [3]]), "testNdxs": np.array([[2], [4]])})
    test = NYUDepthV2Labeled(mat, split="test", splits_file=splits)
    assert [test[i][1][0, 0, 0].item() for i in range(len(test))] == [1.0, 3.0]  # 1-based -> frames 1, 3


def test_labelled_mat_errors_name_the_file(tmp_path):
    pytest.importorskip("h5py")
    with pytest.raises(FileNotFoundError, match="missing.mat"):
        NYUDepthV2Labeled(tmp_path / "missing.mat")
    not_hdf5 = tmp_path / "old.mat"
    not_hdf5.write_bytes(b"MATLAB 5.0 MAT-file" + b"\x00" * 200)
    with pytest.raises(OSError, match=r"old\.mat as HDF5"):
        NYUDepthV2Labeled(not_hdf5)


# ------------------------------------------------------------------------------------------------ transforms


def _aligned_pair(h: int = 24, w: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """An image whose channel 0 encodes the depth, so alignment can be checked after any geometric transform."""
    depth = (torch.arange(h * w, dtype=torch.float32).view(1, h, w) % 97) / 10 + 0.5
    image = torch.cat([depth / 10, torch.rand(2, h, w)])
    return image, depth


def test_geometric_transforms_keep_image_and_depth_aligned():
    torch.manual_seed(0)
    image, depth = _aligned_pair()
    for transform in (RandomCrop((10, 12)), CenterCrop((10, 12)), RandomHorizontalFlip(p=1.0),
                      Compose([RandomCrop((16, 16)), RandomHorizontalFlip(p=0.5)])):
        out_image, out_depth = transform(image, depth)
        assert out_image.shape[-2:] == out_depth.shape[-2:]
        torch.testing.assert_close(out_image[:1] * 10, out_depth)
    with pytest.raises(ValueError, match=r"RandomCrop size \(30, 12\) exceeds the image size \(24, 32\)"):
        RandomCrop((30, 12))(image, depth)


def test_random_transforms_follow_the_torch_seed():
    image, depth = _aligned_pair()
    transform = Compose([RandomCrop((10, 12)), RandomHorizontalFlip(), ColorJitter(0.3, 0.3, 0.3)])
    torch.manual_seed(5)
    first = transform(image, depth)
    torch.manual_seed(5)
    second = transform(image, depth)
    assert all(torch.equal(a, b) for a, b in zip(first, second))


def test_resize_uses_nearest_for_depth():
    image, depth = _aligned_pair()
    out_image, out_depth = Resize((17, 23))(image, depth)
    assert out_image.shape == (3, 17, 23) and out_depth.shape == (1, 17, 23)
    assert set(out_depth.unique().tolist()) <= set(depth.unique().tolist())  # no invented depths
    # nearest-exact: output pixel i samples input floor((i + 0.5) * 24 / 17)
    rows = [int((i + 0.5) * 24 / 17) for i in range(17)]
    cols = [int((j + 0.5) * 32 / 23) for j in range(23)]
    torch.testing.assert_close(out_depth[0], depth[0][rows][:, cols])


def test_color_jitter_changes_the_image_only():
    torch.manual_seed(0)
    image, depth = _aligned_pair()
    out_image, out_depth = ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4)(image, depth)
    assert out_depth is depth
    assert not torch.allclose(out_image, image) and 0 <= out_image.min() and out_image.max() <= 1
    grey = image.mean(0, keepdim=True).expand(3, -1, -1).clone()
    desaturated, _ = ColorJitter(saturation=0.9)(grey, depth)  # a grey image has no saturation to change
    torch.testing.assert_close(desaturated, grey, atol=1e-3, rtol=0)
    with pytest.raises(ValueError, match="brightness must be in"):
        ColorJitter(brightness=1.5)


def test_normalize_image_only():
    image, depth = _aligned_pair()
    out_image, out_depth = Normalize(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))(image, depth)
    torch.testing.assert_close(out_image, (image - 0.5) / 0.25)
    assert out_depth is depth
