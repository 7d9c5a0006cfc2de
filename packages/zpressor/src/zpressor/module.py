"""The ZPressor module: V views in, K anchor views out (a :class:`accel_shared.gs.model.ViewCompressor`).

Per forward (the official ``ZPressor.forward``):

1. anchors and clusters: farthest point sampling on the camera centres and nearest-anchor assignment
   (:mod:`zpressor.anchors`), or k-means on class tokens when ``class_tokens`` is given;
2. ``num_layers`` times: each anchor's tokens (the anchor view of ``x`` at the first layer, then the
   previous layer's output) cross-attend to the tokens of all support views of its cluster, always
   taken from the input ``x``; then self-attention within each anchor view and an MLP.

All (batch item, anchor) pairs go through one varlen attention call per block
(:func:`kernels_core.block_sparse_attention_varlen`); :mod:`zpressor.reference` is the per-cluster loop.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from zpressor.anchors import (
    assign_views,
    camera_positions,
    check_num_anchors,
    kmeans_clusters,
    select_anchors,
)
from zpressor.attention import CrossAttentionBlock, SelfAttentionBlock, pack_clusters

__all__ = ["ZPressor", "convert_official_state_dict"]

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_CUDA_MAX_HEAD_DIM = 256  # kernels-core's CUDA attention keeps a head-dim row in registers


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"ZPressor: {name} must be a positive int, got {value!r}")
    return value


class ZPressor(nn.Module):
    """Compress V context views into K anchor views.

    Args:
        embed_dim: channels C of the features (DepthSplat / MVSplat: 128).
        num_heads: attention heads; must divide ``embed_dim`` (official default 1).
        num_layers: cross-attention (+ self-attention) layers (official default 6).
        mlp_ratio: MLP width / C (official: 4).
        self_attention: False is the official ``no_self_attn=True`` variant: no self-attention, the MLP
            follows the cross-attention instead.
        kmeans_iters: the most Lloyd iterations of the pose-free mode (:func:`~zpressor.anchors.kmeans_clusters`).

    Call ``zpressor(x, extrinsics, num_anchors=K)`` as the ViewCompressor of
    :class:`accel_shared.gs.model.FeedForwardGS`, see :meth:`forward`.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int = 1,
        num_layers: int = 6,
        mlp_ratio: float = 4.0,
        *,
        self_attention: bool = True,
        kmeans_iters: int = 100,
    ) -> None:
        super().__init__()
        self.embed_dim = _positive_int("embed_dim", embed_dim)
        self.num_heads = _positive_int("num_heads", num_heads)
        self.num_layers = _positive_int("num_layers", num_layers)
        if embed_dim % num_heads:
            raise ValueError(f"ZPressor: num_heads ({num_heads}) must divide embed_dim ({embed_dim})")
        if (
            isinstance(mlp_ratio, bool)
            or not isinstance(mlp_ratio, (int, float))
            or int(embed_dim * mlp_ratio) < 1
        ):
            raise ValueError(f"ZPressor: mlp_ratio must be a positive number, got {mlp_ratio!r}")
        self.kmeans_iters = kmeans_iters
        self.cross_attn_layers = nn.ModuleList(
            CrossAttentionBlock(embed_dim, num_heads, ffn=not self_attention, mlp_ratio=mlp_ratio)
            for _ in range(num_layers)
        )
        self.self_attn_layers = (
            nn.ModuleList(
                SelfAttentionBlock(embed_dim, num_heads, mlp_ratio=mlp_ratio) for _ in range(num_layers)
            )
            if self_attention
            else None
        )

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    def clusters(
        self,
        extrinsics: torch.Tensor | None,
        class_tokens: torch.Tensor | None,
        num_anchors: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(anchor_index [b, K], cluster [b, v]): k-means on ``class_tokens`` [b, v, C'] when given,
        else farthest point sampling on the camera centres of ``extrinsics`` [b, v, 4, 4]."""
        if class_tokens is not None:
            return kmeans_clusters(class_tokens, num_anchors, iters=self.kmeans_iters)
        if extrinsics is None:
            raise ValueError("ZPressor: pass extrinsics (camera-to-world) or class_tokens (pose-free)")
        positions = camera_positions(extrinsics)
        anchor_index = select_anchors(positions, num_anchors)
        return anchor_index, assign_views(positions, anchor_index)

    def forward(
        self,
        x: torch.Tensor,
        extrinsics: torch.Tensor | None = None,
        *,
        num_anchors: int,
        class_tokens: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Select K anchors and fuse each cluster into its anchor.

        Args:
            x: [b, v, C, h, w] per-view features (float32, float16 or bfloat16).
            extrinsics: [b, v, 4, 4] camera-to-world; unused (may be None) when ``class_tokens`` is given.
            num_anchors: K in [1, v]. With K = v every view is an anchor (in farthest-point order), no
                cluster has support views, and only the self-attention layers act, as in the official
                code; :class:`~accel_shared.gs.model.FeedForwardGS` skips the compressor then.
            class_tokens: [b, v, C'] per-view tokens for the pose-free mode (k-means; takes precedence
                over ``extrinsics``, as in the official code).

        Returns:
            (features [b, K, C, h, w], anchor_index [b, K] int64); features[:, j] belongs to view
            anchor_index[:, j].
        """
        b, v = self._check_features(x)
        k = check_num_anchors(num_anchors, v)
        if extrinsics is not None:
            _check_per_view("extrinsics", extrinsics, (b, v, 4, 4), "[b, v, 4, 4]")
        if class_tokens is not None:
            _check_per_view("class_tokens", class_tokens, (b, v, None), "[b, v, C']")
        anchor_index, cluster = self.clusters(extrinsics, class_tokens, k)
        return self.compress(x, anchor_index, cluster), anchor_index

    def compress(self, x: torch.Tensor, anchor_index: torch.Tensor, cluster: torch.Tensor) -> torch.Tensor:
        """The layers for given anchors and clusters (the official ``cross_matching`` / ``self_matching``).

        Args:
            x: [b, v, C, h, w] features.
            anchor_index: [b, K] int64 view of each anchor slot.
            cluster: [b, v] int64 slot in [0, K) of each view; the support of slot j is every view with
                ``cluster == j`` other than ``anchor_index[:, j]``.

        Returns:
            [b, K, C, h, w] the anchors' features.
        """
        b, v = self._check_features(x)
        _check_index("anchor_index", anchor_index, (b, None), v)
        k = anchor_index.shape[1]
        _check_index("cluster", cluster, (b, v), k)
        _, _, c, h, w = x.shape
        n = h * w
        tokens = x.flatten(3).transpose(2, 3)  # [b, v, n, C], 'b v f h w -> b v (h w) f'
        packing = pack_clusters(cluster, anchor_index, n)
        context = tokens.flatten(0, 1)[packing.support_views].flatten(0, 1)  # [S·n, C], from the input x
        z = torch.gather(tokens, 1, anchor_index[:, :, None, None].expand(-1, -1, n, c))  # [b, K, n, C]
        for layer in range(self.num_layers):
            z = self.cross_attn_layers[layer](z, context, packing)
            if self.self_attn_layers is not None:
                z = self.self_attn_layers[layer](z)
        return z.transpose(2, 3).reshape(b, k, c, h, w)

    def _check_features(self, x: object) -> tuple[int, int]:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"ZPressor: x must be a torch.Tensor [b, v, C, h, w], got {type(x).__name__}")
        if x.dim() != 5 or x.shape[2] != self.embed_dim or x.shape[1] < 1:
            raise ValueError(
                f"ZPressor: x must have shape [b, v, {self.embed_dim}, h, w] with v >= 1, got {list(x.shape)}"
            )
        if x.dtype not in _DTYPES:
            raise TypeError(f"ZPressor: x must be float32, float16 or bfloat16, got {x.dtype}")
        if x.device.type == "cuda" and self.head_dim > _CUDA_MAX_HEAD_DIM:
            raise ValueError(
                f"ZPressor: embed_dim / num_heads = {self.head_dim} exceeds the head dimension of "
                f"{_CUDA_MAX_HEAD_DIM} that kernels-core's CUDA attention supports; use more heads"
            )
        return x.shape[0], x.shape[1]


def _check_per_view(name: str, value: object, shape: tuple[int | None, ...], layout: str) -> None:
    """``value`` is a tensor of ``shape`` (None: any size)."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"ZPressor: {name} must be a torch.Tensor {layout}, got {type(value).__name__}")
    if value.dim() != len(shape) or any(
        s is not None and s != d for s, d in zip(shape, value.shape, strict=True)
    ):
        expected = [s if s is not None else "any" for s in shape]
        raise ValueError(f"ZPressor: {name} must have shape {layout} = {expected}, got {list(value.shape)}")


def _check_index(name: str, index: object, shape: tuple[int, int | None], bound: int) -> None:
    if not isinstance(index, torch.Tensor):
        raise TypeError(f"ZPressor: {name} must be a torch.Tensor, got {type(index).__name__}")
    if index.dtype != torch.int64:
        raise TypeError(f"ZPressor: {name} must have dtype torch.int64, got {index.dtype}")
    if (
        index.dim() != 2
        or index.shape[0] != shape[0]
        or (shape[1] is not None and index.shape[1] != shape[1])
    ):
        layout = f"[{shape[0]}, {'K' if shape[1] is None else shape[1]}]"
        raise ValueError(f"ZPressor: {name} must have shape {layout}, got {list(index.shape)}")
    if index.shape[1] < 1 or bool(((index < 0) | (index >= bound)).any()):
        raise ValueError(f"ZPressor: {name} must be non-empty with values in [0, {bound})")


def convert_official_state_dict(
    state: Mapping[str, torch.Tensor], prefix: str = ""
) -> dict[str, torch.Tensor]:
    """Official ZPressor weights -> this module's ``state_dict`` keys.

    The official module keeps one list of layers per feature level (``cross_attn_layers.0.3.projq.weight``);
    this one has a single level (``cross_attn_layers.3.projq.weight``); all other names are the same.

    Args:
        state: an official ``ZPressor`` state dict, or a whole checkpoint with its keys under ``prefix``
            (e.g. ``"encoder.depth_predictor.zipmatch."`` in DepthSplat); other keys are ignored.
        prefix: the key prefix of the ZPressor weights in ``state``.

    Raises:
        ValueError: when no ZPressor weights are found or they hold several feature levels.
    """
    converted: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix) :]
        group, _, rest = name.partition(".")
        if group not in ("cross_attn_layers", "self_attn_layers"):
            continue
        level, _, rest = rest.partition(".")
        if level != "0":
            raise ValueError(
                f"convert_official_state_dict: {key!r} belongs to feature level {level}; only one level "
                "(an int embed_dim) is supported"
            )
        converted[f"{group}.{rest}"] = value
    if not converted:
        raise ValueError(f"convert_official_state_dict: no ZPressor weights under prefix {prefix!r}")
    return converted
