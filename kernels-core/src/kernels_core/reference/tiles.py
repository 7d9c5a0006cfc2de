"""Pure-torch references of the tile ops: the reshape/permute form of the tile layout."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def _padded(video: Sequence[int], tile: Sequence[int]) -> list[int]:
    return [-(-v // t) * t for v, t in zip(video, tile, strict=True)]


def tile_reorder(x: torch.Tensor, video_shape: Sequence[int], tile: Sequence[int]) -> torch.Tensor:
    """b h (T H W) d -> b h (nt nh nw tt th tw) d, zero-padded to whole tiles."""
    b, h, _, d = x.shape
    t_, h_, w_ = video_shape
    tt, th, tw = tile
    pt, ph, pw = _padded(video_shape, tile)
    grid = x.reshape(b, h, t_, h_, w_, d)
    grid = F.pad(grid, (0, 0, 0, pw - w_, 0, ph - h_, 0, pt - t_))
    grid = grid.reshape(b, h, pt // tt, tt, ph // th, th, pw // tw, tw, d)
    return grid.permute(0, 1, 2, 4, 6, 3, 5, 7, 8).reshape(b, h, -1, d)


def tile_restore(x: torch.Tensor, video_shape: Sequence[int], tile: Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`tile_reorder`."""
    b, h, _, d = x.shape
    t_, h_, w_ = video_shape
    tt, th, tw = tile
    pt, ph, pw = _padded(video_shape, tile)
    grid = x.reshape(b, h, pt // tt, ph // th, pw // tw, tt, th, tw, d)
    grid = grid.permute(0, 1, 2, 5, 3, 6, 4, 7, 8).reshape(b, h, pt, ph, pw, d)
    return grid[:, :, :t_, :h_, :w_].reshape(b, h, -1, d)


def sliding_tile_token_mask(
    video_shape: Sequence[int], tile: Sequence[int], window: Sequence[int], num_text_tokens: int = 0
) -> torch.Tensor:
    """bool [S, S] over tile-ordered tokens (padding included) plus text, from tile coordinates.

    A query token in tile (a, b, c) sees a key token in tile (a', b', c') when, per axis, the key
    tile lies in the window of w tiles starting at clamp(q - w // 2, 0, n - w); text rows and
    columns are all True.
    """
    grid = [-(-v // t) for v, t in zip(video_shape, tile, strict=True)]
    tile_tokens = tile[0] * tile[1] * tile[2]
    coords = torch.stack(torch.meshgrid(*(torch.arange(n) for n in grid), indexing="ij"), dim=-1).reshape(
        -1, 3
    )
    coords = coords.repeat_interleave(tile_tokens, dim=0)  # per token
    sees = torch.ones(coords.shape[0], coords.shape[0], dtype=torch.bool)
    for axis in range(3):
        n, w = grid[axis], min(window[axis], grid[axis])
        start = (coords[:, axis] - w // 2).clamp(0, n - w)
        key = coords[:, axis]
        sees &= (key[None, :] >= start[:, None]) & (key[None, :] < start[:, None] + w)
    total = coords.shape[0] + num_text_tokens
    mask = torch.ones(total, total, dtype=torch.bool)
    mask[: coords.shape[0], : coords.shape[0]] = sees
    return mask
