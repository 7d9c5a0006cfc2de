"""Tiny multi-view fixtures for the model / training tests (imported by test_*.py and the DDP worker).

A scene is a textured fronto-parallel plane at depth z0 seen by pinhole cameras on the x axis looking
down +z, so images, depth and pointmaps follow analytically and agree across views.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.data import Dataset

from accel_shared.gs.model import GSModelConfig

FOCAL = 1.0  # normalised: fx = W, fy = H pixels


def tiny_config(**overrides: object) -> GSModelConfig:
    """A model small enough for sub-second CPU steps at 32×32."""
    values: dict[str, object] = {
        "feature_dim": 32,
        "transformer_layers": 1,
        "num_heads": 2,
        "num_depth_candidates": 16,
        "depth_hidden": 32,
        "head_hidden": 16,
    }
    values.update(overrides)
    return GSModelConfig(**values)  # type: ignore[arg-type]


def line_cameras(xs: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Camera-to-world [V, 4, 4] at (x, 0, 0) looking down +z, and normalised intrinsics [V, 3, 3]."""
    v = len(xs)
    extrinsics = torch.eye(4).repeat(v, 1, 1)
    extrinsics[:, 0, 3] = torch.tensor(xs)
    intrinsics = torch.tensor([[FOCAL, 0.0, 0.5], [0.0, FOCAL, 0.5], [0.0, 0.0, 1.0]]).repeat(v, 1, 1)
    return extrinsics, intrinsics


def plane_views(xs: list[float], depth: float, size: int, seed: int) -> dict[str, torch.Tensor]:
    """The views of one plane scene from cameras at ``xs``: the item layout of accel_shared.gs.data."""
    g = torch.Generator().manual_seed(seed)
    freqs = 2.0 + 4.0 * torch.rand(3, 2, generator=g)
    phases = 2 * math.pi * torch.rand(3, generator=g)
    extrinsics, intrinsics = line_cameras(xs)
    centre = (torch.arange(size) + 0.5) / size - 0.5
    y, x = torch.meshgrid(centre / FOCAL * depth, centre / FOCAL * depth, indexing="ij")
    world_x = x[None] + extrinsics[:, 0, 3, None, None]  # [V, H, W]
    world_y = y[None].expand_as(world_x)
    arg = freqs[:, 0, None, None, None] * world_x[None] + freqs[:, 1, None, None, None] * world_y[None]
    image = 0.5 + 0.4 * torch.sin(arg + phases[:, None, None, None])  # [3, V, H, W]
    pointmap = torch.stack([world_x, world_y, torch.full_like(world_x, depth)], dim=-1)
    v = len(xs)
    return {
        "image": image.permute(1, 0, 2, 3).contiguous(),
        "extrinsics": extrinsics,
        "intrinsics": intrinsics,
        "near": torch.full((v,), 0.5),
        "far": torch.full((v,), 8.0),
        "depth": torch.full((v, size, size), depth),
        "pointmap": pointmap,
        "index": torch.arange(v, dtype=torch.int64),
    }


class PlaneScenes(Dataset):
    """``count`` plane scenes; item i is a deterministic function of i."""

    def __init__(
        self,
        count: int = 4,
        *,
        size: int = 32,
        context_xs: tuple[float, ...] = (0.0, 0.3),
        target_xs: tuple[float, ...] = (0.1, 0.2),
    ) -> None:
        self.count, self.size = count, size
        self.context_xs, self.target_xs = list(context_xs), list(target_xs)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> dict[str, object]:
        depth = 1.5 + 0.5 * (index % 3)
        views = plane_views(self.context_xs + self.target_xs, depth, self.size, seed=index)
        nc = len(self.context_xs)
        return {
            "scene": f"plane-{index:03d}",
            "context": {k: v[:nc] for k, v in views.items()},
            "target": {k: v[nc:] for k, v in views.items()},
        }


def batch_of(dataset: Dataset, indices: list[int]) -> dict[str, object]:
    """Items ``indices`` collated as the DataLoader does."""
    from torch.utils.data import default_collate

    return default_collate([dataset[i] for i in indices])


class TakeViews(nn.Module):
    """A dummy compressor keeping views ``order[:K]`` (features unchanged), with a parameter to save."""

    def __init__(self, order: list[int]) -> None:
        super().__init__()
        self.order = order
        self.scale = nn.Parameter(torch.ones(()))
        self.calls: list[tuple[tuple[int, ...], int]] = []

    def forward(
        self, features: torch.Tensor, extrinsics: torch.Tensor, *, num_anchors: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self.calls.append((tuple(features.shape), num_anchors))
        index = torch.tensor(self.order[:num_anchors]).expand(features.shape[0], -1)
        return features[:, index[0]] * self.scale, index
