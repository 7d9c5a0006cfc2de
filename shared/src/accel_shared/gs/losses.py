"""The photometric loss of the renders: MSE + λ_ssim·(1 − SSIM) + λ_lpips·LPIPS.

LPIPS needs the ``lpips`` package and its backbone weights already on disk (torchvision's cache under
``torch.hub.get_dir()``): nothing is downloaded. When either is missing the LPIPS term is skipped and one
warning is logged; the loss is then MSE + λ_ssim·(1 − SSIM), and the returned logs have no "lpips" key.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from accel_shared.gs.metrics import ssim

__all__ = ["PhotometricLoss", "load_lpips"]

logger = logging.getLogger(__name__)

_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        logger.warning(message)


def _backbone_cached(net: str) -> bool:
    """Whether torchvision's ImageNet weights for the LPIPS backbone ``net`` are in the local hub cache."""
    import torchvision.models as tvm

    weights = {"vgg": tvm.VGG16_Weights, "alex": tvm.AlexNet_Weights, "squeeze": tvm.SqueezeNet1_1_Weights}[
        net
    ]
    url = weights.IMAGENET1K_V1.url
    return (Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]).is_file()


def load_lpips(net: str = "vgg") -> nn.Module | None:
    """A frozen ``lpips.LPIPS(net=net)`` in eval mode, or None (one logged warning) when the package or
    its weights are not available locally."""
    if net not in ("vgg", "alex", "squeeze"):
        raise ValueError(f"load_lpips: net must be 'vgg', 'alex' or 'squeeze', got {net!r}")
    try:
        import lpips
        import torchvision  # noqa: F401  (lpips builds its backbone from torchvision)
    except ImportError:
        _warn_once("import", "LPIPS skipped: the lpips package (and torchvision) are not installed")
        return None
    if not _backbone_cached(net):
        _warn_once(
            net, f"LPIPS skipped: no local torchvision weights for the {net!r} backbone (not downloading)"
        )
        return None
    model: nn.Module = lpips.LPIPS(net=net, verbose=False)
    return model.eval().requires_grad_(False)


class PhotometricLoss(nn.Module):
    """MSE + ``lambda_ssim``·(1 − SSIM) + ``lambda_lpips``·LPIPS of renders against targets.

    DepthSplat and the PM-Loss recipe train with MSE + 0.05·LPIPS; the SSIM term (default 0.05) is a
    cheap structural term that also stands in for LPIPS where LPIPS is unavailable. Set a weight to 0
    to drop its term (λ_lpips = 0 never loads LPIPS).

    ``forward(pred, target)`` takes images [..., 3, H, W] in [0, 1] (H, W >= 11 when λ_ssim > 0) and
    returns (the scalar loss, detached per-term means {"mse", "ssim", "lpips"} for logging).
    """

    def __init__(self, lambda_ssim: float = 0.05, lambda_lpips: float = 0.05, lpips_net: str = "vgg") -> None:
        super().__init__()
        if lambda_ssim < 0 or lambda_lpips < 0:
            raise ValueError(f"PhotometricLoss: weights must be >= 0, got {lambda_ssim=}, {lambda_lpips=}")
        self.lambda_ssim = lambda_ssim
        self.lambda_lpips = lambda_lpips
        self.lpips = load_lpips(lpips_net) if lambda_lpips > 0 else None

    def forward(
        self, pred: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if pred.shape != target.shape or pred.dim() < 3 or pred.shape[-3] != 3:
            raise ValueError(
                f"PhotometricLoss: pred and target must be [..., 3, H, W] of one shape, got "
                f"{list(pred.shape)} and {list(target.shape)}"
            )
        mse = (pred - target).square().mean()
        loss = mse
        logs = {"mse": mse.detach()}
        if self.lambda_ssim > 0:
            value = ssim(pred, target).mean()
            loss = loss + self.lambda_ssim * (1.0 - value)
            logs["ssim"] = value.detach()
        if self.lpips is not None:
            flat_pred = pred.reshape(-1, *pred.shape[-3:])
            flat_target = target.reshape(-1, *target.shape[-3:])
            value = self.lpips(flat_pred, flat_target, normalize=True).mean()
            loss = loss + self.lambda_lpips * value
            logs["lpips"] = value.detach()
        return loss, logs
