"""Evaluation of a FeedForwardGS on a multi-view dataset: novel-view PSNR / SSIM (/ LPIPS) and the
predicted depth of the context views against their ground truth."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from accel_shared.cli import progress
from accel_shared.gs.losses import load_lpips
from accel_shared.gs.metrics import depth_errors, psnr, ssim
from accel_shared.gs.model import FeedForwardGS
from accel_shared.gs.render import render

__all__ = ["evaluate", "move_to_device"]


def move_to_device(batch: Any, device: torch.device) -> Any:
    """``batch`` with every tensor (in nested dicts, lists and tuples) moved to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: move_to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to_device(v, device) for v in batch)
    return batch


def _unwrap(model: nn.Module) -> FeedForwardGS:
    inner = getattr(model, "module", model)  # DistributedDataParallel
    if not isinstance(inner, FeedForwardGS):
        raise TypeError(f"evaluate: model must be a FeedForwardGS, got {type(inner).__name__}")
    return inner


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: Dataset,
    *,
    batch_size: int = 1,
    num_anchors: int | None = None,
    num_workers: int = 0,
    show_progress: bool = True,
    use_lpips: bool = True,
) -> dict[str, float]:
    """Mean metrics over ``dataset`` (items as in :mod:`accel_shared.gs.data`, collated by batch).

    Renders every target view from the Gaussians of the context views. Returns "psnr", "ssim" (and
    "lpips" when :func:`~accel_shared.gs.losses.load_lpips` finds it locally), averaged over target
    images; "depth_abs_rel", "depth_rmse", "depth_delta1" of the predicted depth of the context views
    the Gaussians come from (their ``context_index``) against context["depth"] where it is > 0, averaged
    over views with valid pixels (absent when the dataset has no depth); and "num_scenes".
    ``num_anchors`` is the K passed to the model (with a compressor). The model's train/eval mode is
    restored afterwards.
    """
    if batch_size < 1:
        raise ValueError(f"evaluate: batch_size must be >= 1, got {batch_size}")
    net = _unwrap(model)
    device = next(net.parameters()).device
    lpips_model = load_lpips() if use_lpips else None
    if lpips_model is not None:
        lpips_model = lpips_model.to(device)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}

    def add(name: str, values: torch.Tensor) -> None:
        values = values.flatten().double()
        values = values[~values.isnan()]
        sums[name] = sums.get(name, 0.0) + float(values.sum())
        counts[name] = counts.get(name, 0) + values.numel()

    was_training = net.training
    net.eval()
    scenes = 0
    try:
        for batch in progress(loader, desc="evaluate", total=len(loader), enabled=show_progress):
            batch = move_to_device(batch, device)
            context, target = batch["context"], batch["target"]
            output = net(context, num_anchors=num_anchors)
            image = target["image"]
            shape = (image.shape[-2], image.shape[-1])
            rendered = render(output.gaussians, target["extrinsics"], target["intrinsics"], shape)
            color = rendered.color.clamp(0.0, 1.0)
            add("psnr", psnr(color, image))
            add("ssim", ssim(color, image))
            if lpips_model is not None:
                add("lpips", lpips_model(color.flatten(0, 1), image.flatten(0, 1), normalize=True))
            if "depth" in context:
                index = output.context_index[..., None, None].expand(-1, -1, *context["depth"].shape[-2:])
                errors = depth_errors(output.depth, torch.gather(context["depth"], 1, index))
                for key, value in errors.items():
                    add(f"depth_{key}", value)
            scenes += image.shape[0]
    finally:
        net.train(was_training)
    metrics = {k: sums[k] / counts[k] if counts[k] else math.nan for k in sums}
    metrics["num_scenes"] = float(scenes)
    return metrics
