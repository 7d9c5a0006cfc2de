"""Training the tiny Wan, and quantization- and sparsity-aware fine-tuning (QAT) toward the full-precision model.

``train_base``: flow matching (Wan's objective: predict ``noise - x0`` from ``x_t = (1 - s) x0 + s noise``)
on the synthetic moving-shape videos, encoded once by the pipeline's VAE. It makes the tiny model one
whose attention matters (motion across frames), so FPSAttention's error shows in the video.

``train_qat``: the student is the transformer with FPSAttention applied (FP8 forward, straight-through
backward, the phase's window); the teacher is a frozen copy without it. For a random video latent,
a random denoising step s of ``num_steps`` (the phase of that step is the one used), the noise level
of that step in the pipeline's scheduler, the loss is the mean squared difference of the two
velocity predictions. Both use :func:`accel_shared.training.run_training` (checkpoints, resume,
torchrun).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from accel_shared.distributed import DistContext
from accel_shared.training import LoopConfig, run_training
from fpsattention.adapters import PHASE_NAMES, AdapterConfig, add_adapters, get_adapters
from fpsattention.data import all_clips, render_clip
from fpsattention.pipeline import TINY_SIZE, VideoSize, tiny_prompt_embeds
from fpsattention.processor import apply
from fpsattention.schedule import FPSSchedule


@dataclass(frozen=True)
class TrainConfig:
    """Options of both trainings (defaults: the base model; QAT uses fewer steps and a lower lr)."""

    steps: int = 1500
    lr: float = 1e-3
    batch_size: int = 8
    videos_per_prompt: int = 8
    num_steps: int = 8  # denoising steps the QAT phases refer to
    shift: float = 3.0  # the scheduler's timestep shift
    guidance_scale: float = 3.0  # QAT matches the guided velocity u + g (c - u), as sampling uses it
    relative_loss: bool = True  # QAT: each step's error relative to its training-free error (see train_qat)
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 100

    def loop(self) -> LoopConfig:
        return LoopConfig(
            steps=self.steps,
            lr=self.lr,
            warmup_steps=min(50, self.steps // 10),
            log_every=self.log_every,
            checkpoint_every=self.checkpoint_every,
        )


@dataclass
class VideoLatents:
    """The encoded training set: latents [N, C, T, h, w] and text embeddings [N, L, text_dim]."""

    latents: torch.Tensor
    prompt_embeds: torch.Tensor


def render_dataset(cfg: TrainConfig, size: VideoSize = TINY_SIZE) -> tuple[torch.Tensor, list[str]]:
    """Every prompt ``cfg.videos_per_prompt`` times: videos [N, 3, F, H, W] in [-1, 1] and their prompts."""
    generator = torch.Generator().manual_seed(cfg.seed)
    videos, prompts = [], []
    for clip in all_clips():
        for _ in range(cfg.videos_per_prompt):
            videos.append(render_clip(clip, frames=size.num_frames, size=size.height, generator=generator))
            prompts.append(clip.prompt)
    return torch.stack(videos), prompts


def train_vae(
    vae: torch.nn.Module, videos: torch.Tensor, cfg: TrainConfig, out_dir: str | Path, *, ctx: DistContext
) -> list[dict[str, float]]:
    """Fit the VAE to ``videos`` [N, 3, F, H, W]: reconstruction MSE plus a small KL term (1e-6)."""
    model = vae.to(ctx.device)
    runner: Any = torch.nn.parallel.DistributedDataParallel(model) if ctx.distributed else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)

    def loss_fn(step: int) -> dict[str, float]:
        g = torch.Generator().manual_seed(cfg.seed * 7_919 + step * ctx.world_size + ctx.rank)
        x = videos[torch.randint(0, videos.shape[0], (cfg.batch_size,), generator=g)].to(ctx.device)
        posterior = (runner.module if ctx.distributed else runner).encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=g).to(ctx.device)
        recon = (runner.module if ctx.distributed else runner).decode(z).sample
        mse = (recon - x).square().mean()
        kl = posterior.kl().mean() / x[0].numel()
        loss = mse + 1e-6 * kl
        loss.backward()
        return {"loss": loss.item(), "mse": mse.item()}

    settings = {"kind": "vae", **asdict(cfg)}
    return run_training(
        model, optimizer, loss_fn, cfg.loop(), out_dir, ctx=ctx, settings=settings, desc="train-vae"
    )


@torch.no_grad()
def set_latent_statistics(vae: Any, videos: torch.Tensor, batch: int = 16) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the VAE's latents of ``videos``, written into ``vae.config`` (as Wan's VAE
    ships them), so that the transformer sees unit-variance latents and the pipeline decodes correctly."""
    device = next(vae.parameters()).device
    latents = torch.cat(
        [vae.encode(videos[i : i + batch].to(device, vae.dtype)).latent_dist.mode().float().cpu()
         for i in range(0, videos.shape[0], batch)]
    )  # fmt: skip
    mean = latents.mean(dim=(0, 2, 3, 4)).tolist()
    std = latents.std(dim=(0, 2, 3, 4)).tolist()
    vae.register_to_config(latents_mean=mean, latents_std=std)
    return mean, std


@torch.no_grad()
def encode_dataset(
    vae: Any, text_dim: int, videos: torch.Tensor, prompts: list[str], batch: int = 16
) -> VideoLatents:
    """Encode videos [N, 3, F, H, W] with the VAE (normalised posterior means) and embed their prompts."""
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
    device = next(vae.parameters()).device
    latents = []
    for i in range(0, videos.shape[0], batch):
        z = vae.encode(videos[i : i + batch].to(device, vae.dtype)).latent_dist.mode()
        latents.append((z.float().cpu() - mean) / std)
    embeds = {p: tiny_prompt_embeds(p, text_dim)[0] for p in set(prompts)}
    return VideoLatents(torch.cat(latents), torch.stack([embeds[p] for p in prompts]))


def _shifted(sigma: torch.Tensor, shift: float) -> torch.Tensor:
    return shift * sigma / (1 + (shift - 1) * sigma)


def _batch(data: VideoLatents, step: int, cfg: TrainConfig, ctx: DistContext) -> tuple[torch.Tensor, ...]:
    """This rank's batch of step ``step``: latents, embeddings, noise, and a generator for the step."""
    g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step * ctx.world_size + ctx.rank)
    index = torch.randint(0, data.latents.shape[0], (cfg.batch_size,), generator=g)
    x0 = data.latents[index]
    noise = torch.randn(x0.shape, generator=g)
    return x0, data.prompt_embeds[index], noise, torch.rand(cfg.batch_size, generator=g)


def train_base(
    transformer: torch.nn.Module,
    data: VideoLatents,
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    ctx: DistContext,
) -> list[dict[str, float]]:
    """Flow-matching training of ``transformer`` in place on ``data``."""
    model = transformer.to(ctx.device)
    runner: Any = torch.nn.parallel.DistributedDataParallel(model) if ctx.distributed else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)

    def loss_fn(step: int) -> dict[str, float]:
        x0, emb, noise, u = (t.to(ctx.device) for t in _batch(data, step, cfg, ctx))
        sigma = _shifted(u, cfg.shift).view(-1, 1, 1, 1, 1)
        x_t = (1 - sigma) * x0 + sigma * noise
        pred = runner(hidden_states=x_t, timestep=sigma.flatten() * 1000, encoder_hidden_states=emb).sample
        loss = (pred.float() - (noise - x0)).square().mean()
        loss.backward()
        return {"loss": loss.item()}

    settings = {"kind": "base", **asdict(cfg)}
    return run_training(
        model, optimizer, loss_fn, cfg.loop(), out_dir, ctx=ctx, settings=settings, desc="train-base"
    )


@dataclass
class Trajectories:
    """The full-precision pipeline's own denoising trajectories: where the transformer is used.

    Attributes:
        states: [N, S, C, T, h, w], the latent entering each of the S denoising steps.
        timesteps: [S], the scheduler's timestep of each step.
        prompt_embeds: [N, L, D], the text embeddings of each trajectory.
    """

    states: torch.Tensor
    timesteps: torch.Tensor
    prompt_embeds: torch.Tensor


def _one_trajectory(
    pipe: Any, prompt: str, seed: int, num_steps: int, size: VideoSize
) -> tuple[torch.Tensor, list[float]]:
    """[S, C, T, h, w]: the latent entering each step of one generation, and the step timesteps."""
    from fpsattention.pipeline import generate_video

    entering: list[torch.Tensor] = []
    timesteps: list[float] = []

    def record_input(module: Any, args: tuple, kwargs: dict[str, Any]) -> None:
        if len(entering) == len(timesteps):  # the first transformer call of a step (CFG makes two)
            entering.append(kwargs["hidden_states"][:1].detach().float().cpu())

    def record_step(pipeline: Any, step: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        timesteps.append(float(t))
        return kwargs

    hook = pipe.transformer.register_forward_pre_hook(record_input, with_kwargs=True)
    try:
        generate_video(
            pipe, prompt, size=size, num_steps=num_steps, seed=seed, device=pipe.transformer.device,
            callback=record_step, output_type="latent",
        )  # fmt: skip
    finally:
        hook.remove()
    return torch.cat(entering), timesteps


@torch.no_grad()
def teacher_trajectories(
    pipe: Any, prompts: list[str], seeds: list[int], *, num_steps: int, size: VideoSize = TINY_SIZE
) -> Trajectories:
    """Run the pipeline (no FPSAttention) once per (prompt, seed) and record the latent entering every step."""
    from fpsattention.pipeline import prompt_kwargs

    states: list[torch.Tensor] = []
    embeds: list[torch.Tensor] = []
    timesteps: list[float] = []
    for prompt in prompts:
        embedding = prompt_kwargs(pipe, prompt, torch.device("cpu"))["prompt_embeds"][0].float()
        for seed in seeds:
            trajectory, timesteps = _one_trajectory(pipe, prompt, seed, num_steps, size)
            states.append(trajectory)
            embeds.append(embedding)
    return Trajectories(torch.stack(states), torch.tensor(timesteps), torch.stack(embeds))


def guided_velocity(
    model: Any, x_t: torch.Tensor, t: torch.Tensor, emb: torch.Tensor, guidance_scale: float
) -> torch.Tensor:
    """u + g (c - u): the velocity a classifier-free-guided sampler steps with (one batched call; the
    empty prompt is zeros, as the tiny pipeline's negative prompt)."""
    both = model(
        hidden_states=torch.cat([x_t, x_t]), timestep=torch.cat([t, t]),
        encoder_hidden_states=torch.cat([emb, torch.zeros_like(emb)]),
    ).sample.float()  # fmt: skip
    cond, uncond = both.chunk(2)
    return uncond + guidance_scale * (cond - uncond)


@torch.no_grad()
def step_errors(
    student: torch.nn.Module, teacher: torch.nn.Module, state: Any, data: Trajectories, guidance_scale: float,
    *, count: int = 16, relative: bool = True,
) -> list[float]:  # fmt: skip
    """Per denoising step, the MSE of the patched ``student``'s guided velocity against the ``teacher``'s
    on the first ``count`` trajectories (``state``: the student's FPSState), divided by the teacher's mean
    square when ``relative``."""
    num_steps = data.states.shape[1]
    count = min(count, data.states.shape[0])
    device = next(student.parameters()).device
    emb = data.prompt_embeds[:count].to(device)
    errors = []
    for s in range(num_steps):
        x_t = data.states[:count, s].to(device)
        t = data.timesteps[s].expand(count).to(device)
        state.set_step(s, num_steps)
        target = guided_velocity(teacher, x_t, t, emb, guidance_scale)
        error = (guided_velocity(student, x_t, t, emb, guidance_scale) - target).square().mean()
        errors.append(float(error / target.square().mean() if relative else error))
    return errors


def _step_weights(
    student: torch.nn.Module, teacher: torch.nn.Module, state: Any, data: Trajectories, guidance_scale: float
) -> list[float]:
    """1 / (training-free squared error of each denoising step), normalised to mean 1."""
    errors = step_errors(student, teacher, state, data, guidance_scale, relative=False)
    inverse = [1.0 / max(e, 1e-12) for e in errors]
    mean = sum(inverse) / len(inverse)
    return [w / mean for w in inverse]


def train_qat(
    transformer: torch.nn.Module,
    schedule: FPSSchedule,
    data: Trajectories,
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    ctx: DistContext,
    adapters: AdapterConfig | None = None,
) -> list[dict[str, float]]:
    """Fine-tune ``transformer`` in place with FPSAttention on, distilling toward a frozen copy of itself.

    Each step draws one denoising step s (so the batch runs one phase) and a batch of trajectories; both
    models see the trajectories' latents entering step s at its timestep, with the prompt and with the
    empty prompt, and the loss compares the guided velocities u + g (c - u) (``cfg.guidance_scale``), the
    quantity the sampler steps with. The transformer is left patched with ``schedule``
    (``fpsattention.remove`` takes it off).

    With ``cfg.relative_loss``, step s's error is weighted by 1 / (its training-free error), measured once
    before training on up to 16 trajectories (then scaled to mean 1): the dense phases, nearly exact without
    training, would otherwise drift while the shared weights learn to correct the sparse ones.

    With ``adapters``, the transformer's own weights stay frozen: :func:`~fpsattention.adapters.add_adapters`
    attaches one low-rank adapter per adapted phase, only those are trained (and checkpointed), and only the
    denoising steps of the adapted phases are drawn. The transformer is left with the trained adapters.
    """
    num_steps = data.states.shape[1]
    if num_steps != cfg.num_steps:
        raise ValueError(f"the trajectories have {num_steps} steps but cfg.num_steps is {cfg.num_steps}")
    if get_adapters(transformer) is not None:
        raise ValueError("train_qat: the transformer already has phase adapters; remove_adapters() first")
    teacher = copy.deepcopy(transformer).to(ctx.device).eval().requires_grad_(False)
    model = transformer.to(ctx.device)
    state = apply(model, schedule)
    trained: torch.nn.Module = model
    steps = list(range(num_steps))
    if adapters is not None:
        model.requires_grad_(False)
        trained = add_adapters(model, adapters)
        steps = [s for s in steps if PHASE_NAMES[schedule.phase_index(s, num_steps)] in adapters.phases]
        if not steps:
            raise ValueError(f"no denoising step of {num_steps} runs the adapted phases {adapters.phases}")
    runner: Any = (
        # Each step runs one phase, so the other phases' adapters get no gradient on that rank.
        torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=adapters is not None)
        if ctx.distributed
        else model
    )
    optimizer = torch.optim.AdamW(trained.parameters(), lr=cfg.lr, weight_decay=0.0)

    weights = (
        _step_weights(model, teacher, state, data, cfg.guidance_scale)
        if cfg.relative_loss
        else [1.0] * num_steps
    )

    def loss_fn(step: int) -> dict[str, float]:
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step * ctx.world_size + ctx.rank)
        denoise_step = steps[int(torch.randint(0, len(steps), (1,), generator=g))]
        index = torch.randint(0, data.states.shape[0], (cfg.batch_size,), generator=g)
        x_t = data.states[index, denoise_step].to(ctx.device)
        emb = data.prompt_embeds[index].to(ctx.device)
        t = data.timesteps[denoise_step].expand(cfg.batch_size).to(ctx.device)
        with torch.no_grad():
            target = guided_velocity(teacher, x_t, t, emb, cfg.guidance_scale)
        state.set_step(denoise_step, num_steps)
        error = (guided_velocity(runner, x_t, t, emb, cfg.guidance_scale) - target).square().mean()
        (weights[denoise_step] * error).backward()
        return {"loss": error.item()}

    settings = {
        "kind": "qat", "schedule": schedule.to_dict(), **asdict(cfg),
        "adapters": None if adapters is None else asdict(adapters),
    }  # fmt: skip
    return run_training(
        trained, optimizer, loss_fn, cfg.loop(), out_dir, ctx=ctx, settings=settings, desc="train"
    )
