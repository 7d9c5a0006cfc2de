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

    ``decay_start`` (our option; the paper keeps the weight constant): from that fraction of training
    on, the weight falls linearly to 0 at the last step, so the end of training is photometric only.
    The training loop reports the fraction through :meth:`set_progress`.
    """

    def __init__(
        self, teacher: PointmapTeacher, loss: PMLoss | None = None, *, decay_start: float | None = None
    ) -> None:
        if decay_start is not None and not 0.0 <= decay_start < 1.0:
            raise ValueError(f"PMLossTerm: decay_start must be in [0, 1) or None, got {decay_start}")
        self.teacher = teacher
        self.loss = loss if loss is not None else PMLoss()
        self.decay_start = decay_start
        self.factor = 1.0

    def set_progress(self, fraction: float) -> None:
        """Called by the training loop with ``step / steps`` before each step."""
        if self.decay_start is None or fraction < self.decay_start:
            self.factor = 1.0
        else:
            self.factor = max(0.0, (1.0 - fraction) / (1.0 - self.decay_start))

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
        logs = {"pm_loss": float(result.loss.detach()), "pm_factor": self.factor}
        if raw.numel():
            logs["pm_chamfer"] = float(raw.mean())
        return self.factor * result.loss, logs
