"""Image and depth metrics, per image, batched over any leading dimensions.

Images are [..., 3, H, W] in [0, 1]; depths are [..., H, W]. Every function returns one value per image,
shape [...].
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

__all__ = ["depth_errors", "gaussian_window", "psnr", "ssim"]


def _check_pair(name: str, pred: torch.Tensor, target: torch.Tensor, min_dim: int) -> None:
    if pred.shape != target.shape:
        raise ValueError(
            f"{name}: pred and target must have the same shape, got {list(pred.shape)} and {list(target.shape)}"
        )
    if pred.dim() < min_dim:
        raise ValueError(f"{name}: expected at least {min_dim} dimensions, got shape {list(pred.shape)}")


def psnr(pred: torch.Tensor, target: torch.Tensor, *, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB of images [..., C, H, W] -> [...]; inf for identical images."""
    _check_pair("psnr", pred, target, 3)
    mse = (pred.float() - target.float()).square().mean(dim=(-3, -2, -1))
    return 10.0 * torch.log10(data_range**2 / mse)


@functools.lru_cache(maxsize=8)
def _window_1d(size: int, sigma: float) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    g = torch.exp(-(coords**2) / (2.0 * sigma**2))
    return (g / g.sum()).float()


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """The normalised 2D Gaussian window [size, size] of SSIM."""
    g = _window_1d(size, sigma)
    return g[:, None] * g[None, :]


def ssim(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    data_range: float = 1.0,
    window_size: int = 11,
    sigma: float = 1.5,
) -> torch.Tensor:
    """Structural similarity of images [..., C, H, W] -> [...] (Wang et al. 2004).

    Gaussian-weighted local statistics (11×11 window, σ = 1.5), C1 = (0.01·L)², C2 = (0.03·L)², the SSIM
    map computed where the window fits inside the image ("valid", as scikit-image crops it) and averaged
    over pixels and channels. H and W must be at least ``window_size``. Differentiable.
    """
    _check_pair("ssim", pred, target, 3)
    c, h, w = pred.shape[-3:]
    if h < window_size or w < window_size:
        raise ValueError(f"ssim: images must be at least {window_size}×{window_size}, got {h}×{w}")
    lead = pred.shape[:-3]
    x = pred.float().reshape(-1, 1, h, w)
    y = target.float().reshape(-1, 1, h, w)
    g = _window_1d(window_size, sigma).to(x.device)
    kernel_h, kernel_w = g.view(1, 1, -1, 1), g.view(1, 1, 1, -1)

    def blur(z: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(z, kernel_h), kernel_w)

    stats = blur(torch.cat([x, y, x * x, y * y, x * y], dim=1).view(-1, 1, h, w)).view(
        x.shape[0], 5, *_valid(h, w, window_size)
    )
    mu_x, mu_y, xx, yy, xy = stats.unbind(1)
    var_x = xx - mu_x * mu_x
    var_y = yy - mu_y * mu_y
    cov = xy - mu_x * mu_y
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.view(*lead, c, -1).mean(dim=(-2, -1))


def _valid(h: int, w: int, window: int) -> tuple[int, int]:
    return h - window + 1, w - window + 1


def depth_errors(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """Standard depth errors of depth maps [..., H, W] -> {"abs_rel", "rmse", "delta1"}, each [...].

    abs_rel = mean |pred − gt| / gt, rmse = √mean (pred − gt)², delta1 = fraction of pixels with
    max(pred/gt, gt/pred) < 1.25. Pixels count where ``mask`` [..., H, W] (bool) is true and gt > 0;
    an image with no valid pixel gets NaN.
    """
    _check_pair("depth_errors", pred, target, 2)
    pred, target = pred.float(), target.float()
    valid = target > 0
    if mask is not None:
        if mask.shape != target.shape:
            raise ValueError(
                f"depth_errors: mask must have shape {list(target.shape)}, got {list(mask.shape)}"
            )
        valid = valid & mask.bool()
    weight = valid.float()
    count = weight.sum(dim=(-2, -1))
    safe_target = torch.where(valid, target, torch.ones_like(target))
    safe_pred = torch.where(valid, pred, torch.ones_like(pred)).clamp(min=1e-12)

    def mean(z: torch.Tensor) -> torch.Tensor:
        return (z * weight).sum(dim=(-2, -1)) / count  # 0/0 = NaN with no valid pixel

    ratio = torch.maximum(safe_pred / safe_target, safe_target / safe_pred)
    return {
        "abs_rel": mean((safe_pred - safe_target).abs() / safe_target),
        "rmse": mean((safe_pred - safe_target).square()).sqrt(),
        "delta1": mean((ratio < 1.25).float()),
    }
