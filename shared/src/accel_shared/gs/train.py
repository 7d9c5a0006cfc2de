"""Training loop of a FeedForwardGS: render the target views, photometric loss (+ an extra loss),
AdamW with warm-up + cosine, JSONL logs, atomic checkpoints with exact resume, and DDP under torchrun.

Each step: ``model(batch["context"], num_anchors=K)`` -> Gaussians; :func:`~accel_shared.gs.render.render`
of the target cameras; :class:`~accel_shared.gs.losses.PhotometricLoss` against the target images, plus
``extra_loss(batch, output)`` when given (how pmloss adds its term; an extra loss with a
``set_progress(fraction)`` method is told ``step / steps`` before each step, for weight schedules).
With a compressor, K is drawn per step uniformly from [min_anchors, max_anchors], as a function of
(seed, step) so every rank and a resumed run draw the same K.

Exact resume: checkpoints hold the model, optimizer, scheduler, step, every rank's Python / NumPy / torch
RNG states and the data order (epoch, batch within the epoch); the order of an epoch is a function of
(seed, epoch), and DataLoader worker seeds of (seed, epoch). A run interrupted and resumed from a
checkpoint reaches the same weights as an uninterrupted one, for datasets whose items are a deterministic
function of their index (or that draw randomness only in the main process, with ``num_workers=0``).

Distributed: launched with ``torchrun --nproc_per_node N`` (WORLD_SIZE > 1) the model is wrapped in
DistributedDataParallel and each rank reads its share through a DistributedSampler; ``batch_size`` is per
process. Only rank 0 writes logs, checkpoints and the final model.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from accel_shared.checkpoint import (
    get_rng_state,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from accel_shared.cli import progress, seed_everything
from accel_shared.distributed import DistContext, all_reduce_mean, setup_distributed, teardown_distributed
from accel_shared.gs.evaluation import evaluate, move_to_device
from accel_shared.gs.losses import PhotometricLoss
from accel_shared.gs.model import FeedForwardGS, GSModelOutput
from accel_shared.gs.render import render
from accel_shared.gs.sampler import ResumableSampler

__all__ = ["ExtraLoss", "TrainConfig", "TrainResult", "lr_factor", "train"]

logger = logging.getLogger(__name__)

ExtraLoss = Callable[[Mapping[str, Any], GSModelOutput], tuple[torch.Tensor, Mapping[str, float]]]
LOG_NAME = "log.jsonl"
MODEL_DIR = "model"


@dataclass
class TrainConfig:
    """Hyper-parameters and bookkeeping of :func:`train`.

    Attributes:
        steps: optimizer steps in total (a resumed run continues to the same total).
        batch_size: scenes per step and per process.
        lr: peak learning rate of AdamW (DepthSplat: 2e-4).
        warmup_steps: linear warm-up from lr/warmup_steps to lr, then cosine decay to 0 at ``steps``.
        weight_decay: AdamW decay of conv / linear weights (not biases, norms).
        grad_clip: clip the global gradient norm to this (0 disables clipping; the norm is still logged).
        ckpt_every: write a checkpoint every this many steps (and at the end); 0 only at the end.
        eval_every: evaluate on ``eval_dataset`` every this many steps (0: only at the end).
        log_every: append averaged losses to ``out_dir/log.jsonl`` every this many steps.
        out_dir: where logs, checkpoints and the final model (``out_dir/model``) go.
        seed: seeds the RNGs (plus the rank), the data order and the per-step K.
        num_workers: DataLoader workers.
        min_anchors, max_anchors: range of the K drawn each step when the model has a compressor (None:
            the model's ``config.num_anchors``, fixed).
        eval_num_anchors: K for evaluation (None: the model's ``config.num_anchors``).
        eval_batch_size: batch size of evaluation.
        lambda_ssim, lambda_lpips: weights of :class:`~accel_shared.gs.losses.PhotometricLoss`.
        resume: continue from ``out_dir``'s latest checkpoint when there is one.
        keep_checkpoints: how many checkpoints to keep (0: all).
        device: "auto", "cpu", "cuda" or "cuda:N" (distributed CUDA runs use cuda:LOCAL_RANK).
        show_progress: show the tqdm bar (rank 0).
    """

    steps: int = 1000
    batch_size: int = 1
    lr: float = 2e-4
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 0.5
    ckpt_every: int = 500
    eval_every: int = 0
    log_every: int = 10
    out_dir: str | Path = "runs/gs"
    seed: int = 0
    num_workers: int = 0
    min_anchors: int | None = None
    max_anchors: int | None = None
    eval_num_anchors: int | None = None
    eval_batch_size: int = 1
    lambda_ssim: float = 0.05
    lambda_lpips: float = 0.05
    resume: bool = True
    keep_checkpoints: int = 2
    device: str = "auto"
    show_progress: bool = True

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "ckpt_every", "eval_every", "num_workers", "keep_checkpoints"):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"TrainConfig.lr must be > 0, got {self.lr}")
        if (self.min_anchors is None) != (self.max_anchors is None):
            raise ValueError("TrainConfig.min_anchors and max_anchors must be given together")
        if (
            self.min_anchors is not None
            and self.max_anchors is not None
            and not 1 <= self.min_anchors <= self.max_anchors
        ):
            raise ValueError(
                f"TrainConfig: need 1 <= min_anchors <= max_anchors, got {self.min_anchors}, {self.max_anchors}"
            )


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        step: the step reached (``config.steps``).
        losses: this process's total loss of every step run by this call.
        resumed_from: the step of the checkpoint the run resumed from, or None.
        checkpoint: the last checkpoint written (rank 0), or None.
        eval_metrics: the last evaluation (rank 0, with an eval dataset), or None.
        out_dir: the run directory.
    """

    step: int
    losses: list[float] = field(default_factory=list)
    resumed_from: int | None = None
    checkpoint: Path | None = None
    eval_metrics: dict[str, float] | None = None
    out_dir: Path = Path()


def lr_factor(step: int, *, warmup_steps: int, total_steps: int) -> float:
    """Multiplier of the peak lr at (0-based) ``step``: linear warm-up, then cosine to 0."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress_ = min(1.0, (step - warmup_steps) / span)
    return 0.5 * (1.0 + math.cos(math.pi * progress_))


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _num_anchors(model: FeedForwardGS, config: TrainConfig, step: int) -> int | None:
    if model.compressor is None:
        return None
    if config.min_anchors is None or config.max_anchors is None:
        return model.config.num_anchors
    return random.Random(config.seed * 1_000_003 + step).randint(config.min_anchors, config.max_anchors)


class _Batches:
    """Batches in a resumable order: the loader's sampler is re-positioned at every epoch start."""

    def __init__(self, loader: DataLoader, sampler: ResumableSampler, seed: int, batch_size: int) -> None:
        self.loader, self.sampler, self.seed, self.batch_size = loader, sampler, seed, batch_size
        self.epoch = 0
        self.batch_in_epoch = 0
        self._iterator: Iterator[Any] | None = None

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch}

    def load_state(self, state: Mapping[str, int]) -> None:
        self.epoch, self.batch_in_epoch = int(state["epoch"]), int(state["batch_in_epoch"])
        self._iterator = None

    def _start_epoch(self) -> None:
        self.sampler.set_state(self.epoch, self.batch_in_epoch * self.batch_size)
        if self.loader.generator is not None:  # worker base seeds: a function of (seed, epoch)
            self.loader.generator.manual_seed((self.seed << 20) + self.epoch)
        self._iterator = iter(self.loader)

    def next(self) -> Any:
        if self._iterator is None:
            self._start_epoch()
        assert self._iterator is not None
        batch = next(self._iterator, None)
        if batch is None:
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0
            self._start_epoch()
            batch = next(self._iterator)
        self.batch_in_epoch += 1
        return batch


def _read_log(path: Path, keep_until: int) -> list[str]:
    if not path.is_file():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    return [line for line in lines if json.loads(line).get("step", 0) <= keep_until]


def train(
    model: FeedForwardGS,
    train_dataset: Dataset,
    config: TrainConfig,
    *,
    extra_loss: ExtraLoss | None = None,
    eval_dataset: Dataset | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``train_dataset`` (items as in :mod:`accel_shared.gs.data`).

    Args:
        model: the model (with its compressor, if any, installed). Under torchrun every rank passes a
            model built the same way; DDP broadcasts rank 0's weights.
        train_dataset: a map-style dataset of {"scene", "context", "target"} items.
        config: see :class:`TrainConfig`.
        extra_loss: ``extra_loss(batch, output) -> (loss tensor, {name: float})`` added to the
            photometric loss; its logs are averaged into the JSONL log.
        eval_dataset: evaluated every ``config.eval_every`` steps and at the end (rank 0).
    """
    if not isinstance(model, FeedForwardGS):
        raise TypeError(f"train: model must be a FeedForwardGS, got {type(model).__name__}")
    ctx = setup_distributed(config.device)
    try:
        return _train(model, train_dataset, config, ctx, extra_loss, eval_dataset)
    finally:
        teardown_distributed(ctx)


def _gather_rng(ctx: DistContext) -> list[dict[str, Any]]:
    state = get_rng_state()
    if not ctx.distributed:
        return [state]
    states: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(states, state)
    return states


def _train(
    model: FeedForwardGS,
    dataset: Dataset,
    config: TrainConfig,
    ctx: DistContext,
    extra_loss: ExtraLoss | None,
    eval_dataset: Dataset | None,
) -> TrainResult:
    out_dir = Path(config.out_dir)
    if ctx.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(config.seed + ctx.rank)
    device = ctx.device
    model.to(device).train()
    loss_fn = PhotometricLoss(config.lambda_ssim, config.lambda_lpips).to(device)
    optimizer = torch.optim.AdamW(_param_groups(model, config.weight_decay), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, partial(lr_factor, warmup_steps=config.warmup_steps, total_steps=config.steps)
    )
    sampler = ResumableSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, seed=config.seed)
    if sampler.num_samples < config.batch_size:
        raise ValueError(
            f"train: each of the {ctx.world_size} process(es) gets {sampler.num_samples} samples per epoch, "
            f"fewer than batch_size={config.batch_size}"
        )
    loader = DataLoader(
        dataset,
        batch_size=config.batch_size,
        sampler=sampler,
        num_workers=config.num_workers,
        drop_last=True,
        generator=torch.Generator(),
        pin_memory=device.type == "cuda",
    )
    batches = _Batches(loader, sampler, config.seed, config.batch_size)

    start_step, resumed_from = 0, None
    checkpoint = latest_checkpoint(out_dir) if config.resume else None
    if checkpoint is not None:
        state = load_checkpoint(checkpoint)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        batches.load_state(state["data"])
        start_step = resumed_from = int(state["step"])
        rng = state["rng"]
        if len(rng) != ctx.world_size:
            logger.warning(
                "train: resuming a %d-process run with %d processes: the data order differs from the original",
                len(rng),
                ctx.world_size,
            )
        set_rng_state(rng[min(ctx.rank, len(rng) - 1)])
        logger.info("train: resumed from %s (step %d)", checkpoint, start_step)

    log_path = out_dir / LOG_NAME
    if ctx.is_main:  # drop log lines of steps after the checkpoint (written before an interruption)
        kept = _read_log(log_path, start_step)
        log_path.write_text("".join(line + "\n" for line in kept))

    net: torch.nn.Module = model
    if ctx.distributed:
        net = DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=model.compressor is not None,  # the compressor idles when K >= V
        )

    result = TrainResult(step=start_step, resumed_from=resumed_from, out_dir=out_dir)
    pending: dict[str, list[float]] = {}
    skipped = 0
    started = time.perf_counter()

    def write_checkpoint(step: int) -> None:
        rng = _gather_rng(ctx)
        if ctx.is_main:
            state = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "step": step,
                "rng": rng,
                "data": batches.state(),
                "train_config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
                "model_config": model.config.to_dict(),
            }
            result.checkpoint = save_checkpoint(out_dir, step, state, keep=config.keep_checkpoints)

    def run_eval(step: int) -> None:
        if eval_dataset is None or not ctx.is_main:
            return
        metrics = evaluate(
            model,
            eval_dataset,
            batch_size=config.eval_batch_size,
            num_anchors=config.eval_num_anchors if model.compressor is not None else None,
            show_progress=False,
        )
        result.eval_metrics = metrics
        with log_path.open("a") as f:
            f.write(json.dumps({"step": step, **{f"eval/{k}": v for k, v in metrics.items()}}) + "\n")

    steps = range(start_step, config.steps)
    for step in progress(steps, desc="train", total=len(steps), enabled=ctx.is_main and config.show_progress):
        batch = move_to_device(batches.next(), device)
        k = _num_anchors(model, config, step)
        output: GSModelOutput = net(batch["context"], num_anchors=k)
        target = batch["target"]
        image = target["image"]
        rendered = render(
            output.gaussians, target["extrinsics"], target["intrinsics"], (image.shape[-2], image.shape[-1])
        )
        loss, terms = loss_fn(rendered.color, image)
        logs: dict[str, Any] = {"photometric": loss.detach(), **terms}
        if extra_loss is not None:
            set_progress = getattr(extra_loss, "set_progress", None)
            if set_progress is not None:
                set_progress(step / config.steps)
            extra, extra_logs = extra_loss(batch, output)
            loss = loss + extra
            logs.update(extra_logs)

        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(
            model.parameters(), config.grad_clip if config.grad_clip > 0 else math.inf
        )
        # Gradients are already averaged over the ranks, so every rank takes the same decision.
        if bool(torch.isfinite(grad_norm)):
            optimizer.step()
        else:
            skipped += 1
            logger.warning("train: step %d has a non-finite gradient norm; update skipped", step + 1)
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()

        loss_value = float(loss.detach())
        result.losses.append(loss_value)
        logs.update(loss=loss_value, grad_norm=grad_norm, lr=lr)
        if k is not None:
            logs["num_anchors"] = k
        for name, value in logs.items():
            pending.setdefault(name, []).append(float(value))

        done = step + 1
        result.step = done
        if done % config.log_every == 0 or done == config.steps:
            means = all_reduce_mean({n: sum(v) / len(v) for n, v in pending.items()}, ctx)
            pending.clear()
            if ctx.is_main:
                record = {"step": done, **means, "skipped": skipped, "time_s": time.perf_counter() - started}
                with log_path.open("a") as f:
                    f.write(json.dumps(record) + "\n")
        if config.eval_every and done % config.eval_every == 0 and done != config.steps:
            run_eval(done)
        if (config.ckpt_every and done % config.ckpt_every == 0) or done == config.steps:
            write_checkpoint(done)

    if start_step < config.steps:
        run_eval(config.steps)
    if ctx.is_main:
        model.save_pretrained(out_dir / MODEL_DIR)
    if ctx.distributed:
        dist.barrier()
    return result
