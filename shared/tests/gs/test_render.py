"""render(): the camera conventions end to end, the CPU backend, and gsplat agreement on a GPU."""

from __future__ import annotations

import pytest
import torch

from accel_shared.gs.cameras import unproject_depth
from accel_shared.gs.gaussians import Gaussians
from accel_shared.gs.render import render

IDENTITY_QUAT = torch.tensor([1.0, 0.0, 0.0, 0.0])


def plane_scene(depth: float = 2.0, size: int = 24) -> tuple[Gaussians, torch.Tensor, torch.Tensor]:
    """One Gaussian per pixel of a fronto-parallel plane seen by camera 0; two cameras."""
    intrinsics = torch.tensor([[1.0, 0, 0.5], [0, 1.0, 0.5], [0, 0, 1]]).expand(1, 2, 3, 3)
    extrinsics = torch.eye(4).repeat(1, 2, 1, 1)
    extrinsics[0, 1, 0, 3] = 0.05  # second camera slightly to the right
    points = unproject_depth(torch.full((1, 1, size, size), depth), extrinsics[:, :1], intrinsics[:, :1])
    g = size * size
    ramp = torch.linspace(0, 1, size)
    colors = torch.stack(torch.broadcast_tensors(ramp[None, :], ramp[:, None], torch.tensor(0.5)), -1)
    colors = colors.reshape(1, g, 3)  # smooth: red grows to the right, green downwards
    pixel = depth / size  # world size of one pixel at that depth
    scales = pixel * torch.tensor([0.6, 0.4, 0.5])  # anisotropic, so the rotation matters
    gaussians = Gaussians(
        points.reshape(1, g, 3),
        scales.expand(1, g, 3).clone(),
        IDENTITY_QUAT.expand(1, g, 4),
        torch.full((1, g), 0.95),
        colors,
    )
    return gaussians, extrinsics, intrinsics


def test_plane_renders_its_depth_and_colours_in_the_source_view() -> None:
    gaussians, extrinsics, intrinsics = plane_scene()
    out = render(gaussians, extrinsics, intrinsics, (24, 24), background=torch.tensor([0.0, 1.0, 0.0]))
    assert out.color.shape == (1, 2, 3, 24, 24) and out.depth.shape == out.alpha.shape == (1, 2, 24, 24)
    inner = (slice(2, -2), slice(2, -2))
    assert out.alpha[0, 0][inner].min() > 0.99
    torch.testing.assert_close(out.depth[0, 0][inner], torch.full((20, 20), 2.0), atol=1e-3, rtol=0)
    # each pixel sees its own Gaussian and its neighbours: the smooth colours come back, within
    # one pixel's colour step (0.043; equal depths composite in index order, which favours the
    # neighbours above and to the left)
    own = gaussians.colors.reshape(24, 24, 3).permute(2, 0, 1)
    assert (out.color[0, 0][:, 2:-2, 2:-2] - own[:, 2:-2, 2:-2]).abs().max() < 0.03
    # the shifted camera sees the plane at the same depth, and background where it runs out
    assert out.alpha[0, 1][inner].min() > 0.99 and out.depth[0, 1][inner].sub(2.0).abs().max() < 1e-3


def test_background_shows_where_nothing_is_drawn() -> None:
    gaussians, extrinsics, intrinsics = plane_scene()
    behind = Gaussians(
        -gaussians.means, gaussians.scales, gaussians.rotations, gaussians.opacities, gaussians.colors
    )
    out = render(behind, extrinsics, intrinsics, (24, 24), background=torch.tensor([0.2, 0.4, 0.6]))
    assert out.alpha.abs().max() == 0
    torch.testing.assert_close(out.color[0, 0, :, 5, 5], torch.tensor([0.2, 0.4, 0.6]))


def test_gradients_reach_every_gaussian_field() -> None:
    gaussians, extrinsics, intrinsics = plane_scene(size=12)
    fields = [gaussians.means, gaussians.scales, gaussians.rotations, gaussians.opacities, gaussians.colors]
    for f in fields:
        f.requires_grad_(True)
    out = render(gaussians, extrinsics, intrinsics, (12, 12))
    (out.color.sum() + out.depth.sum()).backward()
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in fields)


def test_errors_name_the_argument() -> None:
    gaussians, extrinsics, intrinsics = plane_scene(size=8)
    with pytest.raises(ValueError, match="extrinsics must be"):
        render(gaussians, extrinsics[0], intrinsics, (8, 8))
    with pytest.raises(ValueError, match="2 scenes"):
        render(gaussians, extrinsics.expand(2, -1, -1, -1), intrinsics.expand(2, -1, -1, -1), (8, 8))
    with pytest.raises(ValueError, match="backend='gsplat' needs CUDA"):
        render(gaussians, extrinsics, intrinsics, (8, 8), backend="gsplat")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gsplat_on_cuda_matches_kernels_core_on_cpu() -> None:
    pytest.importorskip("gsplat")
    gaussians, extrinsics, intrinsics = plane_scene()
    cpu = render(gaussians, extrinsics, intrinsics, (24, 24), backend="kernels-core")
    cuda_gaussians = Gaussians(
        *(getattr(gaussians, f).cuda() for f in ("means", "scales", "rotations", "opacities", "colors"))
    )
    gpu = render(cuda_gaussians, extrinsics.cuda(), intrinsics.cuda(), (24, 24), backend="gsplat")
    torch.testing.assert_close(gpu.color.cpu(), cpu.color, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(gpu.alpha.cpu(), cpu.alpha, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(gpu.depth.cpu(), cpu.depth, atol=1e-3, rtol=1e-4)
