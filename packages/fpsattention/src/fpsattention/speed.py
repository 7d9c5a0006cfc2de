"""Attention-level comparison: dense SDPA vs FP8 dense vs tile-sparse vs FP8 + tile-sparse.

All four run :func:`fpsattention.attention.fps_attention` (SDPA for the dense full-precision phase)
on the same tensors in the same process; times are medians of repeats, errors are against float32
attention under the same mask (so a sparse row's error is what the kernel adds, not what the
window leaves out).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from accel_shared.bench import time_callable
from accel_shared.cli import progress
from fpsattention.attention import fps_attention
from fpsattention.schedule import Phase, Triple


@dataclass(frozen=True)
class SpeedConfig:
    video: Triple = (8, 32, 40)
    tile: Triple = (4, 8, 8)
    window: Triple = (1, 2, 5)
    heads: int = 4
    head_dim: int = 64
    dtype: torch.dtype = torch.bfloat16
    repeats: int = 5

    def describe(self) -> str:
        tokens = math.prod(self.video)
        return (
            f"video {'x'.join(map(str, self.video))} ({tokens} tokens), tile {'x'.join(map(str, self.tile))}, "
            f"window {'x'.join(map(str, self.window))}, H={self.heads}, D={self.head_dim}, {str(self.dtype)[6:]}"
        )


def compare_methods(config: SpeedConfig, device: torch.device, *, show_progress: bool = True) -> list[dict]:
    """Rows ``{method, density, ms, speedup, rel_l2, cosine}``, dense SDPA first."""
    tokens = math.prod(config.video)
    g = torch.Generator().manual_seed(0)
    q, k, v = (
        torch.randn(1, config.heads, tokens, config.head_dim, generator=g).to(device, config.dtype)
        for _ in range(3)
    )
    methods = {
        "dense SDPA": Phase(fp8=False, window=None),
        "FP8 dense": Phase(fp8=True, window=None),
        "tile-sparse": Phase(fp8=False, window=config.window),
        "FP8 + tile-sparse": Phase(fp8=True, window=config.window),
    }
    grid = tuple(-(-n // t) for n, t in zip(config.video, config.tile, strict=True))
    exact = {
        None: F.scaled_dot_product_attention(q.float(), k.float(), v.float()),
        config.window: fps_attention(
            q.float(), k.float(), v.float(), config.video, config.tile, methods["tile-sparse"]
        ),
    }
    rows, baseline = [], None
    with torch.no_grad():
        for name, phase in progress(methods.items(), desc="attention", total=4, enabled=show_progress):

            def call(phase: Phase = phase) -> torch.Tensor:
                return fps_attention(q, k, v, config.video, config.tile, phase)

            timing = time_callable(call, warmup=1, repeats=config.repeats, device=device)
            baseline = baseline or timing.median_s
            out, ref = call().float(), exact[phase.window]
            rows.append(
                {
                    "method": name,
                    "density": phase.density(grid),  # type: ignore[arg-type]
                    "ms": timing.median_s * 1e3,
                    "speedup": baseline / timing.median_s,
                    "rel_l2": ((out - ref).norm() / ref.norm()).item(),
                    "cosine": F.cosine_similarity(out.flatten(), ref.flatten(), dim=0).item(),
                }
            )
    return rows
