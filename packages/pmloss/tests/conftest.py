"""Shared fixtures: random similarity transforms and tiny fake batches in the 3DGS data layout."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from accel_shared.gs.cameras import unproject_depth


def random_rotations(
    batch: int, *, generator: torch.Generator, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """[batch, 3, 3] proper rotations (det +1) from the QR decomposition of Gaussian matrices."""
    q, r = torch.linalg.qr(torch.randn(batch, 3, 3, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[:, None, :]
    q[:, :, 0] *= torch.sign(torch.linalg.det(q))[:, None]
    return q.to(dtype)


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)


@pytest.fixture
def rotations() -> Callable[..., torch.Tensor]:
    return random_rotations


@pytest.fixture
def make_batch() -> Callable[..., dict[str, Any]]:
    """A collated batch of B scenes with V context views of H×W pixels and consistent geometry."""

    def make(b: int = 2, v: int = 2, h: int = 6, w: int = 8, seed: int = 0) -> dict[str, Any]:
        g = torch.Generator().manual_seed(seed)
        extrinsics = torch.eye(4).repeat(b, v, 1, 1)
        extrinsics[..., :3, :3] = random_rotations(b * v, generator=g, dtype=torch.float32).reshape(
            b, v, 3, 3
        )
        extrinsics[..., :3, 3] = torch.randn(b, v, 3, generator=g)
        intrinsics = torch.tensor([[1.0, 0.0, 0.5], [0.0, 1.2, 0.5], [0.0, 0.0, 1.0]]).repeat(b, v, 1, 1)
        depth = 1.0 + 3.0 * torch.rand(b, v, h, w, generator=g)
        context = {
            "image": torch.rand(b, v, 3, h, w, generator=g),
            "extrinsics": extrinsics,
            "intrinsics": intrinsics,
            "near": torch.full((b, v), 0.5),
            "far": torch.full((b, v), 10.0),
            "depth": depth,
            "pointmap": unproject_depth(depth, extrinsics, intrinsics),
            "index": torch.arange(v).repeat(b, 1) + torch.arange(b)[:, None],
        }
        return {"scene": [f"scene{i}" for i in range(b)], "context": context}

    return make
