"""Reference block scores and block selection (the mask predictor), in plain torch."""

from __future__ import annotations

import math

import torch

from kernels_core.masks import BlockIndices, num_blocks


def _pool_blocks(x: torch.Tensor, block: int) -> torch.Tensor:
    """Mean over blocks of ``block`` tokens: [B, H, S, D] -> [B, H, ceil(S / block), D] (float32)."""
    b, h, s, d = x.shape
    n = num_blocks(s, block)
    padded = torch.zeros(b, h, n * block, d, dtype=torch.float32, device=x.device)
    padded[:, :, :s] = x.float()
    sizes = torch.full((n,), block, dtype=torch.float32, device=x.device)
    sizes[-1] = s - (n - 1) * block
    return padded.view(b, h, n, block, d).sum(dim=3) / sizes[:, None]


def block_scores(
    q: torch.Tensor,
    k: torch.Tensor,
    *,
    block_size: tuple[int, int] = (64, 64),
    causal: bool = False,
    scale: float | None = None,
) -> torch.Tensor:
    """Reference for :func:`kernels_core.block_scores`: float32 [B, Hq, nqb, nkb]."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    bq, bk = block_size
    sq, sk = q.shape[2], k.shape[2]
    pooled_q = _pool_blocks(q, bq)
    pooled_k = _pool_blocks(k, bk).repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    logits = torch.matmul(pooled_q, pooled_k.transpose(-1, -2)) * scale
    nqb, nkb = logits.shape[-2:]
    if causal:
        last_query = torch.clamp((torch.arange(nqb, device=q.device) + 1) * bq, max=sq) - 1
        first_key = torch.arange(nkb, device=q.device) * bk
        allowed = first_key[None, :] <= (last_query + sk - sq)[:, None]
        logits = logits.masked_fill(~allowed, float("-inf"))
        rows_ok = allowed.any(dim=-1)[:, None]
        logits = torch.where(rows_ok, logits, torch.zeros((), device=q.device))
        return torch.where(rows_ok & allowed, torch.softmax(logits, dim=-1), torch.zeros((), device=q.device))
    return torch.softmax(logits, dim=-1)


def _order(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores sorted high to low with ties in ascending block order, and the sorting indices."""
    return torch.sort(scores, dim=-1, descending=True, stable=True)


def recall_block_counts(
    scores: torch.Tensor, gamma: float, *, min_blocks: int = 1, max_blocks: int | None = None
) -> torch.Tensor:
    """Reference for :func:`kernels_core.recall_block_counts`: int32, ``scores.shape[:-1]``."""
    n = scores.shape[-1]
    positive = scores.float().clamp(min=0)
    ordered, _ = _order(positive)
    # k = number of leading entries taken while the covered mass is still below gamma * total.
    covered_before = torch.cumsum(ordered.double(), dim=-1) - ordered.double()
    target = gamma * positive.double().sum(dim=-1, keepdim=True)
    k = ((covered_before < target) & (ordered > 0)).sum(dim=-1)
    hi = n if max_blocks is None or max_blocks <= 0 else min(max_blocks, n)
    lo = min(max(min_blocks, 0), hi)
    return k.clamp(lo, hi).to(torch.int32)


def select_top_blocks(scores: torch.Tensor, counts: torch.Tensor, width: int) -> BlockIndices:
    """Reference for :func:`kernels_core.select_top_blocks` with an explicit list width."""
    n = scores.shape[-1]
    counts = counts.to(torch.int64).clamp(0, min(n, width))
    _, order = _order(scores.float())
    top = order[..., :width] if width <= n else torch.nn.functional.pad(order, (0, width - n), value=n)
    positions = torch.arange(width, device=scores.device)
    keep = positions < counts.unsqueeze(-1)
    chosen = torch.where(keep, top, torch.full((), n, device=scores.device))
    chosen = chosen.sort(dim=-1).values
    chosen = torch.where(chosen == n, torch.full((), -1, device=scores.device), chosen)
    return BlockIndices(counts.to(torch.int32), chosen.to(torch.int32))
