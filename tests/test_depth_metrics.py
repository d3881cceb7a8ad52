"""Depth metrics against hand-computed values: protocol (clamp, valid mask, Eigen crop, per-image mean), SSIM."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rwkv_vision.metrics import METRIC_NAMES, DepthMetrics, depth_metrics, eigen_crop_box, ssim_map, valid_mask

NO_CROP = {"eigen_crop": False, "ssim": False}


def _by_hand(pairs: list[tuple[float, float]]) -> dict[str, float]:
    """The metric definitions (REFERENCE section 5) written out over (pred, gt) pairs in plain Python."""
    n = len(pairs)
    ratios = [max(p / g, g / p) for p, g in pairs]
    e = [math.log(p) - math.log(g) for p, g in pairs]
    return {
        "d1": sum(r < 1.25 for r in ratios) / n,
        "d2": sum(r < 1.25 ** 2 for r in ratios) / n,
        "d3": sum(r < 1.25 ** 3 for r in ratios) / n,
        "abs_rel": sum(abs(p - g) / g for p, g in pairs) / n,
        "sq_rel": sum((p - g) ** 2 / g for p, g in pairs) / n,
        "rmse": math.sqrt(sum((p - g) ** 2 for p, g in pairs) / n),
        "rmse_log": math.sqrt(sum(x * x for x in e) / n),
        "log10": sum(abs(math.log10(p) - math.log10(g)) for p, g in pairs) / n,
        "silog": 100 * math.sqrt(sum(x * x for x in e) / n - (sum(e) / n) ** 2),
    }


def test_small_map_with_invalid_pixels_and_clamping():
    # gt 0 and 12 m are invalid (outside (1e-3, 10)); pred 15 m is clamped to 10, pred 0 to 1e-3
    gt = torch.tensor([[1.0, 2.0, 4.0], [0.0, 12.0, 5.0]])
    pred = torch.tensor([[1.0, 1.0, 5.0], [3.0, 3.0, 15.0]])
    got = depth_metrics(pred, gt, **NO_CROP)
    want = _by_hand([(1.0, 1.0), (1.0, 2.0), (5.0, 4.0), (10.0, 5.0)])
    # spot-check the hand formulas themselves on this case: ratios 1, 2, 1.25, 2
    assert want["d1"] == 0.25 and want["d2"] == 0.5 and want["d3"] == 0.5
    assert want["abs_rel"] == pytest.approx((0 + 0.5 + 0.25 + 1.0) / 4)
    for name in METRIC_NAMES[:-1]:
        assert got[name] == pytest.approx(want[name], rel=1e-6), name
    assert got["images"] == 1 and got["skipped"] == 0 and "ssim" not in got


def test_prediction_below_min_depth_is_clamped():
    got = depth_metrics(torch.tensor([[0.0, -1.0]]), torch.tensor([[1.0, 2.0]]), **NO_CROP)
    assert got["abs_rel"] == pytest.approx(_by_hand([(1e-3, 1.0), (1e-3, 2.0)])["abs_rel"])
    assert all(math.isfinite(got[name]) for name in METRIC_NAMES[:-1])


def test_metrics_are_per_image_then_averaged():
    gt = torch.tensor([[[1.0, 1.0]], [[2.0, 4.0]]])  # [B=2, H=1, W=2]
    pred = torch.tensor([[[2.0, 2.0]], [[2.0, 4.0]]])
    got = depth_metrics(pred, gt, **NO_CROP)
    first, second = _by_hand([(2.0, 1.0), (2.0, 1.0)]), _by_hand([(2.0, 2.0), (4.0, 4.0)])
    for name in ("abs_rel", "rmse", "rmse_log", "d1"):
        assert got[name] == pytest.approx((first[name] + second[name]) / 2), name
    # pooled pixels would give rmse sqrt(2/4), not the mean of per-image rmses (1 + 0) / 2
    assert got["rmse"] == pytest.approx(0.5)


def test_all_invalid_image_is_skipped_not_nan():
    gt = torch.stack([torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, float("nan")]])])
    pred = torch.ones(2, 1, 2)
    got = depth_metrics(pred, gt, **NO_CROP)
    alone = depth_metrics(pred[:1], gt[:1], **NO_CROP)
    assert got["images"] == 1 and got["skipped"] == 1
    for name in METRIC_NAMES[:-1]:
        assert got[name] == pytest.approx(alone[name], rel=1e-6) and math.isfinite(got[name])
    with pytest.raises(ValueError, match="no image with valid ground truth"):
        depth_metrics(pred[1:], gt[1:], **NO_CROP)


def test_eigen_crop_box_is_the_standard_one_and_scales():
    assert eigen_crop_box(480, 640) == (45, 471, 41, 601)
    assert eigen_crop_box(240, 320) == (23, 236, 21, 301)  # 22.5, 235.5, 20.5, 300.5 rounded half up
    mask = valid_mask(torch.ones(480, 640), eigen_crop=True)
    assert mask.sum() == (471 - 45) * (601 - 41)
    assert mask[45, 41] and mask[470, 600] and not mask[44, 41] and not mask[45, 40] and not mask[471, 600]


@pytest.mark.parametrize("size", [(480, 640), (240, 320)])
def test_eigen_crop_excludes_the_border(size):
    h, w = size
    top, bottom, left, right = eigen_crop_box(h, w)
    gt = torch.full((h, w), 3.0)
    pred = gt.clone()
    pred[:top] = 9.0  # wrong everywhere outside the crop
    pred[bottom:] = 9.0
    pred[:, :left] = 9.0
    pred[:, right:] = 9.0
    cropped = depth_metrics(pred, gt, eigen_crop=True)
    assert cropped["abs_rel"] == 0.0 and cropped["d1"] == 1.0 and cropped["ssim"] == pytest.approx(1.0)
    full = depth_metrics(pred, gt, eigen_crop=False, ssim=False)
    wrong = 1 - (bottom - top) * (right - left) / (h * w)
    assert full["abs_rel"] == pytest.approx(wrong * 2.0)  # |9 - 3| / 3 on the border fraction
    # one wrong pixel just inside the crop is counted
    pred = gt.clone()
    pred[top, left] = 6.0
    assert depth_metrics(pred, gt, eigen_crop=True)["abs_rel"] == pytest.approx(1 / ((bottom - top) * (right - left)))


def test_median_scaling_removes_a_global_scale():
    torch.manual_seed(0)
    gt = torch.rand(2, 1, 48, 64) * 5 + 1
    scaled = depth_metrics(gt * 0.37, gt, median_scaling=True)
    # float32 rounding of gt * 0.37 leaves ~1e-8
    assert scaled["abs_rel"] == pytest.approx(0.0, abs=1e-6) and scaled["ssim"] == pytest.approx(1.0)
    assert depth_metrics(gt * 0.37, gt)["abs_rel"] == pytest.approx(0.63, abs=1e-6)


def test_median_is_numpy_median_for_even_counts():
    gt = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    pred = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    # ratio = median(gt) / median(pred) = 2.5, so pred becomes 2.5 everywhere
    got = depth_metrics(pred, gt, median_scaling=True, **NO_CROP)
    assert got["abs_rel"] == pytest.approx(_by_hand([(2.5, g) for g in (1.0, 2.0, 3.0, 4.0)])["abs_rel"])


def test_accumulating_batches_equals_one_call():
    torch.manual_seed(1)
    gt = torch.rand(4, 1, 48, 64) * 8 + 0.5
    pred = gt * (1 + 0.3 * torch.randn_like(gt)).clamp_min(0.1)
    metrics = DepthMetrics()
    metrics.update(pred[:1], gt[:1])
    metrics.update(pred[1:], gt[1:])
    once = depth_metrics(pred, gt)
    accumulated = metrics.compute()
    for name in METRIC_NAMES:
        assert accumulated[name] == pytest.approx(once[name], rel=1e-6)
    metrics.reset()
    with pytest.raises(ValueError):
        metrics.compute()


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match=r"pred shape \(1, 24, 32\) differs from target shape \(1, 48, 64\)"):
        depth_metrics(torch.ones(1, 1, 24, 32), torch.ones(1, 1, 48, 64))
    with pytest.raises(ValueError, match=r"pred must be \[H, W\], \[B, H, W\] or \[B, 1, H, W\]"):
        depth_metrics(torch.ones(1, 2, 4, 4), torch.ones(1, 2, 4, 4))


def _ssim_reference(x: np.ndarray, y: np.ndarray, data_range: float, size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """SSIM map by explicit loops over windows, edge-replicated borders."""
    r = size // 2
    coords = np.arange(size) - r
    g = np.exp(-coords ** 2 / (2 * sigma ** 2))
    window = np.outer(g, g) / np.outer(g, g).sum()
    xp, yp = np.pad(x, r, mode="edge"), np.pad(y, r, mode="edge")
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    out = np.zeros_like(x)
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            a, b = xp[i:i + size, j:j + size], yp[i:i + size, j:j + size]
            mx, my = (window * a).sum(), (window * b).sum()
            vx, vy = (window * (a - mx) ** 2).sum(), (window * (b - my) ** 2).sum()
            cov = (window * (a - mx) * (b - my)).sum()
            out[i, j] = (2 * mx * my + c1) * (2 * cov + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    return out


def test_ssim_map_against_a_loop_reference():
    rng = np.random.default_rng(0)
    x = rng.uniform(0.5, 10, (13, 17))
    y = x + rng.normal(0, 1.0, x.shape)
    got = ssim_map(torch.from_numpy(x)[None, None], torch.from_numpy(y)[None, None], data_range=10.0)[0, 0].numpy()
    np.testing.assert_allclose(got, _ssim_reference(x, y, 10.0), rtol=1e-9, atol=1e-9)
    assert 0.2 < got.mean() < 0.99


def test_ssim_of_constant_maps_has_the_closed_form():
    a, b, L = 2.0, 3.0, 10.0
    s = ssim_map(torch.full((1, 1, 8, 8), a), torch.full((1, 1, 8, 8), b), data_range=L)
    c1 = (0.01 * L) ** 2
    torch.testing.assert_close(s, torch.full_like(s, (2 * a * b + c1) / (a * a + b * b + c1)))


def test_ssim_metric_averages_the_map_over_valid_pixels():
    rng = np.random.default_rng(1)
    gt = rng.uniform(1, 9, (20, 24))
    pred = gt + rng.normal(0, 0.5, gt.shape)
    gt[3:6, 4:9] = 0.0  # invalid: filled with the prediction before SSIM
    filled = np.where(gt > 1e-3, gt, np.clip(pred, 1e-3, 10))
    ref = _ssim_reference(np.clip(pred, 1e-3, 10), filled, 10.0)[gt > 1e-3].mean()
    got = depth_metrics(torch.from_numpy(pred), torch.from_numpy(gt), eigen_crop=False)["ssim"]
    assert got == pytest.approx(ref, rel=1e-5)
