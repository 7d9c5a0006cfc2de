"""How well predicted Gaussian centres sit on the true surface, overall and at depth boundaries.

These are the measurements the PM-Loss bars are stated in. Both are our definitions (the paper
shows floaters qualitatively):

- **centre distance**: Euclidean distance from each Gaussian centre to the nearest point of the
  scene's true surface, sampled by the ground-truth pointmaps of every view of the batch item
  (context and target views), averaged over pixels; also relative to the pixel's true depth.
- **boundary floaters**: among pixels within one pixel of a depth discontinuity of the context
  view (a relative jump above ``boundary_threshold`` between 4-neighbours), the share whose
  Gaussian lies farther than ``floater_threshold`` × its true depth from the surface: the
  Gaussians smeared between a foreground object and the background behind it.
"""

from __future__ import annotations

import torch

import kernels_core
from accel_shared.gs.data import depth_boundaries

__all__ = ["geometry_metrics", "surface_distance"]


def surface_distance(points: torch.Tensor, surface: torch.Tensor) -> torch.Tensor:
    """Distance [B, P] from each of points [B, P, 3] to the nearest of surface samples [B, M, 3]."""
    squared, _ = kernels_core.nearest_neighbor(points.detach().float(), surface.detach().float())
    return squared.sqrt()


@torch.no_grad()
def geometry_metrics(
    means_per_pixel: torch.Tensor,
    depth: torch.Tensor,
    surface: torch.Tensor,
    *,
    boundary_threshold: float = 0.1,
    floater_threshold: float = 0.05,
) -> dict[str, torch.Tensor]:
    """Per-item geometry of one-Gaussian-per-pixel predictions.

    Args:
        means_per_pixel: [B, V, H, W, 3] predicted centres of the context views' pixels.
        depth: [B, V, H, W] true z-depth of those pixels.
        surface: [B, M, 3] samples of the true surface (e.g. all ground-truth pointmaps, flattened).
        boundary_threshold: relative depth jump that makes a discontinuity.
        floater_threshold: a centre farther than this × its true depth from the surface is a floater.

    Returns:
        per item [B]: "centre_distance" (world units), "centre_distance_rel" (÷ true depth),
        "boundary_distance_rel" (the same over boundary pixels), "boundary_floaters" (share of
        boundary pixels that are floaters), "floaters" (share over all pixels).
    """
    batch = means_per_pixel.shape[0]
    if means_per_pixel.dim() != 5 or means_per_pixel.shape[-1] != 3:
        raise ValueError(f"means_per_pixel must be [B, V, H, W, 3], got {list(means_per_pixel.shape)}")
    if depth.shape != means_per_pixel.shape[:-1]:
        raise ValueError(
            f"depth must be [B, V, H, W] = {list(means_per_pixel.shape[:-1])}, got {list(depth.shape)}"
        )
    distance = surface_distance(means_per_pixel.reshape(batch, -1, 3), surface).reshape(depth.shape)
    relative = distance / depth
    near_edge = depth_boundaries(depth, boundary_threshold)
    # one pixel of dilation: a floater sits next to the jump as often as on it
    near_edge = torch.nn.functional.max_pool2d(near_edge.flatten(0, 1).float().unsqueeze(1), 3, 1, 1)
    near_edge = near_edge.squeeze(1).reshape(depth.shape) > 0
    floating = relative > floater_threshold
    edges = near_edge.flatten(1).sum(1).clamp(min=1)
    return {
        "centre_distance": distance.flatten(1).mean(1),
        "centre_distance_rel": relative.flatten(1).mean(1),
        "boundary_distance_rel": (relative * near_edge).flatten(1).sum(1) / edges,
        "boundary_floaters": (floating & near_edge).flatten(1).sum(1) / edges,
        "floaters": floating.flatten(1).float().mean(1),
    }
