"""Per-view CNN features at 1/4 resolution, with a 2D sinusoidal positional encoding added.

These are the features a :class:`~accel_shared.gs.model.ViewCompressor` receives (the ZPressor hook
point): every view is encoded independently, so no information has been exchanged between views yet.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["ResidualBlock", "ViewEncoder", "position_encoding_2d"]


def _norm(channels: int) -> nn.GroupNorm:
    # GroupNorm, not BatchNorm: batches are small and DDP would need SyncBatchNorm.
    return nn.GroupNorm(min(8, channels), channels)


class ResidualBlock(nn.Module):
    """Two 3×3 convolutions with GroupNorm and GELU, plus the identity: [N, C, H, W] -> same shape."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            _norm(channels),
            nn.GELU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            _norm(channels),
        )
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.body(x))


def position_encoding_2d(
    channels: int,
    height: int,
    width: int,
    *,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Sinusoidal encoding of the normalised pixel-centre coordinates: [channels, height, width].

    A quarter of the channels each hold sin(u·f), cos(u·f), sin(v·f), cos(v·f), with C/4 frequencies
    f log-spaced from π to 64π (wavelengths from two image widths down to 1/32 of one); coordinates are
    in [0, 1], so one encoding serves every resolution. ``channels`` must be a multiple of 4.
    """
    if channels % 4:
        raise ValueError(f"position_encoding_2d: channels must be a multiple of 4, got {channels}")
    quarter = channels // 4
    freqs = math.pi * 2.0 ** torch.linspace(0.0, 6.0, quarter, device=device, dtype=torch.float32)
    v = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height
    u = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width
    u_f = u[None, None, :] * freqs[:, None, None]  # [q, 1, W]
    v_f = v[None, :, None] * freqs[:, None, None]  # [q, H, 1]
    shape = (quarter, height, width)
    out = torch.cat(
        [u_f.sin().expand(shape), u_f.cos().expand(shape), v_f.sin().expand(shape), v_f.cos().expand(shape)]
    )
    return out.to(dtype or torch.float32)


class ViewEncoder(nn.Module):
    """Images [N, 3, H, W] in [0, 1] -> features [N, C, H/4, W/4] (positional encoding added).

    Two stride-2 stages (C/2 then C channels), each a strided 3×3 convolution and ``blocks_per_stage``
    residual blocks.
    """

    def __init__(self, feature_dim: int, blocks_per_stage: int = 1) -> None:
        super().__init__()
        half = feature_dim // 2
        self.stem = nn.Sequential(nn.Conv2d(3, half, 3, stride=2, padding=1), _norm(half), nn.GELU())
        self.stage1 = nn.Sequential(*[ResidualBlock(half) for _ in range(blocks_per_stage)])
        self.down = nn.Sequential(
            nn.Conv2d(half, feature_dim, 3, stride=2, padding=1), _norm(feature_dim), nn.GELU()
        )
        self.stage2 = nn.Sequential(*[ResidualBlock(feature_dim) for _ in range(blocks_per_stage)])
        self.feature_dim = feature_dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.stem(images * 2.0 - 1.0)
        x = self.down(self.stage1(x))
        x = self.stage2(x)
        pe = position_encoding_2d(self.feature_dim, x.shape[-2], x.shape[-1], device=x.device, dtype=x.dtype)
        return x + pe
