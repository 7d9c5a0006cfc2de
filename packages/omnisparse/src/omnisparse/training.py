"""Training on long-video QA: the dense base model, and fine-tuning with OmniSparse in the loop.

One step accumulates ``batch_size`` videos per process (one forward each, so no padding and the sparse
masks see exactly one sequence). The loss is any mix of

- the answer loss: cross-entropy on the answer tokens and EOS;
- distillation: KL(teacher || student) at temperature T over every text position after the video
  (the question and the answer), the teacher being the frozen dense model.

Under torchrun the model is wrapped in DistributedDataParallel (gloo on CPU); every rank draws its own
videos from the deterministic stream, so a run resumes exactly from its last checkpoint.
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from accel_shared.distributed import DistContext
from accel_shared.training import LoopConfig, run_training
from omnisparse.inputs import answer_ids, video_inputs
from omnisparse.longvideo_qa import SHAPE_DISTRACTORS, video_at

__all__ = ["TrainConfig", "example_loss", "train"]


@dataclass
class TrainConfig:
    """Settings of one training run (saved in every checkpoint and checked on resume)."""

    steps: int = 2000
    batch_size: int = 8  # videos per step and process
    lr: float = 1e-3
    min_lr_ratio: float = 0.1  # cosine decay to lr * min_lr_ratio
    warmup: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    num_frames: int = 32
    frame_size: int = 112  # frames are resized to frame_size x frame_size (a multiple of 28)
    single_frame_steps: int = 0  # curriculum: first train on 1-frame videos (plain VQA) for these steps,
    curriculum_steps: int = 0  # then grow videos linearly from 1 frame to num_frames over these steps
    shape_distractors: int | None = SHAPE_DISTRACTORS  # distractor frames showing a shape (None: all)
    mixed_lengths: bool = False  # each video draws its length uniformly in [1, the curriculum's length]
    seed: int = 0
    answer_weight: float = 1.0
    distill_weight: float = 0.0
    temperature: float = 1.0
    checkpoint_every: int = 200
    log_every: int = 50

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be >= 1, got {self.steps} and {self.batch_size}")
        if self.answer_weight < 0 or self.distill_weight < 0 or self.answer_weight + self.distill_weight == 0:
            raise ValueError("answer_weight and distill_weight must be >= 0 and not both 0")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        for name in ("num_frames", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.frame_size < 28 or self.frame_size % 28:
            raise ValueError(f"frame_size must be a positive multiple of 28, got {self.frame_size}")
        if self.single_frame_steps < 0 or self.curriculum_steps < 0 or self.warmup < 0:
            raise ValueError("single_frame_steps, curriculum_steps and warmup must be >= 0")

    def frames_at(self, step: int, index: int = 0) -> int:
        """Frames of video ``index`` at ``step``: the curriculum's length (num_frames once it is over) or,
        with ``mixed_lengths``, a length drawn uniformly up to it (seeded by the index, so resumable)."""
        if step < self.single_frame_steps:
            return 1
        step -= self.single_frame_steps
        longest = self.num_frames
        if step < self.curriculum_steps:
            longest = 1 + (self.num_frames - 1) * step // self.curriculum_steps
        if not self.mixed_lengths:
            return longest
        return random.Random(f"frames-{self.seed}-{index}").randint(1, longest)

    def loop(self) -> LoopConfig:
        """The steps, learning-rate schedule and cadence, for :func:`accel_shared.training.run_training`."""
        return LoopConfig(
            steps=self.steps,
            lr=self.lr,
            warmup_steps=self.warmup,
            grad_clip=self.grad_clip,
            log_every=self.log_every,
            checkpoint_every=self.checkpoint_every,
            min_lr_ratio=self.min_lr_ratio,
        )

    def lr_at(self, step: int) -> float:
        """The learning rate of ``step``: linear warm-up, then cosine decay to ``lr * min_lr_ratio``."""
        return self.loop().lr_at(step)


def example_inputs(
    model_config: Any, tokenizer: Any, index: int, cfg: TrainConfig, *, num_frames: int | None = None
) -> tuple[dict[str, torch.Tensor], int]:
    """Inputs with the answer appended, and the position of the first answer token."""
    item = video_at(
        "train",
        index,
        num_frames=num_frames or cfg.num_frames,
        seed=cfg.seed,
        shape_distractors=cfg.shape_distractors,
    )
    inputs = video_inputs(
        item.frames(),
        item.question,
        tokenizer,
        model_config,
        frame_pixels=(cfg.frame_size**2, cfg.frame_size**2),
        repeat_frames=2,
    )
    answer = answer_ids(tokenizer, item.answer)[None]
    start = inputs["input_ids"].shape[1]
    inputs["input_ids"] = torch.cat([inputs["input_ids"], answer], dim=1)
    for key in ("attention_mask", "mm_token_type_ids"):
        fill = 1 if key == "attention_mask" else 0
        inputs[key] = torch.cat([inputs[key], torch.full_like(answer, fill)], dim=1)
    return inputs, start


def example_loss(
    model: torch.nn.Module,
    inputs: dict[str, torch.Tensor],
    answer_start: int,
    cfg: TrainConfig,
    teacher: torch.nn.Module | None = None,
    *,
    video_token_id: int,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The weighted loss of one example and its parts."""
    logits = model(**inputs).logits[0].float()  # [S, V]
    ids = inputs["input_ids"][0]
    logs: dict[str, float] = {}
    loss = logits.new_zeros(())
    if cfg.answer_weight > 0:
        answer = F.cross_entropy(logits[answer_start - 1 : -1], ids[answer_start:])
        loss = loss + cfg.answer_weight * answer
        logs["answer_loss"] = float(answer.detach())
    if cfg.distill_weight > 0:
        if teacher is None:
            raise ValueError("distill_weight > 0 needs a teacher model")
        with torch.no_grad():
            teacher_logits = teacher(**inputs).logits[0].float()
        first = int((ids == video_token_id).nonzero().max()) + 1  # text after the video
        t = cfg.temperature
        kl = F.kl_div(
            F.log_softmax(logits[first:] / t, -1),
            F.log_softmax(teacher_logits[first:] / t, -1),
            log_target=True,
            reduction="batchmean",
        ) * (t * t)
        loss = loss + cfg.distill_weight * kl
        logs["distill_kl"] = float(kl.detach())
    return loss, logs


def _run_settings(cfg: TrainConfig, extra: dict[str, Any]) -> dict[str, Any]:
    settings = asdict(cfg)
    for key in ("steps", "checkpoint_every", "log_every"):
        settings.pop(key)  # may change on resume
    return {**settings, **extra}


def train(
    model: torch.nn.Module,
    tokenizer: Any,
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    ctx: DistContext,
    teacher: torch.nn.Module | None = None,
    run_info: dict[str, Any] | None = None,
    show_progress: bool = True,
) -> list[dict[str, float]]:
    """Train ``model`` in place (checkpoints in ``out_dir/checkpoints``, resumed automatically).

    ``run_info`` (e.g. the OmniSparse config) is stored with the checkpoints; resuming with different
    settings is an error. Returns the logged history (mean over ranks).
    """
    config: Any = model.config
    module = model.to(ctx.device)
    if teacher is not None:
        teacher.to(ctx.device).eval().requires_grad_(False)
    runner: Any = torch.nn.parallel.DistributedDataParallel(model) if ctx.distributed else model
    optimizer = torch.optim.AdamW(module.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def loss_fn(step: int) -> dict[str, float]:
        logs: dict[str, float] = {}
        for micro in range(cfg.batch_size):
            index = (step * ctx.world_size + ctx.rank) * cfg.batch_size + micro
            inputs, answer_start = example_inputs(
                config, tokenizer, index, cfg, num_frames=cfg.frames_at(step, index)
            )
            inputs = {key: value.to(ctx.device) for key, value in inputs.items()}
            # Gradients are all-reduced once per step, after the last example.
            no_sync = (
                runner.no_sync()
                if ctx.distributed and micro < cfg.batch_size - 1
                else contextlib.nullcontext()
            )
            with no_sync:
                loss, parts = example_loss(
                    runner, inputs, answer_start, cfg, teacher, video_token_id=config.video_token_id
                )
                (loss / cfg.batch_size).backward()
            for key, value in parts.items():
                logs[key] = logs.get(key, 0.0) + value / cfg.batch_size
        return logs

    return run_training(
        module,
        optimizer,
        loss_fn,
        cfg.loop(),
        out_dir,
        ctx=ctx,
        settings=_run_settings(cfg, run_info or {}),
        show_progress=show_progress,
    )
