"""Train the benchmark's small and large language models (Qwen2 architecture) on the arithmetic problems.

The two presets differ in depth and width so that, as in the paper's pairs, the large model is clearly
more accurate and clearly slower per token. Training is plain next-token cross-entropy on the solution
(the prompt is not a target), AdamW with warm-up and cosine decay, checkpoints every ``ckpt_every``
steps and an exact resume (model, optimizer, data position, RNG states).

    python -m rstitch train-lm --preset llm --out runs/llm      # then: save_pretrained into runs/llm/model
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from accel_shared.checkpoint import (
    get_rng_state,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from accel_shared.cli import progress
from rstitch.arithmetic import iter_problems

__all__ = ["PRESETS", "TrainLMConfig", "build_model", "encode_batch", "train_lm"]

# Qwen2 configurations (besides the vocabulary, which comes from the tokenizer).
PRESETS: dict[str, dict[str, Any]] = {
    # ~0.2M parameters, 1 layer: quick per token, weak at computing digits (16.5% of the benchmark's
    # problems after the same training as the LLM; a 2-layer version reached 98%, as good as the LLM).
    "slm": {
        "hidden_size": 128,
        "num_hidden_layers": 1,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 256,
    },
    # ~2.4M parameters, 12 layers: several times slower per token, accurate.
    "llm": {
        "hidden_size": 128,
        "num_hidden_layers": 12,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 384,
    },
}


@dataclass
class TrainLMConfig:
    """Hyper-parameters of :func:`train_lm` (defaults: those the shipped checkpoints were trained with)."""

    preset: str = "llm"
    steps: int = 2000
    batch_size: int = 32
    lr: float = 2e-3
    warmup_steps: int = 100
    weight_decay: float = 0.1
    seed: int = 0
    ckpt_every: int = 250
    log_every: int = 50
    out_dir: str | Path = "runs/lm"
    show_progress: bool = True

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"TrainLMConfig.preset: expected one of {sorted(PRESETS)}, got {self.preset!r}")
        for name in ("steps", "batch_size", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainLMConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "ckpt_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainLMConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"TrainLMConfig.lr must be > 0, got {self.lr}")


def build_model(preset: str, tokenizer: Any, *, seed: int = 0) -> Any:
    """A freshly initialised ``Qwen2ForCausalLM`` of ``preset`` for ``tokenizer``'s vocabulary."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    if preset not in PRESETS:
        raise ValueError(f"build_model: preset must be one of {sorted(PRESETS)}, got {preset!r}")
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **PRESETS[preset],
    )
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(config)


def encode_batch(tokenizer: Any, prompts: list[str], solutions: list[str]) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids`` [B, S], ``attention_mask`` [B, S] and ``labels`` [B, S] (-100 on the
    prompt and the padding; the solution and its EOS are the targets)."""
    rows, targets = [], []
    for prompt, solution in zip(prompts, solutions, strict=True):
        p = tokenizer(prompt, add_special_tokens=False).input_ids
        s = [*tokenizer(solution, add_special_tokens=False).input_ids, tokenizer.eos_token_id]
        rows.append(p + s)
        targets.append([-100] * len(p) + s)
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (r, t) in enumerate(zip(rows, targets, strict=True)):
        ids[i, : len(r)] = torch.tensor(r)
        labels[i, : len(t)] = torch.tensor(t)
        mask[i, : len(r)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _lr_factor(step: int, config: TrainLMConfig) -> float:
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress_ = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress_)))


def train_lm(config: TrainLMConfig, tokenizer: Any, *, resume: bool = True) -> Path:
    """Train ``config.preset`` and save it (``save_pretrained``, with the tokenizer) to ``out_dir/model``.

    The problems come from an endless seeded stream; the checkpoint stores how many were consumed, so
    a resumed run sees exactly the batches an uninterrupted run would. Returns the model folder."""
    out_dir = Path(config.out_dir)
    model = build_model(config.preset, tokenizer, seed=config.seed)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 or "embed" in n]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
        betas=(0.9, 0.98),
    )
    start = 0
    state: dict[str, Any] = {}
    checkpoint = latest_checkpoint(out_dir) if resume else None
    if checkpoint is not None:
        state = load_checkpoint(checkpoint)
        if state["config"]["preset"] != config.preset:
            raise ValueError(
                f"train_lm: {checkpoint} is a {state['config']['preset']!r} run, not {config.preset!r}; "
                "use another out_dir or resume=False"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        start = state["step"]
    problems = iter_problems(config.seed)
    for _ in range(start * config.batch_size):  # fast-forward the data stream to where the run stopped
        next(problems)

    model.train()
    log_path = out_dir / "train_log.jsonl"
    out_dir.mkdir(parents=True, exist_ok=True)
    if log_path.is_file():  # drop the entries of steps about to be redone (all of them for a fresh run)
        kept = [
            line for line in log_path.read_text().splitlines() if line and json.loads(line)["step"] <= start
        ]
        log_path.write_text("".join(line + "\n" for line in kept))
    started = time.perf_counter()
    running = float(state.get("running_loss", 0.0))
    for step in progress(
        range(start, config.steps),
        desc=f"train {config.preset}",
        total=config.steps - start,
        enabled=config.show_progress,
    ):
        batch = [next(problems) for _ in range(config.batch_size)]
        inputs = encode_batch(tokenizer, [p.prompt() for p in batch], [p.solution for p in batch])
        for group in optimizer.param_groups:
            group["lr"] = config.lr * _lr_factor(step, config)
        loss = model(**inputs).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        running += loss.item()
        done = step + 1
        if done % config.log_every == 0:
            with open(log_path, "a") as f:
                f.write(
                    f'{{"step": {done}, "loss": {running / config.log_every:.5f}, '
                    f'"elapsed_s": {time.perf_counter() - started:.1f}}}\n'
                )
            running = 0.0
        if done == config.steps or (config.ckpt_every and done % config.ckpt_every == 0):
            save_checkpoint(
                out_dir,
                done,
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "rng": get_rng_state(),
                    "step": done,
                    "running_loss": running,
                    "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
                },
            )
    model.eval()
    model_dir = out_dir / "model"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    return model_dir
