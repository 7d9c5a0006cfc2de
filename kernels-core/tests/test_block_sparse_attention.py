"""The CPU kernel against the pure-torch reference over a grid of shapes."""

import math

import pytest
import torch
from conftest import DTYPES, SHAPES, TOLERANCES, attention_inputs, shape_id

import kernels_core
from kernels_core import masks, reference


def _inputs(shape, dtype, generator, density=0.5):
    return attention_inputs(shape, dtype, generator, density)


def _assert_matches_reference(q, k, v, mask, block, causal, scale=None):
    out, lse = kernels_core.block_sparse_attention(
        q, k, v, mask, block_size=block, causal=causal, scale=scale, return_lse=True
    )
    ref_out, ref_lse = reference.block_sparse_attention(
        q, k, v, mask, block_size=block, causal=causal, scale=scale, return_lse=True
    )
    assert out.dtype == q.dtype and out.shape == q.shape
    assert lse.dtype == torch.float32 and lse.shape == q.shape[:3]
    torch.testing.assert_close(out, ref_out, **TOLERANCES[q.dtype])
    # Rows that see no key: -inf in both; elsewhere lse is accumulated in fp32 in both.
    assert torch.equal(torch.isinf(lse), torch.isinf(ref_lse))
    finite = torch.isfinite(ref_lse)
    torch.testing.assert_close(lse[finite], ref_lse[finite], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_matches_reference(cpu_isa, shape, dtype, causal, generator):
    q, k, v, mask, block = _inputs(shape, dtype, generator)
    _assert_matches_reference(q, k, v, mask, block, causal)


@pytest.mark.parametrize("density", [1.0, 0.25, 0.1])
def test_densities(cpu_isa, density, generator):
    q, k, v, mask, block = _inputs((1, 4, 2, 512, 512, 64, (64, 64)), torch.float32, generator, density)
    _assert_matches_reference(q, k, v, mask, block, causal=False)


def test_dense_mask_equals_sdpa(generator):
    q, k, v, _, block = _inputs((2, 4, 4, 200, 200, 64, (64, 64)), torch.float32, generator)
    mask = masks.dense_block_mask(2, 4, 200, 200, block)
    for causal in (False, True):
        expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)
        out = kernels_core.block_sparse_attention(q, k, v, mask, causal=causal)
        torch.testing.assert_close(out, expected, atol=2e-5, rtol=2e-5)


def test_custom_scale(generator):
    q, k, v, mask, block = _inputs((1, 2, 2, 70, 90, 32, (32, 32)), torch.float32, generator)
    _assert_matches_reference(q, k, v, mask, block, causal=False, scale=0.3)
    out_default = kernels_core.block_sparse_attention(q, k, v, mask, block_size=block)
    out_explicit = kernels_core.block_sparse_attention(
        q, k, v, mask, block_size=block, scale=1 / math.sqrt(32)
    )
    torch.testing.assert_close(out_default, out_explicit, atol=0, rtol=0)


def test_strided_inputs_need_no_copy(generator):
    """[B, S, H, D] tensors viewed as [B, H, S, D] (the diffusers layout) give the same result."""
    b, s, h, d = 2, 96, 4, 48
    q_bshd = torch.randn(b, s, h, d, generator=generator)
    k_bshd = torch.randn(b, s, h, d, generator=generator)
    v_bshd = torch.randn(b, s, h, d, generator=generator)
    mask = masks.random_block_mask(b, h, s, s, 0.5, (32, 32), generator=generator)
    q, k, v = (x.transpose(1, 2) for x in (q_bshd, k_bshd, v_bshd))
    assert not q.is_contiguous()
    out = kernels_core.block_sparse_attention(q, k, v, mask, block_size=(32, 32))
    expected = kernels_core.block_sparse_attention(
        q.contiguous(), k.contiguous(), v.contiguous(), mask, block_size=(32, 32)
    )
    torch.testing.assert_close(out, expected, atol=0, rtol=0)


def test_transposed_head_dim_gives_a_correct_output(generator):
    """q viewed with the head dim strided (dense but permuted): output must still be right."""
    q = torch.randn(1, 2, 32, 40, generator=generator).transpose(-1, -2)  # [1, 2, 40, 32], D stride 40
    k = torch.randn(1, 2, 40, 32, generator=generator)
    v = torch.randn(1, 2, 40, 32, generator=generator)
    out = kernels_core.block_sparse_attention(q, k, v, None, block_size=(16, 16))
    assert out.stride(-1) == 1
    torch.testing.assert_close(out, reference.block_sparse_attention(q, k, v, None, block_size=(16, 16)))


def test_non_unit_head_stride_is_copied(generator):
    q = torch.randn(1, 2, 40, 64, generator=generator)[..., ::2]  # head dim stride 2
    k = torch.randn(1, 2, 40, 32, generator=generator)
    v = torch.randn(1, 2, 40, 32, generator=generator)
    mask = masks.dense_block_mask(1, 2, 40, 40, (16, 16))
    out = kernels_core.block_sparse_attention(q, k, v, mask, block_size=(16, 16))
    ref = reference.block_sparse_attention(q, k, v, mask, block_size=(16, 16))
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=2e-5)


def test_broadcast_mask(generator):
    q, k, v, _, block = _inputs((2, 4, 2, 100, 100, 32, (32, 32)), torch.float32, generator)
    shared = masks.random_block_mask(1, 1, 100, 100, 0.5, block, generator=generator)
    out = kernels_core.block_sparse_attention(q, k, v, shared, block_size=block)
    full = kernels_core.block_sparse_attention(
        q, k, v, shared.expand(2, 4, -1, -1).contiguous(), block_size=block
    )
    torch.testing.assert_close(out, full, atol=0, rtol=0)


def test_rows_without_keys_are_zero(cpu_isa, generator):
    q, k, v, mask, block = _inputs((1, 2, 2, 128, 128, 32, (64, 64)), torch.float32, generator)
    mask[:, 0, 1, :] = False  # head 0, query block 1: no key at all
    out, lse = kernels_core.block_sparse_attention(q, k, v, mask, block_size=block, return_lse=True)
    assert torch.all(out[:, 0, 64:] == 0)
    assert torch.all(lse[:, 0, 64:] == float("-inf"))
    assert torch.all(torch.isfinite(lse[:, 1]))


def test_causal_with_more_queries_than_keys_has_empty_rows(generator):
    """Bottom-right alignment: with Sq > Sk the first Sq - Sk queries see no key."""
    q, k, v, _, block = _inputs((1, 1, 1, 100, 60, 16, (32, 32)), torch.float32, generator)
    mask = masks.dense_block_mask(1, 1, 100, 60, block)
    out, lse = kernels_core.block_sparse_attention(
        q, k, v, mask, block_size=block, causal=True, return_lse=True
    )
    assert torch.all(out[:, :, :40] == 0) and torch.all(lse[:, :, :40] == float("-inf"))
    _assert_matches_reference(q, k, v, mask, block, causal=True)


def test_all_blocks_masked_and_empty_sequences(generator):
    q, k, v, _, block = _inputs((1, 2, 2, 50, 70, 16, (16, 16)), torch.float32, generator)
    mask = torch.zeros(masks.block_mask_shape(1, 2, 50, 70, block), dtype=torch.bool)
    out, lse = kernels_core.block_sparse_attention(q, k, v, mask, block_size=block, return_lse=True)
    assert torch.all(out == 0) and torch.all(lse == float("-inf"))

    empty_k = k[:, :, :0]
    mask0 = torch.ones(masks.block_mask_shape(1, 2, 50, 0, block), dtype=torch.bool)
    out, lse = kernels_core.block_sparse_attention(
        q, empty_k, empty_k, mask0, block_size=block, return_lse=True
    )
    assert out.shape == q.shape and torch.all(out == 0) and torch.all(lse == float("-inf"))

    empty_q = q[:, :, :0]
    mask1 = torch.ones(masks.block_mask_shape(1, 2, 0, 70, block), dtype=torch.bool)
    assert kernels_core.block_sparse_attention(empty_q, k, v, mask1, block_size=block).shape == empty_q.shape


def test_skipped_blocks_do_not_influence_output(generator):
    """Values in key blocks the mask disables must not leak into the output."""
    q, k, v, mask, block = _inputs((1, 2, 2, 128, 256, 32, (64, 64)), torch.float32, generator)
    mask[:] = True
    mask[..., 2] = False
    out = kernels_core.block_sparse_attention(q, k, v, mask, block_size=block)
    k2, v2 = k.clone(), v.clone()
    k2[:, :, 128:192] = 1e4
    v2[:, :, 128:192] = float("nan")
    out2 = kernels_core.block_sparse_attention(q, k2, v2, mask, block_size=block)
    torch.testing.assert_close(out, out2, atol=0, rtol=0)


def test_multithreaded_equals_single_thread(generator):
    q, k, v, mask, block = _inputs((2, 4, 2, 300, 300, 64, (64, 64)), torch.float32, generator)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = kernels_core.block_sparse_attention(q, k, v, mask, block_size=block, causal=True)
    finally:
        torch.set_num_threads(threads)
    multi = kernels_core.block_sparse_attention(q, k, v, mask, block_size=block, causal=True)
    torch.testing.assert_close(single, multi, atol=0, rtol=0)
