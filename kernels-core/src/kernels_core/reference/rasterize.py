"""Dense pure-torch references for the Gaussian rasterizer.

Every pixel is composited against every splat ([I, H·W, N] tensors), with the kernel's rules
written as whole-tensor ops: a splat counts at a pixel only when the pixel's tile is in the splat's
tile list, alpha = min(0.999, opacity·exp(−σ)) is dropped below 1/255, and a pixel keeps the
splats in front of the first one that would take its transmittance to 1e-4 or below. Autograd
gives the gradients. Memory grows as pixels × splats: use small images.
"""

from __future__ import annotations

import torch

from kernels_core.ops.gaussian_projection import project_gaussians, tile_bounds
from kernels_core.ops.rasterize import RENDER_MODES, RasterizeOutput, normalise_depth, render_channels

MIN_ALPHA, MAX_ALPHA, MIN_TRANSMITTANCE = 1.0 / 255.0, 0.999, 1e-4


def _pixel_centres(width: int, height: int, device: torch.device) -> torch.Tensor:
    ys, xs = torch.meshgrid(
        torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij"
    )
    return torch.stack([xs, ys], dim=-1).reshape(-1, 2).float() + 0.5  # [P, 2]


def _pixel_tiles(width: int, height: int, tile_size: int, device: torch.device) -> torch.Tensor:
    """Tile (x, y) of every pixel, [P, 2]."""
    return (_pixel_centres(width, height, device) - 0.5).long() // tile_size


def _splat_alphas(
    means2d: torch.Tensor, conics: torch.Tensor, opacities: torch.Tensor, pixels: torch.Tensor
) -> torch.Tensor:
    """alpha [I, P, N] of every splat at every pixel centre, zero where the splat is skipped."""
    delta = means2d[:, None, :, :] - pixels[None, :, None, :]  # [I, P, N, 2]
    dx, dy = delta.unbind(-1)
    a, b, c = (t[:, None, :] for t in conics.unbind(-1))
    sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
    alpha = torch.clamp(opacities[:, None, :] * torch.exp(-sigma), max=MAX_ALPHA)
    return torch.where((sigma >= 0) & (alpha >= MIN_ALPHA), alpha, torch.zeros_like(alpha))


def _composite(
    alphas: torch.Tensor, colors: torch.Tensor, backgrounds: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Front-to-back compositing of alphas [I, P, L] (already in order) with colors [I, P, L, K]."""
    reached = torch.cumprod(1 - alphas, dim=-1)
    alphas = alphas * (reached > MIN_TRANSMITTANCE)
    through = torch.cumprod(1 - alphas, dim=-1)
    in_front = torch.cat([torch.ones_like(through[..., :1]), through[..., :-1]], dim=-1)
    render = ((alphas * in_front).unsqueeze(-1) * colors).sum(dim=-2)  # [I, P, K]
    final = through[..., -1:] if through.shape[-1] else torch.ones_like(render[..., :1])
    if backgrounds is not None:
        render = render + final * backgrounds[:, None, :]
    return render, 1 - final


def rasterize_to_pixels(
    means2d: torch.Tensor,
    conics: torch.Tensor,
    colors: torch.Tensor,
    opacities: torch.Tensor,
    image_width: int,
    image_height: int,
    tile_size: int,
    isect_offsets: torch.Tensor,
    flatten_ids: torch.Tensor,
    backgrounds: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference for :func:`kernels_core.ops.rasterize.rasterize_to_pixels`: membership and order
    come from the tile lists, exactly what the kernel reads."""
    images, n = means2d.shape[:2]
    device = means2d.device
    tiles_y, tiles_x = isect_offsets.shape[1:]
    num_tiles = images * tiles_y * tiles_x
    counts = torch.diff(
        isect_offsets.flatten().long(), append=torch.tensor([flatten_ids.numel()], device=device)
    )
    tile_of_pair = torch.repeat_interleave(torch.arange(num_tiles, device=device), counts)
    # position[tile, splat] = the pair's index in the sorted list, or a large value when absent
    absent = flatten_ids.numel() + n
    position = torch.full((num_tiles, n), absent, dtype=torch.long, device=device)
    pair = torch.arange(flatten_ids.numel(), device=device)
    position[tile_of_pair, flatten_ids.long() % n] = pair
    order = torch.argsort(position, dim=-1, stable=True).reshape(images, tiles_y * tiles_x, n)
    member = torch.gather(position.reshape(images, -1, n), 2, order) < absent

    pixel_tile = _pixel_tiles(image_width, image_height, tile_size, device)
    pixel_tile = pixel_tile[:, 1] * tiles_x + pixel_tile[:, 0]  # [P]
    pixel_order = order[:, pixel_tile]  # [I, P, N]
    alphas = _splat_alphas(means2d, conics, opacities, _pixel_centres(image_width, image_height, device))
    alphas = torch.gather(alphas, 2, pixel_order) * member[:, pixel_tile]
    sorted_colors = torch.gather(
        colors.unsqueeze(1).expand(-1, pixel_order.shape[1], -1, -1),
        2,
        pixel_order.unsqueeze(-1).expand(-1, -1, -1, colors.shape[-1]),
    )
    render, alpha = _composite(alphas, sorted_colors, backgrounds)
    return (
        render.reshape(images, image_height, image_width, -1),
        alpha.reshape(images, image_height, image_width, 1),
    )


def rasterize_gaussians(
    means: torch.Tensor,
    quats: torch.Tensor,
    scales: torch.Tensor,
    opacities: torch.Tensor,
    colors: torch.Tensor,
    viewmats: torch.Tensor,
    Ks: torch.Tensor,
    width: int,
    height: int,
    *,
    render_mode: str = "RGB",
    backgrounds: torch.Tensor | None = None,
    tile_size: int = 16,
    eps2d: float = 0.3,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
) -> RasterizeOutput:
    """Reference for :func:`kernels_core.rasterize_gaussians`: the same projection, then every
    pixel against every splat in depth order, membership from the splats' tile rectangles."""
    if render_mode not in RENDER_MODES:
        raise ValueError(f"render_mode must be one of {RENDER_MODES}, got {render_mode!r}")
    batch, n = means.shape[:2]
    cameras = viewmats.shape[1]
    images = batch * cameras
    projected = project_gaussians(
        means,
        quats,
        scales,
        viewmats,
        Ks,
        width,
        height,
        eps2d=eps2d,
        near_plane=near_plane,
        far_plane=far_plane,
    )
    features = render_channels(colors, projected.depths, render_mode).reshape(images, n, -1)
    means2d = projected.means2d.reshape(images, n, 2)
    depths = projected.depths.reshape(images, n)
    tiles_x, tiles_y = -(-width // tile_size), -(-height // tile_size)
    bounds = tile_bounds(means2d, projected.radii.reshape(images, n, 2), tile_size, tiles_x, tiles_y)

    order = torch.argsort(depths.detach(), dim=-1, stable=True)  # [I, N]
    pixel_tile = _pixel_tiles(width, height, tile_size, means.device)  # [P, 2]
    bounds = torch.gather(bounds, 1, order.unsqueeze(-1).expand(-1, -1, 4))[:, None]  # [I, 1, N, 4]
    tx, ty = pixel_tile[None, :, None, 0], pixel_tile[None, :, None, 1]
    member = (tx >= bounds[..., 0]) & (tx < bounds[..., 2]) & (ty >= bounds[..., 1]) & (ty < bounds[..., 3])

    def sort(t: torch.Tensor) -> torch.Tensor:
        index = order if t.dim() == 2 else order.unsqueeze(-1).expand(-1, -1, t.shape[-1])
        return torch.gather(t, 1, index)

    flat_opacities = opacities.unsqueeze(1).expand(batch, cameras, n).reshape(images, n)
    conics = projected.conics.reshape(images, n, 3)
    alphas = _splat_alphas(
        sort(means2d), sort(conics), sort(flat_opacities), _pixel_centres(width, height, means.device)
    )
    flat_backgrounds = None if backgrounds is None else backgrounds.reshape(images, -1)
    render, alpha = _composite(alphas * member, sort(features).unsqueeze(1), flat_backgrounds)
    render = normalise_depth(render, alpha, render_mode)
    shape = (batch, cameras, height, width)
    return RasterizeOutput(render.reshape(*shape, -1), alpha.reshape(*shape, 1), projected.radii)
