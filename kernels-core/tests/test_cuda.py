"""The CUDA kernel against the reference on the same shape grid (runs wherever CUDA is present)."""

import pytest
import torch
from conftest import TOLERANCES
from test_block_sparse_attention import DTYPES, SHAPES

import kernels_core
from kernels_core import masks, reference

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s[:6])) + f"-b{s[6][0]}x{s[6][1]}")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_cuda_matches_reference(shape, dtype, causal):
    g = torch.Generator().manual_seed(0)
    b, hq, hkv, sq, sk, d, block = shape
    q = torch.randn(b, hq, sq, d, generator=g).to("cuda", dtype)
    k = torch.randn(b, hkv, sk, d, generator=g).to("cuda", dtype)
    v = torch.randn(b, hkv, sk, d, generator=g).to("cuda", dtype)
    mask = masks.random_block_mask(b, hq, sq, sk, 0.5, block, generator=g).cuda()
    out, lse = kernels_core.block_sparse_attention(
        q, k, v, mask, block_size=block, causal=causal, return_lse=True
    )
    ref_out, ref_lse = reference.block_sparse_attention(
        q, k, v, mask, block_size=block, causal=causal, return_lse=True
    )
    torch.testing.assert_close(out, ref_out, **TOLERANCES[dtype])
    assert torch.equal(torch.isinf(lse), torch.isinf(ref_lse))
    finite = torch.isfinite(ref_lse)
    torch.testing.assert_close(lse[finite], ref_lse[finite], atol=1e-4, rtol=1e-4)


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
        torch.ops.kernels_core.block_sparse_attention.default, (q, k, v, mask, 64, 64, True, 0.125)
    )
    fn = torch.compile(
        lambda q, k, v: kernels_core.block_sparse_attention(q, k, v, mask, causal=True), fullgraph=True
    )
    torch.testing.assert_close(fn(q, k, v), kernels_core.block_sparse_attention(q, k, v, mask, causal=True))
