"""Gaussian splatting: ``kernels_core::rasterize_to_pixels`` (the compiled compositing op) and
:func:`rasterize_gaussians`, the whole pipeline from 3-D Gaussians to images.

The op follows gsplat's ``rasterize_to_pixels`` (same arguments, outputs and rules), so code
written for gsplat's CUDA path runs on the CPU with this one. Its backward is a second compiled
op; gradients of each (tile, splat) pair are summed inside the kernel and scattered to the
splats here, which keeps the result deterministic.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import torch

from kernels_core import _checks
from kernels_core._library import library
from kernels_core.ops.gaussian_projection import intersect_tiles, project_gaussians

__all__ = ["RasterizeOutput", "rasterize_gaussians", "rasterize_to_pixels"]

RenderMode = Literal["RGB", "D", "ED", "RGB+D", "RGB+ED"]
RENDER_MODES = ("RGB", "D", "ED", "RGB+D", "RGB+ED")


def _check_inputs(
    means2d: torch.Tensor,
    conics: torch.Tensor,
    colors: torch.Tensor,
    opacities: torch.Tensor,
    backgrounds: torch.Tensor | None,
    isect_offsets: torch.Tensor,
    flatten_ids: torch.Tensor,
    width: int,
    height: int,
    tile_size: int,
) -> None:
    _checks.check_tensor("means2d", means2d, 3, "[I, N, 2]")
    images, n = means2d.shape[:2]
    expected = {"means2d": (means2d, [images, n, 2]), "conics": (conics, [images, n, 3])}
    expected["opacities"] = (opacities, [images, n])
    _checks.check_tensor("colors", colors, 3, "[I, N, K]")
    expected["colors"] = (colors, [images, n, colors.shape[-1]])
    if backgrounds is not None:
        expected["backgrounds"] = (backgrounds, [images, colors.shape[-1]])
    for name, (tensor, shape) in expected.items():
        if not isinstance(tensor, torch.Tensor) or list(tensor.shape) != shape:
            got = list(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise ValueError(f"{name} must have shape {shape} (I images, N splats, K channels), got {got}")
        if not tensor.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {tensor.dtype}")
    max_channels = library().RasterizeParams.max_channels
    if not 0 < colors.shape[-1] <= max_channels:
        raise ValueError(f"colors: K (dim 2) must be in 1..{max_channels}, got {colors.shape[-1]}")
    if width <= 0 or height <= 0 or tile_size <= 0:
        raise ValueError(f"width, height and tile_size must be positive, got {width}, {height}, {tile_size}")
    tiles = [images, -(-height // tile_size), -(-width // tile_size)]
    if list(isect_offsets.shape) != tiles or isect_offsets.dtype != torch.int32:
        raise ValueError(
            f"isect_offsets must be int32 [I, tiles_y, tiles_x] = {tiles}, "
            f"got {isect_offsets.dtype} {list(isect_offsets.shape)}"
        )
    if flatten_ids.dim() != 1 or flatten_ids.dtype != torch.int32:
        raise ValueError(
            f"flatten_ids must be a 1-D int32 tensor, got {flatten_ids.dtype} {list(flatten_ids.shape)}"
        )
    others = {"conics": conics, "colors": colors, "opacities": opacities}
    others |= {"isect_offsets": isect_offsets, "flatten_ids": flatten_ids}
    _checks.check_same_device("means2d", means2d, **others)


def _params(
    means2d: torch.Tensor,
    conics: torch.Tensor,
    colors: torch.Tensor,
    opacities: torch.Tensor,
    backgrounds: torch.Tensor | None,
    isect_offsets: torch.Tensor,
    flatten_ids: torch.Tensor,
    width: int,
    height: int,
    tile_size: int,
) -> Any:
    """RasterizeParams over float32 contiguous copies (kept alive on the params object)."""
    p = library().RasterizeParams()
    keep = [t.float().contiguous() for t in (means2d, conics, colors, opacities)]
    keep += [isect_offsets.contiguous(), flatten_ids.contiguous()]
    p.means2d, p.conics, p.colors, p.opacities = (t.data_ptr() for t in keep[:4])
    p.isect_offsets, p.flatten_ids = keep[4].data_ptr(), keep[5].data_ptr()
    if backgrounds is not None:
        keep.append(backgrounds.float().contiguous())
        p.backgrounds = keep[-1].data_ptr()
    p.images, p.gaussians, p.channels = means2d.shape[0], means2d.shape[1], colors.shape[-1]
    p.n_isects = flatten_ids.numel()
    p.width, p.height, p.tile_size = width, height, tile_size
    p.tiles_x, p.tiles_y = isect_offsets.shape[2], isect_offsets.shape[1]
    return p, keep


@torch.library.custom_op("kernels_core::rasterize_to_pixels", mutates_args=(), device_types="cpu")
def _rasterize_op(
    means2d: torch.Tensor,
    conics: torch.Tensor,
    colors: torch.Tensor,
    opacities: torch.Tensor,
    backgrounds: torch.Tensor | None,
    isect_offsets: torch.Tensor,
    flatten_ids: torch.Tensor,
    width: int,
    height: int,
    tile_size: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    args = (
        means2d,
        conics,
        colors,
        opacities,
        backgrounds,
        isect_offsets,
        flatten_ids,
        width,
        height,
        tile_size,
    )
    _check_inputs(*args)
    images, channels = means2d.shape[0], colors.shape[-1]
    render_colors = torch.empty(images, height, width, channels)
    render_alphas = torch.empty(images, height, width, 1)
    last_ids = torch.empty(images, height, width, dtype=torch.int32)
    p, _keep = _params(*args)
    p.render_colors, p.render_alphas, p.last_ids = (
        t.data_ptr() for t in (render_colors, render_alphas, last_ids)
    )
    library().rasterize_to_pixels_cpu(p, torch.get_num_threads())
    return render_colors, render_alphas, last_ids


@_rasterize_op.register_kernel("cuda")
def _rasterize_cuda(*args: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    raise NotImplementedError(
        "kernels_core::rasterize_to_pixels runs on the CPU; on CUDA use gsplat.rasterize_to_pixels "
        "(same arguments), as accel_shared.gs.render does"
    )


@_rasterize_op.register_fake
def _rasterize_fake(
    means2d: torch.Tensor,
    conics: torch.Tensor,
    colors: torch.Tensor,
    opacities: torch.Tensor,
    backgrounds: torch.Tensor | None,
    isect_offsets: torch.Tensor,
    flatten_ids: torch.Tensor,
    width: int,
    height: int,
    tile_size: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    images, channels = means2d.shape[0], colors.shape[-1]
    return (
        means2d.new_empty(images, height, width, channels, dtype=torch.float32),
        means2d.new_empty(images, height, width, 1, dtype=torch.float32),
        means2d.new_empty(images, height, width, dtype=torch.int32),
    )


@torch.library.custom_op("kernels_core::rasterize_to_pixels_backward", mutates_args=(), device_types="cpu")
def _rasterize_backward_op(
    means2d: torch.Tensor,
    conics: torch.Tensor,
    colors: torch.Tensor,
    opacities: torch.Tensor,
    backgrounds: torch.Tensor | None,
    isect_offsets: torch.Tensor,
    flatten_ids: torch.Tensor,
    width: int,
    height: int,
    tile_size: int,
    render_alphas: torch.Tensor,
    last_ids: torch.Tensor,
    v_render_colors: torch.Tensor,
    v_render_alphas: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients for means2d [I, N, 2], conics [I, N, 3], colors [I, N, K], opacities [I, N]."""
    args = (
        means2d,
        conics,
        colors,
        opacities,
        backgrounds,
        isect_offsets,
        flatten_ids,
        width,
        height,
        tile_size,
    )
    p, keep = _params(*args)
    n_isects, channels = flatten_ids.numel(), colors.shape[-1]
    b = library().RasterizeBackwardParams()
    alphas, last = render_alphas.float().contiguous(), last_ids.contiguous()
    v_colors_in, v_alphas_in = v_render_colors.float().contiguous(), v_render_alphas.float().contiguous()
    p.render_alphas, p.last_ids = alphas.data_ptr(), last.data_ptr()
    b.forward = p
    b.v_render_colors, b.v_render_alphas = v_colors_in.data_ptr(), v_alphas_in.data_ptr()
    v_means, v_conics = torch.empty(n_isects, 2), torch.empty(n_isects, 3)
    v_colors, v_opacities = torch.empty(n_isects, channels), torch.empty(n_isects)
    b.v_means2d, b.v_conics = v_means.data_ptr(), v_conics.data_ptr()
    b.v_colors, b.v_opacities = v_colors.data_ptr(), v_opacities.data_ptr()
    library().rasterize_to_pixels_backward_cpu(b, torch.get_num_threads())
    del keep
    images, n = means2d.shape[:2]
    index = flatten_ids.long()

    def scatter(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(images * n, *values.shape[1:])
        out.index_add_(0, index, values)
        return out.reshape(like.shape).to(like.dtype)

    return (
        scatter(v_means, means2d),
        scatter(v_conics, conics),
        scatter(v_colors, colors),
        scatter(v_opacities, opacities),
    )


@_rasterize_backward_op.register_fake
def _rasterize_backward_fake(
    means2d: torch.Tensor,
    conics: torch.Tensor,
    colors: torch.Tensor,
    opacities: torch.Tensor,
    *rest: Any,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return (
        torch.empty_like(means2d),
        torch.empty_like(conics),
        torch.empty_like(colors),
        torch.empty_like(opacities),
    )


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[torch.Tensor, ...]) -> None:
    means2d, conics, colors, opacities, backgrounds, isect_offsets, flatten_ids, width, height, tile_size = (
        inputs
    )
    _, render_alphas, last_ids = output
    ctx.save_for_backward(
        means2d, conics, colors, opacities, backgrounds, isect_offsets, flatten_ids, render_alphas, last_ids
    )
    ctx.sizes = (width, height, tile_size)


def _backward(
    ctx: Any, v_render_colors: torch.Tensor, v_render_alphas: torch.Tensor, _v_last: Any
) -> tuple[Any, ...]:
    means2d, conics, colors, opacities, backgrounds, isect_offsets, flatten_ids, alphas, last_ids = (
        ctx.saved_tensors
    )
    width, height, tile_size = ctx.sizes
    v_means, v_conics, v_colors, v_opacities = _rasterize_backward_op(
        means2d, conics, colors, opacities, backgrounds, isect_offsets, flatten_ids, width, height, tile_size,
        alphas, last_ids, v_render_colors, v_render_alphas.squeeze(-1),
    )  # fmt: skip
    v_backgrounds = None
    if backgrounds is not None and ctx.needs_input_grad[4]:
        v_backgrounds = (v_render_colors * (1.0 - alphas)).sum(dim=(1, 2)).to(backgrounds.dtype)
    return v_means, v_conics, v_colors, v_opacities, v_backgrounds, None, None, None, None, None


_rasterize_op.register_autograd(_backward, setup_context=_setup_context)


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
    """Alpha-composites depth-sorted splats per tile (gsplat's ``rasterize_to_pixels``, CPU).

    Args:
        means2d: [I, N, 2] centres in pixels; conics: [I, N, 3]; colors: [I, N, K] (K ≤ 64);
            opacities: [I, N] in [0, 1].
        image_width, image_height, tile_size: sizes in pixels.
        isect_offsets, flatten_ids: from :func:`~kernels_core.ops.gaussian_projection.intersect_tiles`.
        backgrounds: optional [I, K], seen through the remaining transmittance.

    Returns:
        render_colors [I, H, W, K] and render_alphas [I, H, W, 1] (float32), differentiable in
        means2d, conics, colors, opacities and backgrounds.
    """
    args = (means2d, conics, colors, opacities, backgrounds, isect_offsets, flatten_ids)
    _check_inputs(*args, image_width, image_height, tile_size)
    render_colors, render_alphas, _ = _rasterize_op(*args, image_width, image_height, tile_size)
    return render_colors, render_alphas


class RasterizeOutput(NamedTuple):
    """Result of :func:`rasterize_gaussians`.

    Attributes:
        render: [B, C, H, W, K'] colours, and/or depth as the last channel (see ``render_mode``).
        alphas: [B, C, H, W, 1] accumulated opacity.
        radii: [B, C, N, 2] int32 splat radii in pixels (0 = not visible in that camera).
    """

    render: torch.Tensor
    alphas: torch.Tensor
    radii: torch.Tensor


def _check_gaussians(
    means: torch.Tensor,
    quats: torch.Tensor,
    scales: torch.Tensor,
    opacities: torch.Tensor,
    colors: torch.Tensor,
    viewmats: torch.Tensor,
    Ks: torch.Tensor,
    render_mode: str,
) -> None:
    _checks.check_tensor("means", means, 3, "[B, N, 3]")
    batch, n = means.shape[:2]
    _checks.check_tensor("viewmats", viewmats, 4, "[B, C, 4, 4]")
    cameras = viewmats.shape[1]
    shapes = {
        "means": (means, [batch, n, 3]),
        "quats": (quats, [batch, n, 4]),
        "scales": (scales, [batch, n, 3]),
        "opacities": (opacities, [batch, n]),
        "viewmats": (viewmats, [batch, cameras, 4, 4]),
        "Ks": (Ks, [batch, cameras, 3, 3]),
    }
    if render_mode not in ("D", "ED"):
        shapes["colors"] = (colors, [batch, n, colors.shape[-1]])
    for name, (tensor, shape) in shapes.items():
        if not isinstance(tensor, torch.Tensor) or list(tensor.shape) != shape:
            got = list(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise ValueError(f"{name} must have shape {shape} (B scenes, N Gaussians, C cameras), got {got}")
        if not tensor.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {tensor.dtype}")
    if render_mode not in RENDER_MODES:
        raise ValueError(f"render_mode must be one of {RENDER_MODES}, got {render_mode!r}")
    _checks.check_same_device(
        "means", means, quats=quats, scales=scales, opacities=opacities, viewmats=viewmats, Ks=Ks
    )


def render_channels(colors: torch.Tensor, depths: torch.Tensor, render_mode: str) -> torch.Tensor:
    """What each splat carries into the image for ``render_mode``: colors [B, N, K] and/or the
    camera-space depths [B, C, N] as the last channel -> [B, C, N, K']."""
    batch, cameras, n = depths.shape
    channels = []
    if render_mode.startswith("RGB"):
        channels.append(colors.unsqueeze(1).expand(batch, cameras, n, colors.shape[-1]))
    if "D" in render_mode:
        channels.append(depths.unsqueeze(-1))
    return torch.cat(channels, dim=-1)


def normalise_depth(render: torch.Tensor, alphas: torch.Tensor, render_mode: str) -> torch.Tensor:
    """For the "ED" modes, the accumulated depth (last channel) divided by alpha: the expected depth."""
    if not render_mode.endswith("ED"):
        return render
    return torch.cat([render[..., :-1], render[..., -1:] / alphas.clamp(min=1e-10)], dim=-1)


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
    render_mode: RenderMode = "RGB",
    backgrounds: torch.Tensor | None = None,
    tile_size: int = 16,
    eps2d: float = 0.3,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
) -> RasterizeOutput:
    """Renders B scenes of N Gaussians into C cameras each, as ``gsplat.rasterization`` does.

    Args:
        means: [B, N, 3]; quats: [B, N, 4] (w, x, y, z); scales: [B, N, 3]; opacities: [B, N];
            colors: [B, N, K] (ignored for ``render_mode`` "D" and "ED").
        viewmats: [B, C, 4, 4] world-to-camera; Ks: [B, C, 3, 3] pixel intrinsics.
        render_mode: "RGB"; "D" accumulated depth Σ wᵢ zᵢ; "ED" expected depth (D / alpha);
            "RGB+D" / "RGB+ED" append the depth as the last channel.
        backgrounds: optional [B, C, K'] for the rendered channels.

    Returns:
        :class:`RasterizeOutput`: render [B, C, H, W, K'], alphas [B, C, H, W, 1], radii.
    """
    _check_gaussians(means, quats, scales, opacities, colors, viewmats, Ks, render_mode)
    batch, n = means.shape[:2]
    cameras = viewmats.shape[1]
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
    images = batch * cameras
    features = render_channels(colors, projected.depths, render_mode).reshape(images, n, -1)
    means2d = projected.means2d.reshape(images, n, 2)
    radii = projected.radii.reshape(images, n, 2)
    isects = intersect_tiles(means2d, radii, projected.depths.reshape(images, n), tile_size, width, height)
    flat_backgrounds = None if backgrounds is None else backgrounds.reshape(images, -1)
    render, alphas = rasterize_to_pixels(
        means2d,
        projected.conics.reshape(images, n, 3),
        features,
        opacities.unsqueeze(1).expand(batch, cameras, n).reshape(images, n),
        width,
        height,
        tile_size,
        isects.isect_offsets,
        isects.flatten_ids,
        flat_backgrounds,
    )
    render = normalise_depth(render, alphas, render_mode)
    shape = (batch, cameras, height, width)
    return RasterizeOutput(render.reshape(*shape, -1), alphas.reshape(*shape, 1), projected.radii)
