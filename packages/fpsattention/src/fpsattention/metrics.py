"""Video fidelity against a reference video: PSNR and SSIM over frames."""

from __future__ import annotations

import torch

from accel_shared.gs.metrics import psnr, ssim


def video_psnr(video: torch.Tensor, reference: torch.Tensor) -> float:
    """PSNR in dB of frames [F, 3, H, W] in [0, 1], over the whole video (one MSE)."""
    return float(psnr(video.flatten(0, 1).unsqueeze(0), reference.flatten(0, 1).unsqueeze(0)))


def video_ssim(video: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean SSIM over frames [F, 3, H, W] in [0, 1] (window 11, or the frame size when smaller)."""
    window = min(11, video.shape[-1], video.shape[-2])
    window -= 1 - window % 2  # odd
    return float(ssim(video, reference, window_size=window).mean())
