"""Stage 1 of the benchmark model: pretrain the vision tower on easy-vqa frames (shape and colour).

Real VLMs start from a pretrained vision encoder; a tower trained from scratch only through the
language model's answer loss learns very slowly (the answer token first has to find the right frame
before the frame's features get any gradient). So, as a stand-in for CLIP-style pretraining, the tiny
model's own Qwen2-VL vision tower (patch embedding, blocks and the 2x2 patch merger) is trained to
classify each frame's shape and colour from its mean-pooled merged tokens, with two linear heads that
are thrown away afterwards.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from omnisparse.longvideo_qa import COLORS, SHAPES, frame_labels, load_frame
from omnisparse.video import PatchSpec, frames_to_patches, resize_frames

__all__ = ["VisionPretrainConfig", "pretrain_vision"]


@dataclass
class VisionPretrainConfig:
    steps: int = 300
    batch_size: int = 32  # frames per step
    lr: float = 2e-3
    frame_size: int = 112
    seed: int = 0


def _frame_batch(ids: list[int], spec: PatchSpec, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    pixels, grids = [], []
    for image_id in ids:
        frame = load_frame("train", image_id)
        p, g = frames_to_patches(
            resize_frames([frame, frame], spec, min_pixels=size * size, max_pixels=size * size), spec
        )
        pixels.append(p)
        grids.append(g)
    return torch.cat(pixels), torch.cat(grids)


def pretrain_vision(
    model: torch.nn.Module, cfg: VisionPretrainConfig, *, show_progress: bool = True
) -> list[float]:
    """Train ``model.model.visual`` (a Qwen2-VL vision tower) in place; returns the loss per step."""
    vlm: Any = model
    visual = vlm.model.visual
    spec = PatchSpec.from_vision_config(vlm.config.vision_config)
    width = int(vlm.config.text_config.hidden_size)
    heads = torch.nn.Linear(width, len(SHAPES) + len(COLORS))
    labels = frame_labels("train")
    ids = sorted(labels)
    rng = random.Random(cfg.seed)
    params = [*visual.parameters(), *heads.parameters()]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)
    merge = spec.merge_size**2
    losses = []
    visual.train()
    for step in tqdm(
        range(cfg.steps), desc="vision pretraining", disable=not show_progress, dynamic_ncols=True
    ):
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * min(1.0, (step + 1) / 20)
        batch = rng.sample(ids, cfg.batch_size)
        pixels, grids = _frame_batch(batch, spec, cfg.frame_size)
        out = visual(pixels, grid_thw=grids)
        tokens = out.pooler_output if hasattr(out, "pooler_output") else out  # [sum of tokens, width]
        per_frame = int(grids[0].prod()) // merge
        pooled = tokens.view(len(batch), per_frame, width).mean(1)
        logits = heads(pooled)
        shape_target = torch.tensor([SHAPES.index(labels[i][0]) for i in batch])
        color_target = torch.tensor([COLORS.index(labels[i][1]) for i in batch])
        loss = F.cross_entropy(logits[:, : len(SHAPES)], shape_target) + F.cross_entropy(
            logits[:, len(SHAPES) :], color_target
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        losses.append(float(loss.detach()))
    visual.eval()
    return losses
