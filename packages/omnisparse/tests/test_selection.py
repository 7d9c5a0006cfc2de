"""Prefill selection: forced blocks, causal visibility, the dense limit, lazy rows and their modes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import kernels_core
from omnisparse import OmniSparseConfig, PrefillSelection, select_prefill_blocks

B, HQ, HKV, D = 2, 4, 2, 16

# (Sq, Sk, block): odd lengths, partial last blocks, and Sk > Sq with an unaligned shift (27).
SHAPES = [(200, 200, 16), (77, 77, 32), (50, 77, 16)]


def random_qk(sq: int, sk: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, HQ, sq, D, generator=g)
    k = torch.randn(B, HKV, sk, D, generator=g)
    v = torch.randn(B, HKV, sk, D, generator=g)
    return q, k, v


def local_qk(sq: int, sk: int, block: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries and keys of key block j share the direction e_j: each query block attends to its own
    (diagonal) block, i.e. strongly local attention."""
    g = torch.Generator().manual_seed(seed)
    nkb = math.ceil(sk / block)
    assert nkb <= D
    shift = sk - sq
    key_dirs = torch.eye(D)[torch.arange(sk) // block] * 6.0
    query_dirs = key_dirs[shift:]
    q = query_dirs.expand(B, HQ, sq, D) + 0.1 * torch.randn(B, HQ, sq, D, generator=g)
    k = key_dirs.expand(B, HKV, sk, D) + 0.1 * torch.randn(B, HKV, sk, D, generator=g)
    return q.contiguous(), k.contiguous()


def text_mask(sk: int) -> torch.Tensor:
    """bool [B, Sk]: a few text tokens at the start, one in the middle (item 0 only) and at the end."""
    text = torch.zeros(B, sk, dtype=torch.bool)
    text[:, :3] = True
    text[0, sk // 2] = True
    text[:, -4:] = True
    return text


def visible_blocks(sq: int, sk: int, block: int) -> list[int]:
    """Per query block, the key blocks its last query may see (bottom-right causal)."""
    out = []
    for i in range(math.ceil(sq / block)):
        last_query = min((i + 1) * block, sq) - 1
        last_key = last_query + sk - sq
        out.append(last_key // block + 1)
    return out


def row_sets(selection: PrefillSelection) -> list[list[list[set[int]]]]:
    counts, indices = selection.indices
    out = []
    for b in range(counts.shape[0]):
        per_head = []
        for h in range(counts.shape[1]):
            rows = []
            for i in range(counts.shape[2]):
                row = indices[b, h, i, : int(counts[b, h, i])].tolist()
                assert len(set(row)) == len(row), "a key block is listed twice"
                rows.append(set(row))
            per_head.append(rows)
        out.append(per_head)
    return out


def expected_forced(config: OmniSparseConfig, visible: int, text_blocks: set[int]) -> set[int]:
    diag = visible - 1
    sinks = set(range(min(config.sink_blocks, visible)))
    local = set(range(max(0, diag - config.local_blocks), diag + 1))
    return sinks | local | {j for j in text_blocks if j < visible}


def text_key_blocks(text: torch.Tensor, block: int) -> list[set[int]]:
    return [{int(p) // block for p in row.nonzero().flatten()} for row in text]


def text_query_blocks(text: torch.Tensor, sq: int, block: int) -> list[set[int]]:
    shift = text.shape[1] - sq
    return [{(int(p) - shift) // block for p in row.nonzero().flatten() if p >= shift} for row in text]


def dense_causal(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    sq, sk = q.shape[2], k.shape[2]
    mask = torch.ones(sq, sk, dtype=torch.bool).tril(diagonal=sk - sq)
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


@pytest.mark.parametrize(("sq", "sk", "block"), SHAPES)
@pytest.mark.parametrize("structured", [False, True], ids=["random", "local"])
def test_rows_hold_forced_blocks_and_only_visible_ones(
    sq: int, sk: int, block: int, structured: bool
) -> None:
    config = OmniSparseConfig(block_size=block, sink_blocks=1, local_blocks=1, lazy_keep_ratio=0.0)
    q, k = local_qk(sq, sk, block) if structured else random_qk(sq, sk)[:2]
    text = text_mask(sk)
    selection = select_prefill_blocks(q, k, config, text_tokens=text)
    visible = visible_blocks(sq, sk, block)
    assert selection.indices.counts.shape == (B, HQ, len(visible))
    assert selection.active.shape == (B, HQ, len(visible))
    key_text, query_text = text_key_blocks(text, block), text_query_blocks(text, sq, block)
    sets = row_sets(selection)
    for b in range(B):
        for h in range(HQ):
            for i, vis in enumerate(visible):
                row = sets[b][h][i]
                forced = expected_forced(config, vis, key_text[b])
                assert row <= set(range(vis)), f"row ({b}, {h}, {i}) reads a future block: {sorted(row)}"
                assert forced <= row, f"row ({b}, {h}, {i}) misses forced blocks {sorted(forced - row)}"
                if not bool(selection.active[b, h, i]):
                    assert row == forced  # lazy_mode="local": a dropped row reads its forced blocks only
                if i in query_text[b]:
                    assert bool(selection.active[b, h, i]), "a text query block was dropped"
    # the reported density is the computed share of causal (query block, key block) pairs
    computed = int(selection.indices.counts.sum())
    assert selection.density == pytest.approx(computed / (B * HQ * sum(visible)))


@pytest.mark.parametrize(("sq", "sk", "block"), SHAPES)
def test_full_recall_selects_every_visible_block_and_matches_dense(sq: int, sk: int, block: int) -> None:
    q, k, v = random_qk(sq, sk, seed=1)
    config = OmniSparseConfig(block_size=block, gamma=1.0, lazy_keep_ratio=1.0)
    selection = select_prefill_blocks(q, k, config, text_tokens=text_mask(sk))
    assert selection.density == 1.0
    assert selection.budget_ratio == pytest.approx(1.0)
    assert bool(selection.active.all())
    visible = visible_blocks(sq, sk, block)
    for per_head in row_sets(selection):
        for rows in per_head:
            assert rows == [set(range(n)) for n in visible]
    out = kernels_core.block_sparse_attention(
        q, k, v, selection.indices, block_size=(block, block), causal=True
    )
    torch.testing.assert_close(out, dense_causal(q, k, v), atol=1e-5, rtol=1e-5)


def test_active_rows_read_the_top_scoring_blocks() -> None:
    sq = sk = 200
    block = 16
    q, k, _ = random_qk(sq, sk, seed=2)
    config = OmniSparseConfig(block_size=block, gamma=0.5, sink_blocks=1, local_blocks=0, lazy_keep_ratio=1.0)
    selection = select_prefill_blocks(q, k, config)
    assert bool(selection.active.all())
    assert 0.0 < selection.budget_ratio < 1.0 and selection.density < 1.0
    scores = kernels_core.block_scores(q, k, block_size=(block, block), causal=True)
    visible = visible_blocks(sq, sk, block)
    sets = row_sets(selection)
    some_row_drops_blocks = False
    for b in range(B):
        for h in range(HQ):
            for i, vis in enumerate(visible):
                forced = expected_forced(config, vis, set())
                chosen = sets[b][h][i] - forced
                skipped = set(range(vis)) - sets[b][h][i]
                some_row_drops_blocks |= bool(skipped)
                if chosen and skipped:
                    row = scores[b, h, i]
                    assert min(float(row[j]) for j in chosen) >= max(float(row[j]) for j in skipped)
    assert some_row_drops_blocks


def test_local_attention_gives_lazy_rows_and_density_below_one() -> None:
    sq = sk = 200
    block = 16
    q, k = local_qk(sq, sk, block)
    text = text_mask(sk)
    selection = select_prefill_blocks(q, k, OmniSparseConfig(block_size=block), text_tokens=text)
    assert selection.density < 0.7
    lazy = ~selection.active
    assert bool(lazy.any()), "strongly local attention must give lazy rows"
    # only text query blocks (and the rescued least-local lazy rows) remain active
    query_text = text_query_blocks(text, sq, block)
    for b in range(B):
        for i in query_text[b]:
            assert bool(selection.active[b, :, i].all())
    assert float(selection.active.float().mean()) < 0.5

    # with random (flat) attention the same text mask gives far fewer lazy rows and a higher density
    q2, k2, _ = random_qk(sq, sk)
    flat = select_prefill_blocks(q2, k2, OmniSparseConfig(block_size=block), text_tokens=text)
    assert flat.density > selection.density
    assert int(flat.active.sum()) > int(selection.active.sum())


@pytest.mark.parametrize("keep_ratio", [0.0, 0.5, 1.0])
def test_lazy_keep_ratio_rescues_that_share_of_lazy_rows(keep_ratio: float) -> None:
    block = 16
    q, k = local_qk(200, 200, block)
    none_kept = select_prefill_blocks(q, k, OmniSparseConfig(block_size=block, lazy_keep_ratio=0.0))
    num_lazy = int((~none_kept.active).sum())
    assert num_lazy == none_kept.active.numel()  # no text tokens: every row is local, hence lazy
    selection = select_prefill_blocks(q, k, OmniSparseConfig(block_size=block, lazy_keep_ratio=keep_ratio))
    assert int(selection.active.sum()) == round(keep_ratio * num_lazy)


@pytest.mark.parametrize(("sq", "sk", "block"), SHAPES)
def test_skip_mode_gives_dropped_rows_no_blocks(sq: int, sk: int, block: int) -> None:
    q, k = local_qk(sq, sk, block)
    text = text_mask(sk)
    local = select_prefill_blocks(
        q, k, OmniSparseConfig(block_size=block, lazy_mode="local"), text_tokens=text
    )
    skip = select_prefill_blocks(q, k, OmniSparseConfig(block_size=block, lazy_mode="skip"), text_tokens=text)
    assert torch.equal(local.active, skip.active)
    dropped = ~skip.active
    assert bool(dropped.any()) and bool(skip.active.any())
    assert bool((skip.indices.counts[dropped] == 0).all())
    assert bool((local.indices.counts[dropped] > 0).all())
    assert torch.equal(skip.indices.counts[skip.active], local.indices.counts[local.active])
    assert skip.density < local.density
    # text query blocks are active in both modes
    for b, blocks in enumerate(text_query_blocks(text, sq, block)):
        for i in blocks:
            assert bool(skip.active[b, :, i].all())


def test_text_query_blocks_are_never_dropped_even_with_no_rescue() -> None:
    block = 16
    q, k = local_qk(200, 200, block)
    text = torch.zeros(B, 200, dtype=torch.bool)
    text[0, 101] = True  # one text token: query block 6 of item 0
    text[1, 199] = True  # the last token: query block 12 of item 1
    selection = select_prefill_blocks(
        q, k, OmniSparseConfig(block_size=block, lazy_keep_ratio=0.0, lazy_mode="skip"), text_tokens=text
    )
    expected = torch.zeros_like(selection.active)
    expected[0, :, 6] = True
    expected[1, :, 12] = True
    assert torch.equal(selection.active, expected)
    assert bool((selection.indices.counts[expected] > 0).all())
    assert bool((selection.indices.counts[~expected] == 0).all())

    # in "local" mode, the dropped rows after the text token of item 0 read its key block 6 (forced);
    # the rows of item 1 do not (the text block is per item)
    local = select_prefill_blocks(
        q, k, OmniSparseConfig(block_size=block, lazy_keep_ratio=0.0), text_tokens=text
    )
    sets = row_sets(local)
    assert all(6 in sets[0][h][i] for h in range(HQ) for i in range(6, 13))
    assert all(6 not in sets[1][h][i] for h in range(HQ) for i in range(8, 13))


def test_text_tokens_shape_error() -> None:
    q, k, _ = random_qk(77, 77)
    config = OmniSparseConfig(block_size=32)
    with pytest.raises(ValueError, match=r"text_tokens must be \[B, Sk\] = \[2, 77\], got \[2, 76\]"):
        select_prefill_blocks(q, k, config, text_tokens=torch.ones(B, 76, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"text_tokens must be \[B, Sk\]"):
        select_prefill_blocks(q, k, config, text_tokens=torch.ones(77, dtype=torch.bool))


def test_fewer_keys_than_queries_rejected() -> None:
    q, _, _ = random_qk(77, 77)
    _, k, _ = random_qk(50, 50)
    with pytest.raises(ValueError, match="at least the 77 query positions"):
        select_prefill_blocks(q, k, OmniSparseConfig(block_size=16))
