"""fps_attention against exact attention under the same token mask."""

import math

import pytest
import torch
import torch.nn.functional as F

from fpsattention import Phase, fps_attention
from kernels_core import reference, tile_key_valid, tile_reorder, tile_restore

# (video, tile): divisible, and padded on every axis
CASES = [((3, 8, 8), (1, 4, 4)), ((3, 6, 7), (2, 4, 4))]


def _qkv(video, heads=2, dim=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    tokens = math.prod(video)
    return [torch.randn(1, heads, tokens, dim, generator=g) for _ in range(3)]


def _masked_reference(q, k, v, video, tile, window):
    tq, tk, tv = (tile_reorder(x, video, tile) for x in (q, k, v))
    mask = reference.sliding_tile_token_mask(video, tile, window) & tile_key_valid(video, tile)[None, :]
    return tile_restore(F.scaled_dot_product_attention(tq, tk, tv, attn_mask=mask), video, tile)


@pytest.mark.parametrize(("video", "tile"), CASES, ids=str)
def test_sparse_full_precision_is_exact_masked_attention(video, tile) -> None:
    q, k, v = _qkv(video)
    for window in [(1, 1, 1), (2, 1, 2), (9, 9, 9)]:
        out = fps_attention(q, k, v, video, tile, Phase(fp8=False, window=window))
        torch.testing.assert_close(out, _masked_reference(q, k, v, video, tile, window), atol=2e-5, rtol=2e-5)
    # A window that covers the grid is dense attention, padding taken back out exactly.
    full = fps_attention(q, k, v, video, tile, Phase(fp8=False, window=(9, 9, 9)))
    torch.testing.assert_close(full, F.scaled_dot_product_attention(q, k, v), atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize(("video", "tile"), CASES, ids=str)
def test_fp8_is_close_to_exact(video, tile) -> None:
    q, k, v = _qkv(video)
    for phase, window in [
        (Phase(fp8=True), None),
        (Phase(fp8=True, quant_group=4, window=(1, 2, 1)), (1, 2, 1)),
    ]:
        out = fps_attention(q, k, v, video, tile, phase)
        exact = (
            F.scaled_dot_product_attention(q, k, v)
            if window is None
            else _masked_reference(q, k, v, video, tile, window)
        )
        rel = ((out - exact).norm() / exact.norm()).item()
        assert 1e-4 < rel < 0.08


def test_gradients_flow_through_every_phase() -> None:
    video, tile = (3, 6, 7), (2, 4, 4)
    for phase in [Phase(fp8=True), Phase(fp8=False, window=(1, 1, 1)), Phase(fp8=True, window=(2, 1, 1))]:
        q, k, v = (x.requires_grad_() for x in _qkv(video))
        fps_attention(q, k, v, video, tile, phase).square().sum().backward()
        for x in (q, k, v):
            assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_wrong_token_count() -> None:
    q, k, v = _qkv((2, 4, 8))
    with pytest.raises(ValueError, match="must hold the 64 tokens"):
        fps_attention(q[:, :, :60], k, v, (2, 4, 8), (1, 2, 2), Phase())
