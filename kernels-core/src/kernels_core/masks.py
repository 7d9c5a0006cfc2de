"""Block masks for :func:`kernels_core.block_sparse_attention`.

A block mask is a bool tensor ``[B, H, ceil(Sq / block_q), ceil(Sk / block_k)]``; entry
``[b, h, i, j]`` is True when query block ``i`` of head ``h`` attends to key block ``j``.
"""

from __future__ import annotations

import math

import torch


def num_blocks(seqlen: int, block: int) -> int:
    """Number of blocks of size ``block`` covering ``seqlen`` tokens (the last may be partial)."""
    return math.ceil(seqlen / block)


def block_mask_shape(
    batch: int, heads: int, seqlen_q: int, seqlen_k: int, block_size: tuple[int, int] = (64, 64)
) -> tuple[int, int, int, int]:
    """The block-mask shape ``(B, H, ceil(Sq / block_q), ceil(Sk / block_k))``."""
    return (batch, heads, num_blocks(seqlen_q, block_size[0]), num_blocks(seqlen_k, block_size[1]))


def dense_block_mask(
    batch: int,
    heads: int,
    seqlen_q: int,
    seqlen_k: int,
    block_size: tuple[int, int] = (64, 64),
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """An all-True block mask: block-sparse attention then computes dense attention."""
    shape = block_mask_shape(batch, heads, seqlen_q, seqlen_k, block_size)
    return torch.ones(shape, dtype=torch.bool, device=device)


def random_block_mask(
    batch: int,
    heads: int,
    seqlen_q: int,
    seqlen_k: int,
    density: float,
    block_size: tuple[int, int] = (64, 64),
    *,
    keep_diagonal: bool = True,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """A block mask with ``round(density * key_blocks)`` key blocks per query-block row.

    Every row has the same number of enabled blocks, so the work per row (and the measured density)
    is exact. With ``keep_diagonal`` the block holding the row's own position (bottom-right
    aligned, as causal attention is) is always among them, so no row is empty.

    Args:
        density: fraction of key blocks enabled per row, in (0, 1].
    """
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density}")
    b, h, nq, nk = block_mask_shape(batch, heads, seqlen_q, seqlen_k, block_size)
    per_row = max(1, round(density * nk))
    scores = torch.rand((b, h, nq, nk), generator=generator)
    if keep_diagonal:
        # Key block holding the last query of each query block, with bottom-right alignment.
        last_query = torch.clamp(torch.arange(nq) * block_size[0] + block_size[0] - 1, max=seqlen_q - 1)
        diagonal = torch.clamp((last_query + seqlen_k - seqlen_q) // block_size[1], 0, nk - 1)
        scores[..., torch.arange(nq), diagonal] = 2.0
    chosen = scores.topk(per_row, dim=-1).indices
    mask = torch.zeros((b, h, nq, nk), dtype=torch.bool)
    mask.scatter_(-1, chosen, True)
    return mask.to(device) if device is not None else mask


def block_density(block_mask: torch.Tensor) -> float:
    """Fraction of enabled blocks."""
    return block_mask.float().mean().item()
