"""Projection of 3-D Gaussians to 2-D splats and their tile intersections, in gsplat's conventions.

These steps cost O(N) per camera and run as plain torch ops (autograd gives the projection's
backward); the O(pixels × Gaussians) compositing is the compiled op in
:mod:`kernels_core.ops.rasterize`. Conventions, as in gsplat 1.x:

- quaternions (w, x, y, z), normalised here; covariance Σ = R S Sᵀ Rᵀ with S = diag(scales);
- ``viewmats`` world-to-camera [..., C, 4, 4] (OpenCV axes), ``Ks`` pixel intrinsics [..., C, 3, 3];
- pinhole projection with the Jacobian's x/y clamped to 1.3 × the field of view, a 2-D blur
  ``eps2d`` added to the projected covariance, and radii ceil(3.33 σ) per image axis;
- Gaussians behind ``near_plane``, beyond ``far_plane`` or wholly outside the image get radius 0
  and touch no tile.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

__all__ = [
    "Intersections",
    "ProjectedGaussians",
    "intersect_tiles",
    "project_gaussians",
    "quaternion_scale_to_covariance",
    "tile_bounds",
]


def quaternion_scale_to_covariance(quats: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Σ = R diag(scales)² Rᵀ: quats [..., 4] (w, x, y, z; any norm), scales [..., 3] -> [..., 3, 3]."""
    w, x, y, z = F.normalize(quats, dim=-1).unbind(-1)
    rotation = torch.stack(
        [
            1 - 2 * (y * y + z * z),
            2 * (x * y - w * z),
            2 * (x * z + w * y),
            2 * (x * y + w * z),
            1 - 2 * (x * x + z * z),
            2 * (y * z - w * x),
            2 * (x * z - w * y),
            2 * (y * z + w * x),
            1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(*quats.shape[:-1], 3, 3)
    m = rotation * scales.unsqueeze(-2)
    return m @ m.transpose(-1, -2)


class ProjectedGaussians(NamedTuple):
    """Per camera c and Gaussian n: the splat that gets composited.

    Attributes:
        means2d: [..., C, N, 2] centres in pixels.
        conics: [..., C, N, 3] (a, b, c) of the inverse 2-D covariance [[a, b], [b, c]].
        depths: [..., C, N] camera-space z.
        radii: [..., C, N, 2] int32 half-extents in pixels along x and y; 0 = culled.
    """

    means2d: torch.Tensor
    conics: torch.Tensor
    depths: torch.Tensor
    radii: torch.Tensor


def project_gaussians(
    means: torch.Tensor,
    quats: torch.Tensor,
    scales: torch.Tensor,
    viewmats: torch.Tensor,
    Ks: torch.Tensor,
    width: int,
    height: int,
    *,
    eps2d: float = 0.3,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
) -> ProjectedGaussians:
    """Projects N Gaussians into C pinhole cameras (differentiable in every tensor input).

    Args:
        means: [..., N, 3] world centres; quats: [..., N, 4]; scales: [..., N, 3].
        viewmats: [..., C, 4, 4] world-to-camera; Ks: [..., C, 3, 3] pixel intrinsics.
        width, height: image size in pixels.
    """
    covars = quaternion_scale_to_covariance(quats, scales)  # [..., N, 3, 3]
    rotation, translation = viewmats[..., :3, :3], viewmats[..., :3, 3]
    means_c = torch.einsum("...cij,...nj->...cni", rotation, means) + translation.unsqueeze(-2)
    covars_c = torch.einsum("...cij,...njk,...clk->...cnil", rotation, covars, rotation)

    tx, ty, tz = means_c.unbind(-1)  # [..., C, N]
    fx, fy = Ks[..., 0, 0, None], Ks[..., 1, 1, None]
    cx, cy = Ks[..., 0, 2, None], Ks[..., 1, 2, None]
    # The Jacobian is taken at a point clamped to 1.3 × the field of view, so Gaussians far
    # outside the image do not produce huge splats (gsplat's rule).
    margin_x, margin_y = 0.3 * 0.5 * width / fx, 0.3 * 0.5 * height / fy
    jx = tz * torch.clamp(tx / tz, min=-(cx / fx + margin_x), max=(width - cx) / fx + margin_x)
    jy = tz * torch.clamp(ty / tz, min=-(cy / fy + margin_y), max=(height - cy) / fy + margin_y)
    zero = torch.zeros_like(tz)
    jacobian = torch.stack(
        [fx / tz, zero, -fx * jx / tz**2, zero, fy / tz, -fy * jy / tz**2], dim=-1
    ).reshape(*tz.shape, 2, 3)
    covars2d = jacobian @ covars_c @ jacobian.transpose(-1, -2)
    means2d = torch.einsum("...cij,...cnj->...cni", Ks[..., :2, :3], means_c) / tz.unsqueeze(-1)

    covars2d = covars2d + eps2d * torch.eye(2, dtype=covars2d.dtype, device=covars2d.device)
    s00, s01, s10, s11 = covars2d[..., 0, 0], covars2d[..., 0, 1], covars2d[..., 1, 0], covars2d[..., 1, 1]
    det = (s00 * s11 - s01 * s10).clamp(min=1e-10)
    conics = torch.stack([s11 / det, -(s01 + s10) / 2 / det, s00 / det], dim=-1)

    with torch.no_grad():
        radius = torch.ceil(3.33 * torch.stack([s00, s11], dim=-1).clamp(min=0).sqrt())
        valid = (det > 0) & (tz > near_plane) & (tz < far_plane)
        inside = (
            (means2d[..., 0] + radius[..., 0] > 0)
            & (means2d[..., 0] - radius[..., 0] < width)
            & (means2d[..., 1] + radius[..., 1] > 0)
            & (means2d[..., 1] - radius[..., 1] < height)
        )
        radii = torch.where((valid & inside).unsqueeze(-1), radius, 0.0).int()
    return ProjectedGaussians(means2d, conics, tz, radii)


def tile_bounds(
    means2d: torch.Tensor, radii: torch.Tensor, tile_size: int, tiles_x: int, tiles_y: int
) -> torch.Tensor:
    """The tiles each splat touches, [..., N, 4] int64 (x0, y0, x1, y1), half-open, empty when culled.

    A splat covers tiles floor((μ − r) / tile) .. ceil((μ + r) / tile) − 1 along each axis,
    clamped to the image (gsplat's rule).
    """
    with torch.no_grad():
        lo = torch.floor((means2d - radii) / tile_size).long()
        hi = torch.ceil((means2d + radii) / tile_size).long()
        limit = torch.tensor([tiles_x, tiles_y], device=means2d.device)
        lo = torch.minimum(lo.clamp(min=0), limit)
        hi = torch.minimum(hi.clamp(min=0), limit)
        culled = (radii <= 0).any(dim=-1, keepdim=True)
        hi = torch.where(culled, lo, hi)
        return torch.cat([lo, hi], dim=-1)


class Intersections(NamedTuple):
    """Tile/splat pairs sorted by (image, tile, depth), the layout the rasterizer reads.

    Attributes:
        isect_offsets: [I, tiles_y, tiles_x] int32, index of each tile's first pair.
        flatten_ids: [n_isects] int32, the splat of each pair as an index into I × N.
    """

    isect_offsets: torch.Tensor
    flatten_ids: torch.Tensor


def intersect_tiles(
    means2d: torch.Tensor, radii: torch.Tensor, depths: torch.Tensor, tile_size: int, width: int, height: int
) -> Intersections:
    """Lists, for every tile of every image, the splats touching it, front to back.

    Args:
        means2d: [I, N, 2]; radii: [I, N, 2] int; depths: [I, N] (ties keep the lower index).
        tile_size: tile edge in pixels; width, height: image size.
    """
    images, n = depths.shape
    tiles_x, tiles_y = -(-width // tile_size), -(-height // tile_size)
    device = means2d.device
    with torch.no_grad():
        x0, y0, x1, y1 = tile_bounds(means2d, radii, tile_size, tiles_x, tiles_y).unbind(-1)
        span_x = (x1 - x0).flatten()
        counts = (span_x * (y1 - y0).flatten()).clamp(min=0)
        splat = torch.repeat_interleave(torch.arange(images * n, device=device), counts)
        first = torch.cumsum(counts, 0) - counts
        local = torch.arange(splat.numel(), device=device) - first[splat]
        tile_x = x0.flatten()[splat] + local % span_x[splat]
        tile_y = y0.flatten()[splat] + local // span_x[splat]
        image = splat // n
        tile = (image * tiles_y + tile_y) * tiles_x + tile_x
        # Front-to-back rank of each splat within its image: sort once per image, not per pair.
        order = torch.argsort(depths, dim=-1, stable=True)
        rank = torch.empty_like(order)
        rank.scatter_(-1, order, torch.arange(n, device=device).expand(images, n))
        key = tile * n + rank.flatten()[splat]
        pairs = torch.argsort(key)
        tile_counts = torch.bincount(tile, minlength=images * tiles_y * tiles_x)
        offsets = (torch.cumsum(tile_counts, 0) - tile_counts).reshape(images, tiles_y, tiles_x)
        return Intersections(offsets.int(), splat[pairs].int())
