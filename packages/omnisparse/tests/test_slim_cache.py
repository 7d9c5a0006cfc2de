"""SlimKVCache / SlimLayer (per-head pools read through kv_indices) and the decode keep rule."""

from __future__ import annotations

import math

import pytest
import torch

import kernels_core
from omnisparse import OmniSparseConfig, SlimKVCache, SlimLayer
from omnisparse.decode_selection import decode_keep_positions, observed_attention

B, HQ, HKV, S, D = 2, 4, 2, 24, 8
GROUPS = HQ // HKV


def randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def dense_layer(seed: int = 0) -> tuple[SlimLayer, torch.Tensor, torch.Tensor]:
    keys, values = randn(B, HKV, S, D, seed=seed), randn(B, HKV, S, D, seed=seed + 1)
    layer = SlimLayer()
    out_k, out_v = layer.update(keys, values)
    assert torch.equal(out_k, keys) and torch.equal(out_v, values)
    return layer, keys, values


# uneven per-head lists: a head keeping a single token, one keeping none, different totals per item
KEEP = [
    [torch.tensor([0, 3, 4, 10, 17, 23]), torch.tensor([5])],
    [torch.tensor([], dtype=torch.long), torch.tensor([1, 2, 6, 7, 8, 9, 11, 20, 21, 22, 23])],
]


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Softmax attention of q [Sq, D] over k, v [N, D] (zeros when N == 0)."""
    if k.shape[0] == 0:
        return torch.zeros_like(q)
    weights = torch.softmax(q @ k.T / math.sqrt(q.shape[-1]), dim=-1)
    return weights @ v


def gathered_reference(
    q: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    keep: list[list[torch.Tensor]],
    new_k: list,
    new_v: list,
) -> torch.Tensor:
    """Each query head attends to its key/value head's kept positions of the original dense cache,
    followed by every token appended since."""
    out = torch.zeros_like(q)
    for b in range(B):
        for hq in range(HQ):
            h = hq // GROUPS
            k = torch.cat([keys[b, h, keep[b][h]], *[n[b, h] for n in new_k]])
            v = torch.cat([values[b, h, keep[b][h]], *[n[b, h] for n in new_v]])
            out[b, hq] = attend(q[b, hq], k, v)
    return out


def decode(layer: SlimLayer, q: torch.Tensor, k_pool: torch.Tensor, v_pool: torch.Tensor) -> torch.Tensor:
    out = kernels_core.decode_attention(
        q, k_pool, v_pool, kv_indices=layer.kv_indices, kv_counts=layer.kv_counts
    )
    assert isinstance(out, torch.Tensor)
    return out


def test_slim_then_decode_matches_gathered_attention() -> None:
    layer, keys, values = dense_layer()
    layer.slim(KEEP)
    assert layer.is_slim and not layer.is_croppable
    assert layer.kv_counts.tolist() == [[6, 1], [0, 11]]
    new_k: list[torch.Tensor] = []
    new_v: list[torch.Tensor] = []
    for step in range(4):
        k_new, v_new = randn(B, HKV, 1, D, seed=10 + step), randn(B, HKV, 1, D, seed=20 + step)
        new_k.append(k_new)
        new_v.append(v_new)
        k_pool, v_pool = layer.update(k_new, v_new)
        assert k_pool.shape[:2] == (B, HKV) and k_pool.stride(1) == 0  # the shared pool, broadcast over heads
        assert layer.get_seq_length() == S + step + 1
        q = randn(B, HQ, 1, D, seed=30 + step)
        expected = gathered_reference(q, keys, values, KEEP, new_k, new_v)
        torch.testing.assert_close(decode(layer, q, k_pool, v_pool), expected, atol=1e-5, rtol=1e-5)
    assert layer.kv_counts.tolist() == [[10, 5], [4, 15]]


def test_multi_token_update_appends_to_every_head_list() -> None:
    layer, keys, values = dense_layer(seed=3)
    layer.slim(KEEP)
    k1, v1 = randn(B, HKV, 2, D, seed=40), randn(B, HKV, 2, D, seed=41)
    k2, v2 = randn(B, HKV, 3, D, seed=42), randn(B, HKV, 3, D, seed=43)
    layer.update(k1, v1)
    k_pool, v_pool = layer.update(k2, v2)
    assert layer.get_seq_length() == S + 5
    for b in range(B):
        for h in range(HKV):
            rows = layer.kv_indices[b, h, : int(layer.kv_counts[b, h])].long()
            assert bool((rows >= 0).all()) and len(set(rows.tolist())) == rows.numel()
            expected_k = torch.cat([keys[b, h, KEEP[b][h]], k1[b, h], k2[b, h]])
            expected_v = torch.cat([values[b, h, KEEP[b][h]], v1[b, h], v2[b, h]])
            assert torch.equal(k_pool[b, h, rows], expected_k)
            assert torch.equal(v_pool[b, h, rows], expected_v)


def test_keeping_everything_equals_dense_attention() -> None:
    layer, keys, values = dense_layer(seed=5)
    layer.slim([[torch.arange(S)] * HKV for _ in range(B)])
    all_k, all_v = [keys], [values]
    for step in range(3):
        k_new, v_new = randn(B, HKV, 1, D, seed=50 + step), randn(B, HKV, 1, D, seed=60 + step)
        all_k.append(k_new)
        all_v.append(v_new)
        k_pool, v_pool = layer.update(k_new, v_new)
        q = randn(B, HQ, 1, D, seed=70 + step)
        dense = torch.nn.functional.scaled_dot_product_attention(
            q, torch.cat(all_k, 2), torch.cat(all_v, 2), enable_gqa=True
        )
        torch.testing.assert_close(decode(layer, q, k_pool, v_pool), dense, atol=1e-5, rtol=1e-5)


def test_nbytes_shrinks_when_positions_are_dropped() -> None:
    layer, keys, values = dense_layer()
    dense_bytes = 2 * keys.numel() * keys.element_size()
    assert layer.nbytes() == dense_bytes
    layer.slim(KEEP)
    assert layer.nbytes() < dense_bytes
    # the pool holds the longest item's kept rows (0 + 11 = 11 vs 6 + 1 = 7), plus the index lists
    assert layer.nbytes() >= 2 * B * 11 * D * 4
    full, _, _ = dense_layer()
    full.slim([[torch.arange(S)] * HKV for _ in range(B)])
    assert full.nbytes() > layer.nbytes()

    cache = SlimKVCache(num_layers=2)
    for i in range(2):
        cache.update(keys, values, i)
    assert cache.nbytes() == 2 * dense_bytes
    cache.layer(0).slim(KEEP)
    assert cache.nbytes() == layer.nbytes() + dense_bytes
    kept = cache.kept_tokens()
    assert kept[0].tolist() == [[6, 1], [0, 11]] and kept[1].tolist() == [[S, S], [S, S]]


def test_crop_after_slim_raises_and_before_slim_crops() -> None:
    layer, keys, _ = dense_layer()
    layer.crop(-4)
    assert layer.get_seq_length() == S - 4 and torch.equal(layer.keys, keys[:, :, : S - 4])
    layer.slim([[torch.arange(S - 4)] * HKV for _ in range(B)])
    with pytest.raises(RuntimeError, match="cannot be cropped"):
        layer.crop(-1)
    with pytest.raises(RuntimeError, match="already slimmed"):
        layer.slim(KEEP)
    with pytest.raises(RuntimeError, match="beam search"):
        layer.reorder_cache(torch.tensor([1, 0]))


def test_slim_checks_the_keep_lists() -> None:
    layer, _, _ = dense_layer()
    with pytest.raises(ValueError, match="keep must list 2 heads for each of 2 items"):
        layer.slim(KEEP[:1])
    with pytest.raises(ValueError, match="keep must list"):
        layer.slim([KEEP[0][:1], KEEP[1]])
    assert not layer.is_slim


def test_seq_length_counts_logical_tokens() -> None:
    cache = SlimKVCache(num_layers=3)
    assert cache.get_seq_length() == 0
    keys, values = randn(B, HKV, S, D, seed=0), randn(B, HKV, S, D, seed=1)
    for i in range(3):
        cache.update(keys, values, i)
    assert cache.get_seq_length() == S
    for i in range(3):
        cache.layer(i).slim(KEEP)
    assert cache.get_seq_length() == S  # not the 7 / 11 pooled rows
    assert cache.layer(0).get_mask_sizes(1) == (S + 1, 0)
    for i in range(3):
        cache.update(randn(B, HKV, 2, D, seed=9), randn(B, HKV, 2, D, seed=8), i)
    assert cache.get_seq_length() == S + 2
    cache.reset()
    assert cache.get_seq_length() == 0 and not cache.layer(0).is_slim


def test_cache_needs_config_or_layer_count() -> None:
    from accel_shared.tiny_models import tiny_config

    with pytest.raises(ValueError, match="config="):
        SlimKVCache()
    assert len(SlimKVCache(config=tiny_config("qwen2-vl")).layers) == 2
    assert all(isinstance(layer, SlimLayer) for layer in SlimKVCache(num_layers=4).layers)


# ---------------------------------------------------------------------------------------------
# decode_keep_positions
# ---------------------------------------------------------------------------------------------
SK, SQ, WINDOW, RECENT = 40, 30, 6, 13  # the recent window (27..39) covers visual tokens 27..29


def visual_mask() -> torch.Tensor:
    """bool [B, SK]: text 0..3, visual 4..29, text 30..39; item 1 has one more text token at 15."""
    visual = torch.zeros(B, SK, dtype=torch.bool)
    visual[:, 4:30] = True
    visual[1, 15] = False
    return visual


def reference_observed(q: torch.Tensor, k: torch.Tensor, window: int) -> torch.Tensor:
    sq, sk = q.shape[2], k.shape[2]
    out = torch.zeros(B, HKV, sk)
    for b in range(B):
        for hq in range(HQ):
            for t in range(sq - window, sq):
                pos = sk - sq + t
                logits = q[b, hq, t] @ k[b, hq // GROUPS, : pos + 1].T / math.sqrt(D)
                out[b, hq // GROUPS, : pos + 1] += torch.softmax(logits, -1) / window
    return out


def test_observed_attention_matches_reference() -> None:
    q, k = randn(B, HQ, SQ, D, seed=1), randn(B, HKV, SK, D, seed=2)
    mass = observed_attention(q, k, WINDOW, 1 / math.sqrt(D))
    torch.testing.assert_close(mass, reference_observed(q, k, WINDOW), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mass.sum(-1), torch.full((B, HKV), float(GROUPS)))


def test_keep_positions_keep_text_recent_and_cover_decode_gamma() -> None:
    q, k = randn(B, HQ, SQ, D, seed=1), randn(B, HKV, SK, D, seed=2)
    visual = visual_mask()
    config = OmniSparseConfig(
        decode_gamma=0.6, observation_window=WINDOW, recent_window=RECENT, head_visual_threshold=0.0
    )
    keep = decode_keep_positions(q, k, visual, config, 1 / math.sqrt(D))
    mass = reference_observed(q, k, WINDOW).double()
    assert len(keep) == B and all(len(row) == HKV for row in keep)
    for b in range(B):
        text = set((~visual[b]).nonzero().flatten().tolist())
        recent = set(range(SK - RECENT, SK))
        for h in range(HKV):
            kept = keep[b][h].tolist()
            assert kept == sorted(set(kept)), "positions must be sorted and unique"
            assert text <= set(kept) and recent <= set(kept)
            chosen = sorted(set(kept) - text - recent)
            dropped = sorted(set(range(SK)) - set(kept))
            assert dropped, "decode_gamma < 1 must drop some visual tokens"
            m = mass[b, h]
            total = float(m.sum())
            # kept tokens cover decode_gamma of the head's mass ...
            assert float(m[kept].sum()) >= config.decode_gamma * total - 1e-6
            # ... with the highest-mass visual tokens, and no more than needed
            assert min(float(m[p]) for p in chosen) >= max(float(m[p]) for p in dropped) - 1e-7
            weakest = min(chosen, key=lambda p: float(m[p]))
            assert float(m[kept].sum()) - float(m[weakest]) < config.decode_gamma * total


def test_visual_light_head_keeps_no_visual_token() -> None:
    q, k = randn(B, HQ, SQ, D, seed=1), randn(B, HKV, SK, D, seed=2)
    visual = visual_mask()
    # key/value head 1: its query heads (2, 3) all ask along u; text keys answer +u, visual keys -u,
    # so a visual token gets exp(-2 * 9 / sqrt(8)) ~ 0.002 of a text token's weight: ~0.3% of the
    # head's mass on all 26 visual tokens, under head_visual_threshold = 2%.
    u = torch.zeros(D)
    u[0] = 3.0
    q[:, 2:4] = u
    k[:, 1] = torch.where(visual[:, :, None], -u, u) + 0.01 * randn(B, SK, D, seed=3)
    # decode_gamma = 1: without the head rule, head 1 would keep visual tokens to cover its last 0.3%
    config = OmniSparseConfig(
        decode_gamma=1.0, observation_window=WINDOW, recent_window=RECENT, head_visual_threshold=0.02
    )
    keep = decode_keep_positions(q, k, visual, config, 1 / math.sqrt(D))
    for b in range(B):
        always = ((~visual[b]) | (torch.arange(SK) >= SK - RECENT)).nonzero().flatten()
        assert torch.equal(keep[b][1], always)  # text and recent only
        assert keep[b][0].numel() > always.numel()  # the ordinary head keeps visual tokens
    # with a threshold of 0 the rule is off: with decode_gamma = 1 every head keeps every token
    off = OmniSparseConfig(
        decode_gamma=1.0, observation_window=WINDOW, recent_window=RECENT, head_visual_threshold=0.0
    )
    keep_all = decode_keep_positions(q, k, visual, off, 1 / math.sqrt(D))
    for b in range(B):
        for h in range(HKV):
            assert torch.equal(keep_all[b][h], torch.arange(SK))


def test_keep_positions_checks_the_visual_mask() -> None:
    q, k = randn(B, HQ, SQ, D, seed=1), randn(B, HKV, SK, D, seed=2)
    with pytest.raises(ValueError, match=r"visual must be \[B, Sk\] = \[2, 40\], got \[2, 30\]"):
        decode_keep_positions(q, k, torch.zeros(B, SQ, dtype=torch.bool), OmniSparseConfig(), 0.3)
