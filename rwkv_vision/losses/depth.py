"""Training losses for metric depth, each over the valid pixels of the ground truth only.

All take ``pred`` and ``target`` [B, 1, H, W] in metres and an optional boolean ``mask`` of the same shape; without a
mask the valid pixels are those with a finite target strictly inside (min_depth, max_depth). A batch with no valid
pixel gives a zero loss that is still connected to ``pred`` (zero gradient), never a NaN.

Terms:
  ``SILogLoss``             scale * sqrt(mean(e^2) - lambda mean(e)^2), e = ln p - ln g  (BTS, AdaBins: 10, 0.85)
  ``L1Loss``                mean |p - g|
  ``GradientMatchingLoss``  sum over 4 scales of mean |grad(ln p - ln g)|, the scale-invariant gradient term of
                            MegaDepth (Li & Snavely 2018) / MiDaS's multi-scale form: only pairs of valid neighbours
  ``SSIMLoss``              mean (1 - SSIM) / 2 (DenseDepth form; Gaussian window 11, data range max_depth)
``DepthLoss`` sums them with weights, e.g. ``DepthLoss(silog=1.0, l1=0.1)``.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..metrics.depth import ssim_map, valid_mask


class _MaskedDepthLoss(nn.Module):
    """Shape checks and the default valid mask; subclasses implement ``_loss`` on a non-empty mask."""

    def __init__(self, min_depth: float = 1e-3, max_depth: float = 10.0):
        super().__init__()
        self.min_depth = min_depth
        self.max_depth = max_depth

    def forward(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if pred.shape != target.shape or pred.ndim != 4 or pred.shape[1] != 1:
            raise ValueError(f"{type(self).__name__} expects pred and target [B, 1, H, W] of the same shape, got "
                             f"{tuple(pred.shape)} and {tuple(target.shape)}")
        if mask is None:
            mask = valid_mask(target, self.min_depth, self.max_depth)
        elif mask.shape != target.shape or mask.dtype != torch.bool:
            raise ValueError(f"mask must be a bool tensor of shape {tuple(target.shape)}, got {mask.dtype} "
                             f"{tuple(mask.shape)}")
        if not mask.any():
            return pred.sum() * 0.0
        # invalid targets may hold 0 or NaN: replace them so no NaN reaches the graph even through masked-out terms
        target = torch.where(mask, target, pred.detach())
        return self._loss(pred, target, mask)

    def _log(self, depth: torch.Tensor) -> torch.Tensor:
        # the clamp keeps the log finite for unbounded (identity-head) predictions
        return depth.clamp_min(self.min_depth).log()


class SILogLoss(_MaskedDepthLoss):
    """Scale-invariant log loss over all valid pixels of the batch (BTS / AdaBins form).

    scale * sqrt(mean(e^2) - variance_focus * mean(e)^2), e = ln(pred) - ln(target).
    """

    def __init__(self, variance_focus: float = 0.85, scale: float = 10.0, **kwargs):
        super().__init__(**kwargs)
        self.variance_focus = variance_focus
        self.scale = scale

    def _loss(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        e = self._log(pred[mask]) - self._log(target[mask])
        # clamp: sqrt has an infinite derivative at 0 (a perfect prediction)
        return self.scale * ((e ** 2).mean() - self.variance_focus * e.mean() ** 2).clamp_min(1e-12).sqrt()


class L1Loss(_MaskedDepthLoss):
    """Mean absolute error in metres over the valid pixels of the batch."""

    def _loss(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return (pred[mask] - target[mask]).abs().mean()


class GradientMatchingLoss(_MaskedDepthLoss):
    """Multi-scale gradient matching on the log-depth residual R = ln p - ln g.

    At scale k (every 2^k-th pixel), sum |R(x+1) - R(x)| and |R(y+1) - R(y)| over pairs of valid pixels, divided by
    the number of valid pixels at that scale; the scales are summed. Penalises depth edges in the wrong place while
    ignoring a global scale error.
    """

    def __init__(self, scales: int = 4, **kwargs):
        super().__init__(**kwargs)
        self.scales = scales

    def _loss(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        residual = (self._log(pred) - self._log(target)) * mask
        total = pred.new_zeros(())
        for k in range(self.scales):
            step = 2 ** k
            r, m = residual[..., ::step, ::step], mask[..., ::step, ::step]
            mx = m[..., :, 1:] & m[..., :, :-1]
            my = m[..., 1:, :] & m[..., :-1, :]
            grad_x = ((r[..., :, 1:] - r[..., :, :-1]).abs() * mx).sum()
            grad_y = ((r[..., 1:, :] - r[..., :-1, :]).abs() * my).sum()
            total = total + (grad_x + grad_y) / m.sum().clamp_min(1)
        return total


class SSIMLoss(_MaskedDepthLoss):
    """mean over valid pixels of clamp((1 - SSIM) / 2, 0, 1); SSIM window 11 (sigma 1.5), data range max_depth.

    Invalid target pixels take the (detached) prediction's value, so they add no false edge to nearby windows.
    """

    def _loss(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        s = ssim_map(pred, target, data_range=self.max_depth)
        return ((1 - s[mask]) / 2).clamp(0, 1).mean()


_TERMS = {"silog": SILogLoss, "l1": L1Loss, "grad": GradientMatchingLoss, "ssim": SSIMLoss}


class DepthLoss(nn.Module):
    """Weighted sum of depth losses; terms with weight 0 are not computed.

    Args:
        silog, l1, grad, ssim: weights of :class:`SILogLoss`, :class:`L1Loss`, :class:`GradientMatchingLoss`,
            :class:`SSIMLoss` (non-negative, at least one positive).
        min_depth, max_depth: the valid target range in metres when no mask is given.

    ``forward(pred, target, mask=None)`` -> scalar; ``terms(...)`` -> the unweighted terms by name, for logging.
    """

    def __init__(self, silog: float = 1.0, l1: float = 0.0, grad: float = 0.0, ssim: float = 0.0,
                 min_depth: float = 1e-3, max_depth: float = 10.0):
        super().__init__()
        weights = {"silog": silog, "l1": l1, "grad": grad, "ssim": ssim}
        if any(w < 0 for w in weights.values()) or not any(w > 0 for w in weights.values()):
            raise ValueError(f"loss weights must be >= 0 with at least one > 0, got {weights}")
        self.weights = {name: w for name, w in weights.items() if w > 0}
        self.losses = nn.ModuleDict({name: _TERMS[name](min_depth=min_depth, max_depth=max_depth)
                                     for name in self.weights})
        self.min_depth = min_depth
        self.max_depth = max_depth

    def terms(self, pred: torch.Tensor, target: torch.Tensor,
              mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if mask is None:  # computed once for all terms
            mask = valid_mask(target, self.min_depth, self.max_depth)
        return {name: loss(pred, target, mask) for name, loss in self.losses.items()}

    def forward(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return sum(self.weights[name] * value for name, value in self.terms(pred, target, mask).items())
