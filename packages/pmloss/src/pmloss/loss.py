"""PM-Loss: single-directional Chamfer from predicted Gaussian centres to a Sim(3)-aligned teacher pointmap.

Per batch item (the paper's steps):

1. align the teacher points X to the predicted centres Y with Umeyama Sim(3), pairing them by pixel
   (not detached: the gradient reaches Y through the alignment too);
2. raw = mean over predicted centres of the squared distance to the nearest aligned teacher point
   (``kernels_core.chamfer_distance(..., single_directional=True)``);
3. NaN → 0; raw > ``ignore_large_loss`` is multiplied by 1e-5.

The loss is ``weight`` × the mean of step 3 over the batch.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

import kernels_core
from pmloss.alignment import Sim3, umeyama_sim3

__all__ = ["LARGE_LOSS_FACTOR", "PMLoss", "PMLossOutput", "pointmaps_to_points"]

LARGE_LOSS_FACTOR = 1e-5
"""Factor applied to a per-item loss above ``ignore_large_loss`` (as in the official code)."""
DISTANCES = ("squared", "euclidean")


class PMLossOutput(NamedTuple):
    """Result of :class:`PMLoss`.

    Attributes:
        loss: scalar, ``weight`` × the batch mean of the stabilised per-item losses; add it to the
            rendering loss.
        per_item: [B] raw Chamfer losses before stabilisation, detached, for logging (may hold inf or large
            values; NaN for items that could not be evaluated: non-finite predictions or no valid teacher point).
        aligned_teacher: [B, P', 3] teacher points after the Sim(3) (the teacher itself when
            ``align=False``); invalid teacher points are zeros before the transform.
        sim3: the teacher-to-prediction :class:`~pmloss.alignment.Sim3`, or None when ``align=False``.
    """

    loss: torch.Tensor
    per_item: torch.Tensor
    aligned_teacher: torch.Tensor
    sim3: Sim3 | None


def pointmaps_to_points(pointmaps: torch.Tensor) -> torch.Tensor:
    """Pointmaps [B, V, H, W, 3] -> points [B, V·H·W, 3], flattened in (v, h, w) order.

    Point ``v·H·W + h·W + w`` is pixel (h, w) of view v: the order of one-Gaussian-per-pixel predictions.
    """
    if not isinstance(pointmaps, torch.Tensor):
        raise TypeError(f"pointmaps must be a torch.Tensor [B, V, H, W, 3], got {type(pointmaps).__name__}")
    if pointmaps.dim() != 5 or pointmaps.shape[-1] != 3:
        raise ValueError(f"pointmaps must have shape [B, V, H, W, 3], got {list(pointmaps.shape)}")
    return pointmaps.flatten(1, 3)


def _check_points(name: str, points: object) -> torch.Tensor:
    if not isinstance(points, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor [B, P, 3], got {type(points).__name__}")
    if points.dim() != 3 or points.shape[-1] != 3:
        raise ValueError(f"{name} must have shape [B, P, 3], got {list(points.shape)}")
    if not points.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {points.dtype}")
    if points.shape[1] == 0:
        raise ValueError(f"{name} must hold at least one point (dim 1 > 0), got shape {list(points.shape)}")
    return points


class PMLoss(nn.Module):
    """The PM-Loss regulariser (no parameters, no buffers).

    Args:
        weight: factor of the batch-mean loss (0.005 in the paper, from step 0).
        ignore_large_loss: per-item losses above it are multiplied by 1e-5 (``float("inf")`` disables).
        align: align the teacher to the prediction with Umeyama Sim(3) (the paper). Needs one teacher
            point per predicted centre, in the same (v, h, w) order. False compares the sets as they are
            (the teacher must then already be in the prediction's frame and scale) and allows any P'.
        distance: ``"squared"``: the mean squared distance to the nearest teacher point (the paper's
            Chamfer); ``"euclidean"`` (our option): the mean distance itself, whose gradient has the same
            size for every centre instead of growing with its error.

    Call ``loss_fn(pred_points, teacher_points, valid=None)`` -> :class:`PMLossOutput`:

    - pred_points: [B, P, 3] predicted Gaussian centres (e.g. ``pointmaps_to_points`` of the unprojected
      depth), any floating dtype; gradients flow into them.
    - teacher_points: [B, P', 3] teacher points; treated as constants (detached), P' = P when align.
    - valid: optional [B, P'] bool, True where the teacher point is trustworthy. Invalid and non-finite
      teacher points get zero weight in the alignment and are not Chamfer targets; every predicted centre
      still counts. An item with no valid teacher point gets loss 0.

    Computed in float32 (float64 for float64 predictions); the loss has that dtype. Items whose predicted
    points are not all finite, or whose raw loss is NaN or inf, contribute 0 and a zero (not NaN) gradient;
    they still count in the batch mean.
    """

    def __init__(
        self,
        weight: float = 0.005,
        ignore_large_loss: float = 100.0,
        align: bool = True,
        distance: str = "squared",
    ) -> None:
        super().__init__()
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise TypeError(f"weight must be a number, got {weight!r}")
        if not (math.isfinite(weight) and weight >= 0):
            raise ValueError(f"weight must be a finite number >= 0, got {weight!r}")
        if isinstance(ignore_large_loss, bool) or not isinstance(ignore_large_loss, (int, float)):
            raise TypeError(f"ignore_large_loss must be a number, got {ignore_large_loss!r}")
        if not ignore_large_loss > 0:
            raise ValueError(f"ignore_large_loss must be > 0 (inf disables it), got {ignore_large_loss!r}")
        if not isinstance(align, bool):
            raise TypeError(f"align must be a bool, got {align!r}")
        if distance not in DISTANCES:
            raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
        self.weight = float(weight)
        self.ignore_large_loss = float(ignore_large_loss)
        self.align = align
        self.distance = distance

    def extra_repr(self) -> str:
        return (
            f"weight={self.weight}, ignore_large_loss={self.ignore_large_loss}, align={self.align}, "
            f"distance={self.distance!r}"
        )

    def forward(
        self, pred_points: torch.Tensor, teacher_points: torch.Tensor, valid: torch.Tensor | None = None
    ) -> PMLossOutput:
        pred_points = _check_points("pred_points", pred_points)
        teacher_points = _check_points("teacher_points", teacher_points)
        batch, count = pred_points.shape[:2]
        if teacher_points.device != pred_points.device:
            raise ValueError(
                f"teacher_points is on {teacher_points.device} but pred_points is on {pred_points.device}"
            )
        if teacher_points.shape[0] != batch:
            raise ValueError(
                f"teacher_points must have the batch size of pred_points ({batch}), got {teacher_points.shape[0]}"
            )
        if self.align and teacher_points.shape[1] != count:
            raise ValueError(
                f"align=True pairs teacher and predicted points by pixel, so teacher_points needs one point per "
                f"predicted centre: P' = {count}, got {teacher_points.shape[1]} (use align=False for unpaired sets)"
            )
        teacher_valid = torch.isfinite(teacher_points).all(dim=-1)
        if valid is not None:
            if not isinstance(valid, torch.Tensor) or valid.dtype != torch.bool:
                raise TypeError(f"valid must be a bool torch.Tensor [B, P'] or None, got {_describe(valid)}")
            if tuple(valid.shape) != tuple(teacher_points.shape[:2]):
                raise ValueError(
                    f"valid must have shape [B, P'] = {list(teacher_points.shape[:2])}, got {list(valid.shape)}"
                )
            if valid.device != pred_points.device:
                raise ValueError(f"valid is on {valid.device} but pred_points is on {pred_points.device}")
            teacher_valid = teacher_valid & valid

        dtype = torch.float64 if pred_points.dtype == torch.float64 else torch.float32
        pred_finite = torch.isfinite(pred_points).all(dim=-1).all(dim=-1)  # [B]
        # Items with non-finite predictions are zeroed here so that no NaN reaches the gradient.
        pred = torch.where(pred_finite[:, None, None], pred_points.to(dtype), 0.0)
        teacher = torch.where(teacher_valid[..., None], teacher_points.detach().to(dtype), 0.0)

        sim3: Sim3 | None = None
        aligned = teacher
        if self.align:
            sim3 = umeyama_sim3(teacher, pred, weights=teacher_valid)
            aligned = sim3.apply(teacher)
        # Invalid targets become copies of the item's first valid target: the nearest-neighbour distance
        # to a set does not change when one of its points is repeated, and the batch stays rectangular.
        first = teacher_valid.to(torch.uint8).argmax(dim=1)  # [B]
        stand_in = aligned.gather(1, first[:, None, None].expand(-1, 1, 3))
        targets = torch.where(teacher_valid[..., None], aligned, stand_in)

        raw = kernels_core.chamfer_distance(
            pred, targets, single_directional=True, squared=self.distance == "squared"
        ).loss  # [B]
        evaluated = pred_finite & teacher_valid.any(dim=1)
        stable = torch.where(evaluated & torch.isfinite(raw), raw, 0.0)
        stable = torch.where(stable > self.ignore_large_loss, stable * LARGE_LOSS_FACTOR, stable)
        per_item = torch.where(evaluated, raw, float("nan")).detach()
        return PMLossOutput(self.weight * stable.mean(), per_item, aligned, sim3)


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of dtype {value.dtype}"
    return type(value).__name__
