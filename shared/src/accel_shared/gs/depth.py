"""Depth from the cost volume: a coarse soft-argmax at 1/4 resolution, then an image-guided refinement
at full resolution. Depths are handled as the normalised inverse depth t of
:mod:`accel_shared.gs.cost_volume` (t = 1 at near, 0 at far), which keeps them inside [near, far].
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from accel_shared.gs.encoder import ResidualBlock

__all__ = ["CoarseDepth", "ConvexUpsampler", "DepthRefiner", "DepthUpsampler"]

_EPS = 1e-4

DepthUpsampler = Literal["bilinear", "convex"]


class CoarseDepth(nn.Module):
    """Cost volume [N, D, h, w] + features [N, C, h, w] -> t [N, 1, h, w] by soft-argmax over D.

    A small CNN refines the matching costs into D logits (the features let it resolve textureless or
    single-view regions); the expectation of the candidates' t under the softmax is the coarse
    normalised inverse depth.
    """

    def __init__(self, num_candidates: int, feature_dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(num_candidates + feature_dim, hidden, 3, padding=1),
            nn.GELU(),
            ResidualBlock(hidden),
            nn.Conv2d(hidden, num_candidates, 3, padding=1),
        )

    def forward(self, cost: torch.Tensor, features: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """``candidates`` [D]: the candidates' t (:func:`~accel_shared.gs.cost_volume.candidate_t`)."""
        logits = self.net(torch.cat([cost, features], dim=1))
        probs = logits.softmax(dim=1)
        return (probs * candidates[None, :, None, None]).sum(dim=1, keepdim=True)


class ConvexUpsampler(nn.Module):
    """Coarse t [N, 1, h, w] + features [N, C, h, w] -> t [N, 1, r·h, r·w] by convex upsampling.

    Every full-resolution pixel is a convex combination of the 3×3 coarse values around its cell, with
    weights predicted from the coarse features (RAFT's upsampling, which UniMatch, the matcher behind
    DepthSplat, uses for depth). Bilinear interpolation blends the two sides of a depth edge that
    crosses a coarse cell. Here a pixel can take the value of the side it belongs to, so edges stay sharp.
    Borders are padded by replication, as bilinear interpolation clamps. The last convolution starts
    at zero: the untrained upsampler averages the 3×3 neighbourhood.
    """

    def __init__(self, feature_dim: int, hidden: int, factor: int = 4) -> None:
        super().__init__()
        self.factor = factor
        expand = nn.Conv2d(feature_dim + 1, hidden, 3, padding=1)
        weights = nn.Conv2d(hidden, 9 * factor * factor, 1)
        with torch.no_grad():
            weights.weight.zero_()
            weights.bias.zero_()  # type: ignore[union-attr]
        self.mask = nn.Sequential(expand, nn.GELU(), weights)

    def forward(self, t: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        n, _, h, w = t.shape
        if features.shape[0] != n or features.shape[-2:] != t.shape[-2:]:
            raise ValueError(
                f"ConvexUpsampler: features {list(features.shape)} must be [N, C, h, w] with N, h, w of "
                f"t {list(t.shape)}"
            )
        r = self.factor
        weights = self.mask(torch.cat([features, t], dim=1)).view(n, 9, r, r, h, w).softmax(dim=1)
        neighbours = F.unfold(F.pad(t, (1, 1, 1, 1), mode="replicate"), 3).view(n, 9, 1, 1, h, w)
        fine = (weights * neighbours).sum(dim=1)  # [n, r, r, h, w]: sub-row, sub-column, row, column
        return fine.permute(0, 3, 1, 4, 2).reshape(n, 1, h * r, w * r)


class DepthRefiner(nn.Module):
    """Image-guided upsampling of t to full resolution.

    Inputs: images [N, 3, H, W] in [0, 1], features [N, C, h, w], coarse t [N, 1, h, w] (H = 4h).
    Returns (t [N, 1, H, W] in (0, 1), hidden [N, hidden, H, W]); the hidden full-resolution features
    also feed the Gaussian heads. The coarse t is first upsampled bilinearly, or with
    :class:`ConvexUpsampler` when ``upsampler="convex"``. A residual is then added in logit space. Its
    last convolution starts at zero, so the untrained refiner returns the upsampled coarse t.
    """

    def __init__(self, feature_dim: int, hidden: int, upsampler: DepthUpsampler = "bilinear") -> None:
        super().__init__()
        if upsampler not in ("bilinear", "convex"):
            raise ValueError(f"DepthRefiner: upsampler must be 'bilinear' or 'convex', got {upsampler!r}")
        self.project = nn.Conv2d(feature_dim, hidden, 1)
        self.body = nn.Sequential(
            nn.Conv2d(3 + hidden + 1, hidden, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(hidden, hidden, 3, padding=1),
            nn.GELU(),
        )
        self.residual = nn.Conv2d(hidden, 1, 3, padding=1, bias=False)
        nn.init.zeros_(self.residual.weight)
        self.convex = ConvexUpsampler(feature_dim, 2 * hidden) if upsampler == "convex" else None

    def forward(
        self, images: torch.Tensor, features: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        size = images.shape[-2:]
        feat = F.interpolate(self.project(features), size=size, mode="bilinear", align_corners=False)
        if self.convex is not None:
            if (size[0], size[1]) != (t.shape[-2] * self.convex.factor, t.shape[-1] * self.convex.factor):
                raise ValueError(
                    f"DepthRefiner: convex upsampling needs images {self.convex.factor}× the coarse size "
                    f"{list(t.shape[-2:])}, got {list(size)}"
                )
            t_up = self.convex(t, features)
        else:
            t_up = F.interpolate(t, size=size, mode="bilinear", align_corners=False)
        t_up = t_up.clamp(_EPS, 1.0 - _EPS)
        hidden = self.body(torch.cat([images * 2.0 - 1.0, feat, t_up], dim=1))
        t_fine = torch.sigmoid(torch.logit(t_up) + self.residual(hidden))
        return t_fine, hidden
