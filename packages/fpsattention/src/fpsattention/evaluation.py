"""Fidelity of FPSAttention videos against the full-precision model's videos (same prompts and seeds)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

import torch

from fpsattention.metrics import video_psnr, video_ssim
from fpsattention.pipeline import TINY_SIZE, VideoSize, generate_video
from fpsattention.processor import apply, remove
from fpsattention.schedule import FPSSchedule

EVAL_PROMPTS = (
    "a red circle moving right",
    "a blue square moving down",
    "a green circle moving up",
    "a yellow square moving left",
)


@dataclass
class Fidelity:
    """Mean PSNR (dB) and SSIM of candidate videos against reference videos, and the per-video PSNRs."""

    psnr: float
    ssim: float
    psnrs: list[float]


def reference_videos(
    pipe: Any,
    prompts: tuple[str, ...],
    seeds: tuple[int, ...],
    *,
    num_steps: int,
    size: VideoSize = TINY_SIZE,
) -> list[torch.Tensor]:
    """Videos of the pipeline as it is (no FPSAttention), one per (prompt, seed)."""
    device = pipe.transformer.device
    return [
        generate_video(pipe, p, size=size, num_steps=num_steps, seed=s, device=device)
        for p in prompts
        for s in seeds
    ]


def fps_videos(
    pipe: Any,
    schedule: FPSSchedule,
    prompts: tuple[str, ...],
    seeds: tuple[int, ...],
    *,
    num_steps: int,
    size: VideoSize = TINY_SIZE,
    transformer: torch.nn.Module | None = None,
) -> list[torch.Tensor]:
    """Videos with FPSAttention on ``transformer`` (default: the pipeline's), step-aware via the callback."""
    original = pipe.transformer
    if transformer is not None:
        pipe.transformer = transformer
    state = apply(pipe.transformer, schedule)
    try:
        videos = []
        for p in prompts:
            for s in seeds:
                state.set_step(0, num_steps)
                videos.append(
                    generate_video(
                        pipe, p, size=size, num_steps=num_steps, seed=s, device=pipe.transformer.device,
                        callback=state.pipeline_callback,
                    )
                )  # fmt: skip
        return videos
    finally:
        remove(pipe.transformer)
        pipe.transformer = original


def compare(videos: list[torch.Tensor], references: list[torch.Tensor]) -> Fidelity:
    psnrs = [video_psnr(v, r) for v, r in zip(videos, references, strict=True)]
    ssims = [video_ssim(v, r) for v, r in zip(videos, references, strict=True)]
    return Fidelity(statistics.fmean(psnrs), statistics.fmean(ssims), psnrs)
