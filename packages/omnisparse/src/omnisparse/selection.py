"""Prefill selection: which query blocks stay active and which key blocks each of them reads.

Everything works on the block-level attention estimate ``scores [B, Hq, nqb, nkb]`` from
``kernels_core.block_scores`` (softmax of mean-pooled queries against mean-pooled keys, causal), which
costs ``block_size**2`` times less than attention itself.

1. Lazy/active queries. A (head, query block) row is *lazy* when at least ``lazy_threshold`` of its
   estimated mass lies in its forced blocks (sink blocks and the local window up to the diagonal): it
   only looks nearby. Rows holding text tokens are always active. Of the lazy rows, the
   ``lazy_keep_ratio`` least local ones stay active; the rest are dropped.
2. KV budget. For every (head, active row) the recall count (key blocks needed to reach ``gamma``) is
   taken as a share of the row's visible key blocks; the head needing the largest mean share (the
   flattest head) sets one share for the whole layer, applied to every head and row. Each active row
   then reads its forced blocks plus the top-scoring blocks up to that budget.
3. Dropped rows read their forced blocks only (``lazy_mode="local"``) or nothing (``"skip"``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

import kernels_core
from kernels_core.masks import BlockIndices
from omnisparse.config import OmniSparseConfig

__all__ = ["PrefillSelection", "forced_blocks", "select_prefill_blocks"]

_FORCED_BONUS = 4.0  # added to the forced blocks' scores (all scores are <= 1) so top-k takes them first


@dataclass(frozen=True)
class PrefillSelection:
    """The index lists for one attention call, and what they amount to.

    Attributes:
        indices: :class:`BlockIndices` [B, Hq, nqb, L] for ``kernels_core.block_sparse_attention``.
        active: bool [B, Hq, nqb], the rows that kept their full selection.
        budget_ratio: the layer's budget as a share of visible key blocks (set by the flattest head).
        density: computed (query block, key block) pairs over the causal dense count.
    """

    indices: BlockIndices
    active: torch.Tensor
    budget_ratio: float
    density: float


def _visible_blocks(nqb: int, nkb: int, sq: int, sk: int, block: int, device: torch.device) -> torch.Tensor:
    """Per query block, the number of key blocks a causal query in it can see (bottom-right aligned)."""
    last_query = torch.clamp((torch.arange(nqb, device=device) + 1) * block, max=sq) - 1
    last_key = (last_query + sk - sq).clamp(min=-1)
    return torch.clamp(last_key // block + 1, 0, nkb)


def forced_blocks(
    visible: torch.Tensor, nkb: int, config: OmniSparseConfig, text_key_blocks: torch.Tensor | None
) -> torch.Tensor:
    """Key blocks every query block reads: sinks, the local window, and blocks holding text tokens.

    Args:
        visible: int [nqb], visible key blocks per query block.
        text_key_blocks: bool [B, nkb] or None.

    Returns:
        bool [B or 1, 1, nqb, nkb], within the visible blocks.
    """
    cols = torch.arange(nkb, device=visible.device)[None, :]
    diag = (visible - 1)[:, None]
    in_view = cols < visible[:, None]
    forced = (cols < config.sink_blocks) | ((cols <= diag) & (cols >= diag - config.local_blocks))
    forced = forced[None, None]
    if text_key_blocks is not None:
        forced = forced | text_key_blocks[:, None, None, :]
    return forced & in_view[None, None]


@torch.no_grad()
def select_prefill_blocks(
    q: torch.Tensor,
    k: torch.Tensor,
    config: OmniSparseConfig,
    *,
    scale: float | None = None,
    text_tokens: torch.Tensor | None = None,
) -> PrefillSelection:
    """OmniSparse's query and key selection for causal attention of ``q`` over ``k``.

    Args:
        q: [B, Hq, Sq, D]; k: [B, Hkv, Sk, D] with Sk >= Sq (the last Sq keys are the queries' own).
        config: block size, gamma, budget bounds, lazy-query settings.
        scale: softmax scale (default 1/sqrt(D)).
        text_tokens: bool [B, Sk], True for text (non-visual) tokens; None treats every token alike.

    Returns:
        :class:`PrefillSelection`.
    """
    block = config.block_size
    batch, heads, sq, _ = q.shape
    sk = k.shape[2]
    if sk < sq:
        raise ValueError(f"k must hold at least the {sq} query positions, got {sk}")
    scores = kernels_core.block_scores(q, k, block_size=(block, block), causal=True, scale=scale)
    nqb, nkb = scores.shape[-2:]
    device = scores.device
    visible = _visible_blocks(nqb, nkb, sq, sk, block, device)

    text_key_blocks = text_query_blocks = None
    if text_tokens is not None:
        if text_tokens.shape != (batch, sk):
            raise ValueError(f"text_tokens must be [B, Sk] = [{batch}, {sk}], got {list(text_tokens.shape)}")
        padded = torch.zeros(batch, nkb * block, dtype=torch.bool, device=device)
        padded[:, :sk] = text_tokens.to(device)
        text_key_blocks = padded.view(batch, nkb, block).any(-1)
        shift = sk - sq  # query block i covers keys [shift + i*block, shift + (i+1)*block)
        query_text = torch.zeros(batch, nqb * block, dtype=torch.bool, device=device)
        query_text[:, :sq] = text_tokens[:, shift:].to(device)
        text_query_blocks = query_text.view(batch, nqb, block).any(-1)

    forced = forced_blocks(visible, nkb, config, text_key_blocks)  # [B|1, 1, nqb, nkb]
    local_mass = (scores * forced).sum(-1)  # [B, Hq, nqb]

    # 1. lazy / active rows
    lazy = local_mass >= config.lazy_threshold
    if text_query_blocks is not None:
        lazy &= ~text_query_blocks[:, None, :]
    active = ~lazy
    num_lazy = int(lazy.sum())
    keep = round(config.lazy_keep_ratio * num_lazy)
    if keep > 0:
        least_local = torch.where(lazy, local_mass, torch.full_like(local_mass, float("inf"))).flatten()
        rescued = torch.topk(least_local, keep, largest=False).indices
        active.view(-1)[rescued] = True

    # 2. one budget share per layer, from the flattest head
    counts = kernels_core.recall_block_counts(scores, config.gamma, min_blocks=1)
    share = counts.float() / visible.clamp(min=1).float()  # [B, Hq, nqb]
    if bool(active.any()):
        per_head = (share * active).sum((0, 2)) / active.sum((0, 2)).clamp(min=1)
        budget_ratio = min(float(per_head.max()), config.max_budget_ratio)
    else:
        budget_ratio = 0.0
    budget = torch.ceil(budget_ratio * visible.float()).long().clamp(min=config.min_budget_blocks)
    budget = torch.minimum(budget, visible)  # [nqb]

    # 3. index lists: forced blocks first, then the top-scoring ones up to the budget
    num_forced = forced.sum(-1).expand(batch, heads, nqb)
    ranked = scores + _FORCED_BONUS * forced
    row_counts = torch.where(active, torch.minimum(num_forced + budget, visible), num_forced)
    if config.lazy_mode == "skip":
        row_counts = torch.where(active, row_counts, torch.zeros_like(row_counts))
    indices = kernels_core.select_top_blocks(ranked.contiguous(), row_counts.to(torch.int32).contiguous())

    dense_pairs = float(visible.sum()) * batch * heads
    density = float(row_counts.sum()) / dense_pairs if dense_pairs else 1.0
    return PrefillSelection(indices, active, budget_ratio, density)
