"""FeedForwardGS: shapes, value ranges, the Gaussian ordering contract, geometry, the compressor extension
point and save/load."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from _gs_model_fixtures import PlaneScenes, TakeViews, batch_of, line_cameras, plane_views, tiny_config
from torch import nn

from accel_shared.gs.cameras import unproject_depth, world_to_camera
from accel_shared.gs.cost_volume import plane_sweep_cost_volume, source_views
from accel_shared.gs.model import FeedForwardGS, GSModelConfig, GSModelOutput, ViewCompressor


def randomize_heads(model: FeedForwardGS, std: float = 0.2) -> FeedForwardGS:
    """Give the zero-initialised last layers random weights, so outputs are not the initial values."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for layer in (model.head.out, model.refiner.residual):
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) * std)
    return model


def make_model(**overrides: object) -> FeedForwardGS:
    torch.manual_seed(0)
    return randomize_heads(FeedForwardGS(tiny_config(**overrides))).eval()


@pytest.fixture(scope="module")
def context() -> dict[str, torch.Tensor]:
    batch = batch_of(PlaneScenes(count=2, context_xs=(0.0, 0.15, 0.3)), [0, 1])
    return batch["context"]  # type: ignore[return-value]


def take(context: dict[str, torch.Tensor], index: list[int]) -> dict[str, torch.Tensor]:
    return {k: v[:, index] for k, v in context.items()}


@torch.no_grad()
def test_output_shapes_and_ranges(context: dict[str, torch.Tensor]) -> None:
    out = make_model()(context)
    b, v, _, h, w = context["image"].shape
    g = out.gaussians
    assert isinstance(out, GSModelOutput)
    assert g.means.shape == (b, v * h * w, 3) and g.opacities.shape == (b, v * h * w)
    assert out.depth.shape == (b, v, h, w) and out.means_per_pixel.shape == (b, v, h, w, 3)
    assert torch.equal(out.context_index, torch.arange(v).expand(b, v))
    near, far = context["near"][..., None, None], context["far"][..., None, None]
    assert (out.depth >= near * (1 - 1e-5)).all() and (out.depth <= far * (1 + 1e-5)).all()
    assert (g.opacities > 0).all() and (g.opacities < 1).all()
    assert (g.scales > 0).all()
    assert torch.allclose(g.rotations.norm(dim=-1), torch.ones(b, v * h * w), atol=1e-5)
    assert (g.colors >= 0).all() and (g.colors <= 1).all()
    for value in (g.means, g.scales, g.rotations, g.opacities, g.colors, out.depth):
        assert torch.isfinite(value).all()


@torch.no_grad()
def test_gaussian_order_matches_pixels(context: dict[str, torch.Tensor]) -> None:
    """Gaussian (v·H + i)·W + j is pixel (i, j) of view v: means_per_pixel flattened, and it projects
    back onto that pixel at the predicted depth (offsets off)."""
    out = make_model(offset_mode="none")(context)
    b, _, _, h, w = context["image"].shape
    assert torch.equal(out.means_per_pixel.reshape(b, -1, 3), out.gaussians.means)
    w2c = world_to_camera(context["extrinsics"])[:, :, None, None]
    cam = (w2c[..., :3, :3] @ out.means_per_pixel[..., None]).squeeze(-1) + w2c[..., :3, 3]
    assert torch.allclose(cam[..., 2], out.depth, rtol=1e-4)
    pixel = (context["intrinsics"][:, :, None, None] @ (cam / cam[..., 2:])[..., None]).squeeze(-1)
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    assert torch.allclose(pixel[..., 0] * w, cols + 0.5, atol=1e-3)
    assert torch.allclose(pixel[..., 1] * h, rows + 0.5, atol=1e-3)


@torch.no_grad()
def test_untrained_head_keeps_pixel_colours_in_order(context: dict[str, torch.Tensor]) -> None:
    torch.manual_seed(0)
    model = FeedForwardGS(tiny_config()).eval()
    out = model(context)
    b, w = context["image"].shape[0], context["image"].shape[-1]
    expected = context["image"].permute(0, 1, 3, 4, 2).reshape(b, -1, 3).clamp(1e-3, 1 - 1e-3)
    assert torch.allclose(out.gaussians.colors, expected, atol=1e-5)
    # One-pixel footprint at the pixel's depth (fx = 1 normalised: W pixels).
    footprint = (out.depth / w).reshape(b, -1, 1).expand(-1, -1, 3)
    assert torch.allclose(out.gaussians.scales, footprint, rtol=1e-4)
    assert torch.allclose(
        out.means_per_pixel, unproject_depth(out.depth, context["extrinsics"], context["intrinsics"])
    )


@torch.no_grad()
def test_zero_offsets_means_are_unprojected_depth(context: dict[str, torch.Tensor]) -> None:
    out = make_model(offset_mode="none")(context)
    expected = unproject_depth(out.depth, context["extrinsics"], context["intrinsics"])
    assert torch.allclose(out.means_per_pixel, expected, atol=1e-6)


@torch.no_grad()
def test_tanh_offsets_are_bounded(context: dict[str, torch.Tensor]) -> None:
    model = make_model(offset_mode="tanh", offset_max_pixels=0.5)
    randomize_heads(model, std=5.0)
    out = model(context)
    h, w = context["image"].shape[-2:]
    w2c = world_to_camera(context["extrinsics"])[:, :, None, None]
    cam = (w2c[..., :3, :3] @ out.means_per_pixel[..., None]).squeeze(-1) + w2c[..., :3, 3]
    pixel = (context["intrinsics"][:, :, None, None] @ (cam / cam[..., 2:])[..., None]).squeeze(-1)
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    shift = torch.stack([pixel[..., 0] * w - cols - 0.5, pixel[..., 1] * h - rows - 0.5], dim=-1)
    assert shift.abs().max() <= 0.5 + 1e-3
    assert shift.abs().max() > 0.1  # the offsets are in use


def test_every_parameter_gets_a_gradient(context: dict[str, torch.Tensor]) -> None:
    model = make_model().train()
    out = model(context)
    g = out.gaussians
    loss = (
        g.means.mean() + g.scales.mean() + g.rotations.sum(-1).mean() + g.opacities.mean() + g.colors.mean()
    )
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@torch.no_grad()
def test_single_view_falls_back_to_monocular(context: dict[str, torch.Tensor]) -> None:
    single = take(context, [1])
    out = make_model()(single)
    assert out.depth.shape == (2, 1, 32, 32)
    assert torch.isfinite(out.depth).all() and (out.depth >= 0.5 * (1 - 1e-5)).all()


def test_cost_volume_peaks_at_the_true_depth() -> None:
    """Plane at depth 2 seen from two cameras, features a texture on it whose dot product peaks where the
    world points agree: the correlation peaks at the candidate plane through it, wherever the other
    camera sees the point."""
    views = plane_views([0.0, 0.25], depth=2.0, size=32, seed=3)
    freqs = torch.tensor([1.0, 2.0, 4.0])
    phase = views["pointmap"][..., None, :2] * freqs[:, None]  # [V, H, W, 3, 2]
    features = torch.cat([phase.cos(), phase.sin()], dim=-2).flatten(-2).permute(0, 3, 1, 2)[None]
    depths = torch.tensor([1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0]).expand(1, 2, -1)
    cost = plane_sweep_cost_volume(features, views["extrinsics"][None], views["intrinsics"][None], depths)
    assert cost.shape == (1, 2, 8, 32, 32)
    best = cost.argmax(dim=2)
    # View 0 (source to its right) sees the plane point in view 1 for columns >= 4 (0.25 / 2 · 32);
    # view 1 for columns < 28. Leave a margin for bilinear sampling at the border.
    assert (best[0, 0, :, 6:] == 4).float().mean() > 0.9
    assert (best[0, 1, :, :26] == 4).float().mean() > 0.9
    assert not plane_sweep_cost_volume(
        features[:, :1], views["extrinsics"][None, :1], views["intrinsics"][None, :1], depths[:, :1]
    ).any()


def test_source_views_are_nearest_cameras() -> None:
    extrinsics, _ = line_cameras([0.0, 1.0, 3.0, 3.5])
    src = source_views(extrinsics[None], 2)[0]
    assert src[0].tolist() == [1, 2] and src[2].tolist() == [3, 1] and src[3].tolist() == [2, 1]


@torch.no_grad()
@pytest.mark.parametrize("order", [[0, 1], [2, 0]])
def test_compressor_reduces_views_and_cameras(context: dict[str, torch.Tensor], order: list[int]) -> None:
    model = make_model()
    compressor = TakeViews(order)
    assert isinstance(compressor, ViewCompressor)
    model.set_compressor(compressor)
    out = model(context, num_anchors=2)
    assert compressor.calls == [((2, 3, 32, 8, 8), 2)]
    assert out.gaussians.count == 2 * 32 * 32 and out.depth.shape == (2, 2, 32, 32)
    assert out.context_index.tolist() == [order, order]
    # Identical to the model without a compressor on the context reduced to those views: images,
    # cameras and near/far were gathered consistently.
    model.set_compressor(None)
    reference = model(take(context, order))
    assert torch.allclose(out.depth, reference.depth, atol=1e-5)
    assert torch.allclose(out.gaussians.means, reference.gaussians.means, atol=1e-5)
    assert torch.allclose(out.gaussians.colors, reference.gaussians.colors, atol=1e-5)


@torch.no_grad()
def test_compressor_k_from_config_and_skipped_when_nothing_to_compress(
    context: dict[str, torch.Tensor],
) -> None:
    torch.manual_seed(0)
    compressor = TakeViews([1, 2, 0])
    model = FeedForwardGS(tiny_config(num_anchors=1), compressor=compressor).eval()
    assert model(context).context_index.tolist() == [[1], [1]]
    assert model(context, num_anchors=3).context_index.tolist() == [[0, 1, 2], [0, 1, 2]]
    assert len(compressor.calls) == 1  # K >= V: not called


@torch.no_grad()
def test_compressor_errors(context: dict[str, torch.Tensor]) -> None:
    model = make_model()
    with pytest.raises(ValueError, match="no compressor"):
        model(context, num_anchors=2)
    model.set_compressor(TakeViews([0, 1]))
    with pytest.raises(ValueError, match="num_anchors"):
        model(context)

    class Broken(nn.Module):
        def forward(self, features: torch.Tensor, extrinsics: torch.Tensor, *, num_anchors: int) -> tuple:
            return features, torch.zeros(features.shape[0], num_anchors, dtype=torch.int64)

    model.set_compressor(Broken())
    with pytest.raises(ValueError, match="compressor returned features"):
        model(context, num_anchors=2)


def test_context_validation(context: dict[str, torch.Tensor]) -> None:
    model = make_model()
    with pytest.raises(ValueError, match="missing"):
        model({k: v for k, v in context.items() if k != "near"})
    with pytest.raises(ValueError, match="intrinsics"):
        model({**context, "intrinsics": context["intrinsics"][:, :2]})
    with pytest.raises(ValueError, match="near < far"):
        model({**context, "far": context["near"]})
    with pytest.raises(ValueError, match="multiples of 4"):
        model({**context, "image": context["image"][..., :30]})
    with pytest.raises(ValueError, match="feature_dim"):
        GSModelConfig(feature_dim=30)
    with pytest.raises(ValueError, match="offset_mode"):
        GSModelConfig(offset_mode="clamp")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="depth_upsampler"):
        GSModelConfig(depth_upsampler="nearest")  # type: ignore[arg-type]


@torch.no_grad()
def test_save_and_load_round_trip(tmp_path: Path, context: dict[str, torch.Tensor]) -> None:
    model = make_model(offset_mode="tanh", attention_stride=2)
    path = model.save_pretrained(tmp_path / "model")
    loaded = FeedForwardGS.from_pretrained(path).eval()
    assert loaded.config == model.config
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert torch.equal(loaded(context).gaussians.means, model(context).gaussians.means)

    with_compressor = make_model()
    saved_compressor = TakeViews([1, 0])
    with_compressor.set_compressor(saved_compressor)
    saved_compressor.scale.fill_(0.5)
    path = with_compressor.save_pretrained(tmp_path / "compressed")
    with pytest.raises(ValueError, match="compressor="):
        FeedForwardGS.from_pretrained(path)
    loaded = FeedForwardGS.from_pretrained(path, compressor=TakeViews([1, 0]))
    assert isinstance(loaded.compressor, TakeViews) and loaded.compressor.scale.item() == 0.5
    # A fresh compressor on a base saved without one keeps its own initialisation.
    fresh = FeedForwardGS.from_pretrained(tmp_path / "model", compressor=TakeViews([0, 1]))
    assert isinstance(fresh.compressor, TakeViews) and fresh.compressor.scale.item() == 1.0
    assert model.num_parameters() == fresh.num_parameters(include_compressor=False)
    assert not math.isnan(float(loaded(context, num_anchors=1).depth.mean()))


def test_convex_depth_upsampler_gets_gradients_and_round_trips(
    tmp_path: Path, context: dict[str, torch.Tensor]
) -> None:
    assert not any("convex" in name for name, _ in make_model().named_parameters())
    model = make_model(depth_upsampler="convex").train()
    out = model(context)
    b, v, _, h, w = context["image"].shape
    assert out.depth.shape == (b, v, h, w) and torch.isfinite(out.depth).all()
    out.gaussians.means.mean().backward()
    convex = [p for name, p in model.named_parameters() if name.startswith("refiner.convex.")]
    assert convex and all(p.grad is not None and torch.isfinite(p.grad).all() for p in convex)
    assert any(float(p.grad.abs().sum()) > 0 for p in convex if p.grad is not None)

    path = model.eval().save_pretrained(tmp_path / "convex")
    loaded = FeedForwardGS.from_pretrained(path).eval()
    assert loaded.config.depth_upsampler == "convex"
    with torch.no_grad():
        assert torch.equal(loaded(context).depth, model(context).depth)


def test_from_pretrained_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        FeedForwardGS.from_pretrained(tmp_path)
    make_model().save_pretrained(tmp_path)
    text = (tmp_path / "config.json").read_text().replace('"feature_dim": 32', '"feature_dim": 64')
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(ValueError, match="does not match"):
        FeedForwardGS.from_pretrained(tmp_path)
