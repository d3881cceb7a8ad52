"""Depth losses: hand-computed values, valid masks, invariances, composition, no NaN."""

from __future__ import annotations

import math

import pytest
import torch

from rwkv_vision.losses import DepthLoss, GradientMatchingLoss, L1Loss, SILogLoss, SSIMLoss
from rwkv_vision.metrics import ssim_map


def _maps(pred, target):
    return torch.tensor(pred, dtype=torch.float64)[None, None], torch.tensor(target, dtype=torch.float64)[None, None]


def test_silog_by_hand_and_invalid_pixels_ignored():
    pred, target = _maps([[1.0, 2.0, 4.0, 3.0]], [[2.0, 2.0, 1.0, 0.0]])  # the last target is invalid
    pred.requires_grad_(True)
    loss = SILogLoss()(pred, target)
    e = [math.log(0.5), 0.0, math.log(4.0)]
    mean, mean_sq = sum(e) / 3, sum(x * x for x in e) / 3
    assert loss.item() == pytest.approx(10 * math.sqrt(mean_sq - 0.85 * mean ** 2), rel=1e-12)
    loss.backward()
    assert torch.isfinite(pred.grad).all() and pred.grad[0, 0, 0, 3] == 0


def test_silog_with_full_variance_focus_is_scale_invariant():
    torch.manual_seed(0)
    target = torch.rand(2, 1, 8, 8) * 5 + 1
    pred = target * torch.exp(0.1 * torch.randn_like(target))
    loss = SILogLoss(variance_focus=1.0)
    assert loss(pred * 3.0, target).item() == pytest.approx(loss(pred, target).item(), rel=1e-4)
    assert SILogLoss()(pred * 3.0, target) > SILogLoss()(pred, target)  # lambda = 0.85 keeps some scale error


def test_l1_by_hand_with_explicit_mask():
    pred, target = _maps([[1.0, 5.0, 2.0]], [[2.0, 2.0, 2.5]])
    mask = torch.tensor([[[[True, False, True]]]])
    assert L1Loss()(pred, target, mask).item() == pytest.approx((1.0 + 0.5) / 2)
    assert L1Loss()(pred, target).item() == pytest.approx((1.0 + 3.0 + 0.5) / 3)


def test_gradient_matching_by_hand():
    # R = ln p - ln g = [[0, ln 2, 0], [0, 0, ln 3]] with one scale
    pred, target = _maps([[1.0, 4.0, 1.0], [2.0, 2.0, 6.0]], [[1.0, 2.0, 1.0], [2.0, 2.0, 2.0]])
    l2, l3 = math.log(2.0), math.log(3.0)
    grad_x = l2 + l2 + 0 + l3
    grad_y = 0 + l2 + l3
    assert GradientMatchingLoss(scales=1)(pred, target).item() == pytest.approx((grad_x + grad_y) / 6, rel=1e-12)
    # a second scale takes every other pixel: R = [[0, 0]], no gradient, 2 valid pixels
    assert GradientMatchingLoss(scales=2)(pred, target).item() == pytest.approx((grad_x + grad_y) / 6, rel=1e-12)


def test_gradient_matching_skips_pairs_with_an_invalid_pixel_and_ignores_scale():
    pred, target = _maps([[1.0, 4.0, 1.0]], [[1.0, 0.0, 1.0]])
    assert GradientMatchingLoss(scales=1)(pred, target).item() == 0.0  # both pairs touch the invalid pixel
    torch.manual_seed(0)
    target = torch.rand(1, 1, 16, 16) * 5 + 1
    assert GradientMatchingLoss()(2.5 * target, target).item() == pytest.approx(0.0, abs=1e-6)


def test_ssim_loss_is_half_one_minus_ssim_over_valid_pixels():
    torch.manual_seed(0)
    target = torch.rand(1, 1, 16, 16) * 8 + 1
    pred = target + 0.5 * torch.randn_like(target)
    assert SSIMLoss()(target, target).item() == pytest.approx(0.0, abs=1e-6)
    want = ((1 - ssim_map(pred, target, data_range=10.0)) / 2).clamp(0, 1).mean()
    assert SSIMLoss()(pred, target).item() == pytest.approx(want.item(), rel=1e-6)


def test_depth_loss_is_the_weighted_sum_of_its_terms():
    torch.manual_seed(0)
    target = torch.rand(2, 1, 32, 32) * 8 + 1
    target[0, 0, :4] = 0.0  # invalid rows
    pred = (target + torch.randn_like(target)).clamp_min(0.5)
    loss = DepthLoss(silog=1.0, l1=0.5, grad=0.25, ssim=2.0)
    want = (SILogLoss()(pred, target) + 0.5 * L1Loss()(pred, target) + 0.25 * GradientMatchingLoss()(pred, target)
            + 2.0 * SSIMLoss()(pred, target))
    assert loss(pred, target).item() == pytest.approx(want.item(), rel=1e-6)
    assert set(loss.terms(pred, target)) == {"silog", "l1", "grad", "ssim"}
    assert set(DepthLoss(l1=1.0, silog=0.0).losses) == {"l1"}  # zero-weight terms are not built


def test_no_valid_pixel_gives_zero_loss_with_a_gradient_not_nan():
    pred = torch.full((1, 1, 8, 8), 2.0, requires_grad=True)
    target = torch.zeros(1, 1, 8, 8)
    target[0, 0, 0, 0] = float("nan")
    loss = DepthLoss(silog=1.0, l1=1.0, grad=1.0, ssim=1.0)(pred, target)
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(pred.grad, torch.zeros_like(pred))


def test_nan_targets_do_not_leak_into_gradients():
    pred = torch.full((1, 1, 8, 8), 2.0, requires_grad=True)
    target = torch.full((1, 1, 8, 8), 3.0)
    target[0, 0, 2, 2] = float("nan")
    DepthLoss(silog=1.0, l1=1.0, grad=1.0, ssim=1.0)(pred, target).backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def test_bad_arguments():
    with pytest.raises(ValueError, match="at least one > 0"):
        DepthLoss(silog=0.0)
    with pytest.raises(ValueError, match=">= 0"):
        DepthLoss(l1=-1.0)
    with pytest.raises(ValueError, match=r"\(1, 1, 4, 4\) and \(1, 4, 4\)"):
        L1Loss()(torch.ones(1, 1, 4, 4), torch.ones(1, 4, 4))
    with pytest.raises(ValueError, match="mask must be a bool tensor"):
        L1Loss()(torch.ones(1, 1, 4, 4), torch.ones(1, 1, 4, 4), torch.ones(1, 1, 4, 4))


def test_optimising_a_depth_map_reduces_the_loss():
    torch.manual_seed(0)
    target = torch.rand(1, 1, 24, 24) * 6 + 1
    logit = torch.zeros_like(target, requires_grad=True)
    loss_fn = DepthLoss(silog=1.0, l1=0.1, grad=0.5, ssim=1.0)
    optimiser = torch.optim.Adam([logit], lr=0.1)
    losses = []
    for _ in range(60):
        pred = 1e-3 + (10 - 1e-3) * torch.sigmoid(logit)  # the UNetDepth head's parametrisation
        loss = loss_fn(pred, target)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]
