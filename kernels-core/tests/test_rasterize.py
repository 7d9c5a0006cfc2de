"""The Gaussian rasterizer against its dense pure-torch reference, gsplat's own torch helpers, and bad input."""

from __future__ import annotations

import pytest
import torch

import kernels_core
from kernels_core import reference
from kernels_core.ops.gaussian_projection import tile_bounds

LEAVES = ("means", "quats", "scales", "opacities", "colors")


def make_scene(batch: int, n: int, cameras: int, width: int, height: int, seed: int = 0) -> dict:
    """Gaussians in front of C cameras on a short line, with varied sizes, opacities and overlaps."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(batch, n, 3, generator=g) * 0.6
    viewmats = torch.eye(4).repeat(batch, cameras, 1, 1)
    viewmats[..., 2, 3] = 3.0
    viewmats[..., 0, 3] = torch.linspace(-0.3, 0.3, cameras)
    focal = 1.1 * max(width, height)
    ks = torch.tensor([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]]).repeat(batch, cameras, 1, 1)
    return {
        "means": means,
        "quats": torch.randn(batch, n, 4, generator=g),
        "scales": torch.rand(batch, n, 3, generator=g) * 0.08 + 0.005,
        "opacities": torch.rand(batch, n, generator=g) * 0.95 + 0.04,
        "colors": torch.rand(batch, n, 3, generator=g),
        "viewmats": viewmats,
        "Ks": ks,
    }


def leaves(scene: dict) -> dict:
    return {k: v.clone().requires_grad_(k in LEAVES) for k, v in scene.items()}


# (batch, gaussians, cameras, width, height, tile_size): odd sizes, partial tiles, small tiles
SHAPES = [
    (1, 64, 1, 16, 16, 16),
    (2, 300, 2, 37, 29, 16),
    (1, 500, 3, 50, 23, 8),
    (1, 1, 1, 5, 7, 16),
    (1, 200, 1, 33, 65, 32),
]
MODES = ["RGB", "ED", "RGB+D", "RGB+ED"]


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp(min=1e-12))


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("mode", MODES)
def test_forward_and_gradients_match_dense_reference(shape: tuple, mode: str) -> None:
    batch, n, cameras, width, height, tile = shape
    scene = make_scene(batch, n, cameras, width, height)
    channels = (3 if mode.startswith("RGB") else 0) + ("D" in mode)
    background = torch.rand(batch, cameras, channels, generator=torch.Generator().manual_seed(1))
    results = []
    for fn in (kernels_core.rasterize_gaussians, reference.rasterize_gaussians):
        inputs = leaves(scene)
        bg = background.clone().requires_grad_(True)
        out = fn(**inputs, width=width, height=height, render_mode=mode, backgrounds=bg, tile_size=tile)
        weights = torch.Generator().manual_seed(2)
        loss = (out.render * torch.rand(out.render.shape, generator=weights)).sum()
        loss = loss + (out.alphas * torch.rand(out.alphas.shape, generator=weights)).sum()
        loss.backward()
        results.append((out, {k: inputs[k].grad for k in LEAVES}, bg.grad))
    (out, grads, bg_grad), (ref_out, ref_grads, ref_bg_grad) = results
    assert out.render.shape == (batch, cameras, height, width, channels)
    assert out.alphas.shape == (batch, cameras, height, width, 1)
    assert out.alphas.max() > 0.05, "the scene should cover part of the image"
    torch.testing.assert_close(out.alphas, ref_out.alphas, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(out.render, ref_out.render, atol=5e-5, rtol=2e-5)
    torch.testing.assert_close(out.radii, ref_out.radii)
    for name in LEAVES:
        if name == "colors" and mode in ("ED",):
            continue
        assert relative_error(grads[name], ref_grads[name]) < 1e-3, name
    assert relative_error(bg_grad, ref_bg_grad) < 1e-3


def test_opaque_splats_stop_a_pixel_early() -> None:
    """Stacked opaque splats: the pixel stops once T would reach 1e-4, exactly as the reference."""
    n = 12
    means = torch.zeros(1, n, 3)
    means[..., 2] = torch.linspace(0, 1, n)
    scene = {
        "means": means,
        "quats": torch.tensor([1.0, 0, 0, 0]).expand(1, n, 4),
        "scales": torch.full((1, n, 3), 0.5),
        "opacities": torch.full((1, n), 0.99),
        "colors": torch.rand(1, n, 3, generator=torch.Generator().manual_seed(0)),
        "viewmats": make_scene(1, 1, 1, 8, 8)["viewmats"],
        "Ks": make_scene(1, 1, 1, 8, 8)["Ks"],
    }
    out = kernels_core.rasterize_gaussians(**scene, width=8, height=8)
    ref = reference.rasterize_gaussians(**scene, width=8, height=8)
    torch.testing.assert_close(out.render, ref.render, atol=1e-5, rtol=1e-5)
    # Twelve splats of alpha ~0.97 would leave T ~ 1e-18; the pixel stops while T is still above 1e-4.
    transmittance = 1 - out.alphas[0, 0, 4, 4, 0]
    assert 1e-4 < transmittance < 1e-2


@pytest.mark.parametrize("shape", SHAPES[:3], ids=lambda s: "x".join(map(str, s)))
def test_op_matches_reference_from_the_same_tile_lists(shape: tuple) -> None:
    batch, n, cameras, width, height, tile = shape
    scene = make_scene(batch, n, cameras, width, height)
    projected = kernels_core.project_gaussians(
        scene["means"], scene["quats"], scene["scales"], scene["viewmats"], scene["Ks"], width, height
    )
    images = batch * cameras
    means2d, conics = projected.means2d.reshape(images, n, 2), projected.conics.reshape(images, n, 3)
    radii, depths = projected.radii.reshape(images, n, 2), projected.depths.reshape(images, n)
    isects = kernels_core.intersect_tiles(means2d, radii, depths, tile, width, height)
    colors = torch.rand(images, n, 5, generator=torch.Generator().manual_seed(3))
    opacities = scene["opacities"].repeat_interleave(cameras, 0)
    args = (means2d, conics, colors, opacities, width, height, tile, *isects)
    out_colors, out_alphas = kernels_core.rasterize_to_pixels(*args)
    ref_colors, ref_alphas = reference.rasterize_to_pixels(*args)
    torch.testing.assert_close(out_colors, ref_colors, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(out_alphas, ref_alphas, atol=2e-5, rtol=1e-5)


def test_tile_lists_are_sorted_front_to_back_and_complete() -> None:
    scene = make_scene(1, 400, 2, 45, 30)
    p = kernels_core.project_gaussians(
        scene["means"], scene["quats"], scene["scales"], scene["viewmats"], scene["Ks"], 45, 30
    )
    means2d, radii, depths = (
        p.means2d.reshape(2, 400, 2),
        p.radii.reshape(2, 400, 2),
        p.depths.reshape(2, 400),
    )
    offsets, ids = kernels_core.intersect_tiles(means2d, radii, depths, 16, 45, 30)
    bounds = tile_bounds(means2d, radii, 16, 3, 2)
    ends = torch.cat([offsets.flatten()[1:], torch.tensor([ids.numel()], dtype=torch.int32)])
    for flat, (start, end) in enumerate(zip(offsets.flatten().tolist(), ends.tolist(), strict=True)):
        image, tile = divmod(flat, 6)
        ty, tx = divmod(tile, 3)
        listed = ids[start:end].long()
        assert (listed // 400 == image).all()
        splat = listed % 400
        assert (depths[image, splat].diff() >= 0).all(), "front to back"
        b = bounds[image]
        expected = ((b[:, 0] <= tx) & (tx < b[:, 2]) & (b[:, 1] <= ty) & (ty < b[:, 3])).nonzero().flatten()
        assert sorted(splat.tolist()) == expected.tolist()


def test_projection_and_tiles_match_gsplat_torch_helpers(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    impl = pytest.importorskip("gsplat.cuda._torch_impl")
    scene = make_scene(1, 300, 2, 40, 24)
    covars, _ = impl._quat_scale_to_covar_preci(scene["quats"][0], scene["scales"][0], triu=False)
    radii, means2d, depths, conics, _ = impl._fully_fused_projection(
        scene["means"][0], covars, scene["viewmats"][0], scene["Ks"][0], 40, 24
    )
    ours = kernels_core.project_gaussians(
        scene["means"], scene["quats"], scene["scales"], scene["viewmats"], scene["Ks"], 40, 24
    )
    torch.testing.assert_close(ours.means2d[0], means2d, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(ours.conics[0], conics, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours.depths[0], depths)
    assert torch.equal(ours.radii[0], radii)
    _, isect_ids, flatten_ids = impl._isect_tiles(means2d, radii, depths, 16, 3, 2)
    offsets = impl._isect_offset_encode(isect_ids, 2, 3, 2)
    mine = kernels_core.intersect_tiles(ours.means2d[0], ours.radii[0], ours.depths[0], 16, 40, 24)
    assert torch.equal(mine.isect_offsets, offsets)
    assert torch.equal(mine.flatten_ids, flatten_ids)


def test_backward_is_deterministic() -> None:
    scene = make_scene(1, 500, 2, 48, 48)
    grads = []
    for _ in range(2):
        inputs = leaves(scene)
        out = kernels_core.rasterize_gaussians(**inputs, width=48, height=48, render_mode="RGB+ED")
        out.render.square().sum().backward()
        grads.append(inputs["means"].grad)
    assert torch.equal(grads[0], grads[1])


def test_opcheck() -> None:
    scene = make_scene(1, 50, 1, 20, 20)
    p = kernels_core.project_gaussians(
        scene["means"], scene["quats"], scene["scales"], scene["viewmats"], scene["Ks"], 20, 20
    )
    offsets, ids = kernels_core.intersect_tiles(p.means2d[0], p.radii[0], p.depths[0], 16, 20, 20)
    args = (
        p.means2d[0].detach().requires_grad_(),
        p.conics[0].detach().requires_grad_(),
        scene["colors"].requires_grad_(),
        scene["opacities"].requires_grad_(),
        torch.rand(1, 3, requires_grad=True),
        offsets,
        ids,
        20,
        20,
        16,
    )
    torch.library.opcheck(torch.ops.kernels_core.rasterize_to_pixels.default, args)


def test_empty_scene_renders_background() -> None:
    scene = make_scene(1, 10, 1, 12, 12)
    scene["means"][..., 2] = -10.0  # behind the camera
    bg = torch.tensor([[[0.2, 0.4, 0.6]]])
    out = kernels_core.rasterize_gaussians(**scene, width=12, height=12, backgrounds=bg)
    assert torch.equal(out.alphas, torch.zeros_like(out.alphas))
    torch.testing.assert_close(out.render, bg.reshape(1, 1, 1, 1, 3).expand_as(out.render))


def test_bad_input_names_the_argument() -> None:
    scene = make_scene(1, 10, 1, 12, 12)
    with pytest.raises(ValueError, match="quats must have shape"):
        kernels_core.rasterize_gaussians(**{**scene, "quats": scene["quats"][..., :3]}, width=12, height=12)
    with pytest.raises(ValueError, match="render_mode"):
        kernels_core.rasterize_gaussians(**scene, width=12, height=12, render_mode="RGBD")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="opacities must be a floating-point"):
        kernels_core.rasterize_gaussians(
            **{**scene, "opacities": scene["opacities"].long()}, width=12, height=12
        )
    with pytest.raises(ValueError, match="colors: K"):
        kernels_core.rasterize_gaussians(**{**scene, "colors": torch.rand(1, 10, 70)}, width=12, height=12)
    means2d, conics = torch.zeros(1, 2, 2), torch.zeros(1, 2, 3)
    with pytest.raises(ValueError, match="isect_offsets must be int32"):
        kernels_core.rasterize_to_pixels(
            means2d, conics, torch.zeros(1, 2, 3), torch.zeros(1, 2), 16, 16, 16,
            torch.zeros(1, 2, 1, dtype=torch.int32), torch.zeros(0, dtype=torch.int32),
        )  # fmt: skip
