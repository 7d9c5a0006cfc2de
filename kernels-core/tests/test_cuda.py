"""The CUDA kernels against the references on the same grids (runs wherever CUDA is present)."""

import pytest
import torch
from conftest import DTYPES, SHAPES, TOLERANCES, shape_id

import kernels_core
from kernels_core import masks, reference

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

GRAD_TOLERANCES = {
    torch.float32: {"atol": 2e-4, "rtol": 2e-4},
    torch.float16: {"atol": 1e-2, "rtol": 1e-2},
    torch.bfloat16: {"atol": 6e-2, "rtol": 6e-2},
}
# Shapes the tensor-core (sm_80+) forward takes: D 64/128, blocks multiples of 64, odd lengths.
TENSOR_CORE_SHAPES = [
    (1, 2, 2, 64, 64, 64, (64, 64)),
    (2, 4, 2, 300, 333, 128, (64, 64)),
    (1, 4, 1, 1000, 1000, 128, (128, 128)),
    (1, 2, 2, 130, 700, 64, (64, 128)),
    (2, 8, 8, 257, 129, 64, (128, 64)),
]


def _cuda_inputs(shape, dtype, seed=0, density=0.5):
    g = torch.Generator().manual_seed(seed)
    b, hq, hkv, sq, sk, d, block = shape
    q = torch.randn(b, hq, sq, d, generator=g).to("cuda", dtype)
    k = torch.randn(b, hkv, sk, d, generator=g).to("cuda", dtype)
    v = torch.randn(b, hkv, sk, d, generator=g).to("cuda", dtype)
    mask = masks.random_block_mask(b, hq, sq, sk, density, block, generator=g).cuda()
    return q, k, v, mask, block


def _assert_forward_matches(q, k, v, mask, block, causal):
    out, lse = kernels_core.block_sparse_attention(
        q, k, v, mask, block_size=block, causal=causal, return_lse=True
    )
    ref_out, ref_lse = reference.block_sparse_attention(
        q, k, v, mask, block_size=block, causal=causal, return_lse=True
    )
    torch.testing.assert_close(out, ref_out, **TOLERANCES[q.dtype])
    assert torch.equal(torch.isinf(lse), torch.isinf(ref_lse))
    finite = torch.isfinite(ref_lse)
    torch.testing.assert_close(lse[finite], ref_lse[finite], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_cuda_matches_reference(shape, dtype, causal):
    _assert_forward_matches(*_cuda_inputs(shape, dtype), causal)


@pytest.mark.parametrize("shape", TENSOR_CORE_SHAPES, ids=shape_id)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("sparsity", ["mask", "indices", "dense"])
def test_tensor_core_forward_matches_reference(shape, dtype, causal, sparsity):
    q, k, v, mask, block = _cuda_inputs(shape, dtype, seed=5)
    mask[0, 0, 0] = False  # a query block with no key
    if sparsity == "indices":
        mask = masks.block_mask_to_indices(mask)
    elif sparsity == "dense":
        mask = None
    _assert_forward_matches(q, k, v, mask, block, causal)


@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_cuda_backward_matches_reference(shape, dtype, causal):
    q, k, v, mask, block = _cuda_inputs(shape, dtype, seed=3)
    q, k, v = (x.requires_grad_() for x in (q, k, v))
    out, lse = kernels_core.block_sparse_attention(
        q, k, v, mask, block_size=block, causal=causal, return_lse=True
    )
    g = torch.Generator().manual_seed(4)
    grad_out = torch.randn(out.shape, generator=g).to("cuda", dtype)
    grad_lse = torch.where(
        torch.isfinite(lse), torch.randn(lse.shape, generator=g).cuda(), torch.zeros((), device="cuda")
    )
    loss = (out.float() * grad_out.float()).sum() + (
        torch.where(torch.isfinite(lse), lse, 0.0) * grad_lse
    ).sum()
    actual = torch.autograd.grad(loss, (q, k, v))
    with torch.no_grad():
        ref_out, ref_lse = reference.block_sparse_attention(q, k, v, mask, block_size=block, causal=causal,
                                                            return_lse=True)  # fmt: skip
        expected = reference.block_sparse_attention_backward(
            grad_out, grad_lse, q, k, v, ref_out, ref_lse, mask, block_size=block, causal=causal
        )
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a.float(), e.float(), **GRAD_TOLERANCES[dtype])


def test_cuda_varlen_matches_reference():
    g = torch.Generator().manual_seed(6)
    lengths_q, lengths_k = [5, 64, 130, 0], [7, 64, 100, 40]
    cu_q = torch.tensor([0, *torch.tensor(lengths_q).cumsum(0).tolist()], dtype=torch.int32)
    cu_k = torch.tensor([0, *torch.tensor(lengths_k).cumsum(0).tolist()], dtype=torch.int32)
    q = torch.randn(int(cu_q[-1]), 4, 64, generator=g).to(torch.bfloat16)
    k = torch.randn(int(cu_k[-1]), 2, 64, generator=g).to(torch.bfloat16)
    v = torch.randn(int(cu_k[-1]), 2, 64, generator=g).to(torch.bfloat16)
    mask = masks.random_block_mask(4, 4, 130, 100, 0.6, (64, 64), generator=g)
    expected = reference.block_sparse_attention_varlen(q, k, v, cu_q, cu_k, 130, 100, mask, causal=True)
    actual = kernels_core.block_sparse_attention_varlen(
        q.cuda(), k.cuda(), v.cuda(), cu_q.cuda(), cu_k.cuda(), 130, 100, mask.cuda(), causal=True
    )
    torch.testing.assert_close(actual.cpu(), expected, **TOLERANCES[torch.bfloat16])


# (heads_q, heads_kv, Sq, D): group x Sq <= 16 takes the tensor-core split pass for bf16/fp16.
DECODE_SHAPES = [(28, 4, 2, 128), (8, 8, 1, 64), (32, 2, 1, 128), (4, 1, 3, 80)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", DECODE_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_cuda_decode_matches_reference(dtype, shape):
    heads_q, heads_kv, sq, d = shape
    g = torch.Generator().manual_seed(7)
    q = torch.randn(2, heads_q, sq, d, generator=g).to("cuda", dtype)
    k = torch.randn(2, heads_kv, 3000, d, generator=g).to("cuda", dtype)
    v = torch.randn(2, heads_kv, 3000, d, generator=g).to("cuda", dtype)
    lists = [torch.randperm(3000, generator=g)[:900] for _ in range(2 * heads_kv)]
    indices = torch.stack(lists).view(2, heads_kv, 900).int().cuda()
    counts = torch.randint(1, 901, (2, heads_kv), generator=g, dtype=torch.int32).cuda()
    counts[0, 0] = 0  # a head that keeps nothing: zeros and lse = -inf
    lengths = torch.tensor([2500, 3000], dtype=torch.int32, device="cuda")
    for kwargs in ({}, {"kv_indices": indices, "kv_counts": counts, "cache_seqlens": lengths}):
        out, lse = kernels_core.decode_attention(q, k, v, causal=True, return_lse=True, **kwargs)
        expected, expected_lse = reference.decode_attention(q, k, v, causal=True, return_lse=True, **kwargs)
        torch.testing.assert_close(out, expected, **TOLERANCES[dtype])
        assert torch.equal(torch.isinf(lse), torch.isinf(expected_lse))


def test_cuda_mask_predictor_matches_cpu():
    g = torch.Generator().manual_seed(8)
    q, k = torch.randn(1, 4, 2000, 64, generator=g), torch.randn(1, 2, 2000, 64, generator=g)
    cpu = kernels_core.predict_block_indices(q, k, gamma=0.8, causal=True)
    gpu = kernels_core.predict_block_indices(q.cuda(), k.cuda(), gamma=0.8, causal=True)
    torch.testing.assert_close(
        kernels_core.block_scores(q.cuda(), k.cuda(), causal=True).cpu(), kernels_core.block_scores(q, k, causal=True),
        atol=1e-5, rtol=1e-4,
    )  # fmt: skip
    assert (gpu.counts.cpu() - cpu.counts).abs().max() <= 1  # float summation order may move a boundary


def test_cuda_matches_cpu_kernel_on_strided_inputs():
    g = torch.Generator().manual_seed(1)
    x = [torch.randn(2, 300, 4, 64, generator=g) for _ in range(3)]
    mask = masks.random_block_mask(2, 4, 300, 300, 0.3, (64, 64), generator=g)
    cpu = kernels_core.block_sparse_attention(*(t.transpose(1, 2) for t in x), mask, causal=True)
    gpu = kernels_core.block_sparse_attention(
        *(t.cuda().transpose(1, 2) for t in x), mask.cuda(), causal=True
    )
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-5, rtol=1e-5)


def test_cuda_rejects_head_dim_above_256():
    q = torch.randn(1, 1, 8, 320, device="cuda")
    mask = torch.ones(1, 1, 1, 1, dtype=torch.bool, device="cuda")
    with pytest.raises(ValueError, match="cuda kernel supports head dimensions up to 256"):
        kernels_core.block_sparse_attention(q, q, q, mask)


def test_cuda_opcheck_and_compile():
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(1, 2, 100, 64, generator=g).cuda().requires_grad_() for _ in range(3))
    mask = masks.random_block_mask(1, 2, 100, 100, 0.5, (64, 64), generator=g).cuda()
    torch.library.opcheck(
        torch.ops.kernels_core.block_sparse_attention.default,
        (q, k, v, mask, None, None, None, None, 0, 0, 64, 64, True, 0.125),
    )
    fn = torch.compile(
        lambda q, k, v: kernels_core.block_sparse_attention(q, k, v, mask, causal=True), fullgraph=True
    )
    torch.testing.assert_close(fn(q, k, v), kernels_core.block_sparse_attention(q, k, v, mask, causal=True))


def _is_hopper() -> bool:
    return torch.cuda.is_available() and torch.cuda.get_device_capability()[0] == 9


@pytest.mark.skipif(not _is_hopper(), reason="the wgmma + TMA kernel runs on Hopper (sm_90a) only")
@pytest.mark.parametrize("shape", TENSOR_CORE_SHAPES, ids=shape_id)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("sparsity", ["mask", "indices"])
def test_hopper_wgmma_forward_matches_reference(monkeypatch, shape, causal, sparsity):
    """The opt-in sm_90a kernel (KC_SM90_WGMMA=1) against the reference, bf16 and fp16."""
    monkeypatch.setenv("KC_SM90_WGMMA", "1")
    for dtype in (torch.bfloat16, torch.float16):
        q, k, v, mask, block = _cuda_inputs(shape, dtype, seed=9)
        mask[0, 0, 0] = False
        _assert_forward_matches(q, k, v, masks.block_mask_to_indices(mask) if sparsity == "indices" else mask,
                                block, causal)  # fmt: skip


@pytest.mark.skipif(not _is_hopper(), reason="the wgmma + TMA kernel runs on Hopper (sm_90a) only")
def test_hopper_wgmma_varlen_and_strided(monkeypatch):
    monkeypatch.setenv("KC_SM90_WGMMA", "1")
    g = torch.Generator().manual_seed(10)
    x = [torch.randn(2, 300, 4, 128, generator=g).to(torch.bfloat16) for _ in range(3)]
    mask = masks.random_block_mask(2, 4, 300, 300, 0.4, (64, 64), generator=g)
    expected = reference.block_sparse_attention(*(t.transpose(1, 2) for t in x), mask, causal=True)
    actual = kernels_core.block_sparse_attention(
        *(t.cuda().transpose(1, 2) for t in x), mask.cuda(), causal=True
    )
    torch.testing.assert_close(actual.cpu(), expected, **TOLERANCES[torch.bfloat16])
    test_cuda_varlen_matches_reference()


def test_cuda_nearest_neighbor_and_chamfer_match_reference():
    g = torch.Generator().manual_seed(11)
    x = torch.randn(2, 3001, 3, generator=g).cuda().requires_grad_()
    y = torch.randn(2, 2047, 3, generator=g).cuda().requires_grad_()
    dist, index = kernels_core.nearest_neighbor(x, y)
    ref_dist, ref_index = reference.nearest_neighbor(x, y)
    assert torch.equal(index, ref_index)
    torch.testing.assert_close(dist, ref_dist, atol=1e-5, rtol=1e-5)
    loss = kernels_core.chamfer_distance(x, y).loss.sum()
    expected = reference.chamfer_distance(x, y)[0].sum()
    torch.testing.assert_close(loss, expected, atol=1e-4, rtol=1e-5)
    for a, e in zip(torch.autograd.grad(loss, (x, y)), torch.autograd.grad(expected, (x, y)), strict=True):
        torch.testing.assert_close(a, e, atol=1e-6, rtol=1e-5)
