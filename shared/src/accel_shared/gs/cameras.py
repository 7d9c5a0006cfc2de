"""Camera conventions of the 3DGS base, the ones pixelSplat, MVSplat and DepthSplat use.

- ``extrinsics`` [..., 4, 4]: camera-to-world, OpenCV axes (x right, y down, z forward).
- ``intrinsics`` [..., 3, 3]: *normalised* by the image size, so one matrix serves every
  resolution: fx/W, fy/H, cx/W, cy/H. :func:`to_pixel_intrinsics` gives the pixel matrix that
  gsplat's ``Ks`` expects.
- ``depth`` [..., H, W]: z-depth along the camera's forward axis (not the ray length).
- Pixel (row i, column j) has its centre at (j + 0.5, i + 0.5) in pixel coordinates.
"""

from __future__ import annotations

import torch

__all__ = [
    "camera_centers",
    "pixel_grid",
    "to_pixel_intrinsics",
    "unproject_depth",
    "world_to_camera",
]


def to_pixel_intrinsics(intrinsics: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Normalised intrinsics [..., 3, 3] -> pixel intrinsics [..., 3, 3] for an H×W image."""
    scale = intrinsics.new_tensor([[width], [height], [1.0]])
    return intrinsics * scale


def world_to_camera(extrinsics: torch.Tensor) -> torch.Tensor:
    """Camera-to-world [..., 4, 4] -> world-to-camera (the ``viewmats`` of gsplat) [..., 4, 4]."""
    rotation = extrinsics[..., :3, :3]
    translation = extrinsics[..., :3, 3:]
    inverse = torch.zeros_like(extrinsics)
    inverse[..., :3, :3] = rotation.transpose(-1, -2)
    inverse[..., :3, 3:] = -rotation.transpose(-1, -2) @ translation
    inverse[..., 3, 3] = 1.0
    return inverse


def camera_centers(extrinsics: torch.Tensor) -> torch.Tensor:
    """Camera positions in world space [..., 3] from camera-to-world extrinsics [..., 4, 4]."""
    return extrinsics[..., :3, 3]


def pixel_grid(
    height: int, width: int, *, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Normalised pixel-centre coordinates [H, W, 3] as homogeneous (u, v, 1), u = (j + 0.5) / W."""
    v = (torch.arange(height, device=device, dtype=dtype) + 0.5) / height
    u = (torch.arange(width, device=device, dtype=dtype) + 0.5) / width
    grid_v, grid_u = torch.meshgrid(v, u, indexing="ij")
    return torch.stack([grid_u, grid_v, torch.ones_like(grid_u)], dim=-1)


def unproject_depth(
    depth: torch.Tensor,
    extrinsics: torch.Tensor,
    intrinsics: torch.Tensor,
    offsets: torch.Tensor | None = None,
) -> torch.Tensor:
    """World points of every pixel: camera-to-world applied to depth · K⁻¹ (u, v, 1).

    Args:
        depth: [..., H, W] z-depth.
        extrinsics: [..., 4, 4] camera-to-world; intrinsics: [..., 3, 3] normalised.
        offsets: optional [..., H, W, 2] shifts of the pixel centres in normalised image units
            (the xy offsets feed-forward 3DGS models predict); None for the pixel centres.

    Returns:
        [..., H, W, 3] world-space points (differentiable in every input).
    """
    height, width = depth.shape[-2:]
    uv1 = pixel_grid(height, width, device=depth.device, dtype=depth.dtype)
    if offsets is not None:
        uv1 = torch.cat([uv1[..., :2] + offsets, uv1[..., 2:].expand_as(offsets[..., :1])], dim=-1)
    else:
        uv1 = uv1.expand(*depth.shape, 3)
    inverse_k = torch.linalg.inv(intrinsics)[..., None, None, :, :]
    rays = (inverse_k @ uv1.unsqueeze(-1)).squeeze(-1)  # [..., H, W, 3], z = 1
    points_cam = rays * depth.unsqueeze(-1)
    rotation = extrinsics[..., None, None, :3, :3]
    translation = extrinsics[..., None, None, :3, 3]
    return (rotation @ points_cam.unsqueeze(-1)).squeeze(-1) + translation
