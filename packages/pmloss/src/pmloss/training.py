"""PM-Loss as the extra term of the shared 3DGS training loop (:func:`accel_shared.gs.train.train`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from accel_shared.gs.model import GSModelOutput
from pmloss.loss import PMLoss, pointmaps_to_points
from pmloss.teacher import PointmapTeacher

__all__ = ["PMLossTerm"]


class PMLossTerm:
    """``extra_loss(batch, output) -> (loss, logs)``: PM-Loss between the model's per-pixel Gaussian
    centres and the teacher's pointmaps of the same context views.

    With a view compressor the Gaussians come from the anchor views only (``output.context_index``);
    the teacher's pointmaps are reduced to the same views.
    """

    def __init__(self, teacher: PointmapTeacher, loss: PMLoss | None = None) -> None:
        self.teacher = teacher
        self.loss = loss if loss is not None else PMLoss()

    def __call__(
        self, batch: Mapping[str, Any], output: GSModelOutput
    ) -> tuple[torch.Tensor, dict[str, float]]:
        pointmaps = self.teacher.pointmaps(batch).to(output.means_per_pixel.device)  # [B, V, H, W, 3]
        index = output.context_index
        if index.shape[1] != pointmaps.shape[1] or not torch.equal(
            index, torch.arange(pointmaps.shape[1], device=index.device).expand_as(index)
        ):
            pointmaps = torch.gather(
                pointmaps, 1, index[:, :, None, None, None].expand(-1, -1, *pointmaps.shape[2:])
            )
        result = self.loss(pointmaps_to_points(output.means_per_pixel), pointmaps_to_points(pointmaps))
        raw = result.per_item[torch.isfinite(result.per_item)]
        logs = {"pm_loss": float(result.loss.detach())}
        if raw.numel():
            logs["pm_chamfer"] = float(raw.mean())
        return result.loss, logs
