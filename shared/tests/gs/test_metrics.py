"""Metrics against known values and a slow direct SSIM; the photometric loss."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch

from accel_shared.gs import losses
from accel_shared.gs.losses import PhotometricLoss, load_lpips
from accel_shared.gs.metrics import depth_errors, gaussian_window, psnr, ssim


def slow_ssim(x: np.ndarray, y: np.ndarray, size: int = 11, sigma: float = 1.5) -> float:
    """SSIM of two [C, H, W] images, one window position at a time (float64)."""
    c = np.arange(size) - (size - 1) / 2
    g = np.exp(-(c**2) / (2 * sigma**2))
    window = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = 0.01**2, 0.03**2
    values = []
    for ch in range(x.shape[0]):
        for i in range(x.shape[1] - size + 1):
            for j in range(x.shape[2] - size + 1):
                px, py = x[ch, i : i + size, j : j + size], y[ch, i : i + size, j : j + size]
                mx, my = (window * px).sum(), (window * py).sum()
                vx = (window * (px - mx) ** 2).sum()
                vy = (window * (py - my) ** 2).sum()
                cov = (window * (px - mx) * (py - my)).sum()
                values.append(((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    return float(np.mean(values))


def test_psnr_known_values() -> None:
    image = torch.rand(2, 4, 3, 16, 16)
    assert psnr(image, image).shape == (2, 4)
    assert torch.isinf(psnr(image, image)).all()
    shifted = (image * 0.5 + 0.25) + 0.1  # in [0.25, 0.85]: no clipping
    assert torch.allclose(psnr(shifted, image * 0.5 + 0.25), torch.full((2, 4), 20.0), atol=1e-3)
    half = torch.zeros(3, 8, 8), torch.full((3, 8, 8), 0.5)
    assert psnr(*half).item() == pytest.approx(-10 * math.log10(0.25), abs=1e-5)


def test_ssim_matches_direct_implementation() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 3, 16, 18, generator=g)
    y = (x + 0.2 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    fast = ssim(x, y)
    assert fast.shape == (2, 3)
    for i in range(2):
        for j in range(3):
            assert fast[i, j].item() == pytest.approx(
                slow_ssim(x[i, j].double().numpy(), y[i, j].double().numpy()), abs=1e-5
            )
    assert torch.allclose(ssim(x, x), torch.ones(2, 3), atol=1e-6)
    assert torch.allclose(ssim(x, y), ssim(y, x), atol=1e-6)
    assert (ssim(x, y) < 0.99).all()
    assert torch.allclose(gaussian_window().sum(), torch.tensor(1.0))


def test_ssim_is_differentiable_and_checks_size() -> None:
    x = torch.rand(1, 3, 12, 12, requires_grad=True)
    ssim(x, torch.rand(1, 3, 12, 12)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    with pytest.raises(ValueError, match="at least 11"):
        ssim(torch.rand(3, 8, 8), torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match="same shape"):
        ssim(torch.rand(3, 12, 12), torch.rand(3, 12, 13))


def test_depth_errors_known_values() -> None:
    gt = 1.0 + torch.rand(2, 3, 8, 8)
    errors = depth_errors(1.1 * gt, gt)
    assert set(errors) == {"abs_rel", "rmse", "delta1"} and errors["abs_rel"].shape == (2, 3)
    assert torch.allclose(errors["abs_rel"], torch.full((2, 3), 0.1), atol=1e-6)
    assert torch.allclose(errors["rmse"], 0.1 * gt.square().mean(dim=(-2, -1)).sqrt(), atol=1e-6)
    assert torch.equal(errors["delta1"], torch.ones(2, 3))
    assert torch.equal(depth_errors(1.3 * gt, gt)["delta1"], torch.zeros(2, 3))

    # Half the pixels wrong, masked out: perfect; gt <= 0 never counts; no valid pixel: NaN.
    pred = gt.clone()
    pred[..., :4] = 10.0
    mask = torch.zeros_like(gt, dtype=torch.bool)
    mask[..., 4:] = True
    assert torch.equal(depth_errors(pred, gt, mask)["abs_rel"], torch.zeros(2, 3))
    assert depth_errors(pred, gt)["delta1"].allclose(torch.full((2, 3), 0.5))
    invalid = gt.clone()
    invalid[..., :4] = 0.0
    assert torch.equal(depth_errors(pred, invalid)["abs_rel"], torch.zeros(2, 3))
    assert torch.isnan(depth_errors(pred, gt, torch.zeros_like(mask))["rmse"]).all()


def test_photometric_loss_terms(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(losses, "load_lpips", lambda net="vgg": None)
    loss_fn = PhotometricLoss(lambda_ssim=0.5)
    image = torch.rand(2, 3, 3, 16, 16)
    loss, logs = loss_fn(image, image)
    assert loss.item() == pytest.approx(0.0, abs=1e-6) and logs["ssim"].item() == pytest.approx(1.0)
    other = (image + 0.1).clamp(0, 1)
    loss, logs = loss_fn(other, image)
    expected = logs["mse"] + 0.5 * (1 - logs["ssim"])
    assert loss.item() == pytest.approx(expected.item()) and "lpips" not in logs
    assert set(PhotometricLoss(lambda_ssim=0.0)(other, image)[1]) == {"mse"}
    with pytest.raises(ValueError, match="weights"):
        PhotometricLoss(lambda_ssim=-1.0)


def test_photometric_loss_adds_lpips_when_available(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[torch.Size] = []

    class FakeLpips(torch.nn.Module):
        def forward(self, a: torch.Tensor, b: torch.Tensor, normalize: bool = False) -> torch.Tensor:
            assert normalize  # inputs are in [0, 1]
            seen.append(a.shape)
            return (a - b).abs().mean(dim=(1, 2, 3), keepdim=True)

    monkeypatch.setattr(losses, "load_lpips", lambda net="vgg": FakeLpips())
    image = torch.rand(2, 3, 3, 16, 16)
    other = (image + 0.1).clamp(0, 1)
    loss, logs = PhotometricLoss(lambda_ssim=0.0, lambda_lpips=0.5)(other, image)
    assert seen == [torch.Size([6, 3, 16, 16])]
    assert logs["lpips"].item() == pytest.approx((other - image).abs().mean().item())
    assert loss.item() == pytest.approx((logs["mse"] + 0.5 * logs["lpips"]).item())
    assert PhotometricLoss(lambda_lpips=0.0).lpips is None


def test_lpips_missing_is_skipped_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import builtins

    real_import = builtins.__import__

    def no_lpips(name: str, *args: object, **kwargs: object) -> object:
        if name == "lpips":
            raise ImportError("No module named 'lpips'")
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_lpips)
    monkeypatch.setattr(losses, "_warned", set())
    with caplog.at_level(logging.WARNING, logger="accel_shared.gs.losses"):
        assert load_lpips() is None
        assert PhotometricLoss().lpips is None
    assert [r.message for r in caplog.records].count(
        "LPIPS skipped: the lpips package (and torchvision) are not installed"
    ) == 1
