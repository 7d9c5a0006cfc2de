"""Rendering a batch of Gaussians into cameras: gsplat on CUDA, kernels-core on the CPU.

Both backends implement the same rasterizer (gsplat's projection, tile lists and compositing
rules), so a model trained with one renders the same with the other.
"""

from __future__ import annotations

import importlib.util
from typing import Literal, NamedTuple

import torch

import kernels_core
from accel_shared.gs.cameras import to_pixel_intrinsics, world_to_camera
from accel_shared.gs.gaussians import Gaussians

__all__ = ["RenderOutput", "render"]

Backend = Literal["auto", "kernels-core", "gsplat"]


class RenderOutput(NamedTuple):
    """Rendered views.

    Attributes:
        color: [B, V, 3, H, W] RGB (background where nothing was drawn).
        depth: [B, V, H, W] expected z-depth (Σ wᵢ zᵢ / alpha).
        alpha: [B, V, H, W] accumulated opacity.
    """

    color: torch.Tensor
    depth: torch.Tensor
    alpha: torch.Tensor


def _gsplat_available() -> bool:
    return importlib.util.find_spec("gsplat") is not None


def _choose_backend(backend: Backend, device: torch.device) -> str:
    if backend == "auto":
        return "gsplat" if device.type == "cuda" and _gsplat_available() else "kernels-core"
    if backend == "gsplat" and device.type != "cuda":
        raise ValueError("backend='gsplat' needs CUDA tensors; use 'kernels-core' (or 'auto') on the CPU")
    if backend not in ("gsplat", "kernels-core"):
        raise ValueError(f"backend must be 'auto', 'kernels-core' or 'gsplat', got {backend!r}")
    return backend


def render(
    gaussians: Gaussians,
    extrinsics: torch.Tensor,
    intrinsics: torch.Tensor,
    image_shape: tuple[int, int],
    background: torch.Tensor | None = None,
    *,
    near_plane: float = 0.01,
    backend: Backend = "auto",
) -> RenderOutput:
    """Renders every scene's Gaussians into its V cameras (differentiable in the Gaussians).

    Args:
        gaussians: B scenes of G Gaussians.
        extrinsics: [B, V, 4, 4] camera-to-world; intrinsics: [B, V, 3, 3] normalised.
        image_shape: (H, W) in pixels.
        background: optional RGB [3] (default black).
        backend: "auto" (gsplat for CUDA tensors when installed, else kernels-core), or either one.
    """
    height, width = image_shape
    batch, views = extrinsics.shape[:2]
    if extrinsics.shape != (batch, views, 4, 4) or intrinsics.shape != (batch, views, 3, 3):
        raise ValueError(
            f"extrinsics must be [B, V, 4, 4] and intrinsics [B, V, 3, 3], got {list(extrinsics.shape)} "
            f"and {list(intrinsics.shape)}"
        )
    if batch != gaussians.batch_size:
        raise ValueError(f"extrinsics hold {batch} scenes but gaussians hold {gaussians.batch_size}")
    viewmats = world_to_camera(extrinsics.float())
    ks = to_pixel_intrinsics(intrinsics.float(), height, width)
    rgb_background = torch.zeros(3) if background is None else background.float().cpu()
    # The depth channel's background is 0, so alpha-normalised depth stays the expected depth.
    backgrounds = torch.cat([rgb_background, torch.zeros(1)]).to(viewmats.device).expand(batch, views, 4)
    args = (
        gaussians.means.float(),
        gaussians.rotations.float(),
        gaussians.scales.float(),
        gaussians.opacities.float(),
        gaussians.colors.float(),
        viewmats,
        ks,
        width,
        height,
    )
    if _choose_backend(backend, viewmats.device) == "gsplat":
        import gsplat

        rendered, alphas, _ = gsplat.rasterization(
            *args, render_mode="RGB+ED", backgrounds=backgrounds.contiguous(), near_plane=near_plane
        )
    else:
        rendered, alphas, _ = kernels_core.rasterize_gaussians(
            *args, render_mode="RGB+ED", backgrounds=backgrounds.contiguous(), near_plane=near_plane
        )
    color = rendered[..., :3].permute(0, 1, 4, 2, 3)
    return RenderOutput(color, rendered[..., 3], alphas[..., 0])
