"""Wan text-to-video pipelines: tiny offline components by default, or a real model from disk.

The tiny pipeline is diffusers' own ``WanPipeline`` with a small ``WanTransformer3DModel``, a small
``AutoencoderKLWan`` and a flow-matching Euler scheduler, all built from configs with seeded random
weights (nothing is downloaded). It has no tokenizer or text encoder: prompts become embeddings
through :func:`tiny_prompt_embeds` (a seeded word-embedding table), passed as ``prompt_embeds``. A
real checkpoint (``WanPipeline.from_pretrained(path)``) brings its own UMT5 encoder.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fpsattention.schedule import FPSSchedule, Phase

TINY_TRANSFORMER = {
    "patch_size": (1, 2, 2),
    "num_attention_heads": 4,
    "attention_head_dim": 16,
    "in_channels": 4,
    "out_channels": 4,
    "text_dim": 32,
    "freq_dim": 32,
    "ffn_dim": 128,
    "num_layers": 2,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "rope_max_seq_len": 64,
}
TINY_VAE = {
    "base_dim": 8,
    "z_dim": 4,
    "dim_mult": [1, 2],
    "num_res_blocks": 1,
    "temperal_downsample": [True],
    "latents_mean": [0.0] * 4,
    "latents_std": [1.0] * 4,
    "scale_factor_temporal": 2,
    "scale_factor_spatial": 2,
}
TEXT_TOKENS = 16


@dataclass(frozen=True)
class VideoSize:
    """Pixels and frames of a generated video."""

    height: int = 64
    width: int = 64
    num_frames: int = 9


TINY_SIZE = VideoSize()
"""64 x 64 x 9 frames: a 5 x 16 x 16 token latent (1,280 tokens) in the tiny pipeline."""

TINY_SCHEDULE = FPSSchedule(
    tile=(1, 4, 4),
    alpha1=0.25,
    alpha2=0.75,
    early=Phase(fp8=True, quant_group="tile", window=(3, 2, 2)),
    middle=Phase(fp8=True, quant_group=4, window=None),
    late=Phase(fp8=True, quant_group=8, window=(3, 3, 3)),
)
"""The tiny pipeline's schedule: tiles of 1 x 4 x 4 tokens (a 5 x 4 x 4 tile grid)."""


def build_tiny_pipeline(seed: int = 0, dtype: torch.dtype = torch.float32) -> Any:
    """A ``WanPipeline`` with tiny seeded components (no tokenizer or text encoder)."""
    from diffusers import (
        AutoencoderKLWan,
        FlowMatchEulerDiscreteScheduler,
        WanPipeline,
        WanTransformer3DModel,
    )

    torch.manual_seed(seed)
    transformer = WanTransformer3DModel(**TINY_TRANSFORMER)
    vae = AutoencoderKLWan(**TINY_VAE)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    pipe: Any = WanPipeline(
        tokenizer=None, text_encoder=None, vae=vae, scheduler=scheduler, transformer=transformer
    )
    pipe.to(dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def load_pipeline(path: str | Path, dtype: torch.dtype = torch.bfloat16) -> Any:
    """A real Wan pipeline from a local folder (``diffusers`` layout), e.g. Wan2.1-T2V-1.3B-Diffusers."""
    from diffusers import WanPipeline

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"--model {path}: not a folder with a diffusers Wan pipeline")
    pipe = WanPipeline.from_pretrained(path, torch_dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_prompt_embeds(prompt: str, text_dim: int = 32, tokens: int = TEXT_TOKENS) -> torch.Tensor:
    """[1, tokens, text_dim]: each word's seeded random embedding (zeros past the last word)."""
    words = prompt.lower().split()[:tokens]
    embeds = torch.zeros(1, tokens, text_dim)
    for i, word in enumerate(words):
        seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "little")
        embeds[0, i] = torch.randn(text_dim, generator=torch.Generator().manual_seed(seed))
    return embeds


def prompt_kwargs(pipe: Any, prompt: str, device: torch.device) -> dict[str, Any]:
    """``prompt=`` for a pipeline with a text encoder, else the tiny embeddings."""
    if getattr(pipe, "text_encoder", None) is not None:
        return {"prompt": prompt}
    text_dim = pipe.transformer.config.text_dim
    dtype = pipe.transformer.dtype
    return {
        "prompt_embeds": tiny_prompt_embeds(prompt, text_dim).to(device, dtype),
        "negative_prompt_embeds": torch.zeros(1, TEXT_TOKENS, text_dim, device=device, dtype=dtype),
    }


def generate_video(
    pipe: Any,
    prompt: str,
    *,
    size: VideoSize = TINY_SIZE,
    num_steps: int = 8,
    guidance_scale: float = 3.0,
    seed: int = 0,
    device: torch.device | str = "cpu",
    callback: Any = None,
    output_type: str = "pt",
) -> torch.Tensor:
    """Frames [F, 3, H, W] in [0, 1] (``output_type="pt"``) or the latent [1, C, T, h, w] ("latent")."""
    device = torch.device(device)
    kwargs = prompt_kwargs(pipe, prompt, device)
    out = pipe(
        **kwargs,
        height=size.height,
        width=size.width,
        num_frames=size.num_frames,
        num_inference_steps=num_steps,
        guidance_scale=guidance_scale,
        generator=torch.Generator(device="cpu").manual_seed(seed),
        output_type=output_type,
        callback_on_step_end=callback,
    )
    frames: torch.Tensor = out.frames[0]
    return frames.float()
