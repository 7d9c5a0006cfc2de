"""Reference nearest-neighbour search and Chamfer distance (dense pairwise distances)."""

from __future__ import annotations

import torch


def nearest_neighbor(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference for :func:`kernels_core.nearest_neighbor`: squared distance [B, N] float32 and
    index [B, N] int64 of each x point's nearest y point (the first one on ties)."""
    d = ((x.float()[:, :, None, :] - y.float()[:, None, :, :]) ** 2).sum(-1)  # [B, N, M]
    dist, index = d.min(dim=-1)
    return dist, index


def chamfer_distance(
    x: torch.Tensor, y: torch.Tensor, *, single_directional: bool = False, squared: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Reference for :func:`kernels_core.chamfer_distance` (differentiable through torch.min)."""
    d = ((x[:, :, None, :] - y[:, None, :, :]) ** 2).sum(-1)
    if not squared:
        d = (d + 1e-12).sqrt()
    forward, index_xy = d.min(dim=2)
    loss = forward.mean(dim=1)
    if single_directional:
        return loss, index_xy, None
    backward, index_yx = d.min(dim=1)
    return loss + backward.mean(dim=1), index_xy, index_yx
