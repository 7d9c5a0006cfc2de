"""ZPressor's attention blocks on packed variable-length sequences (kernels-core varlen attention).

Tokens are flattened per view as ``(h w)``, row-major, the official ``'b v f h w -> b v (h w) f'``.

- :func:`pack_clusters`: which views form the context of each (batch item, anchor) pair, as one gather
  index and the ``cu_seqlens`` of :func:`kernels_core.block_sparse_attention_varlen`.
- :class:`CrossAttentionBlock`: anchor tokens attend to their cluster's support tokens (the official
  ``CrossAttention``); :class:`SelfAttentionBlock`: attention within each anchor view, then the MLP
  (the official ``Attention`` with ``ffn=True``); :class:`Mlp`: pre-norm MLP with its own residual.

Parameter names follow the official modules, so official weights load with a key rename only
(:func:`zpressor.module.convert_official_state_dict`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

import kernels_core

__all__ = ["ClusterPacking", "CrossAttentionBlock", "Mlp", "SelfAttentionBlock", "pack_clusters"]


@dataclass(frozen=True)
class ClusterPacking:
    """The varlen layout of the cross-attention for N = b·K sequences (pair (i, j) is sequence i·K + j).

    Attributes:
        support_views: [S] int64 indices into the b·v views (``i·v + view``) of all support views,
            grouped by sequence and in increasing view order within one (the official concatenation).
        cu_seqlens_q: [N + 1] int32, every sequence has the n tokens of its anchor.
        cu_seqlens_k: [N + 1] int32, the support tokens of each sequence (possibly 0).
        max_seqlen_q: n.
        max_seqlen_k: the longest support, in tokens (0 when no anchor has support views).
        has_support: [b, K] bool, the anchors whose cluster has at least one support view; the others
            skip the cross-attention update (as the official code does).
    """

    support_views: torch.Tensor
    cu_seqlens_q: torch.Tensor
    cu_seqlens_k: torch.Tensor
    max_seqlen_q: int
    max_seqlen_k: int
    has_support: torch.Tensor


def _offsets(lengths: torch.Tensor) -> torch.Tensor:
    """Prefix sums [N + 1] int32 of lengths [N], starting at 0."""
    offsets = torch.zeros(lengths.numel() + 1, dtype=torch.int32, device=lengths.device)
    offsets[1:] = lengths.cumsum(0)
    return offsets


def pack_clusters(cluster: torch.Tensor, anchor_index: torch.Tensor, tokens_per_view: int) -> ClusterPacking:
    """The support views of every (batch item, anchor) pair, packed for varlen attention.

    The support of anchor slot j is every view with ``cluster == j`` except the anchor view
    ``anchor_index[:, j]`` itself (the official ``idx = clusters[i] == j; idx[center_idx] = False``).
    Built with one stable sort; no loop over clusters or batch items.

    Args:
        cluster: [b, v] int64 in [0, K).
        anchor_index: [b, K] int64 in [0, v).
        tokens_per_view: n = h·w.
    """
    b, v = cluster.shape
    k = anchor_index.shape[1]
    device = cluster.device
    views = torch.arange(v, device=device)
    own_anchor = torch.gather(anchor_index, 1, cluster) == views  # [b, v]: the anchor of its own slot
    sequence = (cluster + torch.arange(b, device=device)[:, None] * k).flatten()  # [b·v]
    support = ~own_anchor.flatten()
    flat_views = torch.arange(b * v, device=device)[support]
    flat_sequence = sequence[support]
    order = torch.argsort(flat_sequence, stable=True)  # grouped by sequence, views ascending inside
    counts = torch.bincount(flat_sequence, minlength=b * k)  # support views per sequence
    max_views = int(counts.max()) if counts.numel() else 0
    return ClusterPacking(
        support_views=flat_views[order],
        cu_seqlens_q=_offsets(torch.full((b * k,), tokens_per_view, dtype=torch.int64, device=device)),
        cu_seqlens_k=_offsets(counts * tokens_per_view),
        max_seqlen_q=tokens_per_view,
        max_seqlen_k=max_views * tokens_per_view,
        has_support=(counts > 0).view(b, k),
    )


class Mlp(nn.Module):
    """``x + fc2(GELU(fc1(LayerNorm(x))))`` (the official ``Mlp``: pre-norm, exact GELU, own residual)."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., C] -> [..., C]."""
        return x + self.fc2(self.act(self.fc1(self.norm(x))))


def _heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """[T, H·D] -> [T, H, D] (channels are head-major, the official ``(h d)``)."""
    return x.unflatten(-1, (num_heads, x.shape[-1] // num_heads))


class CrossAttentionBlock(nn.Module):
    """Anchor tokens attend to their cluster's support tokens; the official ``CrossAttention``.

    ``z + proj(attention(projq(norm1(z)), proj_kv(norm2(context))))`` for anchors with support views,
    followed by the MLP when ``ffn`` (the official ``no_self_attn`` variant); anchors without support
    views are returned unchanged. q/k/v projections have no bias, ``proj`` has one; scale D^-1/2 with
    D = C / num_heads.
    """

    def __init__(self, dim: int, num_heads: int, *, ffn: bool = False, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.projq = nn.Linear(dim, dim, bias=False)
        self.proj_kv = nn.Linear(dim, 2 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio)) if ffn else None

    def forward(self, query: torch.Tensor, context: torch.Tensor, packing: ClusterPacking) -> torch.Tensor:
        """query [b, K, n, C] anchor tokens, context [S·n, C] the support tokens of ``packing``
        (``tokens.flatten(0, 1)[packing.support_views].flatten(0, 1)``) -> [b, K, n, C]."""
        if packing.max_seqlen_k == 0:  # no anchor has support views: nothing to attend to
            return query
        b, k, n, c = query.shape
        q = _heads(self.projq(self.norm1(query)).reshape(b * k * n, c), self.num_heads)
        key, value = self.proj_kv(self.norm2(context)).chunk(2, dim=-1)
        out = kernels_core.block_sparse_attention_varlen(
            q,
            _heads(key, self.num_heads),
            _heads(value, self.num_heads),
            packing.cu_seqlens_q,
            packing.cu_seqlens_k,
            packing.max_seqlen_q,
            packing.max_seqlen_k,
            scale=self.scale,
        )
        assert isinstance(out, torch.Tensor)
        updated = query + self.proj(out.reshape(b, k, n, c))
        if self.mlp is not None:
            updated = self.mlp(updated)
        # Empty key sequences give zero rows (proj would still add its bias): keep those anchors as they are.
        return torch.where(packing.has_support[:, :, None, None], updated, query)


class SelfAttentionBlock(nn.Module):
    """Attention within each anchor view, then the MLP; the official ``Attention`` with ``ffn=True``.

    ``y = x + to_out(attention(to_qkv(norm(x))))``, ``out = mlp(y)``. ``to_qkv`` has no bias; ``to_out``
    is a biased linear layer, or the identity with one head (the official ``project_out`` rule).
    """

    def __init__(self, dim: int, num_heads: int, *, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.norm = nn.LayerNorm(dim)
        self.to_qkv = nn.Linear(dim, 3 * dim, bias=False)
        # Sequential keeps the official parameter names (to_out.0.weight).
        self.to_out: nn.Module = nn.Sequential(nn.Linear(dim, dim)) if num_heads > 1 else nn.Identity()
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [b, K, n, C] -> [b, K, n, C]; each of the b·K views is its own sequence."""
        b, k, n, c = x.shape
        q, key, value = (
            _heads(t, self.num_heads)
            for t in self.to_qkv(self.norm(x)).reshape(b * k * n, 3 * c).chunk(3, -1)
        )
        offsets = torch.arange(b * k + 1, dtype=torch.int32, device=x.device) * n
        out = kernels_core.block_sparse_attention_varlen(
            q, key, value, offsets, offsets, n, n, scale=self.scale
        )
        assert isinstance(out, torch.Tensor)
        return self.mlp(x + self.to_out(out.reshape(b, k, n, c)))
