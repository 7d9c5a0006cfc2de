"""The kernels-core demo: block-sparse attention against dense SDPA on the same tensors.

Prints the fields every package demo reports (method, baseline, accelerated, times, speed
ratio, quality metric) so ``nox -s demo`` can gather them into one table.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from kernels_core import masks, reference
from kernels_core.ops import block_sparse_attention


def _median_seconds(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    fn()  # warm-up
    samples = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def run_demo(
    *,
    seqlen: int = 4096,
    heads: int = 8,
    head_dim: int = 64,
    density: float = 0.25,
    block_size: tuple[int, int] = (64, 64),
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    repeats: int = 5,
    seed: int = 0,
) -> dict[str, Any]:
    """Time dense SDPA and block-sparse attention at ``density`` on [1, heads, seqlen, head_dim]
    inputs and measure the kernel's error against the pure-torch reference (first two heads)."""
    device = torch.device(device)
    generator = torch.Generator().manual_seed(seed)
    q, k, v = (
        torch.randn(1, heads, seqlen, head_dim, generator=generator).to(device, dtype) for _ in range(3)
    )
    mask = masks.random_block_mask(1, heads, seqlen, seqlen, density, block_size, generator=generator).to(
        device
    )

    def dense() -> torch.Tensor:
        return torch.nn.functional.scaled_dot_product_attention(q, k, v)

    def sparse() -> torch.Tensor:
        out = block_sparse_attention(q, k, v, mask, block_size=block_size)
        assert isinstance(out, torch.Tensor)
        return out

    dense_s = _median_seconds(dense, repeats, device)
    sparse_s = _median_seconds(sparse, repeats, device)
    heads_checked = min(2, heads)
    expected = reference.block_sparse_attention(
        q[:, :heads_checked],
        k[:, :heads_checked],
        v[:, :heads_checked],
        mask[:, :heads_checked],
        block_size=block_size,
    )
    assert isinstance(expected, torch.Tensor)
    error = (sparse()[:, :heads_checked].float() - expected.float()).abs().max().item()
    shape = f"[1, {heads}, {seqlen}, {head_dim}]"
    return {
        "method": f"kernels-core block-sparse attention (density {density:g})",
        "baseline": "torch SDPA, dense",
        "accelerated": f"block_sparse_attention, {str(dtype).removeprefix('torch.')}, {shape}",
        "baseline_time_s": dense_s,
        "accelerated_time_s": sparse_s,
        "speed_ratio": dense_s / sparse_s,
        "quality_metric": "max abs error vs reference",
        "quality_value": error,
        "notes": f"{device.type}, block {block_size[0]}x{block_size[1]}, median of {repeats}",
    }
