"""One FPSAttention call: video tokens -> 3D tiles -> FP8 and/or sliding-tile attention -> back.

Works on ``[B, H, S, D]`` tensors whose S tokens are a T x H x W latent in raster order (what a
video DiT's self-attention sees after patching). The tile is the unit of sparsity (one tile per
attention block) and of quantization (Q/K scales per tile, or per sub-tile group).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

import kernels_core
from fpsattention.schedule import Phase, Triple


@dataclass(frozen=True)
class _TileLayout:
    """What a (video, tile, window) needs besides Q, K, V; built once, reused by every layer and step."""

    lists: kernels_core.masks.BlockIndices | None  # the window's key-block lists (None: dense)
    valid: torch.Tensor | None  # bool [S_tiled], False on padding (None: no padding)
    pads: torch.Tensor | None  # float [S_tiled]: padded keys each query token's window sees


@functools.lru_cache(maxsize=64)
def _tile_layout(video: Triple, tile: Triple, window: Triple | None, device: torch.device) -> _TileLayout:
    block = math.prod(tile)
    length = kernels_core.tiled_length(video, tile)
    lists = None
    if window is not None:
        lists = kernels_core.sliding_tile_block_indices(video, tile, window, device=device)
    if length == math.prod(video):
        return _TileLayout(lists, None, None)
    valid = kernels_core.tile_key_valid(video, tile, device)
    nkb = kernels_core.masks.num_blocks(length, block)
    pads_per_block = F.pad((~valid).float(), (0, nkb * block - length)).view(nkb, block).sum(-1)
    if lists is None:
        per_query_block = pads_per_block.sum().expand(nkb)
    else:
        per_query_block = lists.to_mask(nkb)[0, 0].float() @ pads_per_block
    return _TileLayout(lists, valid, per_query_block.repeat_interleave(block)[:length])


def fps_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    video_shape: Triple,
    tile: Triple,
    phase: Phase,
    *,
    scale: float | None = None,
) -> torch.Tensor:
    """Self-attention over a video latent with the phase's FP8 quantization and window.

    Args:
        q, k, v: [B, H, S, D] (GQA allowed for k/v heads), S = T*H*W tokens of ``video_shape`` in
            raster order; float32/float16/bfloat16.
        video_shape: (T, H, W) latent tokens after patching.
        tile: the 3D tile (tokens per axis).
        phase: FP8 on/off, Q/K scale group, window in tiles (None: dense).
        scale: softmax scale, default 1 / sqrt(D).

    Returns:
        [B, H, S, D] in q's dtype, differentiable (straight-through for the FP8 rounding).
    """
    tokens = math.prod(video_shape)
    if q.shape[2] != tokens or k.shape[2] != tokens:
        raise ValueError(
            f"fps_attention: q and k must hold the {tokens} tokens of a {list(video_shape)} video, "
            f"got {q.shape[2]} and {k.shape[2]}"
        )
    if not phase.fp8 and phase.window is None:
        return F.scaled_dot_product_attention(q, k, v, scale=scale, enable_gqa=q.shape[1] != k.shape[1])
    block = math.prod(tile)
    layout = _tile_layout(tuple(video_shape), tuple(tile), phase.window, q.device)  # hashable cache key
    lists, valid = layout.lists, layout.valid
    tq, tk, tv = (kernels_core.tile_reorder(x, video_shape, tile) for x in (q, k, v))
    if phase.fp8:
        group = phase.group_size(block)
        out = kernels_core.fp8_block_sparse_attention(
            tq, tk, tv, lists, block_size=(block, block), q_group=group, k_group=group,
            key_valid=valid, scale=scale, check_indices=False,
        )  # fmt: skip
        assert isinstance(out, torch.Tensor)
    else:
        out, lse = kernels_core.block_sparse_attention(
            tq, tk, tv, lists, block_size=(block, block), scale=scale, return_lse=True, check_indices=False
        )
        if layout.pads is not None:
            # The zero padding keys each took exp(0 - lse) of the probability (zero value); take it
            # back out exactly: out_real = out / (1 - n_pad * exp(-lse)). Differentiable through lse.
            correction = 1.0 - layout.pads.view(1, 1, -1, 1) * torch.exp(-lse.unsqueeze(-1))
            out = out / correction.to(out.dtype)
    return kernels_core.tile_restore(out, video_shape, tile)
