"""3D tiles of video tokens: tile-contiguous reordering and sliding-tile window masks.

A video of T x H x W tokens (frame-major, then rows, then columns) is cut into tiles of
tt x th x tw tokens. :func:`tile_reorder` lays the tokens out tile after tile (tiles in
(t, h, w) raster order, tokens inside a tile in raster order too), padding the video with zeros
up to a multiple of the tile; :func:`tile_restore` is its inverse. In that layout a tile is a
contiguous block of ``tt * th * tw`` tokens, so the block-sparse and FP8 kernels see one tile per
block, and :func:`sliding_tile_block_indices` gives each query tile the window of key tiles around
it (Sliding Tile Attention's mask). :func:`tile_key_valid` marks the padding.

Both directions are one gather or scatter along the token axis with a cached index (the same
torch code on every device: the move is bandwidth-bound, a custom kernel would gain nothing), and
are differentiable (each one's backward is the other).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch

from kernels_core import _checks
from kernels_core.masks import BlockIndices

Triple = tuple[int, int, int]


def _triple(name: str, value: object) -> Triple:
    if (
        not isinstance(value, Sequence)
        or len(value) != 3
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        raise ValueError(f"{name} must be three positive ints (t, h, w), got {value!r}")
    return (int(value[0]), int(value[1]), int(value[2]))


def tile_grid(video_shape: Sequence[int], tile: Sequence[int]) -> Triple:
    """Number of tiles along (t, h, w): ceil(video / tile) per axis."""
    video, size = _triple("video_shape", video_shape), _triple("tile", tile)
    return (
        -(-video[0] // size[0]),
        -(-video[1] // size[1]),
        -(-video[2] // size[2]),
    )


def tiled_length(video_shape: Sequence[int], tile: Sequence[int]) -> int:
    """Tokens in the tile-ordered (padded) sequence."""
    grid, size = tile_grid(video_shape, tile), _triple("tile", tile)
    return grid[0] * grid[1] * grid[2] * size[0] * size[1] * size[2]


@functools.cache
def _positions(video: Triple, tile: Triple, device: torch.device) -> torch.Tensor:
    """int64 [T*H*W]: where each video token lands in the tile-ordered sequence."""
    _, nh, nw = tile_grid(video, tile)
    tt, th, tw = tile
    t, h, w = torch.meshgrid(
        torch.arange(video[0]), torch.arange(video[1]), torch.arange(video[2]), indexing="ij"
    )
    tile_index = ((t // tt) * nh + h // th) * nw + w // tw
    inside = ((t % tt) * th + h % th) * tw + w % tw
    return (tile_index * (tt * th * tw) + inside).reshape(-1).to(device)


def _check_video_tokens(name: str, x: object, length: int, what: str) -> torch.Tensor:
    _checks.check_tensor(name, x, 4, "[B, H, S, D]")
    assert isinstance(x, torch.Tensor)
    if x.shape[2] != length:
        raise ValueError(f"{name} must hold {length} tokens in dim 2 ({what}), got {x.shape[2]}")
    return x


@torch.library.custom_op("kernels_core::tile_reorder", mutates_args=())
def _reorder_op(x: torch.Tensor, video_shape: list[int], tile: list[int]) -> torch.Tensor:
    video, size = _triple("video_shape", video_shape), _triple("tile", tile)
    out = x.new_zeros(x.shape[0], x.shape[1], tiled_length(video, size), x.shape[3])
    return out.index_copy_(2, _positions(video, size, x.device), x)


@_reorder_op.register_fake
def _reorder_fake(x: torch.Tensor, video_shape: list[int], tile: list[int]) -> torch.Tensor:
    return x.new_empty(x.shape[0], x.shape[1], tiled_length(video_shape, tile), x.shape[3])


@torch.library.custom_op("kernels_core::tile_restore", mutates_args=())
def _restore_op(x: torch.Tensor, video_shape: list[int], tile: list[int]) -> torch.Tensor:
    video, size = _triple("video_shape", video_shape), _triple("tile", tile)
    return x.index_select(2, _positions(video, size, x.device))


@_restore_op.register_fake
def _restore_fake(x: torch.Tensor, video_shape: list[int], tile: list[int]) -> torch.Tensor:
    video = _triple("video_shape", video_shape)
    return x.new_empty(x.shape[0], x.shape[1], video[0] * video[1] * video[2], x.shape[3])


def _reorder_backward(ctx, grad):  # type: ignore[no-untyped-def]
    return torch.ops.kernels_core.tile_restore(grad.contiguous(), ctx.video, ctx.tile), None, None


def _restore_backward(ctx, grad):  # type: ignore[no-untyped-def]
    return torch.ops.kernels_core.tile_reorder(grad.contiguous(), ctx.video, ctx.tile), None, None


def _save_shape(ctx, inputs, output):  # type: ignore[no-untyped-def]
    ctx.video, ctx.tile = list(inputs[1]), list(inputs[2])


_reorder_op.register_autograd(_reorder_backward, setup_context=_save_shape)
_restore_op.register_autograd(_restore_backward, setup_context=_save_shape)


def tile_reorder(x: torch.Tensor, video_shape: Sequence[int], tile: Sequence[int]) -> torch.Tensor:
    """Video tokens [B, H, T*Hv*W, D] (raster order) -> tile-contiguous [B, H, tiled_length, D].

    The video is padded with zero tokens up to a multiple of the tile; :func:`tile_key_valid`
    marks them. Differentiable.
    """
    video, size = _triple("video_shape", video_shape), _triple("tile", tile)
    _check_video_tokens("x", x, video[0] * video[1] * video[2], f"T*H*W of video_shape {list(video)}")
    return torch.ops.kernels_core.tile_reorder(x, list(video), list(size))


def tile_restore(x: torch.Tensor, video_shape: Sequence[int], tile: Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`tile_reorder`: [B, H, tiled_length, D] -> [B, H, T*Hv*W, D], padding dropped."""
    video, size = _triple("video_shape", video_shape), _triple("tile", tile)
    _check_video_tokens(
        "x", x, tiled_length(video, size), f"the tiled length of {list(video)} in tiles {list(size)}"
    )
    return torch.ops.kernels_core.tile_restore(x, list(video), list(size))


def tile_key_valid(
    video_shape: Sequence[int], tile: Sequence[int], device: torch.device | str = "cpu"
) -> torch.Tensor:
    """bool [tiled_length]: True for real tokens, False for the padding :func:`tile_reorder` adds."""
    video, size = _triple("video_shape", video_shape), _triple("tile", tile)
    valid = torch.zeros(tiled_length(video, size), dtype=torch.bool, device=device)
    valid[_positions(video, size, torch.device(device))] = True
    return valid


def sliding_tile_block_indices(
    video_shape: Sequence[int],
    tile: Sequence[int],
    window: Sequence[int],
    *,
    num_text_tokens: int = 0,
    device: torch.device | str = "cpu",
) -> BlockIndices:
    """Sliding-tile attention as key-block lists for tile-ordered tokens (block size = one tile).

    Each query tile attends to ``window`` = (wt, wh, ww) key tiles per axis, centred on it and
    shifted to stay inside the tile grid (so every query tile sees the same number of tiles; a
    window at least as large as the grid covers the whole axis). Text tokens, appended after the
    video tiles and split into blocks of the tile's size, attend to everything and are attended
    by every query.

    Returns:
        :class:`~kernels_core.masks.BlockIndices` with counts [1, 1, nqb] and ascending indices
        [1, 1, nqb, L], broadcasting over batch and heads; nqb = tiles + text blocks.
    """
    grid, size, win = tile_grid(video_shape, tile), _triple("tile", tile), _triple("window", window)
    if isinstance(num_text_tokens, bool) or not isinstance(num_text_tokens, int) or num_text_tokens < 0:
        raise ValueError(f"num_text_tokens must be a non-negative int, got {num_text_tokens!r}")
    tile_tokens = size[0] * size[1] * size[2]
    text_blocks = -(-num_text_tokens // tile_tokens)
    num_tiles = grid[0] * grid[1] * grid[2]

    def axis_window(n: int, w: int) -> torch.Tensor:
        """[n, n] bool: key tile j is inside the window of query tile i along one axis."""
        w = min(w, n)
        start = (torch.arange(n) - w // 2).clamp(0, n - w)
        j = torch.arange(n)
        return (j >= start[:, None]) & (j < start[:, None] + w)

    at, ah, aw = (axis_window(n, w) for n, w in zip(grid, win, strict=True))
    video_mask = (
        at[:, None, None, :, None, None] & ah[None, :, None, None, :, None] & aw[None, None, :, None, None, :]
    )
    video_mask = video_mask.reshape(num_tiles, num_tiles)
    total = num_tiles + text_blocks
    mask = torch.ones(total, total, dtype=torch.bool)
    mask[:num_tiles, :num_tiles] = video_mask
    counts = mask.sum(-1, dtype=torch.int32)
    width = int(counts.max())
    order = torch.where(mask, torch.arange(total), total).sort(dim=-1).values[:, :width]
    indices = torch.where(order < total, order, -1).to(torch.int32)
    return BlockIndices(counts.view(1, 1, total).to(device), indices.view(1, 1, total, width).to(device))
