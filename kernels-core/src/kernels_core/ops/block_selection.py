"""The mask predictor: block scores, recall budgets and top-k selection to index lists.

    scores = block_scores(q, k)                        # softmax over pooled key blocks
    counts = recall_block_counts(scores, gamma=0.9)    # blocks needed to reach recall gamma
    lists  = select_top_blocks(scores, counts)         # BlockIndices for the attention op

or all at once with :func:`predict_block_indices`. On the CPU every step runs in C++ (pooling,
the pooled matmul and softmax fused in one kernel); on CUDA the same maths runs as torch ops,
which are already fast there (the estimate is ~block_q * block_k times cheaper than attention).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch

from kernels_core import _checks
from kernels_core._library import library
from kernels_core.masks import BlockIndices, num_blocks
from kernels_core.reference import block_selection as ref


# ---------------------------------------------------------------------------------------------
# block_scores
# ---------------------------------------------------------------------------------------------
def _check_scores_inputs(q: torch.Tensor, k: torch.Tensor, block_q: int, block_k: int) -> None:
    _checks.check_tensor("q", q, 4, "[B, Hq, Sq, D]")
    _checks.check_tensor("k", k, 4, "[B, Hkv, Sk, D]")
    _checks.check_float_dtype("q", q)
    _checks.check_same_dtype("q", q, k=k)
    _checks.check_same_device("q", q, k=k)
    _checks.check_dim("k", k.shape[0], q.shape[0], "the batch size (dim 0) of k, as in q,")
    _checks.check_dim("k", k.shape[3], q.shape[3], "the head dimension (dim 3) of k, as in q,")
    if k.shape[1] == 0 or q.shape[1] % k.shape[1] != 0:
        raise ValueError(f"q has {q.shape[1]} heads, which is not a multiple of the {k.shape[1]} heads of k")
    if block_q <= 0 or block_k <= 0:
        raise ValueError(f"block_size must be positive, got ({block_q}, {block_k})")


def _scores_output(q: torch.Tensor, k: torch.Tensor, block_q: int, block_k: int) -> torch.Tensor:
    shape = (q.shape[0], q.shape[1], num_blocks(q.shape[2], block_q), num_blocks(k.shape[2], block_k))
    return torch.empty(shape, dtype=torch.float32, device=q.device)


@torch.library.custom_op("kernels_core::block_scores", mutates_args=(), device_types="cpu")
def _block_scores_op(
    q: torch.Tensor, k: torch.Tensor, block_q: int, block_k: int, causal: bool, scale: float
) -> torch.Tensor:
    _check_scores_inputs(q, k, block_q, block_k)
    scores = _scores_output(q, k, block_q, block_k)
    if scores.numel() == 0:
        return scores
    q, k = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k))
    lib = library()
    p = lib.BlockScoresParams()
    p.q, p.k, p.scores = q.data_ptr(), k.data_ptr(), scores.data_ptr()
    p.dtype = getattr(lib.DType, str(q.dtype).removeprefix("torch."))
    p.batch, p.heads_q, p.seqlen_q, p.head_dim = q.shape
    p.heads_kv, p.seqlen_k = k.shape[1], k.shape[2]
    p.q_stride, p.k_stride = q.stride()[:3], k.stride()[:3]
    p.block_q, p.block_k, p.causal, p.scale = block_q, block_k, causal, scale
    lib.block_scores_cpu(p, torch.get_num_threads())
    return scores


@_block_scores_op.register_kernel("cuda")
def _block_scores_cuda(
    q: torch.Tensor, k: torch.Tensor, block_q: int, block_k: int, causal: bool, scale: float
) -> torch.Tensor:
    _check_scores_inputs(q, k, block_q, block_k)
    return ref.block_scores(q, k, block_size=(block_q, block_k), causal=causal, scale=scale)


@_block_scores_op.register_fake
def _block_scores_fake(
    q: torch.Tensor, k: torch.Tensor, block_q: int, block_k: int, causal: bool, scale: float
) -> torch.Tensor:
    _check_scores_inputs(q, k, block_q, block_k)
    return _scores_output(q, k, block_q, block_k)


def block_scores(
    q: torch.Tensor,
    k: torch.Tensor,
    *,
    block_size: tuple[int, int] = (64, 64),
    causal: bool = False,
    scale: float | None = None,
) -> torch.Tensor:
    """Estimated attention mass of every (query block, key block) pair.

    Each query block and key block is mean-pooled; the pooled queries attend to the pooled keys
    with a softmax over key blocks (under ``causal``, only the key blocks whose first key the
    block's last query may see; the others score 0).

    Args:
        q: [B, Hq, Sq, D]; k: [B, Hkv, Sk, D] (grouped-query heads share their key head).
        block_size: (block_q, block_k), as for the attention the scores will drive.
        causal: bottom-right aligned, as in :func:`kernels_core.block_sparse_attention`.
        scale: default 1 / sqrt(D).

    Returns:
        float32 [B, Hq, ceil(Sq / block_q), ceil(Sk / block_k)]; each row sums to 1 (or is all
        zeros when causal leaves it no key block).
    """
    block_q, block_k = _checks.check_block_size(block_size)
    _checks.check_tensor("q", q, 4, "[B, Hq, Sq, D]")
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1]) if q.shape[-1] > 0 else 1.0
    return torch.ops.kernels_core.block_scores(q, k, block_q, block_k, bool(causal), float(scale))


# ---------------------------------------------------------------------------------------------
# recall_block_counts / select_top_blocks
# ---------------------------------------------------------------------------------------------
def _check_scores(scores: torch.Tensor) -> None:
    if not isinstance(scores, torch.Tensor) or scores.dtype != torch.float32 or scores.dim() < 1:
        raise TypeError("scores must be a float32 tensor [..., num_key_blocks] (as block_scores returns)")
    if scores.shape[-1] == 0:
        raise ValueError("scores must have at least one key block (last dim > 0)")


def _selection_params(scores: torch.Tensor, counts: torch.Tensor) -> Any:
    p = library().BlockSelectionParams()
    p.scores, p.counts = scores.data_ptr(), counts.data_ptr()
    p.num_blocks = scores.shape[-1]
    p.rows = scores.numel() // scores.shape[-1]
    return p


@torch.library.custom_op("kernels_core::block_recall_counts", mutates_args=(), device_types="cpu")
def _recall_counts_op(scores: torch.Tensor, gamma: float, min_blocks: int, max_blocks: int) -> torch.Tensor:
    _check_scores(scores)
    scores = scores.contiguous()
    counts = torch.empty(scores.shape[:-1], dtype=torch.int32)
    p = _selection_params(scores, counts)
    p.gamma, p.min_blocks, p.max_blocks = gamma, min_blocks, max_blocks
    library().block_recall_counts_cpu(p, torch.get_num_threads())
    return counts


@_recall_counts_op.register_kernel("cuda")
def _recall_counts_cuda(scores: torch.Tensor, gamma: float, min_blocks: int, max_blocks: int) -> torch.Tensor:
    _check_scores(scores)
    return ref.recall_block_counts(scores, gamma, min_blocks=min_blocks, max_blocks=max_blocks)


@_recall_counts_op.register_fake
def _recall_counts_fake(scores: torch.Tensor, gamma: float, min_blocks: int, max_blocks: int) -> torch.Tensor:
    _check_scores(scores)
    return torch.empty(scores.shape[:-1], dtype=torch.int32, device=scores.device)


def recall_block_counts(
    scores: torch.Tensor, gamma: float = 0.9, *, min_blocks: int = 1, max_blocks: int | None = None
) -> torch.Tensor:
    """Per row, the fewest key blocks whose scores sum to at least ``gamma`` of the row's mass.

    This is FlexPrefill's cover-top-k budget; OmniSparse takes its maximum over heads (the
    flattest head) as the shared budget.

    Args:
        scores: float32 [..., nkb], non-negative (e.g. from :func:`block_scores`).
        gamma: target recall in (0, 1].
        min_blocks, max_blocks: clamp of the result (max_blocks None = nkb).

    Returns:
        int32 [...]: the block counts.
    """
    _check_scores(scores)
    if not 0.0 < gamma <= 1.0:
        raise ValueError(f"gamma must be in (0, 1], got {gamma}")
    if min_blocks < 0 or (max_blocks is not None and max_blocks < 1):
        raise ValueError(
            f"need min_blocks >= 0 and max_blocks >= 1 (or None), got {min_blocks} and {max_blocks}"
        )
    return torch.ops.kernels_core.block_recall_counts(
        scores, float(gamma), int(min_blocks), int(max_blocks or 0)
    )


@torch.library.custom_op("kernels_core::block_top_indices", mutates_args=(), device_types="cpu")
def _top_indices_op(scores: torch.Tensor, counts: torch.Tensor, width: int) -> torch.Tensor:
    _check_scores(scores)
    scores, counts = scores.contiguous(), counts.to(torch.int32).contiguous()
    indices = torch.empty((*scores.shape[:-1], width), dtype=torch.int32)
    p = _selection_params(scores, counts)
    p.indices, p.width = indices.data_ptr(), width
    library().block_top_indices_cpu(p, torch.get_num_threads())
    return indices


@_top_indices_op.register_kernel("cuda")
def _top_indices_cuda(scores: torch.Tensor, counts: torch.Tensor, width: int) -> torch.Tensor:
    return ref.select_top_blocks(scores, counts, width).indices


@_top_indices_op.register_fake
def _top_indices_fake(scores: torch.Tensor, counts: torch.Tensor, width: int) -> torch.Tensor:
    return torch.empty((*scores.shape[:-1], width), dtype=torch.int32, device=scores.device)


def select_top_blocks(
    scores: torch.Tensor, counts: torch.Tensor | int, *, width: int | None = None
) -> BlockIndices:
    """The ``counts`` highest-scoring key blocks of every row, as index lists.

    Args:
        scores: float32 [..., nkb].
        counts: int tensor [...] (per-row budgets, e.g. from :func:`recall_block_counts`) or one
            int for every row (plain top-k). Values are clamped to [0, min(nkb, width)].
        width: length L of the index lists; default: the largest count (one device sync when
            counts is a tensor).

    Returns:
        :class:`BlockIndices` with counts [...] and indices [..., L], each row's blocks in
        ascending order (ties broken toward the lower block), padded with -1.
    """
    _check_scores(scores)
    nkb = scores.shape[-1]
    if isinstance(counts, int):
        if counts < 0:
            raise ValueError(f"counts must be >= 0, got {counts}")
        counts = torch.full(scores.shape[:-1], counts, dtype=torch.int32, device=scores.device)
    elif not isinstance(counts, torch.Tensor) or counts.dtype not in (torch.int32, torch.int64):
        raise TypeError("counts must be an int or an int32/int64 tensor")
    if tuple(counts.shape) != tuple(scores.shape[:-1]):
        raise ValueError(
            f"counts must have shape {list(scores.shape[:-1])} (scores without its last dim), got {list(counts.shape)}"
        )
    if width is None:
        width = max(1, int(counts.max().item())) if counts.numel() else 1
    width = max(1, min(int(width), nkb))
    counts = counts.clamp(0, width).to(torch.int32)
    return BlockIndices(counts, torch.ops.kernels_core.block_top_indices(scores, counts, width))


SharedBudget = Literal["none", "heads", "layer"]


def predict_block_indices(
    q: torch.Tensor,
    k: torch.Tensor,
    *,
    gamma: float = 0.9,
    block_size: tuple[int, int] = (64, 64),
    causal: bool = False,
    scale: float | None = None,
    min_blocks: int = 1,
    max_blocks: int | None = None,
    shared_budget: SharedBudget = "none",
) -> BlockIndices:
    """Predicts which key blocks each query block needs, for :func:`block_sparse_attention`.

    Args:
        q, k, block_size, causal, scale: as for :func:`block_scores`.
        gamma: target recall of the estimated attention mass per row.
        min_blocks, max_blocks: bounds on each row's budget.
        shared_budget: "none": every (head, query block) row gets its own budget; "heads": per
            query block, every head gets the budget of the head that needs most (the flattest
            head); "layer": one budget for the whole call (the maximum over heads and query
            blocks), as OmniSparse applies one budget per layer.

    Returns:
        :class:`BlockIndices` [B, Hq, nqb, L].
    """
    if shared_budget not in ("none", "heads", "layer"):
        raise ValueError(f"shared_budget must be 'none', 'heads' or 'layer', got {shared_budget!r}")
    scores = block_scores(q, k, block_size=block_size, causal=causal, scale=scale)
    counts = recall_block_counts(scores, gamma, min_blocks=min_blocks, max_blocks=max_blocks)
    if shared_budget == "heads":
        counts = counts.amax(dim=1, keepdim=True).expand_as(counts)
    elif shared_budget == "layer":
        counts = counts.amax(dim=(1, 2), keepdim=True).expand_as(counts)
    return select_top_blocks(scores, counts.contiguous())
