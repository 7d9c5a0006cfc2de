"""Training and evaluating a feed-forward 3DGS model with and without PM-Loss on the same data.

Everything here stands on :mod:`accel_shared.gs` (model, training loop, renderer, data); this
module adds the PM-Loss term, the geometry metrics and the rendered examples.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from accel_shared.cli import progress
from accel_shared.gs.data import DataConfig, load_datasets
from accel_shared.gs.evaluation import evaluate, move_to_device
from accel_shared.gs.images import colorize_depth, image_grid, save_png
from accel_shared.gs.metrics import psnr
from accel_shared.gs.model import FeedForwardGS, GSModelConfig
from accel_shared.gs.render import render
from accel_shared.gs.train import TrainConfig, TrainResult, train
from pmloss.geometry_metrics import geometry_metrics
from pmloss.loss import PMLoss
from pmloss.teacher import PointmapTeacher
from pmloss.training import PMLossTerm

__all__ = [
    "DataConfig",
    "build_teacher",
    "evaluate_model",
    "load_datasets",
    "psnr_with_true_centres",
    "render_examples",
    "scene_psnr",
    "train_model",
]


def build_teacher(spec: str, *, noise: float = 0.0, seed: int = 0) -> PointmapTeacher:
    """ "ground-truth" (the dataset's pointmaps, with relative Gaussian noise ``noise``) or a folder of
    precomputed pointmaps (see :meth:`PointmapTeacher.from_directory`)."""
    if spec == "ground-truth":
        return PointmapTeacher.from_ground_truth(noise_std=noise, seed=seed)
    path = Path(spec)
    if not path.is_dir():
        raise FileNotFoundError(f"--teacher: expected 'ground-truth' or a folder of pointmaps, got {spec!r}")
    return PointmapTeacher.from_directory(path)


def train_model(
    model_config: GSModelConfig,
    train_set: Dataset,
    train_config: TrainConfig,
    *,
    teacher: PointmapTeacher | None,
    pm_weight: float = 0.005,
    align: bool = True,
    distance: str = "squared",
    decay_start: float | None = None,
    eval_set: Dataset | None = None,
    initial_state: Mapping[str, torch.Tensor] | None = None,
) -> tuple[FeedForwardGS, TrainResult]:
    """Builds the model (seeded by ``train_config.seed``) and trains it, with PM-Loss when a teacher
    is given and ``pm_weight`` > 0. ``align=False`` compares with the teacher without the Sim(3)
    alignment (for teachers already in the scene's frame and scale, such as ground truth).
    ``distance``: see :class:`~pmloss.loss.PMLoss`; ``decay_start``: see :class:`~pmloss.training.PMLossTerm`.
    ``initial_state``: a state dict of a trained model to fine-tune from (the paper's protocol: a trained
    DepthSplat fine-tuned with and without PM-Loss) instead of a fresh initialisation."""
    torch.manual_seed(train_config.seed)
    model = FeedForwardGS(model_config)
    if initial_state is not None:
        model.load_state_dict(initial_state)
    extra = None
    if teacher is not None and pm_weight > 0:
        extra = PMLossTerm(
            teacher, PMLoss(weight=pm_weight, align=align, distance=distance), decay_start=decay_start
        )
    result = train(model, train_set, train_config, extra_loss=extra, eval_dataset=eval_set)
    return model, result


def _surface(batch: Mapping[str, Any]) -> torch.Tensor:
    """All ground-truth points of an item's context and target views: [B, M, 3]."""
    maps = [batch[part]["pointmap"] for part in ("context", "target") if "pointmap" in batch[part]]
    if not maps:
        raise ValueError("the geometry metrics need ground-truth pointmaps (context['pointmap'])")
    return torch.cat([m.flatten(1, 3) for m in maps], dim=1)


@torch.no_grad()
def evaluate_model(
    model: FeedForwardGS,
    dataset: Dataset,
    *,
    batch_size: int = 1,
    device: torch.device | str = "cpu",
    show_progress: bool = True,
) -> dict[str, float]:
    """Novel-view PSNR / SSIM and context depth error (shared evaluation), plus the geometry metrics
    of :mod:`pmloss.geometry_metrics` averaged over scenes."""
    model = model.to(device).eval()
    metrics = evaluate(model, dataset, batch_size=batch_size, show_progress=show_progress)
    sums: dict[str, float] = {}
    count = 0
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    for batch in progress(loader, desc="geometry", total=len(loader), enabled=show_progress):
        batch = move_to_device(batch, torch.device(device))
        output = model(batch["context"])
        depth = torch.gather(
            batch["context"]["depth"],
            1,
            output.context_index[:, :, None, None].expand(-1, -1, *output.depth.shape[2:]),
        )
        per_item = geometry_metrics(output.means_per_pixel, depth, _surface(batch))
        for name, values in per_item.items():
            sums[name] = sums.get(name, 0.0) + float(values.sum())
        count += output.depth.shape[0]
    metrics.update({name: total / max(count, 1) for name, total in sums.items()})
    return metrics


@torch.no_grad()
def psnr_with_true_centres(
    model: FeedForwardGS, dataset: Dataset, *, device: torch.device | str = "cpu"
) -> float:
    """Novel-view PSNR when every Gaussian's centre is moved onto the true surface point of its pixel
    (the context view's ground-truth pointmap) and every other parameter stays as predicted.

    A counterfactual: the other parameters (scales, opacities, colours) were predicted for the model's
    own centres. Set beside the PSNR of the predicted centres, it estimates how much novel-view quality
    the model's geometry errors cost. Needs ground-truth pointmaps (``context["pointmap"]``).
    """
    model = model.to(device).eval()
    total, count = 0.0, 0
    for batch in DataLoader(dataset, batch_size=1, shuffle=False):
        batch = move_to_device(batch, torch.device(device))
        context, target = batch["context"], batch["target"]
        if "pointmap" not in context:
            raise ValueError("psnr_with_true_centres needs ground-truth pointmaps (context['pointmap'])")
        output = model(context)
        index = output.context_index[:, :, None, None, None].expand(-1, -1, *output.means_per_pixel.shape[2:])
        true_means = torch.gather(context["pointmap"], 1, index).flatten(1, 3)
        gaussians = dataclasses.replace(output.gaussians, means=true_means)
        image = target["image"]
        rendered = render(gaussians, target["extrinsics"], target["intrinsics"], image.shape[-2:])
        values = psnr(rendered.color.clamp(0.0, 1.0), image)
        total, count = total + float(values.sum()), count + values.numel()
    return total / max(count, 1)


def scene_psnr(model: FeedForwardGS, dataset: Dataset, *, device: torch.device | str = "cpu") -> list[float]:
    """Novel-view PSNR of each item of ``dataset`` (the mean over its target views), in dataset order:
    the pairs for :func:`accel_shared.bench.paired_difference` between two models."""
    model = model.to(device)
    return [
        evaluate(model, Subset(dataset, [index]), show_progress=False, use_lpips=False)["psnr"]
        for index in range(len(dataset))  # type: ignore[arg-type]
    ]


@torch.no_grad()
def render_examples(
    model: FeedForwardGS, dataset: Dataset, out_dir: str | Path, *, count: int = 4, device: str = "cpu"
) -> list[Path]:
    """One PNG per scene: row 1 the context images, row 2 the targets, row 3 the renderings, row 4
    the predicted depth of the context views and the rendered depth of the targets."""
    model = model.to(device).eval()
    written: list[Path] = []
    for index in range(min(count, len(dataset))):  # type: ignore[arg-type]
        item = dataset[index]
        batch = move_to_device({k: _add_batch_dim(v) for k, v in item.items()}, torch.device(device))
        output = model(batch["context"])
        target = batch["target"]
        rendered = render(
            output.gaussians, target["extrinsics"], target["intrinsics"], target["image"].shape[-2:]
        )
        near, far = float(target["near"].min()), float(target["far"].max())
        rows = [
            list(batch["context"]["image"][0]),
            list(target["image"][0]),
            list(rendered.color[0]),
            [colorize_depth(d, near, far) for d in (*output.depth[0], *rendered.depth[0])],
        ]
        written.append(save_png(Path(out_dir) / f"{item['scene']}.png", image_grid(rows)))
    return written


def _add_batch_dim(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.unsqueeze(0)
    if isinstance(value, Mapping):
        return {k: _add_batch_dim(v) for k, v in value.items()}
    return [value]
