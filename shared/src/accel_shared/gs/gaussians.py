"""The batch of 3D Gaussians a feed-forward model predicts, in gsplat's conventions."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

__all__ = ["Gaussians"]


@dataclass
class Gaussians:
    """B independent sets of G Gaussians (one per scene of the batch).

    Attributes:
        means: [B, G, 3] world-space centres.
        scales: [B, G, 3] standard deviations along the Gaussian's own axes (positive).
        rotations: [B, G, 4] unit quaternions (w, x, y, z), local-to-world, as in gsplat.
        opacities: [B, G] in [0, 1].
        colors: [B, G, 3] RGB in [0, 1] (view-independent, the SH degree-0 case).
    """

    means: torch.Tensor
    scales: torch.Tensor
    rotations: torch.Tensor
    opacities: torch.Tensor
    colors: torch.Tensor

    def __post_init__(self) -> None:
        batch, count = self.means.shape[:2]
        expected = {"means": 3, "scales": 3, "rotations": 4, "opacities": None, "colors": 3}
        for name, last in expected.items():
            value = getattr(self, name)
            shape = (batch, count) if last is None else (batch, count, last)
            if tuple(value.shape) != shape:
                raise ValueError(f"Gaussians.{name} must have shape {list(shape)}, got {list(value.shape)}")

    @property
    def batch_size(self) -> int:
        return int(self.means.shape[0])

    @property
    def count(self) -> int:
        """G, the number of Gaussians per scene."""
        return int(self.means.shape[1])

    def select(self, index: torch.Tensor) -> Gaussians:
        """Gaussians index[b, :] of every scene: index [B, G'] int64 -> a new set with G' Gaussians."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            gather = index if value.dim() == 2 else index.unsqueeze(-1).expand(-1, -1, value.shape[-1])
            out[f.name] = torch.gather(value, 1, gather)
        return Gaussians(**out)

    def detach(self) -> Gaussians:
        return Gaussians(**{f.name: getattr(self, f.name).detach() for f in fields(self)})
