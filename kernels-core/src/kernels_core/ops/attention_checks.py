"""Input checks of the block-sparse attention ops; each error names the argument and what was expected.

Internally every call is in the 4-D layout: q [N, Hq, Sq, D], k and v [N, Hkv, Sk, D]. A
variable-length call is a 4-D view [1, H, total tokens, D] plus ``cu_seqlens_q/k`` [N + 1];
sequence lengths are then at most ``max_seqlen_q/k`` and block masks are laid out for them.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from kernels_core import _checks
from kernels_core.masks import num_blocks

LAYOUTS = {
    "q": "[B, Hq, Sq, D]",
    "k": "[B, Hkv, Sk, D]",
    "v": "[B, Hkv, Sk, D]",
    "block_mask": "[B, Hq, ceil(Sq / block_q), ceil(Sk / block_k)]",
}


@dataclass(frozen=True)
class AttentionGeometry:
    """Sizes the kernels see: N sequences of at most seqlen_q queries and seqlen_k keys."""

    batch: int
    heads_q: int
    heads_kv: int
    seqlen_q: int
    seqlen_k: int
    head_dim: int
    block_q: int
    block_k: int

    @property
    def block_grid(self) -> tuple[int, int, int, int]:
        """Full shape of a block mask: [N, Hq, nqb, nkb]."""
        nqb, nkb = num_blocks(self.seqlen_q, self.block_q), num_blocks(self.seqlen_k, self.block_k)
        return (self.batch, self.heads_q, nqb, nkb)


def check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    for name, x in (("q", q), ("k", k), ("v", v)):
        _checks.check_tensor(name, x, 4, LAYOUTS[name])
    _checks.check_float_dtype("q", q)
    _checks.check_same_dtype("q", q, k=k, v=v)
    _checks.check_same_device("q", q, k=k, v=v)
    batch, heads_q, _, head_dim = q.shape
    _checks.check_dim("k", k.shape[0], batch, "the batch size (dim 0) of k, as in q,")
    _checks.check_dim("v", v.shape[0], batch, "the batch size (dim 0) of v, as in q,")
    _checks.check_dim("v", v.shape[1], k.shape[1], "the number of key/value heads (dim 1) of v, as in k,")
    _checks.check_dim("v", v.shape[2], k.shape[2], "the key length (dim 2) of v, as in k,")
    _checks.check_dim("k", k.shape[3], head_dim, "the head dimension (dim 3) of k, as in q,")
    _checks.check_dim("v", v.shape[3], head_dim, "the head dimension (dim 3) of v, as in q,")
    heads_kv = k.shape[1]
    if heads_kv == 0 or heads_q % heads_kv != 0:
        raise ValueError(
            f"q has {heads_q} heads, which is not a multiple of the {heads_kv} key/value heads of k "
            "(grouped-query attention needs Hq % Hkv == 0)"
        )


def check_geometry(
    q: torch.Tensor,
    k: torch.Tensor,
    cu_seqlens_q: torch.Tensor | None,
    cu_seqlens_k: torch.Tensor | None,
    max_seqlen_q: int,
    max_seqlen_k: int,
    block_q: int,
    block_k: int,
) -> AttentionGeometry:
    """Checks the variable-length arguments (shapes only) and returns the kernel geometry."""
    if block_q <= 0 or block_k <= 0:
        raise ValueError(f"block_size must be positive, got ({block_q}, {block_k})")
    heads_q, head_dim, heads_kv = q.shape[1], q.shape[3], k.shape[1]
    if cu_seqlens_q is None and cu_seqlens_k is None:
        return AttentionGeometry(
            q.shape[0], heads_q, heads_kv, q.shape[2], k.shape[2], head_dim, block_q, block_k
        )
    if cu_seqlens_q is None or cu_seqlens_k is None:
        raise ValueError("cu_seqlens_q and cu_seqlens_k must be given together")
    for name, cu in (("cu_seqlens_q", cu_seqlens_q), ("cu_seqlens_k", cu_seqlens_k)):
        _checks.check_tensor(name, cu, 1, "[num_sequences + 1]")
        if cu.dtype != torch.int32:
            raise TypeError(f"{name} must have dtype torch.int32, got {cu.dtype}")
        if cu.device != q.device:
            raise ValueError(
                f"{name} is on {cu.device} but q is on {q.device}; all inputs must be on the same device"
            )
        if cu.shape[0] < 2:
            raise ValueError(
                f"{name} must hold at least two offsets [0, ..., total], got shape {list(cu.shape)}"
            )
    if cu_seqlens_q.shape[0] != cu_seqlens_k.shape[0]:
        raise ValueError(
            f"cu_seqlens_q has {cu_seqlens_q.shape[0]} offsets but cu_seqlens_k has {cu_seqlens_k.shape[0]}; "
            "both describe the same sequences"
        )
    for name, value in (("max_seqlen_q", max_seqlen_q), ("max_seqlen_k", max_seqlen_k)):
        if value <= 0:
            raise ValueError(f"{name} must be positive for a variable-length batch, got {value}")
    return AttentionGeometry(
        cu_seqlens_q.shape[0] - 1, heads_q, heads_kv, max_seqlen_q, max_seqlen_k, head_dim, block_q, block_k
    )


def check_cu_seqlens_values(name: str, cu: torch.Tensor, total: int, max_seqlen: int) -> None:
    """Offsets start at 0, never decrease, end within the ``total`` tokens, and no length exceeds max."""
    values = cu.tolist()
    lengths = [b - a for a, b in itertools.pairwise(values)]
    if values[0] != 0 or min(lengths) < 0 or values[-1] > total:
        raise ValueError(
            f"{name} must start at 0, be non-decreasing and end at most at the {total} packed tokens, got {values}"
        )
    if max(lengths) > max_seqlen:
        raise ValueError(
            f"{name} has a sequence of {max(lengths)} tokens, longer than max_seqlen={max_seqlen}"
        )


def _broadcast_shape_ok(shape: tuple[int, ...], expected: tuple[int, ...]) -> bool:
    return all(s == e or s == 1 for s, e in zip(shape, expected, strict=True))


def check_sparsity(
    q: torch.Tensor,
    geometry: AttentionGeometry,
    block_mask: torch.Tensor | None,
    block_counts: torch.Tensor | None,
    block_indices: torch.Tensor | None,
) -> None:
    """Shapes, dtypes and devices of the mask arguments (values are checked by the kernels' callers)."""
    grid = geometry.block_grid
    block = f"({geometry.block_q}, {geometry.block_k})"
    if block_mask is not None:
        if block_counts is not None or block_indices is not None:
            raise ValueError("give either block_mask or block indices, not both")
        _checks.check_tensor("block_mask", block_mask, 4, LAYOUTS["block_mask"])
        if block_mask.dtype != torch.bool:
            raise TypeError(
                f"block_mask must have dtype torch.bool (True = compute the block), got {block_mask.dtype}"
            )
        _checks.check_same_device("q", q, block_mask=block_mask)
        if not _broadcast_shape_ok(tuple(block_mask.shape), grid):
            raise ValueError(
                f"block_mask must have shape [B, Hq, ceil(Sq / block_q), ceil(Sk / block_k)] = {list(grid)} "
                f"for block_size {block} (size-1 dimensions broadcast), got {list(block_mask.shape)}"
            )
        return
    if block_counts is None and block_indices is None:
        return
    if block_counts is None or block_indices is None:
        raise ValueError("block indices need both counts and indices")
    _checks.check_tensor("block_indices.counts", block_counts, 3, "[B, Hq, nqb]")
    _checks.check_tensor("block_indices.indices", block_indices, 4, "[B, Hq, nqb, L]")
    for name, x in (("block_indices.counts", block_counts), ("block_indices.indices", block_indices)):
        if x.dtype != torch.int32:
            raise TypeError(f"{name} must have dtype torch.int32, got {x.dtype}")
    _checks.check_same_device(
        "q", q, **{"block_indices.counts": block_counts, "block_indices.indices": block_indices}
    )
    if not _broadcast_shape_ok(tuple(block_counts.shape), grid[:3]) or not _broadcast_shape_ok(
        tuple(block_indices.shape[:3]), grid[:3]
    ):
        raise ValueError(
            f"block_indices must have counts [B, Hq, nqb] and indices [B, Hq, nqb, L] with [B, Hq, nqb] = "
            f"{list(grid[:3])} for block_size {block} (size-1 dimensions broadcast), got counts "
            f"{list(block_counts.shape)} and indices {list(block_indices.shape)}"
        )
    if block_indices.shape[-1] == 0:
        raise ValueError("block_indices.indices must have a last dimension L >= 1")
