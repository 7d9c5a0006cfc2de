"""The depth upsamplers: bilinear and convex (learned 3×3 convex combinations of the coarse cells)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from accel_shared.gs.depth import ConvexUpsampler, DepthRefiner


def coarse_inputs(n: int = 2, channels: int = 8, h: int = 3, w: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, h, w, generator=g), torch.randn(n, channels, h, w, generator=g)


@torch.no_grad()
def test_untrained_convex_upsampler_averages_the_3x3_neighbourhood() -> None:
    t, features = coarse_inputs()
    up = ConvexUpsampler(features.shape[1], 16)(t, features)
    box = F.avg_pool2d(F.pad(t, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    assert up.shape == (2, 1, 12, 20)
    torch.testing.assert_close(up, box.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3))


@pytest.mark.parametrize(("neighbour", "dy", "dx"), [(3, 0, -1), (1, -1, 0), (8, 1, 1)])
@torch.no_grad()
def test_a_one_hot_mask_copies_that_neighbour(neighbour: int, dy: int, dx: int) -> None:
    """Weights concentrated on one of the 9 neighbours give that coarse cell's value, unblended: what
    lets a pixel on one side of a depth edge keep that side's depth. Borders replicate."""
    t, features = coarse_inputs()
    upsampler = ConvexUpsampler(features.shape[1], 16)
    bias = torch.full((9, 4, 4), -30.0)
    bias[neighbour] = 30.0
    upsampler.mask[2].bias.copy_(bias.flatten())
    padded = F.pad(t, (1, 1, 1, 1), mode="replicate")
    h, w = t.shape[-2:]
    shifted = padded[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
    expected = shifted.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)
    torch.testing.assert_close(upsampler(t, features), expected)


@torch.no_grad()
def test_sub_pixel_order() -> None:
    """The left half of every cell copies the left neighbour, the right half the right one, and the
    top rows the neighbour above: the (sub-row, sub-column) layout of the mask channels."""
    t, features = coarse_inputs()
    upsampler = ConvexUpsampler(features.shape[1], 16)
    bias = torch.full((9, 4, 4), -30.0)
    bias[3, 1:, :2] = 30.0  # left
    bias[5, 1:, 2:] = 30.0  # right
    bias[1, :1, :] = 30.0  # above
    upsampler.mask[2].bias.copy_(bias.flatten())
    padded = F.pad(t, (1, 1, 1, 1), mode="replicate")
    h, w = t.shape[-2:]
    left, right, above = padded[..., 1:-1, :w], padded[..., 1:-1, 2:], padded[..., :h, 1:-1]
    up = upsampler(t, features).view(2, 1, h, 4, w, 4)
    torch.testing.assert_close(
        up[:, :, :, 1:, :, :2], left[:, :, :, None, :, None].expand(-1, -1, -1, 3, -1, 2)
    )
    torch.testing.assert_close(
        up[:, :, :, 1:, :, 2:], right[:, :, :, None, :, None].expand(-1, -1, -1, 3, -1, 2)
    )
    torch.testing.assert_close(up[:, :, :, 0, :, :], above[..., None].expand(-1, -1, -1, -1, 4))


def test_convex_upsampling_learns_an_edge_inside_a_coarse_cell() -> None:
    """A step edge one pixel into a coarse cell: bilinear interpolation cannot place it, convex
    upsampling learns to (features carry the sub-cell position of the edge, as image features do)."""
    torch.manual_seed(0)
    h, w, r = 4, 4, 4
    fine = torch.zeros(1, 1, h * r, w * r)
    fine[..., :, 9:] = 1.0  # the edge lies inside coarse column 2 (fine columns 8..11)
    coarse = F.avg_pool2d(fine, r)  # what a 1/4-resolution depth sees: column 2 is blended
    features = F.pixel_unshuffle(fine, r)  # [1, 16, h, w]: the fine pattern of each cell
    bilinear = F.interpolate(coarse, scale_factor=r, mode="bilinear", align_corners=False)
    bilinear_error = float((bilinear - fine).abs().mean())

    upsampler = ConvexUpsampler(features.shape[1], 32)
    optimizer = torch.optim.Adam(upsampler.parameters(), lr=1e-2)
    for _ in range(300):
        optimizer.zero_grad()
        loss = (upsampler(coarse, features) - fine).abs().mean()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        convex_error = float((upsampler(coarse, features) - fine).abs().mean())
    assert bilinear_error > 0.05
    assert convex_error < 0.2 * bilinear_error


@pytest.mark.parametrize(("h", "w"), [(1, 1), (1, 5), (3, 1)])
def test_thin_inputs_and_gradients(h: int, w: int) -> None:
    """One-cell rows and columns (all neighbours replicated) and gradients into t and the features."""
    t, features = coarse_inputs(h=h, w=w)
    t.requires_grad_(True)
    features.requires_grad_(True)
    upsampler = ConvexUpsampler(features.shape[1], 16)
    torch.nn.init.normal_(upsampler.mask[2].weight, std=0.5)
    up = upsampler(t, features)
    assert up.shape == (2, 1, 4 * h, 4 * w)
    (up * torch.randn_like(up)).sum().backward()
    assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0
    assert features.grad is not None and features.grad.abs().sum() > 0
    if h == w == 1:  # every neighbour is the cell itself: the weights cannot matter
        torch.testing.assert_close(up.detach(), t.detach().expand(-1, -1, 4, 4))


def test_refiner_upsampler_choice_and_errors() -> None:
    t, features = coarse_inputs(channels=8, h=4, w=4)
    images = torch.rand(2, 3, 16, 16)
    for upsampler in ("bilinear", "convex"):
        refiner = DepthRefiner(8, 8, upsampler)  # type: ignore[arg-type]
        t_fine, hidden = refiner(images, features, t)
        assert t_fine.shape == (2, 1, 16, 16) and hidden.shape == (2, 8, 16, 16)
        assert (refiner.convex is not None) == (upsampler == "convex")
    with torch.no_grad():  # the residual starts at zero: the refiner returns the upsampled coarse t
        untrained = DepthRefiner(8, 8, "bilinear")(images, features, t)[0]
        bilinear = F.interpolate(t, size=(16, 16), mode="bilinear", align_corners=False)
        torch.testing.assert_close(untrained, bilinear.clamp(1e-4, 1 - 1e-4))
        untrained = DepthRefiner(8, 8, "convex")(images, features, t)[0]
        box = F.avg_pool2d(F.pad(t, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
        box = box.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)
        torch.testing.assert_close(untrained, box.clamp(1e-4, 1 - 1e-4))
    with pytest.raises(ValueError, match="upsampler must be 'bilinear' or 'convex'"):
        DepthRefiner(8, 8, "nearest")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="4× the coarse size"):
        DepthRefiner(8, 8, "convex")(torch.rand(2, 3, 12, 16), features, t)
    with pytest.raises(ValueError, match="ConvexUpsampler: features"):
        ConvexUpsampler(8, 8)(t, features[..., :3])
