"""A plain-torch, loop-per-batch-item, loop-per-cluster version of the official ZPressor.

It mirrors the structure of the official code (``zpressor/zpressor.py``: ``farthest_point_sample``,
``assign_points_to_clusters``, ``cross_matching``, ``self_matching``; ``zpressor/attention.py``:
``CrossAttention`` and ``Attention`` with their "default" matmul-softmax path) and runs the weights of a
:class:`~zpressor.ZPressor`. It is slow and exists for parity tests and as documentation of the
behaviour the batched module reproduces.
"""

from __future__ import annotations

import torch

from zpressor.attention import CrossAttentionBlock, Mlp, SelfAttentionBlock
from zpressor.module import ZPressor

__all__ = [
    "reference_assign_views",
    "reference_compress",
    "reference_farthest_point_sample",
    "reference_forward",
]


def reference_farthest_point_sample(xyz: torch.Tensor, npoint: int) -> torch.Tensor:
    """The official ``farthest_point_sample``: xyz [B, N, 3] -> [B, npoint] int64.

    Distances start at 1e10 and chosen points are set to 0 (so a chosen point can be chosen again
    once every other point coincides with a chosen one; :func:`zpressor.select_anchors` never does).
    """
    b, n, _ = xyz.shape
    centroids = torch.zeros(b, npoint, dtype=torch.long, device=xyz.device)
    distance = torch.ones(b, n, device=xyz.device, dtype=xyz.dtype) * 1e10
    batch = torch.arange(b, dtype=torch.long, device=xyz.device)
    barycenter = (torch.sum(xyz, 1) / n).view(b, 1, 3)
    farthest = torch.max(torch.sum((xyz - barycenter) ** 2, -1), 1)[1]
    selected = torch.zeros(b, n, dtype=torch.bool, device=xyz.device)
    for i in range(npoint):
        centroids[:, i] = farthest
        selected[batch, farthest] = True
        dist = torch.sum((xyz - xyz[batch, farthest, :].view(b, 1, 3)) ** 2, -1)
        dist[selected] = 0.0
        mask = dist < distance
        distance[mask] = dist[mask]
        farthest = torch.max(distance, -1)[1]
    return centroids


def reference_assign_views(xyz: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """The official ``assign_points_to_clusters``: nearest centroid per point, one batch item at a time."""
    clusters = torch.zeros(xyz.shape[:2], dtype=torch.long, device=xyz.device)
    for i in range(xyz.shape[0]):
        points = xyz[i]
        dist = torch.sum((points.unsqueeze(1) - points[centroids[i]]) ** 2, dim=-1)
        clusters[i] = torch.argmin(dist, dim=1)
    return clusters


def _heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """[B, N, H·D] -> [B, H, N, D]."""
    b, n, c = x.shape
    return x.reshape(b, n, num_heads, c // num_heads).permute(0, 2, 1, 3)


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """[B, H, Nq, D] x [B, H, Nk, D] -> [B, Nq, H·D] by an explicit softmax."""
    attn = ((q @ k.transpose(-2, -1)) * scale).softmax(dim=-1)
    out = attn @ v
    return out.transpose(1, 2).reshape(out.shape[0], out.shape[2], -1)


def _mlp(mlp: Mlp, x: torch.Tensor) -> torch.Tensor:
    return mlp.fc2(torch.nn.functional.gelu(mlp.fc1(mlp.norm(x)))) + x


def _cross(block: CrossAttentionBlock, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """The official ``CrossAttention.forward``: query [1, Nq, C], context [1, Nk, C] -> [1, Nq, C]."""
    q = _heads(block.projq(block.norm1(query)), block.num_heads)
    k, v = block.proj_kv(block.norm2(context)).chunk(2, dim=-1)
    x = block.proj(_attention(q, _heads(k, block.num_heads), _heads(v, block.num_heads), block.scale))
    return _mlp(block.mlp, x + query) if block.mlp is not None else x + query


def _self(block: SelfAttentionBlock, x: torch.Tensor) -> torch.Tensor:
    """The official ``Attention.forward`` with ``ffn=True``: x [K, n, C] -> [K, n, C]."""
    q, k, v = (_heads(t, block.num_heads) for t in block.to_qkv(block.norm(x)).chunk(3, dim=-1))
    out = block.to_out(_attention(q, k, v, block.scale))
    return _mlp(block.mlp, out + x)


def reference_compress(
    module: ZPressor, x: torch.Tensor, anchor_index: torch.Tensor, cluster: torch.Tensor
) -> torch.Tensor:
    """The official layer loop (``cross_matching`` then ``self_matching``) with ``module``'s weights.

    x [b, v, C, h, w], anchor_index [b, K], cluster [b, v] -> [b, K, C, h, w].
    """
    b, v, c, h, w = x.shape
    k = anchor_index.shape[1]
    tokens = x.permute(0, 1, 3, 4, 2).reshape(b, v, h * w, c)  # 'b v f h w -> b v (h w) f'
    output: torch.Tensor | None = None
    for layer in range(module.num_layers):
        cross = module.cross_attn_layers[layer]
        assert isinstance(cross, CrossAttentionBlock)
        per_item = []
        for i in range(b):
            per_cluster = []
            for j in range(k):
                center_idx = int(anchor_index[i, j])
                center = tokens[i, center_idx][None] if output is None else output[i, j][None]
                idx = cluster[i] == j
                idx[center_idx] = False  # the anchor's own view is not in its context
                context = tokens[i][idx].reshape(-1, c)[None]  # always from the input x
                if context.shape[1] > 0:  # a cluster without support views keeps its anchor as it is
                    center = _cross(cross, center, context)
                per_cluster.append(center)
            per_item.append(torch.cat(per_cluster, dim=0))
        output = torch.stack(per_item, dim=0)
        if module.self_attn_layers is not None:
            block = module.self_attn_layers[layer]
            assert isinstance(block, SelfAttentionBlock)
            output = torch.stack([_self(block, output[i]) for i in range(b)], dim=0)
    assert output is not None
    return output.reshape(b, k, h, w, c).permute(0, 1, 4, 2, 3)


def reference_forward(
    module: ZPressor,
    x: torch.Tensor,
    extrinsics: torch.Tensor | None = None,
    *,
    num_anchors: int,
    class_tokens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The official ``ZPressor.forward``: anchors by the official FPS and assignment (k-means through
    :func:`zpressor.kmeans_clusters` with ``class_tokens``), then :func:`reference_compress`."""
    if class_tokens is not None:
        anchor_index, cluster = module.clusters(None, class_tokens, num_anchors)
    else:
        assert extrinsics is not None
        positions = extrinsics[:, :, :3, -1]
        anchor_index = reference_farthest_point_sample(positions, num_anchors)
        cluster = reference_assign_views(positions, anchor_index)
    return reference_compress(module, x, anchor_index, cluster), anchor_index
