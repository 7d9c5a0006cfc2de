"""Reference decode attention: gather each head's cached keys, then dense masked attention."""

from __future__ import annotations

import math

import torch


def decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    *,
    cache_seqlens: torch.Tensor | None = None,
    kv_indices: torch.Tensor | None = None,
    kv_counts: torch.Tensor | None = None,
    causal: bool = False,
    scale: float | None = None,
    return_lse: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Reference for :func:`kernels_core.decode_attention` (same arguments and results)."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    batch, heads_q, seqlen_q, _ = q.shape
    heads_kv, cache_len = k_cache.shape[1], k_cache.shape[2]
    group = heads_q // heads_kv
    device = q.device
    valid = (
        torch.full((batch,), cache_len, device=device)
        if cache_seqlens is None
        else cache_seqlens.long().clamp(0, cache_len)
    )
    if kv_indices is None:
        positions = torch.arange(cache_len, device=device).expand(batch, heads_kv, cache_len)
        used = torch.ones_like(positions, dtype=torch.bool)
    else:
        positions = kv_indices.long().expand(batch, heads_kv, kv_indices.shape[-1])
        n = positions.shape[-1]
        counts = torch.full((batch, heads_kv), n, device=device) if kv_counts is None else kv_counts.long()
        used = torch.arange(n, device=device) < counts.expand(batch, heads_kv).clamp(0, n).unsqueeze(-1)
    used = used & (positions >= 0) & (positions < valid[:, None, None])
    safe = positions.clamp(0, cache_len - 1)
    index = safe.unsqueeze(-1).expand(-1, -1, -1, k_cache.shape[-1])
    keys = torch.gather(k_cache.float(), 2, index).repeat_interleave(group, dim=1)
    values = torch.gather(v_cache.float(), 2, index).repeat_interleave(group, dim=1)
    scores = torch.matmul(q.float(), keys.transpose(-1, -2)) * scale  # [B, Hq, Sq, N]
    mask = used.repeat_interleave(group, dim=1).unsqueeze(2).expand(-1, -1, seqlen_q, -1)
    if causal:
        limit = valid[:, None] - seqlen_q + torch.arange(seqlen_q, device=device)[None, :]  # [B, Sq]
        mask = mask & (positions.repeat_interleave(group, dim=1)[:, :, None, :] <= limit[:, None, :, None])
    scores = scores.masked_fill(~mask, float("-inf"))
    has_key = mask.any(dim=-1, keepdim=True)
    safe_scores = torch.where(has_key, scores, torch.zeros((), device=device))
    lse = torch.logsumexp(safe_scores, dim=-1, keepdim=True)
    probs = torch.where(mask, torch.exp(safe_scores - lse), torch.zeros((), device=device))
    out = torch.matmul(probs, values).to(q.dtype)
    lse = torch.where(has_key, lse, torch.full((), float("-inf"), device=device)).squeeze(-1)
    return (out, lse) if return_lse else out
