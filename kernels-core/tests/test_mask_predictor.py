"""Block scores, recall budgets and top-k selection against their references."""

import pytest
import torch
from conftest import DTYPES, SHAPES, shape_id

import kernels_core
from kernels_core import masks, reference


def _qk(shape, dtype, generator):
    b, hq, hkv, sq, sk, d, block = shape
    q = torch.randn(b, hq, sq, d, generator=generator).to(dtype)
    k = torch.randn(b, hkv, sk, d, generator=generator).to(dtype)
    return q, k, block


@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_block_scores_match_reference(cpu_isa, shape, dtype, causal, generator):
    q, k, block = _qk(shape, dtype, generator)
    # A larger scale makes the softmax peaked, so an error in pooling or masking shows.
    scores = kernels_core.block_scores(q, k, block_size=block, causal=causal, scale=2.0)
    expected = reference.block_scores(q, k, block_size=block, causal=causal, scale=2.0)
    assert scores.dtype == torch.float32 and scores.shape == masks.block_mask_shape(
        q.shape[0], q.shape[1], q.shape[2], k.shape[2], block
    )
    torch.testing.assert_close(scores, expected, atol=2e-5, rtol=1e-4)
    row_sums = scores.sum(-1)
    assert torch.all(((row_sums - 1).abs() < 1e-4) | (row_sums == 0))


def test_block_scores_find_planted_structure(generator):
    """Queries of block i copy the keys of block 3i: the estimate must point at those blocks."""
    d, block = 32, 16
    k = torch.randn(1, 1, 16 * block, d, generator=generator)
    centers = torch.randn(16, d, generator=generator) * 3
    k = k + centers.repeat_interleave(block, 0)[None, None]
    q = torch.zeros(1, 1, 4 * block, d)
    for i in range(4):
        q[0, 0, i * block : (i + 1) * block] = centers[(3 * i) % 16] + 0.1 * torch.randn(
            block, d, generator=generator
        )
    scores = kernels_core.block_scores(q, k, block_size=(block, block))
    assert torch.equal(scores[0, 0].argmax(-1), torch.tensor([0, 3, 6, 9]))


@pytest.mark.parametrize("gamma", [0.5, 0.9, 1.0])
def test_recall_counts_match_reference(gamma, generator):
    scores = torch.softmax(torch.randn(2, 3, 7, 40, generator=generator) * 3, dim=-1)
    scores[0, 0, 0] = 0.0  # an all-zero row
    counts = kernels_core.recall_block_counts(scores, gamma, min_blocks=2, max_blocks=30)
    expected = reference.recall_block_counts(scores, gamma, min_blocks=2, max_blocks=30)
    assert counts.dtype == torch.int32
    assert torch.equal(counts, expected)
    assert counts[0, 0, 0] == 2  # min_blocks for a row with no mass
    # The chosen count really reaches gamma (unless clamped at max_blocks) and one fewer does not.
    ordered = scores.sort(-1, descending=True).values.cumsum(-1)
    k = counts.long().clamp(max=39)
    reached = ordered.gather(-1, (k - 1).clamp(min=0).unsqueeze(-1)).squeeze(-1)
    live = (scores.sum(-1) > 0) & (counts > 2) & (counts < 30)
    assert torch.all(reached[live] >= gamma - 1e-5)
    below = ordered.gather(-1, (k - 2).clamp(min=0).unsqueeze(-1)).squeeze(-1)
    assert torch.all(below[live] < gamma + 1e-6)


def test_select_top_blocks_matches_reference(generator):
    scores = torch.rand(2, 4, 9, 33, generator=generator)
    counts = torch.randint(0, 34, (2, 4, 9), generator=generator, dtype=torch.int32)
    lists = kernels_core.select_top_blocks(scores, counts)
    expected = reference.select_top_blocks(scores, counts, lists.indices.shape[-1])
    assert torch.equal(lists.counts, expected.counts) and torch.equal(lists.indices, expected.indices)
    # Each row holds exactly its top-count blocks.
    mask = lists.to_mask(33)
    assert torch.equal(mask.sum(-1).int(), counts)
    threshold = scores.sort(-1, descending=True).values.gather(
        -1, (counts.long() - 1).clamp(min=0).unsqueeze(-1)
    )
    assert torch.all(scores[mask] >= threshold.expand_as(scores)[mask])


def test_select_top_blocks_plain_topk_and_ties():
    scores = torch.tensor([[0.5, 0.5, 0.5, 0.1]])
    lists = kernels_core.select_top_blocks(scores, 2)
    assert lists.indices.tolist() == [[0, 1]]  # ties go to the lower block
    with pytest.raises(ValueError, match=r"counts must have shape \[1\]"):
        kernels_core.select_top_blocks(scores, torch.ones(2, dtype=torch.int32))


@pytest.mark.parametrize("shared_budget", ["none", "heads", "layer"])
def test_predict_block_indices_feeds_attention(shared_budget, generator):
    q, k, _ = _qk((1, 4, 2, 256, 256, 32, (32, 32)), torch.float32, generator)
    v = torch.randn_like(k)
    lists = kernels_core.predict_block_indices(
        q, k, gamma=0.95, block_size=(32, 32), causal=True, shared_budget=shared_budget
    )
    counts = lists.counts
    if shared_budget == "heads":
        assert torch.all(counts == counts[:, :1])
    if shared_budget == "layer":
        assert torch.all(counts == counts.flatten()[0])
    out = kernels_core.block_sparse_attention(q, k, v, lists, block_size=(32, 32), causal=True)
    expected = reference.block_sparse_attention(q, k, v, lists, block_size=(32, 32), causal=True)
    torch.testing.assert_close(out, expected, atol=2e-5, rtol=2e-5)


def test_predictor_bad_arguments():
    scores = torch.rand(1, 1, 2, 4)
    with pytest.raises(ValueError, match=r"gamma must be in \(0, 1\]"):
        kernels_core.recall_block_counts(scores, 1.5)
    with pytest.raises(TypeError, match="scores must be a float32 tensor"):
        kernels_core.recall_block_counts(scores.double(), 0.9)
    q = torch.randn(1, 2, 10, 8)
    with pytest.raises(ValueError, match="shared_budget must be"):
        kernels_core.predict_block_indices(q, q, shared_budget="all")
    with pytest.raises(ValueError, match="not a multiple"):
        kernels_core.block_scores(q, torch.randn(1, 3, 10, 8))


def test_block_scores_opcheck(generator):
    q, k, block = _qk((1, 4, 2, 100, 90, 16, (32, 32)), torch.float32, generator)
    torch.library.opcheck(torch.ops.kernels_core.block_scores.default, (q, k, 32, 32, True, 0.3))
    scores = kernels_core.block_scores(q, k, block_size=block)
    torch.library.opcheck(torch.ops.kernels_core.block_recall_counts.default, (scores, 0.8, 1, 0))
    counts = kernels_core.recall_block_counts(scores, 0.8)
    torch.library.opcheck(torch.ops.kernels_core.block_top_indices.default, (scores, counts, 3))
