"""OmniSparse on CUDA: the selection, the sparse prefill and the slimmed decode against dense (runs
wherever CUDA is present)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import kernels_core
import omnisparse
from omnisparse import OmniSparseConfig, SlimKVCache, select_prefill_blocks

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("seq_len", [200, 1000])
def test_full_recall_prefill_matches_sdpa(dtype: torch.dtype, seq_len: int) -> None:
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 8, seq_len, 128, generator=g).to("cuda", dtype)
    k = torch.randn(1, 2, seq_len, 128, generator=g).to("cuda", dtype)
    v = torch.randn(1, 2, seq_len, 128, generator=g).to("cuda", dtype)
    config = OmniSparseConfig(block_size=64, gamma=1.0, lazy_keep_ratio=1.0, min_seq_len=0)
    selection = select_prefill_blocks(q, k, config)
    assert selection.density == 1.0
    out = kernels_core.block_sparse_attention(q, k, v, selection.indices, causal=True, check_indices=False)
    ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True, enable_gqa=True)
    tol = 2e-3 if dtype == torch.float32 else 3e-2
    torch.testing.assert_close(out.float(), ref, atol=tol, rtol=tol)


def test_slim_decode_matches_gathered_attention() -> None:
    g = torch.Generator().manual_seed(1)
    keys = torch.randn(1, 2, 50, 64, generator=g).cuda()
    values = torch.randn(1, 2, 50, 64, generator=g).cuda()
    cache = SlimKVCache(num_layers=1)
    cache.update(keys, values, 0)
    keep = [[torch.arange(0, 50, 2), torch.arange(10, 40)]]
    cache.layer(0).slim(keep)
    new_k = torch.randn(1, 2, 1, 64, generator=g).cuda()
    new_v = torch.randn(1, 2, 1, 64, generator=g).cuda()
    pool_k, pool_v = cache.update(new_k, new_v, 0)
    layer = cache.layer(0)
    q = torch.randn(1, 4, 1, 64, generator=g).cuda()
    out = kernels_core.decode_attention(
        q, pool_k, pool_v, kv_indices=layer.kv_indices, kv_counts=layer.kv_counts
    )
    for head in range(4):
        kv = head // 2
        k_h = torch.cat([keys[0, kv, keep[0][kv].cuda()], new_k[0, kv]])
        v_h = torch.cat([values[0, kv, keep[0][kv].cuda()], new_v[0, kv]])
        ref = torch.softmax(q[0, head] @ k_h.T / 8.0, -1) @ v_h
        torch.testing.assert_close(out[0, head], ref, atol=1e-4, rtol=1e-4)


def test_apply_on_cuda_keeps_dense_answers_with_full_recall() -> None:
    from accel_shared.tiny_models import build_tiny_model, tiny_inputs

    model = build_tiny_model("qwen2-vl").cuda()
    inputs = tiny_inputs("qwen2-vl", model)
    config = OmniSparseConfig(
        block_size=4,
        min_seq_len=4,
        gamma=1.0,
        lazy_keep_ratio=1.0,
        decode_gamma=1.0,
        head_visual_threshold=0.0,
    )
    with torch.no_grad():
        dense = model.generate(**inputs, max_new_tokens=4, do_sample=False)
        omnisparse.apply(model, config)
        try:
            sparse = model.generate(**inputs, max_new_tokens=4, do_sample=False)
            assert isinstance(omnisparse.get_state(model).cache, SlimKVCache)
        finally:
            omnisparse.remove(model)
    assert torch.equal(dense, sparse)
