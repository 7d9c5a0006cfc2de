"""Gaussian heads: one Gaussian per pixel, its parameters predicted from full-resolution features."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GaussianHead", "OffsetMode", "PixelGaussians"]

OffsetMode = Literal["free", "tanh", "none"]

# Raw channels: opacity 1, scales 3, rotation 4 (w, x, y, z), colour residual 3, xy offsets 2.
_SPLITS = (1, 3, 4, 3, 2)
_SOFTPLUS_ONE = math.log(math.e - 1.0)  # softplus(_SOFTPLUS_ONE) == 1
_COLOR_EPS = 1e-3


@dataclass
class PixelGaussians:
    """Per-pixel Gaussian parameters of N views, before unprojection.

    Attributes:
        opacities: [N, H, W] in (0, 1).
        scales: [N, H, W, 3] world units (positive).
        rotations: [N, H, W, 4] unit quaternions (w, x, y, z).
        colors: [N, H, W, 3] in (0, 1).
        offsets: [N, H, W, 2] shifts of the pixel centres in normalised image units.
    """

    opacities: torch.Tensor
    scales: torch.Tensor
    rotations: torch.Tensor
    colors: torch.Tensor
    offsets: torch.Tensor


class GaussianHead(nn.Module):
    """Hidden features [N, hidden, H, W] + t [N, 1, H, W] -> :class:`PixelGaussians`.

    - opacity: sigmoid.
    - scales: softplus · the pixel footprint at the pixel's depth (depth · mean of 1/(fx·W), 1/(fy·H)),
      so the raw output is in pixels and the same weights serve every resolution (as in pixelSplat).
    - rotation: the raw quaternion normalised.
    - colour: sigmoid(logit(pixel colour) + residual): a zero residual reproduces the pixel.
    - offsets: the raw output is in pixels, divided by (W, H) into normalised units. ``offset_mode``
      "free" leaves them unbounded (the PM-Loss recipe: the Chamfer term constrains them), "tanh"
      bounds them to ±``offset_max_pixels``, "none" fixes them at zero (Gaussians on the pixel rays).

    The last convolution starts with zero weights and biases chosen so the untrained head gives
    opacity 0.5, a one-pixel footprint, the identity rotation, the pixel's colour and no offset.
    """

    def __init__(self, hidden: int, offset_mode: OffsetMode = "free", offset_max_pixels: float = 1.0) -> None:
        super().__init__()
        if offset_mode not in ("free", "tanh", "none"):
            raise ValueError(
                f"GaussianHead: offset_mode must be 'free', 'tanh' or 'none', got {offset_mode!r}"
            )
        self.offset_mode = offset_mode
        self.offset_max_pixels = float(offset_max_pixels)
        self.body = nn.Sequential(nn.Conv2d(hidden + 1, hidden, 3, padding=1), nn.GELU())
        self.out = nn.Conv2d(hidden, sum(_SPLITS), 1)
        bias = torch.zeros(sum(_SPLITS))
        bias[1:4] = _SOFTPLUS_ONE
        bias[4] = 1.0  # quaternion w
        nn.init.zeros_(self.out.weight)
        self.out.bias = nn.Parameter(bias)

    def forward(
        self,
        hidden: torch.Tensor,
        t: torch.Tensor,
        images: torch.Tensor,
        depth: torch.Tensor,
        intrinsics: torch.Tensor,
    ) -> PixelGaussians:
        """hidden [N, hidden, H, W], t [N, 1, H, W], images [N, 3, H, W] in [0, 1], depth [N, H, W],
        intrinsics [N, 3, 3] normalised."""
        height, width = depth.shape[-2:]
        raw = self.out(self.body(torch.cat([hidden, t], dim=1))).permute(0, 2, 3, 1)  # [N, H, W, 13]
        opacity, scale, rotation, color, offset = raw.split(_SPLITS, dim=-1)

        fx = intrinsics[:, 0, 0] * width
        fy = intrinsics[:, 1, 1] * height
        footprint = depth * (0.5 * (1.0 / fx + 1.0 / fy))[:, None, None]  # world size of one pixel
        scales = F.softplus(scale) * footprint[..., None]

        pixel = images.permute(0, 2, 3, 1).clamp(_COLOR_EPS, 1.0 - _COLOR_EPS)
        colors = torch.sigmoid(torch.logit(pixel) + color)

        pixel_size = offset.new_tensor([1.0 / width, 1.0 / height])
        if self.offset_mode == "free":
            offsets = offset * pixel_size
        elif self.offset_mode == "tanh":
            offsets = self.offset_max_pixels * torch.tanh(offset) * pixel_size
        else:
            offsets = torch.zeros_like(offset)
        return PixelGaussians(
            opacities=torch.sigmoid(opacity.squeeze(-1)),
            scales=scales,
            rotations=F.normalize(rotation, dim=-1, eps=1e-8),
            colors=colors,
            offsets=offsets,
        )
