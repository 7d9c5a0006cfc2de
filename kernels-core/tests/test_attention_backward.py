"""The compiled backward (dq, dk, dv) against the reference formula over the shape grid."""

import pytest
import torch
from conftest import DTYPES, SHAPES, attention_inputs, shape_id

import kernels_core
from kernels_core import masks, reference

GRAD_TOLERANCES = {
    torch.float32: {"atol": 2e-4, "rtol": 2e-4},
    torch.float16: {"atol": 1e-2, "rtol": 1e-2},
    torch.bfloat16: {"atol": 6e-2, "rtol": 6e-2},
}


def _kernel_and_reference_grads(q, k, v, mask, block, causal, generator, with_lse_grad=True):
    out, lse = kernels_core.block_sparse_attention(
        q, k, v, mask, block_size=block, causal=causal, return_lse=True
    )
    grad_out = torch.randn(out.shape, generator=generator).to(q.dtype)
    grad_lse = torch.randn(lse.shape, generator=generator) if with_lse_grad else torch.zeros(lse.shape)
    grad_lse = torch.where(torch.isfinite(lse), grad_lse, torch.zeros(()))
    finite_lse = torch.where(torch.isfinite(lse), lse, torch.zeros(()))
    loss = (out.float() * grad_out.float()).sum() + (finite_lse * grad_lse).sum()
    actual = torch.autograd.grad(loss, (q, k, v))

    with torch.no_grad():
        ref_out, ref_lse = reference.block_sparse_attention(
            q, k, v, mask, block_size=block, causal=causal, return_lse=True
        )
        expected = reference.block_sparse_attention_backward(
            grad_out, grad_lse, q, k, v, ref_out, ref_lse, mask, block_size=block, causal=causal
        )
    return actual, expected


@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_backward_matches_reference(cpu_isa, shape, dtype, causal, generator):
    q, k, v, mask, block = attention_inputs(shape, dtype, generator, requires_grad=True)
    actual, expected = _kernel_and_reference_grads(q, k, v, mask, block, causal, generator)
    for a, e, name in zip(actual, expected, "qkv", strict=True):
        assert a.dtype == dtype and a.shape == e.shape
        try:
            torch.testing.assert_close(a.float(), e.float(), **GRAD_TOLERANCES[dtype])
        except AssertionError as error:
            raise AssertionError(f"d{name}: {error}") from None


@pytest.mark.parametrize("density", [1.0, 0.25])
def test_backward_at_block_size_128(density, generator):
    q, k, v, mask, block = attention_inputs((1, 4, 2, 300, 300, 64, (128, 128)), torch.float32, generator, density,
                                            requires_grad=True)  # fmt: skip
    actual, expected = _kernel_and_reference_grads(q, k, v, mask, block, True, generator)
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e, **GRAD_TOLERANCES[torch.float32])


def test_backward_with_index_lists_equals_mask(generator):
    q, k, v, mask, block = attention_inputs((2, 4, 2, 150, 170, 32, (32, 32)), torch.float32, generator,
                                            requires_grad=True)  # fmt: skip
    lists = masks.block_mask_to_indices(mask)
    grads = []
    for m in (mask, lists):
        out = kernels_core.block_sparse_attention(q, k, v, m, block_size=block, causal=True)
        grads.append(torch.autograd.grad(out.square().sum(), (q, k, v)))
    # dq is summed in thread-arrival order, so only the last bits may differ.
    for a, e in zip(*grads, strict=True):
        torch.testing.assert_close(a, e, atol=1e-6, rtol=1e-6)


def test_backward_thread_count_changes_only_rounding(generator):
    """dq is summed under locks in whatever order threads arrive: only the last bits may move."""
    q, k, v, mask, block = attention_inputs((1, 4, 4, 256, 256, 64, (64, 64)), torch.float32, generator,
                                            requires_grad=True)  # fmt: skip
    out = kernels_core.block_sparse_attention(q, k, v, mask, block_size=block)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = torch.autograd.grad(out.sum(), (q, k, v), retain_graph=True)
    finally:
        torch.set_num_threads(threads)
    multi = torch.autograd.grad(out.sum(), (q, k, v))
    for a, e in zip(single, multi, strict=True):
        torch.testing.assert_close(a, e, atol=1e-5, rtol=1e-5)


def test_gradcheck_of_the_op_in_float32_on_a_tiny_shape():
    """Finite differences through the compiled kernel itself (float32, so loose tolerances)."""
    g = torch.Generator().manual_seed(4)
    q = torch.randn(1, 2, 9, 5, generator=g, requires_grad=True)
    k = torch.randn(1, 1, 11, 5, generator=g, requires_grad=True)
    v = torch.randn(1, 1, 11, 5, generator=g, requires_grad=True)
    mask = masks.random_block_mask(1, 2, 9, 11, 0.7, (4, 4), generator=g)

    def fn(q, k, v):
        return kernels_core.block_sparse_attention(q, k, v, mask, block_size=(4, 4), causal=True)

    assert torch.autograd.gradcheck(fn, (q, k, v), eps=1e-2, atol=2e-2, rtol=2e-2, fast_mode=True)
