"""Depth from the cost volume: a coarse soft-argmax at 1/4 resolution, then an image-guided refinement
at full resolution. Depths are handled as the normalised inverse depth t of
:mod:`accel_shared.gs.cost_volume` (t = 1 at near, 0 at far), which keeps them inside [near, far].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from accel_shared.gs.encoder import ResidualBlock

__all__ = ["CoarseDepth", "DepthRefiner"]

_EPS = 1e-4


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


class DepthRefiner(nn.Module):
    """Image-guided upsampling of t to full resolution.

    Inputs: images [N, 3, H, W] in [0, 1], features [N, C, h, w], coarse t [N, 1, h, w].
    Returns (t [N, 1, H, W] in (0, 1), hidden [N, hidden, H, W]); the hidden full-resolution features
    also feed the Gaussian heads. The residual is added in logit space and its last convolution starts
    at zero, so the untrained refiner returns the bilinearly upsampled coarse t.
    """

    def __init__(self, feature_dim: int, hidden: int) -> None:
        super().__init__()
        self.project = nn.Conv2d(feature_dim, hidden, 1)
        self.body = nn.Sequential(
            nn.Conv2d(3 + hidden + 1, hidden, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(hidden, hidden, 3, padding=1),
            nn.GELU(),
        )
        self.residual = nn.Conv2d(hidden, 1, 3, padding=1, bias=False)
        nn.init.zeros_(self.residual.weight)

    def forward(
        self, images: torch.Tensor, features: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        size = images.shape[-2:]
        feat = F.interpolate(self.project(features), size=size, mode="bilinear", align_corners=False)
        t_up = F.interpolate(t, size=size, mode="bilinear", align_corners=False).clamp(_EPS, 1.0 - _EPS)
        hidden = self.body(torch.cat([images * 2.0 - 1.0, feat, t_up], dim=1))
        t_fine = torch.sigmoid(torch.logit(t_up) + self.residual(hidden))
        return t_fine, hidden
