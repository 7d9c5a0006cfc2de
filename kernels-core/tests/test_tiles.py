"""3D tile reordering and sliding-tile masks against their pure-torch references."""

import pytest
import torch

import kernels_core
from kernels_core import masks, reference

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
# (video T, H, W), tile: divisible, padded on every axis, tile larger than the video on one axis.
CASES = [((4, 8, 8), (2, 4, 4)), ((5, 7, 9), (2, 4, 4)), ((3, 6, 10), (6, 8, 8)), ((1, 1, 1), (1, 2, 3))]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("video", "tile"), CASES, ids=str)
def test_reorder_and_restore_match_reference(video, tile, device) -> None:
    x = torch.randn(2, 3, video[0] * video[1] * video[2], 5, device=device)
    tiled = kernels_core.tile_reorder(x, video, tile)
    torch.testing.assert_close(tiled, reference.tile_reorder(x, video, tile), atol=0, rtol=0)
    assert tiled.shape[2] == kernels_core.tiled_length(video, tile)
    torch.testing.assert_close(kernels_core.tile_restore(tiled, video, tile), x, atol=0, rtol=0)
    valid = kernels_core.tile_key_valid(video, tile, device)
    assert int(valid.sum()) == x.shape[2]
    assert (tiled[:, :, ~valid] == 0).all()


def test_a_tile_is_contiguous() -> None:
    video, tile = (4, 4, 6), (2, 2, 3)
    coords = torch.stack(torch.meshgrid(*(torch.arange(n) for n in video), indexing="ij"), -1).reshape(
        1, 1, -1, 3
    )
    tiled = kernels_core.tile_reorder(coords.float(), video, tile)[0, 0]
    first = tiled[:12]  # tile (0, 0, 0)
    assert first.amax(0).tolist() == [1, 1, 2] and first.amin(0).tolist() == [0, 0, 0]
    second = tiled[12:24]  # tile (0, 0, 1): next along w
    assert second[:, 2].amin() == 3


def test_reorder_gradients() -> None:
    video, tile = (3, 5, 6), (2, 2, 4)
    x = torch.randn(1, 2, 90, 4, requires_grad=True)
    torch.autograd.gradcheck(
        lambda t: kernels_core.tile_reorder(t, video, tile), (x.double().detach().requires_grad_(),)
    )
    y = torch.randn(1, 2, kernels_core.tiled_length(video, tile), 4, dtype=torch.double, requires_grad=True)
    torch.autograd.gradcheck(lambda t: kernels_core.tile_restore(t, video, tile), (y,))


def test_reorder_bad_input() -> None:
    with pytest.raises(ValueError, match="must hold 24 tokens"):
        kernels_core.tile_reorder(torch.randn(1, 1, 20, 4), (2, 3, 4), (1, 2, 2))
    with pytest.raises(ValueError, match="tile must be three positive ints"):
        kernels_core.tile_reorder(torch.randn(1, 1, 24, 4), (2, 3, 4), (0, 2, 2))


@pytest.mark.parametrize(
    ("video", "tile", "window", "text"),
    [
        ((4, 8, 8), (2, 4, 4), (1, 1, 1), 0),
        ((6, 12, 16), (2, 4, 4), (3, 3, 3), 0),
        ((5, 7, 9), (2, 4, 4), (2, 1, 3), 20),
        ((4, 8, 8), (2, 4, 4), (9, 9, 9), 5),
    ],
    ids=str,
)
def test_sliding_tile_mask_matches_token_reference(video, tile, window, text) -> None:
    lists = kernels_core.sliding_tile_block_indices(video, tile, window, num_text_tokens=text)
    tile_tokens = tile[0] * tile[1] * tile[2]
    length = kernels_core.tiled_length(video, tile) + text
    nkb = masks.num_blocks(length, tile_tokens)
    block_mask = lists.to_mask(nkb)[0, 0]
    token_mask = block_mask.repeat_interleave(tile_tokens, 0).repeat_interleave(tile_tokens, 1)[
        :length, :length
    ]
    expected = reference.sliding_tile_token_mask(video, tile, window, text)
    assert torch.equal(token_mask, expected)
    # Every video query tile sees the same number of tiles (the window is shifted, not cut).
    grid = kernels_core.tile_grid(video, tile)
    tiles = grid[0] * grid[1] * grid[2]
    per_tile = [min(w, n) for w, n in zip(window, grid, strict=True)]
    text_blocks = nkb - tiles
    assert (lists.counts[0, 0, :tiles] == per_tile[0] * per_tile[1] * per_tile[2] + text_blocks).all()


def test_sliding_tile_attention_end_to_end() -> None:
    """Tile-ordered sparse attention equals dense attention under the token-level mask."""
    video, tile, window = (4, 6, 6), (2, 3, 3), (1, 2, 2)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 144, 16, generator=g) for _ in range(3))
    tq, tk, tv = (kernels_core.tile_reorder(x, video, tile) for x in (q, k, v))
    lists = kernels_core.sliding_tile_block_indices(video, tile, window)
    out = kernels_core.tile_restore(
        kernels_core.block_sparse_attention(tq, tk, tv, lists, block_size=(18, 18)), video, tile
    )
    token_mask = reference.sliding_tile_token_mask(video, tile, window)
    dense = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, attn_mask=token_mask)
    torch.testing.assert_close(out, kernels_core.tile_restore(dense, video, tile), atol=1e-5, rtol=1e-5)
