"""Key-block index lists, their conversion to and from bool masks, and variable-length batches."""

import pytest
import torch
from conftest import TOLERANCES, attention_inputs

import kernels_core
from kernels_core import masks, reference
from kernels_core.masks import BlockIndices


def test_mask_to_indices_round_trip(generator):
    mask = masks.random_block_mask(2, 3, 300, 500, 0.3, (64, 64), generator=generator)
    mask[0, 1, 2] = False  # an empty row
    lists = masks.block_mask_to_indices(mask)
    assert lists.counts.dtype == torch.int32 and lists.indices.dtype == torch.int32
    assert torch.equal(lists.counts, mask.sum(-1).int())
    assert lists.counts[0, 1, 2] == 0 and torch.all(lists.indices[0, 1, 2] == -1)
    # Ascending within each row.
    valid = torch.arange(lists.indices.shape[-1]) < lists.counts.unsqueeze(-1)
    steps = lists.indices[..., 1:] - lists.indices[..., :-1]
    assert torch.all(steps[valid[..., 1:]] > 0)
    assert torch.equal(lists.to_mask(mask.shape[-1]), mask)


def test_unordered_index_lists_give_the_same_attention(cpu_isa, generator):
    q, k, v, mask, block = attention_inputs((2, 4, 2, 200, 260, 48, (64, 32)), torch.float32, generator)
    lists = masks.block_mask_to_indices(mask)
    # Reverse each row's valid entries and scribble over the unused tail.
    width = lists.indices.shape[-1]
    pos = torch.arange(width)
    rev = (lists.counts.unsqueeze(-1) - 1 - pos).clamp(min=0).long()
    shuffled = torch.where(
        pos < lists.counts.unsqueeze(-1), lists.indices.gather(-1, rev), torch.tensor(12345)
    )
    for causal in (False, True):
        expected = kernels_core.block_sparse_attention(q, k, v, mask, block_size=block, causal=causal)
        actual = kernels_core.block_sparse_attention(
            q, k, v, BlockIndices(lists.counts, shuffled.int()), block_size=block, causal=causal
        )
        torch.testing.assert_close(actual, expected, **TOLERANCES[torch.float32])
        ref = reference.block_sparse_attention(q, k, v, lists, block_size=block, causal=causal)
        torch.testing.assert_close(actual, ref, **TOLERANCES[torch.float32])


def test_index_lists_broadcast_over_heads(generator):
    q, k, v, _, block = attention_inputs((1, 4, 4, 128, 128, 16, (32, 32)), torch.float32, generator)
    shared = masks.random_block_mask(1, 1, 128, 128, 0.5, block, generator=generator)
    lists = masks.block_mask_to_indices(shared)
    out = kernels_core.block_sparse_attention(q, k, v, lists, block_size=block)
    torch.testing.assert_close(out, kernels_core.block_sparse_attention(q, k, v, shared, block_size=block))


def test_none_mask_is_dense_attention(generator):
    q, k, v, _, _ = attention_inputs((2, 4, 2, 100, 120, 32, (64, 64)), torch.float32, generator)
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    # SDPA's is_causal is top-left aligned; ours is bottom-right, so compare with Sq == Sk.
    q = q[:, :, :100]
    k, v = k[:, :, :100], v[:, :, :100]
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    out = kernels_core.block_sparse_attention(q, k, v, None, causal=True)
    torch.testing.assert_close(out, expected, **TOLERANCES[torch.float32])


@pytest.mark.parametrize(
    ("counts", "indices", "message"),
    [
        ([[[3]]], [[[0, 1]]], r"counts must lie in \[0, 2\]"),
        ([[[2]]], [[[0, 9]]], r"indices must be key-block indices in \[0, 2\)"),
        ([[[2]]], [[[1, 1]]], "lists a key block twice"),
    ],
)
def test_bad_index_lists_raise(counts, indices, message):
    q = torch.randn(1, 1, 16, 8)
    lists = BlockIndices(torch.tensor(counts, dtype=torch.int32), torch.tensor([indices], dtype=torch.int32))
    with pytest.raises(ValueError, match=message):
        kernels_core.block_sparse_attention(q, q, q, lists, block_size=(16, 8))


def test_unchecked_lists_never_read_past_their_width(generator):
    """With check_indices=False the kernel still clamps counts to L (no out-of-bounds read)."""
    q, k, v, mask, block = attention_inputs((1, 2, 2, 128, 256, 16, (32, 32)), torch.float32, generator)
    lists = masks.block_mask_to_indices(mask)
    width = lists.indices.shape[-1]
    too_many = BlockIndices(torch.full_like(lists.counts, width + 1000), lists.indices)
    clamped = BlockIndices(torch.full_like(lists.counts, width), lists.indices)
    with pytest.raises(ValueError, match="counts must lie in"):
        kernels_core.block_sparse_attention(q, k, v, too_many, block_size=block)
    out = kernels_core.block_sparse_attention(q, k, v, too_many, block_size=block, check_indices=False)
    expected = kernels_core.block_sparse_attention(q, k, v, clamped, block_size=block, check_indices=False)
    torch.testing.assert_close(out, expected, atol=0, rtol=0)


def test_index_lists_need_int_tensors():
    q = torch.randn(1, 1, 16, 8)
    with pytest.raises(TypeError, match=r"block_mask\.counts must be an int32"):
        kernels_core.block_sparse_attention(
            q, q, q, BlockIndices(torch.ones(1, 1, 1), torch.zeros(1, 1, 1, 1))
        )
    with pytest.raises(TypeError, match="block_mask must be a bool tensor"):
        kernels_core.block_sparse_attention(q, q, q, [[1]])


# ---------------------------------------------------------------------------------------------
# Variable-length batches
# ---------------------------------------------------------------------------------------------
def _cu(lengths):
    return torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)


def _varlen_inputs(lengths_q, lengths_k, heads_q, heads_kv, dim, dtype, generator, requires_grad=False):
    cu_q, cu_k = _cu(lengths_q), _cu(lengths_k)
    q = torch.randn(int(cu_q[-1]), heads_q, dim, generator=generator).to(dtype).requires_grad_(requires_grad)
    k = torch.randn(int(cu_k[-1]), heads_kv, dim, generator=generator).to(dtype).requires_grad_(requires_grad)
    v = torch.randn(int(cu_k[-1]), heads_kv, dim, generator=generator).to(dtype).requires_grad_(requires_grad)
    return q, k, v, cu_q, cu_k, max(lengths_q), max(lengths_k)


VARLEN_CASES = [
    ([100], [100], 2, 2, 32, (64, 64)),
    ([5, 64, 130, 1], [7, 64, 100, 200], 4, 2, 33, (64, 64)),
    ([70, 0, 33], [70, 12, 90], 2, 1, 64, (32, 16)),  # an empty query sequence
]


@pytest.mark.parametrize("case", VARLEN_CASES, ids=lambda c: "-".join(map(str, c[0])))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("sparsity", ["dense", "mask", "indices"])
def test_varlen_matches_reference(cpu_isa, case, dtype, causal, sparsity, generator):
    lengths_q, lengths_k, hq, hkv, d, block = case
    q, k, v, cu_q, cu_k, max_q, max_k = _varlen_inputs(lengths_q, lengths_k, hq, hkv, d, dtype, generator)
    mask = None
    if sparsity != "dense":
        mask = masks.random_block_mask(len(lengths_q), hq, max_q, max_k, 0.5, block, generator=generator)
        if sparsity == "indices":
            mask = masks.block_mask_to_indices(mask)
    out, lse = kernels_core.block_sparse_attention_varlen(
        q, k, v, cu_q, cu_k, max_q, max_k, mask, block_size=block, causal=causal, return_lse=True
    )
    ref_out, ref_lse = reference.block_sparse_attention_varlen(
        q, k, v, cu_q, cu_k, max_q, max_k, mask, block_size=block, causal=causal, return_lse=True
    )
    assert out.shape == q.shape and lse.shape == (hq, q.shape[0])
    torch.testing.assert_close(out, ref_out, **TOLERANCES[dtype])
    assert torch.equal(torch.isinf(lse), torch.isinf(ref_lse))
    finite = torch.isfinite(ref_lse)
    torch.testing.assert_close(lse[finite], ref_lse[finite], atol=1e-5, rtol=1e-5)


def test_varlen_equals_padded_batch_per_sequence(generator):
    """Each packed sequence gives what the batched op gives for that sequence alone."""
    q, k, v, cu_q, cu_k, max_q, max_k = _varlen_inputs([50, 90], [60, 90], 4, 2, 16, torch.float32, generator)
    out = kernels_core.block_sparse_attention_varlen(q, k, v, cu_q, cu_k, max_q, max_k, causal=True)
    for b in range(2):
        qs = q[cu_q[b] : cu_q[b + 1]].transpose(0, 1).unsqueeze(0)
        ks = k[cu_k[b] : cu_k[b + 1]].transpose(0, 1).unsqueeze(0)
        vs = v[cu_k[b] : cu_k[b + 1]].transpose(0, 1).unsqueeze(0)
        single = kernels_core.block_sparse_attention(qs, ks, vs, None, causal=True)
        torch.testing.assert_close(out[cu_q[b] : cu_q[b + 1]], single[0].transpose(0, 1), atol=0, rtol=0)


@pytest.mark.parametrize("causal", [False, True])
def test_varlen_backward_matches_reference(causal, generator):
    q, k, v, cu_q, cu_k, max_q, max_k = _varlen_inputs(
        [5, 64, 130], [7, 64, 100], 4, 2, 24, torch.float32, generator, requires_grad=True
    )
    mask = masks.random_block_mask(3, 4, max_q, max_k, 0.6, (32, 32), generator=generator)
    out = kernels_core.block_sparse_attention_varlen(
        q, k, v, cu_q, cu_k, max_q, max_k, mask, block_size=(32, 32), causal=causal
    )
    ref = reference.block_sparse_attention_varlen(
        q, k, v, cu_q, cu_k, max_q, max_k, mask, block_size=(32, 32), causal=causal
    )
    grad = torch.randn(out.shape, generator=generator)
    actual = torch.autograd.grad(out, (q, k, v), grad)
    expected = torch.autograd.grad(ref, (q, k, v), grad)
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e, atol=2e-4, rtol=2e-4)


def test_varlen_bad_offsets_raise(generator):
    q, k, v, cu_q, cu_k, max_q, max_k = _varlen_inputs([10, 20], [10, 20], 2, 2, 8, torch.float32, generator)
    with pytest.raises(ValueError, match="cu_seqlens_q must start at 0"):
        kernels_core.block_sparse_attention_varlen(q, k, v, torch.tensor([0, 25, 40], dtype=torch.int32)[[0, 2, 1]],
                                                   cu_k, max_q, max_k)  # fmt: skip
    with pytest.raises(ValueError, match="longer than max_seqlen=10"):
        kernels_core.block_sparse_attention_varlen(q, k, v, cu_q, cu_k, 10, max_k)
    with pytest.raises(TypeError, match=r"cu_seqlens_q must have dtype torch\.int32"):
        kernels_core.block_sparse_attention_varlen(q, k, v, cu_q.long(), cu_k, max_q, max_k)
    with pytest.raises(ValueError, match="cu_seqlens_q has 3 offsets but cu_seqlens_k has 2"):
        kernels_core.block_sparse_attention_varlen(q, k, v, cu_q, cu_k[:2], max_q, max_k)
    with pytest.raises(ValueError, match=r"q must have 3 dimensions \[total_q, H, D\]"):
        kernels_core.block_sparse_attention_varlen(q[None], k, v, cu_q, cu_k, max_q, max_k)
