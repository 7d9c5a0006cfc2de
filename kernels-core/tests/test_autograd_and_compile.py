"""Autograd formula, torch.library.opcheck and torch.compile."""

import pytest
import torch

import kernels_core
from kernels_core import masks, reference


def _inputs(
    dtype=torch.float32, shape=(2, 4, 2, 70, 90, 24), block=(32, 32), density=0.6, requires_grad=True
):
    g = torch.Generator().manual_seed(1)
    b, hq, hkv, sq, sk, d = shape
    q = torch.randn(b, hq, sq, d, generator=g, dtype=dtype, requires_grad=requires_grad)
    k = torch.randn(b, hkv, sk, d, generator=g, dtype=dtype, requires_grad=requires_grad)
    v = torch.randn(b, hkv, sk, d, generator=g, dtype=dtype, requires_grad=requires_grad)
    mask = masks.random_block_mask(b, hq, sq, sk, density, block, generator=g)
    mask[0, -1, 0] = False  # a query block with no key: gradients must stay finite (zero)
    return q, k, v, mask, block


@pytest.mark.parametrize("causal", [False, True])
def test_backward_formula_matches_autograd_float64(causal):
    """The analytic backward (dq, dk, dv, with an lse gradient) equals autograd of the reference."""
    q, k, v, mask, block = _inputs(torch.float64)
    out, lse = reference.block_sparse_attention(
        q, k, v, mask, block_size=block, causal=causal, return_lse=True
    )
    g = torch.Generator().manual_seed(2)
    grad_out = torch.randn(out.shape, generator=g, dtype=torch.float64)
    grad_lse = torch.randn(lse.shape, generator=g, dtype=torch.float64)
    grad_lse = torch.where(torch.isfinite(lse), grad_lse, torch.zeros_like(grad_lse))
    finite_lse = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
    expected = torch.autograd.grad((out * grad_out).sum() + (finite_lse * grad_lse).sum(), (q, k, v))
    assert all(torch.isfinite(e).all() for e in expected)
    actual = reference.block_sparse_attention_backward(
        grad_out, grad_lse, q, k, v, out, lse, mask, block_size=block, causal=causal
    )
    for a, e, name in zip(actual, expected, "qkv", strict=True):
        torch.testing.assert_close(a, e, atol=1e-10, rtol=1e-10, msg=f"d{name}")


def test_op_gradients_match_reference_autograd():
    q, k, v, mask, block = _inputs()
    out = kernels_core.block_sparse_attention(q, k, v, mask, block_size=block, causal=True)
    grad_out = torch.randn_like(out)
    grads = torch.autograd.grad((out * grad_out).sum(), (q, k, v))
    ref_out = reference.block_sparse_attention(q, k, v, mask, block_size=block, causal=True)
    ref_grads = torch.autograd.grad((ref_out * grad_out).sum(), (q, k, v))
    for a, e in zip(grads, ref_grads, strict=True):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, e, atol=1e-4, rtol=1e-4)


def test_gradient_of_masked_blocks_is_zero():
    q, k, v, mask, block = _inputs(shape=(1, 1, 1, 64, 128, 16), density=1.0)
    mask[:] = True
    mask[..., 1] = False
    out = kernels_core.block_sparse_attention(q, k, v, mask, block_size=block)
    dk, dv = torch.autograd.grad(out.sum(), (k, v))
    assert torch.all(dk[:, :, 32:64] == 0) and torch.all(dv[:, :, 32:64] == 0)
    assert dk[:, :, :32].abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("causal", [False, True])
def test_opcheck(dtype, causal):
    q, k, v, mask, block = _inputs(dtype, requires_grad=True)
    torch.library.opcheck(
        torch.ops.kernels_core.block_sparse_attention.default,
        (q, k, v, mask, None, None, None, None, 0, 0, block[0], block[1], causal, 0.2),
    )


def test_opcheck_without_grad_and_with_broadcast_mask():
    q, k, v, _, block = _inputs(requires_grad=False)
    shared = masks.random_block_mask(1, 1, q.shape[2], k.shape[2], 0.5, block)
    torch.library.opcheck(
        torch.ops.kernels_core.block_sparse_attention.default,
        (q, k, v, shared, None, None, None, None, 0, 0, block[0], block[1], False, 0.2),
    )


@pytest.mark.parametrize("causal", [False, True])
def test_opcheck_index_lists(causal):
    q, k, v, mask, block = _inputs()
    lists = masks.block_mask_to_indices(mask)
    torch.library.opcheck(
        torch.ops.kernels_core.block_sparse_attention.default,
        (q, k, v, None, lists.counts, lists.indices, None, None, 0, 0, block[0], block[1], causal, 0.3),
    )


def test_opcheck_varlen():
    g = torch.Generator().manual_seed(3)
    lengths_q, lengths_k = [5, 40, 0, 33], [9, 40, 3, 70]
    cu_q = torch.tensor([0, *torch.tensor(lengths_q).cumsum(0).tolist()], dtype=torch.int32)
    cu_k = torch.tensor([0, *torch.tensor(lengths_k).cumsum(0).tolist()], dtype=torch.int32)
    q = torch.randn(1, 4, int(cu_q[-1]), 16, generator=g, requires_grad=True)
    k = torch.randn(1, 2, int(cu_k[-1]), 16, generator=g, requires_grad=True)
    v = torch.randn(1, 2, int(cu_k[-1]), 16, generator=g, requires_grad=True)
    mask = masks.random_block_mask(4, 4, 40, 70, 0.6, (16, 16), generator=g)
    torch.library.opcheck(
        torch.ops.kernels_core.block_sparse_attention.default,
        (q, k, v, mask, None, None, cu_q, cu_k, 40, 70, 16, 16, True, 0.25),
    )


def test_opcheck_backward_op():
    q, k, v, mask, block = _inputs(requires_grad=False)
    out, lse = kernels_core.block_sparse_attention(q, k, v, mask, block_size=block, return_lse=True)
    dout, dlse = torch.randn_like(out), torch.randn_like(lse)
    torch.library.opcheck(
        torch.ops.kernels_core.block_sparse_attention_backward.default,
        (dout, dlse, q, k, v, out, lse, mask, None, None, 0, 0, block[0], block[1], False, 0.2),
    )


def test_torch_compile_fullgraph_matches_eager():
    q, k, v, mask, _block = _inputs(requires_grad=False)

    def attention_then_mlp(q, k, v, mask):
        out = kernels_core.block_sparse_attention(q, k, v, mask, block_size=(32, 32), causal=True)
        return torch.nn.functional.gelu(out) * 2

    compiled = torch.compile(attention_then_mlp, fullgraph=True, backend="inductor")
    torch.testing.assert_close(
        compiled(q, k, v, mask), attention_then_mlp(q, k, v, mask), atol=1e-6, rtol=1e-6
    )


def test_torch_compile_backward():
    q, k, v, mask, block = _inputs()

    def loss(q, k, v):
        return kernels_core.block_sparse_attention(q, k, v, mask, block_size=block).square().sum()

    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    grads = torch.autograd.grad(compiled(q, k, v), (q, k, v))
    expected = torch.autograd.grad(loss(q, k, v), (q, k, v))
    for a, e in zip(grads, expected, strict=True):
        torch.testing.assert_close(a, e, atol=1e-5, rtol=1e-5)
