"""A small feed-forward 3D Gaussian Splatting base shared by pmloss and zpressor.

- ``accel_shared.gs.cameras``: camera conventions (camera-to-world OpenCV extrinsics, normalised
  intrinsics, z-depth) and depth unprojection.
- ``accel_shared.gs.gaussians``: :class:`Gaussians`, a batch of 3-D Gaussians (gsplat conventions).
- ``accel_shared.gs.render``: :func:`render` (gsplat on CUDA, the kernels-core rasterizer on the CPU).
- ``accel_shared.gs.model``: :class:`FeedForwardGS` (per-view CNN, cross-view transformer,
  plane-sweep cost volume, depth and Gaussian heads; one Gaussian per pixel) with the
  :class:`ViewCompressor` extension point after the per-view features.
- ``accel_shared.gs.train`` / ``evaluation``: :func:`train` (checkpoints, exact resume,
  torchrun / DDP) and :func:`evaluate` (PSNR, SSIM, depth error).
- ``accel_shared.gs.metrics`` / ``losses``: PSNR, SSIM, depth errors; MSE + SSIM (+ LPIPS when
  its weights are present locally).
- ``accel_shared.gs.data``: procedural multi-view scenes, their on-disk format, datasets, and a
  RealEstate10K / DL3DV chunk loader.
- ``accel_shared.gs.images``: PNG output of renderings without an imaging library.

Names are imported lazily, so ``import accel_shared.gs`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Gaussians": "accel_shared.gs.gaussians",
    "RenderOutput": "accel_shared.gs.render",
    "render": "accel_shared.gs.render",
    "FeedForwardGS": "accel_shared.gs.model",
    "GSModelConfig": "accel_shared.gs.model",
    "GSModelOutput": "accel_shared.gs.model",
    "ViewCompressor": "accel_shared.gs.model",
    "PhotometricLoss": "accel_shared.gs.losses",
    "psnr": "accel_shared.gs.metrics",
    "ssim": "accel_shared.gs.metrics",
    "depth_errors": "accel_shared.gs.metrics",
    "TrainConfig": "accel_shared.gs.train",
    "TrainResult": "accel_shared.gs.train",
    "train": "accel_shared.gs.train",
    "evaluate": "accel_shared.gs.evaluation",
    "unproject_depth": "accel_shared.gs.cameras",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'accel_shared.gs' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
