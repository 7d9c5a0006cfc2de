"""A small training loop with checkpoints, exact resume, logging and torchrun support.

The caller owns the model, the optimizer and the loss; the loop owns the bookkeeping around them:

- resume from ``out_dir/checkpoints`` (model, optimizer, step, history, every rank's RNG state),
  refusing a checkpoint written with other ``settings`` (options, number of processes);
- per step: the learning rate from ``lr_at``, ``loss_fn(step)`` (which runs its own backward),
  gradient clipping, the optimizer step;
- logs averaged over ``log_every`` steps and over ranks, checkpoints every ``checkpoint_every``
  steps and at the end, ``history.json`` when done.

Under torchrun the caller wraps the model in DistributedDataParallel and gives each rank its own
data inside ``loss_fn`` (the step number and :class:`~accel_shared.distributed.DistContext` say which).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from accel_shared.checkpoint import (
    get_rng_state,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from accel_shared.distributed import DistContext, all_reduce_mean

__all__ = ["LoopConfig", "run_training"]


@dataclass(frozen=True)
class LoopConfig:
    """Steps and cadence of :func:`run_training`."""

    steps: int
    lr: float
    warmup_steps: int = 0
    grad_clip: float = 1.0
    log_every: int = 10
    checkpoint_every: int = 100
    min_lr_ratio: float = 0.1  # the cosine decays to lr * min_lr_ratio

    def __post_init__(self) -> None:
        for name in ("steps", "log_every", "checkpoint_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr!r}")
        if self.warmup_steps < 0 or self.grad_clip <= 0:
            raise ValueError("warmup_steps must be >= 0 and grad_clip > 0")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}")

    def lr_at(self, step: int) -> float:
        """Linear warm-up, then cosine decay to ``min_lr_ratio`` x ``lr``."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        progress = (step - self.warmup_steps) / max(1, self.steps - self.warmup_steps)
        cosine = 0.5 * (1 + torch.cos(torch.tensor(progress * torch.pi)).item())
        return self.lr * (self.min_lr_ratio + (1 - self.min_lr_ratio) * cosine)


LossFn = Callable[[int], dict[str, float]]
"""``loss_fn(step)`` computes the loss of one step, calls ``backward`` on it, and returns the logs."""


def run_training(
    module: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: LossFn,
    cfg: LoopConfig,
    out_dir: str | Path,
    *,
    ctx: DistContext,
    settings: dict[str, Any],
    desc: str = "train",
    show_progress: bool = True,
) -> list[dict[str, float]]:
    """Train ``module`` (its parameters are in ``optimizer``) for ``cfg.steps``; returns the history.

    ``settings`` (JSON-like) is stored with every checkpoint; resuming under other settings raises.
    """
    out_dir = Path(out_dir)
    settings = {**settings, "world_size": ctx.world_size}
    start, history = 0, []
    if (found := latest_checkpoint(out_dir)) is not None:
        state = load_checkpoint(found)
        if state["settings"] != settings:
            raise ValueError(
                f"{out_dir} holds a run with other settings (options or number of processes); "
                "use another output folder or the same options"
            )
        module.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start, history = state["step"], state["history"]
        set_rng_state(state["rng"][ctx.rank])
    module.train()
    bar = tqdm(
        range(start, cfg.steps),
        desc=desc,
        initial=start,
        total=cfg.steps,
        disable=not (show_progress and ctx.is_main),
        dynamic_ncols=True,
    )
    window: list[dict[str, float]] = []
    tic = time.perf_counter()
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr_at(step)
        optimizer.zero_grad(set_to_none=True)
        logs = loss_fn(step)
        torch.nn.utils.clip_grad_norm_(module.parameters(), cfg.grad_clip)
        optimizer.step()
        window.append(logs)
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            mean = all_reduce_mean({k: sum(w[k] for w in window) / len(window) for k in window[0]}, ctx)
            mean.update(step=done, seconds=time.perf_counter() - tic)
            history.append(mean)
            window = []
            if ctx.is_main:
                bar.set_postfix({k: f"{v:.4g}" for k, v in mean.items() if k not in ("step", "seconds")})
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            _save(module, optimizer, done, history, settings, out_dir, ctx)
    module.eval()
    if ctx.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "history.json").write_text(json.dumps(history, indent=1))
    return history


def _save(
    module: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    step: int,
    history: list[dict[str, float]],
    settings: dict[str, Any],
    out_dir: Path,
    ctx: DistContext,
) -> None:
    rng: list[Any] = [get_rng_state()]
    if ctx.distributed:
        rng = [None] * ctx.world_size
        torch.distributed.all_gather_object(rng, get_rng_state())
    if ctx.is_main:
        state = {
            "model": module.state_dict(),
            "optimizer": optimizer.state_dict(),
            "step": step,
            "history": history,
            "settings": settings,
            "rng": rng,
        }
        save_checkpoint(out_dir, step, state)
    if ctx.distributed:
        torch.distributed.barrier()
