"""Cross-view transformer: global attention over the feature tokens of all views of a scene."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CrossViewTransformer", "TransformerLayer"]


class TransformerLayer(nn.Module):
    """Pre-LN attention (torch SDPA) + MLP over tokens [B, N, C]."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 2.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"TransformerLayer: dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(self.norm1(x)).view(b, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, heads, N, d]
        attn = F.scaled_dot_product_attention(q, k, v)
        x = x + self.proj(attn.transpose(1, 2).reshape(b, n, c))
        return x + self.mlp(self.norm2(x))


class CrossViewTransformer(nn.Module):
    """Features [B, V, C, h, w] -> same shape, every token attending to the tokens of all V views.

    With ``stride`` > 1 the layers run on features average-pooled by ``stride`` (1/8 resolution for
    stride 2), which divides the attention cost by stride⁴; their update is upsampled bilinearly and
    added back to the 1/4-resolution input. Views carry no view embedding, so the result is equivariant
    to the order of the views; where a token sits in its image comes from the positional encoding the
    :class:`~accel_shared.gs.encoder.ViewEncoder` added.
    """

    def __init__(self, dim: int, num_layers: int, num_heads: int, mlp_ratio: float = 2.0, stride: int = 1):
        super().__init__()
        if stride < 1:
            raise ValueError(f"CrossViewTransformer: stride must be >= 1, got {stride}")
        self.stride = stride
        self.layers = nn.ModuleList(TransformerLayer(dim, num_heads, mlp_ratio) for _ in range(num_layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if not self.layers:
            return features
        b, v, c, h, w = features.shape
        x = features.flatten(0, 1)
        if self.stride > 1:
            x = F.avg_pool2d(x, self.stride)
        hs, ws = x.shape[-2:]
        tokens = x.view(b, v, c, hs * ws).permute(0, 1, 3, 2).reshape(b, v * hs * ws, c)
        out = tokens
        for layer in self.layers:
            out = layer(out)
        update = (self.norm(out) - tokens).view(b, v, hs, ws, c).permute(0, 1, 4, 2, 3).flatten(0, 1)
        if self.stride > 1:
            update = F.interpolate(update, size=(h, w), mode="bilinear", align_corners=False)
        return features + update.view(b, v, c, h, w)
