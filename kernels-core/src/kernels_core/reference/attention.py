"""Reference block-sparse attention: dense math with an explicit element mask."""

from __future__ import annotations

import math

import torch

from kernels_core.masks import BlockIndices, num_blocks


def attention_mask_from_blocks(
    block_mask: torch.Tensor,
    block_size: tuple[int, int],
    seqlen_q: int,
    seqlen_k: int,
    causal: bool = False,
) -> torch.Tensor:
    """Expand a block mask to an element mask.

    Args:
        block_mask: bool [B, Hq, ceil(Sq / bq), ceil(Sk / bk)] (size-1 dims broadcast).
        block_size: (bq, bk).
        causal: also apply the bottom-right aligned causal mask (query i sees keys j <= i + Sk - Sq).

    Returns:
        bool [B, Hq, Sq, Sk], True where the query attends to the key.
    """
    bq, bk = block_size
    mask = block_mask.repeat_interleave(bq, dim=-2)[..., :seqlen_q, :]
    mask = mask.repeat_interleave(bk, dim=-1)[..., :seqlen_k]
    if causal:
        rows = torch.arange(seqlen_q, device=block_mask.device)[:, None]
        cols = torch.arange(seqlen_k, device=block_mask.device)[None, :]
        mask = mask & (cols <= rows + (seqlen_k - seqlen_q))
    return mask


def _as_block_mask(
    block_mask: torch.Tensor | BlockIndices | None, seqlen_q: int, seqlen_k: int, block_size: tuple[int, int]
) -> torch.Tensor:
    """A bool block mask from any of the accepted forms (None = every block)."""
    nkb = num_blocks(seqlen_k, block_size[1])
    if block_mask is None:
        return torch.ones((1, 1, num_blocks(seqlen_q, block_size[0]), nkb), dtype=torch.bool)
    if isinstance(block_mask, BlockIndices):
        return block_mask.to_mask(nkb)
    return block_mask


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _expand_kv(x: torch.Tensor, heads_q: int) -> torch.Tensor:
    """[B, Hkv, S, D] -> [B, Hq, S, D] for grouped-query attention."""
    return x.repeat_interleave(heads_q // x.shape[1], dim=1)


def _probabilities(
    q: torch.Tensor,
    k: torch.Tensor,
    block_mask: torch.Tensor,
    block_size: tuple[int, int],
    causal: bool,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Masked softmax probabilities P [B, Hq, Sq, Sk], lse [B, Hq, Sq] and the element mask."""
    sq, sk = q.shape[-2], k.shape[-2]
    mask = attention_mask_from_blocks(block_mask.to(q.device), block_size, sq, sk, causal)
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale
    scores = scores.masked_fill(~mask, float("-inf"))
    # Rows that see no key get lse = -inf and P = 0. They go through the softmax with zero scores
    # so that neither the values nor autograd through this function produce NaN.
    has_key = mask.any(dim=-1, keepdim=True)
    safe_lse = torch.logsumexp(torch.where(has_key, scores, torch.zeros((), dtype=scores.dtype)), dim=-1)
    lse = torch.where(has_key.squeeze(-1), safe_lse, torch.full((), float("-inf"), dtype=scores.dtype))
    probs = torch.where(mask, torch.exp(scores - safe_lse.unsqueeze(-1)), torch.zeros((), dtype=scores.dtype))
    return probs, lse, mask


def block_sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    block_mask: torch.Tensor | BlockIndices | None,
    *,
    block_size: tuple[int, int] = (64, 64),
    causal: bool = False,
    scale: float | None = None,
    return_lse: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Reference for :func:`kernels_core.block_sparse_attention` (same arguments and results).

    Computes in float32 (float64 for float64 inputs) and returns the output in the input dtype.
    Query rows that see no key return zeros and lse = -inf.
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    block_mask = _as_block_mask(block_mask, q.shape[-2], k.shape[-2], block_size)
    compute = _compute_dtype(q.dtype)
    qc = q.to(compute)
    kc = _expand_kv(k.to(compute), q.shape[1])
    vc = _expand_kv(v.to(compute), q.shape[1])
    probs, lse, _ = _probabilities(qc, kc, block_mask, block_size, causal, scale)
    out = torch.matmul(probs, vc).to(q.dtype)
    return (out, lse.to(torch.float64 if compute == torch.float64 else torch.float32)) if return_lse else out


def block_sparse_attention_backward(
    grad_out: torch.Tensor,
    grad_lse: torch.Tensor | None,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    block_mask: torch.Tensor | BlockIndices | None,
    *,
    block_size: tuple[int, int] = (64, 64),
    causal: bool = False,
    scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients (dq, dk, dv) of block-sparse attention from the saved output and lse.

    With P = softmax of the masked, scaled scores and Delta_i = dO_i . O_i:
    dV = P^T dO, dS = P * (dO V^T - Delta + dlse), dQ = scale dS K, dK = scale dS^T Q; for
    grouped-query attention dK and dV are summed over the query heads of each group.

    Shapes: grad_out, q, out [B, Hq, Sq, D]; k, v [B, Hkv, Sk, D]; lse, grad_lse [B, Hq, Sq].
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    compute = _compute_dtype(q.dtype)
    heads_q, heads_kv = q.shape[1], k.shape[1]
    qc, doc, oc = q.to(compute), grad_out.to(compute), out.to(compute)
    kc = _expand_kv(k.to(compute), heads_q)
    vc = _expand_kv(v.to(compute), heads_q)
    block_mask = _as_block_mask(block_mask, q.shape[-2], k.shape[-2], block_size).to(q.device)
    mask = attention_mask_from_blocks(block_mask, block_size, q.shape[-2], k.shape[-2], causal)
    scores = torch.matmul(qc, kc.transpose(-1, -2)) * scale
    lse_c = lse.to(compute).unsqueeze(-1)
    probs = torch.where(mask, torch.exp(scores - lse_c), torch.zeros((), dtype=compute))

    dv = torch.matmul(probs.transpose(-1, -2), doc)
    dp = torch.matmul(doc, vc.transpose(-1, -2))
    delta = (doc * oc).sum(dim=-1, keepdim=True)
    ds_inner = dp - delta
    if grad_lse is not None:
        ds_inner = ds_inner + grad_lse.to(compute).unsqueeze(-1)
    ds = probs * ds_inner
    dq = torch.matmul(ds, kc) * scale
    dk = torch.matmul(ds.transpose(-1, -2), qc) * scale

    group = heads_q // heads_kv
    if group > 1:
        b, _, sk, d = dk.shape
        dk = dk.view(b, heads_kv, group, sk, d).sum(dim=2)
        dv = dv.view(b, heads_kv, group, sk, dv.shape[-1]).sum(dim=2)
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)


def block_sparse_attention_varlen(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    block_mask: torch.Tensor | BlockIndices | None = None,
    *,
    block_size: tuple[int, int] = (64, 64),
    causal: bool = False,
    scale: float | None = None,
    return_lse: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Reference for :func:`kernels_core.block_sparse_attention_varlen`: one sequence at a time.

    Shapes: q [total_q, Hq, D], k and v [total_k, Hkv, D]; returns out like q and lse [Hq, total_q].
    """
    num_seqs = cu_seqlens_q.shape[0] - 1
    grid_mask = _as_block_mask(block_mask, max_seqlen_q, max_seqlen_k, block_size)
    out = torch.zeros(q.shape, dtype=q.dtype)
    lse = torch.full((q.shape[1], q.shape[0]), float("-inf"), dtype=torch.float32)
    cq, ck = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    for b in range(num_seqs):
        sq, sk = cq[b + 1] - cq[b], ck[b + 1] - ck[b]
        if sq == 0:
            continue
        qs, ks, vs = (x[start:end].permute(1, 0, 2).unsqueeze(0) for x, start, end in (
            (q, cq[b], cq[b + 1]), (k, ck[b], ck[b + 1]), (v, ck[b], ck[b + 1])))  # fmt: skip
        mask = grid_mask[min(b, grid_mask.shape[0] - 1)].unsqueeze(0)
        mask = mask[..., : num_blocks(sq, block_size[0]), : num_blocks(sk, block_size[1])]
        if sk == 0:
            continue
        o, l = block_sparse_attention(
            qs, ks, vs, mask, block_size=block_size, causal=causal, scale=scale, return_lse=True
        )
        out[cq[b] : cq[b + 1]] = o[0].permute(1, 0, 2)
        lse[:, cq[b] : cq[b + 1]] = l[0]
    return (out, lse) if return_lse else out
