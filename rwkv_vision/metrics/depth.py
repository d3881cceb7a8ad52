"""Monocular depth metrics with the NYU Depth V2 evaluation protocol.

Protocol (BTS / AdaBins / monodepth2 code, per image):
  1. valid = target > min_depth and target < max_depth (and finite), inside the Eigen crop when ``eigen_crop``:
     rows 45:471, cols 41:601 of a 480x640 map; for another size the box is scaled to it, each bound rounded to the
     nearest pixel, halves up (rows 23:236, cols 21:301 at 240x320).
  2. with ``median_scaling`` (relative-depth models only): pred *= median(target[valid]) / median(pred[valid]),
     the prediction being clamped first so the ratio is finite;
  3. pred is clamped to [min_depth, max_depth];
  4. the metrics below are computed over the valid pixels of the image, then averaged over images.

  d_k      = mean(max(p/g, g/p) < 1.25^k), k = 1, 2, 3
  abs_rel  = mean(|p - g| / g)            sq_rel = mean((p - g)^2 / g)
  rmse     = sqrt(mean((p - g)^2))        rmse_log = sqrt(mean((ln p - ln g)^2))
  log10    = mean(|log10 p - log10 g|)    silog = 100 sqrt(mean(e^2) - mean(e)^2), e = ln p - ln g
  ssim     = mean over valid pixels of the SSIM map of (p, g): Gaussian window 11, sigma 1.5, data range max_depth,
             edge-replicated borders; invalid target pixels take the prediction's value so they create no false edge.

Depths are in metres. An image with no valid pixel (all-invalid ground truth, or nothing inside the crop) has no
defined metric: it is skipped, counted in ``skipped``, and never produces a NaN. ``compute()`` raises if no image at
all could be scored.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

METRIC_NAMES = ("d1", "d2", "d3", "abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog", "ssim")
_EIGEN_CROP_480x640 = (45, 471, 41, 601)  # top, bottom, left, right


def eigen_crop_box(height: int, width: int) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the Eigen crop, scaled from 480x640 to ``height`` x ``width``."""
    top, bottom, left, right = _EIGEN_CROP_480x640
    return (math.floor(top * height / 480 + 0.5), math.floor(bottom * height / 480 + 0.5),
            math.floor(left * width / 640 + 0.5), math.floor(right * width / 640 + 0.5))


def valid_mask(target: torch.Tensor, min_depth: float = 1e-3, max_depth: float = 10.0,
               eigen_crop: bool = False) -> torch.Tensor:
    """Boolean mask of evaluable ground truth, same shape as ``target`` [..., H, W] (depth in metres)."""
    mask = torch.isfinite(target) & (target > min_depth) & (target < max_depth)
    if eigen_crop:
        top, bottom, left, right = eigen_crop_box(*target.shape[-2:])
        box = torch.zeros_like(mask)
        box[..., top:bottom, left:right] = True
        mask &= box
    return mask


def _gaussian_window(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    coords = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-coords ** 2 / (2 * sigma ** 2))
    return g / g.sum()


def ssim_map(x: torch.Tensor, y: torch.Tensor, data_range: float, window_size: int = 11,
             sigma: float = 1.5) -> torch.Tensor:
    """Per-pixel SSIM (Wang et al. 2004) of x, y [B, 1, H, W] -> [B, 1, H, W].

    Gaussian window, C1 = (0.01 L)^2, C2 = (0.03 L)^2 with L = ``data_range``, borders replicated so the
    map has the input's size (any H, W >= 1).
    """
    if x.shape != y.shape or x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"ssim_map expects two [B, 1, H, W] maps of the same shape, got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    g = _gaussian_window(window_size, sigma, x.dtype, x.device)
    window = torch.outer(g, g).expand(5, 1, window_size, window_size)
    pad = window_size // 2
    # (co)variances are shift-invariant: centring on a common per-image offset avoids the float32 cancellation of
    # E[x^2] - E[x]^2 at depths of several metres; the offset is added back for the luminance term
    offset = (x.mean(dim=(1, 2, 3), keepdim=True) + y.mean(dim=(1, 2, 3), keepdim=True)) / 2
    x, y = x - offset, y - offset
    # the five local moments in one grouped convolution, channels-last: on CPU about 10x faster than five
    # 1-channel NCHW convolutions
    stats = F.pad(torch.cat([x, y, x * x, y * y, x * y], dim=1), (pad, pad, pad, pad), mode="replicate")
    stats = stats.contiguous(memory_format=torch.channels_last)
    mu_x, mu_y, xx, yy, xy = F.conv2d(stats, window, groups=5).split(1, dim=1)
    var_x, var_y, cov = xx - mu_x ** 2, yy - mu_y ** 2, xy - mu_x * mu_y
    mu_x, mu_y = mu_x + offset, mu_y + offset
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    return ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))


def _median(x: torch.Tensor) -> torch.Tensor:
    """Median of a 1-D tensor, the mean of the two middle values for an even count (as numpy)."""
    s = x.sort().values
    n = s.numel()
    return (s[(n - 1) // 2] + s[n // 2]) / 2


def _as_maps(t: torch.Tensor, name: str) -> torch.Tensor:
    """[H, W], [B, H, W] or [B, 1, H, W] -> [B, H, W]."""
    if t.ndim == 2:
        return t[None]
    if t.ndim == 3:
        return t
    if t.ndim == 4 and t.shape[1] == 1:
        return t[:, 0]
    raise ValueError(f"{name} must be [H, W], [B, H, W] or [B, 1, H, W], got shape {tuple(t.shape)}")


class DepthMetrics:
    """Accumulates the NYU-protocol metrics over batches (see the module docstring for the protocol).

    Args:
        min_depth, max_depth: evaluation range in metres (NYU: 1e-3, 10).
        eigen_crop: evaluate inside the Eigen crop, scaled to the map size.
        median_scaling: per-image median scaling (for relative-depth models; not for metric models).
        ssim: also compute SSIM (costs a few convolutions per image).

    ``update(pred, target)`` takes depth maps in metres, [H, W], [B, H, W] or [B, 1, H, W], same shape.
    ``compute()`` returns each metric averaged over scored images, plus ``images`` (scored) and ``skipped``.
    """

    def __init__(self, min_depth: float = 1e-3, max_depth: float = 10.0, eigen_crop: bool = True,
                 median_scaling: bool = False, ssim: bool = True):
        self.min_depth = min_depth
        self.max_depth = max_depth
        self.eigen_crop = eigen_crop
        self.median_scaling = median_scaling
        self.ssim = ssim
        self.reset()

    def reset(self) -> None:
        self._sums = dict.fromkeys(self.names, 0.0)
        self.images = 0
        self.skipped = 0

    @property
    def names(self) -> tuple[str, ...]:
        return METRIC_NAMES if self.ssim else METRIC_NAMES[:-1]

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        pred, target = _as_maps(pred, "pred"), _as_maps(target, "target")
        if pred.shape != target.shape:
            raise ValueError(f"pred shape {tuple(pred.shape)} differs from target shape {tuple(target.shape)}; "
                             "resize the prediction to the ground truth first")
        mask = valid_mask(target, self.min_depth, self.max_depth)
        if self.eigen_crop:  # cut to the box: less work, and SSIM windows must not see the border the crop removes
            top, bottom, left, right = eigen_crop_box(*target.shape[-2:])
            pred, target, mask = (t[:, top:bottom, left:right] for t in (pred, target, mask))
        scored = mask.flatten(1).any(1)
        self.skipped += int((~scored).sum())
        if scored.any():
            for name, values in self._image_metrics(pred[scored], target[scored], mask[scored]).items():
                self._sums[name] += values.double().sum().item()
            self.images += int(scored.sum())

    def _image_metrics(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-image metrics [B] of maps [B, H, W] whose masks are not empty.

        Runs in the input precision, at least float32 (torch's CPU sums are cascaded, accurate to ~1e-7 over a
        480x640 map, far below the 3 decimals the metrics are reported with). Masked sums over the whole batch
        replace per-image boolean indexing, which is the slow part on CPU.
        """
        dtype = torch.promote_types(pred.dtype, torch.float32)
        count = mask.sum(dim=(-2, -1)).to(dtype)
        g = torch.where(mask, target.to(dtype), 1.0)  # invalid pixels: any finite value, masked out of every mean
        p = pred.to(dtype).clamp(self.min_depth, self.max_depth)
        if self.median_scaling:
            scale = torch.stack([_median(gi[mi]) / _median(pi[mi]) for pi, gi, mi in zip(p, g, mask)])
            p = (p * scale.view(-1, 1, 1)).clamp(self.min_depth, self.max_depth)

        def mean(t: torch.Tensor) -> torch.Tensor:
            return torch.where(mask, t, 0).sum(dim=(-2, -1)) / count

        ratio = torch.maximum(p / g, g / p)
        diff = p - g
        e = p.log() - g.log()
        mean_e, mean_e2 = mean(e), mean(e * e)
        out = {
            "d1": mean((ratio < 1.25).to(dtype)),
            "d2": mean((ratio < 1.25 ** 2).to(dtype)),
            "d3": mean((ratio < 1.25 ** 3).to(dtype)),
            "abs_rel": mean(diff.abs() / g),
            "sq_rel": mean(diff * diff / g),
            "rmse": mean(diff * diff).sqrt(),
            "rmse_log": mean_e2.sqrt(),
            "log10": mean(e.abs()) / math.log(10),
            # clamp: the variance can round to a tiny negative number when e is constant
            "silog": 100 * (mean_e2 - mean_e ** 2).clamp_min(0).sqrt(),
        }
        if self.ssim:
            # invalid target pixels take the prediction's value so they create no false edge; float32 suffices
            # (ssim_map centres the data) and is several times faster than float64
            filled = torch.where(mask, g, p)
            out["ssim"] = mean(ssim_map(p[:, None].float(), filled[:, None].float(), self.max_depth)[:, 0].to(dtype))
        return out

    def compute(self) -> dict[str, float]:
        if self.images == 0:
            where = " inside the Eigen crop" if self.eigen_crop else ""
            raise ValueError(f"no image with valid ground truth to score ({self.skipped} skipped: no target pixel in "
                             f"({self.min_depth}, {self.max_depth}) m{where})")
        result = {name: total / self.images for name, total in self._sums.items()}
        result["images"] = self.images
        result["skipped"] = self.skipped
        return result


def depth_metrics(pred: torch.Tensor, target: torch.Tensor, **protocol) -> dict[str, float]:
    """The metrics of one batch: ``DepthMetrics(**protocol)`` updated with (pred, target), then computed."""
    metrics = DepthMetrics(**protocol)
    metrics.update(pred, target)
    return metrics.compute()
