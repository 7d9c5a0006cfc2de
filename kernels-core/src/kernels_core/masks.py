"""Block masks for :func:`kernels_core.block_sparse_attention`, in two formats.

- A block mask is a bool tensor ``[B, H, ceil(Sq / block_q), ceil(Sk / block_k)]``; entry
  ``[b, h, i, j]`` is True when query block ``i`` of head ``h`` attends to key block ``j``.
- :class:`BlockIndices` lists, per (batch, head, query block), the key blocks to compute:
  ``counts [B, H, nqb]`` and ``indices [B, H, nqb, L]`` (int32; row ``r`` uses
  ``indices[r, :counts[r]]``, any order, no duplicates). This is what mask predictors produce
  (top-k per row) and what sparse kernels walk without scanning a whole row.

:func:`block_mask_to_indices` and :func:`block_indices_to_mask` convert between them.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from kernels_core import _checks


class BlockIndices(NamedTuple):
    """Key-block index lists.

    Attributes:
        counts: int32 [B, H, nqb], number of valid entries per row, in [0, L].
        indices: int32 [B, H, nqb, L], key-block indices; entries past ``counts`` are ignored
            (:func:`block_mask_to_indices` sets them to -1).
    """

    counts: torch.Tensor
    indices: torch.Tensor

    def to_mask(self, num_key_blocks: int) -> torch.Tensor:
        """The equivalent bool block mask [B, H, nqb, num_key_blocks]."""
        return block_indices_to_mask(self, num_key_blocks)


def block_mask_to_indices(block_mask: torch.Tensor) -> BlockIndices:
    """Index lists (ascending) of the True entries of a bool block mask [B, H, nqb, nkb].

    The list length L is the largest row count (at least 1); padding entries are -1.
    """
    if not isinstance(block_mask, torch.Tensor) or block_mask.dtype != torch.bool or block_mask.dim() != 4:
        raise TypeError("block_mask must be a bool tensor [B, H, nqb, nkb]")
    nkb = block_mask.shape[-1]
    counts = block_mask.sum(dim=-1, dtype=torch.int32)
    width = max(1, int(counts.max().item())) if counts.numel() else 1
    positions = torch.arange(nkb, device=block_mask.device, dtype=torch.int32)
    # Disabled blocks sort to the end as nkb, then become -1.
    keyed = torch.where(
        block_mask, positions, torch.full((), nkb, dtype=torch.int32, device=block_mask.device)
    )
    indices = keyed.sort(dim=-1).values[..., :width]
    if indices.shape[-1] < width:  # nkb == 0
        indices = torch.full((*block_mask.shape[:3], width), nkb, dtype=torch.int32, device=block_mask.device)
    indices = torch.where(
        indices == nkb, torch.full((), -1, dtype=torch.int32, device=indices.device), indices
    )
    return BlockIndices(counts, indices.contiguous())


def _valid_entries(block_indices: BlockIndices) -> torch.Tensor:
    """bool [B, H, nqb, L]: True for the entries a row uses (position < count)."""
    width = block_indices.indices.shape[-1]
    positions = torch.arange(width, device=block_indices.indices.device)
    return positions < block_indices.counts.unsqueeze(-1)


def block_indices_to_mask(block_indices: BlockIndices, num_key_blocks: int) -> torch.Tensor:
    """The bool block mask [B, H, nqb, num_key_blocks] that enables the listed blocks."""
    indices = block_indices.indices
    valid = _valid_entries(block_indices)
    # Entries past the count scatter into an extra column that is dropped afterwards.
    target = torch.where(valid, indices.long(), torch.full((), num_key_blocks, device=indices.device))
    mask = torch.zeros((*indices.shape[:3], num_key_blocks + 1), dtype=torch.bool, device=indices.device)
    mask.scatter_(-1, target, True)
    return mask[..., :num_key_blocks]


def check_block_indices(name: str, block_indices: BlockIndices, num_key_blocks: int) -> None:
    """Raises ValueError unless every used entry is a key block in [0, num_key_blocks) listed once.

    Counts must lie in [0, L]. This reads the tensors (a device sync on CUDA).
    """
    counts, indices = block_indices
    width = indices.shape[-1]
    if counts.numel() and (int(counts.min()) < 0 or int(counts.max()) > width):
        raise ValueError(
            f"{name}.counts must lie in [0, {width}] (the length of {name}.indices' last dim), "
            f"got values in [{int(counts.min())}, {int(counts.max())}]"
        )
    valid = _valid_entries(block_indices)
    used = indices[valid]
    if used.numel() and (int(used.min()) < 0 or int(used.max()) >= num_key_blocks):
        raise ValueError(
            f"{name}.indices must be key-block indices in [0, {num_key_blocks}), "
            f"got values in [{int(used.min())}, {int(used.max())}]"
        )
    if _checks.has_repeated_entries(indices, valid):
        raise ValueError(
            f"{name}.indices lists a key block twice in some row; each row must be duplicate-free"
        )


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
