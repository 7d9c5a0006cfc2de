"""Plane-sweep cost volume (MVSplat / DepthSplat): feature correlation on D fronto-parallel planes.

Depth candidates are uniform in inverse depth. ``t`` is the normalised inverse depth: t = 1 at ``near``,
t = 0 at ``far``, 1/depth = 1/far + t·(1/near − 1/far); candidate k has t_k = 1 − k/(D − 1).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from accel_shared.gs.cameras import pixel_grid, world_to_camera

__all__ = ["candidate_t", "depth_to_t", "plane_sweep_cost_volume", "source_views", "t_to_depth"]


def candidate_t(
    num: int, *, device: torch.device | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """The normalised inverse depths of ``num`` candidates, from near (1) to far (0): [num]."""
    if num < 2:
        raise ValueError(f"candidate_t: num (depth candidates) must be >= 2, got {num}")
    return torch.linspace(1.0, 0.0, num, device=device, dtype=dtype)


def t_to_depth(t: torch.Tensor, near: torch.Tensor, far: torch.Tensor) -> torch.Tensor:
    """Normalised inverse depth t [..., *S] -> depth in [near, far]; near/far [...] broadcast over S."""
    extra = t.dim() - near.dim()
    near = near.reshape(*near.shape, *([1] * extra))
    far = far.reshape(*far.shape, *([1] * extra))
    return 1.0 / (1.0 / far + t * (1.0 / near - 1.0 / far))


def depth_to_t(depth: torch.Tensor, near: torch.Tensor, far: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`t_to_depth`."""
    extra = depth.dim() - near.dim()
    near = near.reshape(*near.shape, *([1] * extra))
    far = far.reshape(*far.shape, *([1] * extra))
    return (1.0 / depth - 1.0 / far) / (1.0 / near - 1.0 / far)


def source_views(extrinsics: torch.Tensor, num: int) -> torch.Tensor:
    """For every view, the ``num`` other views whose cameras are nearest: [B, V, num] int64.

    ``extrinsics`` [B, V, 4, 4] camera-to-world; ``num`` <= V − 1.
    """
    centres = extrinsics[..., :3, 3]
    dist = torch.cdist(centres, centres)
    eye = torch.eye(dist.shape[-1], dtype=torch.bool, device=dist.device)
    dist = dist.masked_fill(eye, float("inf"))
    return dist.topk(num, dim=-1, largest=False).indices


def plane_sweep_cost_volume(
    features: torch.Tensor,
    extrinsics: torch.Tensor,
    intrinsics: torch.Tensor,
    depths: torch.Tensor,
    *,
    num_source_views: int | None = None,
) -> torch.Tensor:
    """Correlation of every view's features with the other views' features warped onto its planes.

    Args:
        features: [B, V, C, h, w] per-view features (any resolution: intrinsics are normalised).
        extrinsics: [B, V, 4, 4] camera-to-world; intrinsics: [B, V, 3, 3] normalised.
        depths: [B, V, D] the candidate depths of each reference view.
        num_source_views: correlate with this many nearest other views (by camera centre); None for
            all V − 1.

    Returns:
        [B, V, D, h, w]: the dot product over channels / √C, averaged over the source views; 0 where a
        plane point falls outside a source image or behind its camera, and 0 everywhere when V == 1
        (the monocular fallback: the depth network then works from the features alone).
    """
    b, v, c, h, w = features.shape
    d = depths.shape[-1]
    n = v - 1 if num_source_views is None else min(num_source_views, v - 1)
    if n <= 0:
        return features.new_zeros(b, v, d, h, w)
    uv1 = pixel_grid(h, w, device=features.device, dtype=features.dtype)
    rays = (torch.linalg.inv(intrinsics)[:, :, None, None] @ uv1[..., None]).squeeze(-1)  # [B, V, h, w, 3]
    sources = source_views(extrinsics, n)
    reference = features.flatten(0, 1)  # [BV, C, h, w]
    total = features.new_zeros(b * v, d, h, w)
    for s in range(n):
        j = sources[..., s]  # [B, V]
        src_feat = torch.gather(features, 1, j[..., None, None, None].expand(-1, -1, c, h, w))
        src_extr = torch.gather(extrinsics, 1, j[..., None, None].expand(-1, -1, 4, 4))
        src_intr = torch.gather(intrinsics, 1, j[..., None, None].expand(-1, -1, 3, 3))
        ref_to_src = world_to_camera(src_extr) @ extrinsics  # [B, V, 4, 4]
        kr = src_intr @ ref_to_src[..., :3, :3]
        a = (kr[:, :, None, None] @ rays[..., None]).squeeze(-1)  # [B, V, h, w, 3]
        offset = (src_intr @ ref_to_src[..., :3, 3:]).squeeze(-1)  # [B, V, 3]
        proj = depths[..., None, None, None] * a[:, :, None] + offset[:, :, None, None, None, :]
        z = proj[..., 2]  # [B, V, D, h, w]
        valid = z > 1e-6
        uv = proj[..., :2] / z.clamp(min=1e-6)[..., None]
        grid = (uv * 2.0 - 1.0).reshape(b * v, d * h, w, 2)
        warped = F.grid_sample(
            src_feat.flatten(0, 1), grid, mode="bilinear", padding_mode="zeros", align_corners=False
        ).view(b * v, c, d, h, w)
        corr = (reference[:, :, None] * warped).sum(1) / math.sqrt(c)
        total = total + corr * valid.flatten(0, 1)
    return (total / n).view(b, v, d, h, w)
