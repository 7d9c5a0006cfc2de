"""Decode attention (few queries against a KV cache, optional per-head position lists)."""

import pytest
import torch
from conftest import TOLERANCES

import kernels_core
from kernels_core import reference

# (batch, heads_q, heads_kv, seqlen_q, cache_len, head_dim)
DECODE_SHAPES = [
    (1, 1, 1, 1, 1, 64),
    (2, 4, 2, 1, 300, 33),
    (1, 28, 4, 1, 2100, 128),  # Qwen2.5-VL-7B heads, several splits
    (3, 8, 8, 4, 130, 17),  # speculative decoding: 4 new tokens
    (1, 2, 1, 3, 700, 255),
]


def _cache(shape, dtype, generator):
    b, hq, hkv, sq, s, d = shape
    q = torch.randn(b, hq, sq, d, generator=generator).to(dtype)
    k = torch.randn(b, hkv, s, d, generator=generator).to(dtype)
    v = torch.randn(b, hkv, s, d, generator=generator).to(dtype)
    return q, k, v


def _assert_close(q, k, v, dtype, **kwargs):
    out, lse = kernels_core.decode_attention(q, k, v, return_lse=True, **kwargs)
    ref_out, ref_lse = reference.decode_attention(q, k, v, return_lse=True, **kwargs)
    torch.testing.assert_close(out, ref_out, **TOLERANCES[dtype])
    assert torch.equal(torch.isinf(lse), torch.isinf(ref_lse))
    finite = torch.isfinite(ref_lse)
    torch.testing.assert_close(lse[finite], ref_lse[finite], atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("shape", DECODE_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_full_cache_matches_reference(cpu_isa, shape, dtype, causal, generator):
    q, k, v = _cache(shape, dtype, generator)
    _assert_close(q, k, v, dtype, causal=causal)


@pytest.mark.parametrize("shape", DECODE_SHAPES[1:], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_per_head_indices_and_lengths_match_reference(cpu_isa, shape, causal, generator):
    q, k, v = _cache(shape, torch.float32, generator)
    b, _, hkv, _, s, _ = shape
    n = max(1, s // 3)
    # Distinct random positions per head, some padded with -1, different counts per head.
    indices = torch.stack([torch.randperm(s, generator=generator)[:n] for _ in range(b * hkv)]).view(
        b, hkv, n
    )
    indices[..., -1] = -1
    counts = torch.randint(1, n + 1, (b, hkv), generator=generator, dtype=torch.int32)
    lengths = torch.randint(1, s + 1, (b,), generator=generator, dtype=torch.int32)
    _assert_close(
        q,
        k,
        v,
        torch.float32,
        kv_indices=indices.int(),
        kv_counts=counts,
        cache_seqlens=lengths,
        causal=causal,
    )


def test_full_index_list_equals_plain_cache(generator):
    q, k, v = _cache((2, 4, 2, 1, 500, 64), torch.float32, generator)
    indices = torch.arange(500, dtype=torch.int32).flip(0).expand(2, 2, 500)
    out = kernels_core.decode_attention(q, k, v, kv_indices=indices)
    torch.testing.assert_close(out, kernels_core.decode_attention(q, k, v), atol=1e-5, rtol=1e-5)


def test_matches_sdpa_on_the_full_cache(generator):
    q, k, v = _cache((2, 8, 2, 1, 1000, 64), torch.float32, generator)
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    torch.testing.assert_close(kernels_core.decode_attention(q, k, v), expected, atol=2e-5, rtol=2e-5)


def test_heads_without_keys_return_zeros(generator):
    q, k, v = _cache((1, 2, 2, 1, 50, 16), torch.float32, generator)
    indices = torch.full((1, 2, 4), -1, dtype=torch.int32)
    indices[0, 1, :2] = torch.tensor([3, 7])
    out, lse = kernels_core.decode_attention(q, k, v, kv_indices=indices, return_lse=True)
    assert torch.all(out[0, 0] == 0) and lse[0, 0, 0] == float("-inf")
    assert torch.isfinite(lse[0, 1]).all()


def test_bad_decode_inputs(generator):
    q, k, v = _cache((1, 4, 2, 1, 20, 8), torch.float32, generator)
    with pytest.raises(ValueError, match="lists a cache position twice"):
        kernels_core.decode_attention(q, k, v, kv_indices=torch.tensor([[[1, 1], [2, 3]]]))
    with pytest.raises(ValueError, match="kv_indices must have shape"):
        kernels_core.decode_attention(q, k, v, kv_indices=torch.arange(6, dtype=torch.int32).view(1, 3, 2))
    with pytest.raises(ValueError, match="kv_counts needs kv_indices"):
        kernels_core.decode_attention(q, k, v, kv_counts=torch.ones(1, 2, dtype=torch.int32))
    with pytest.raises(ValueError, match="not a multiple"):
        kernels_core.decode_attention(q, k[:, :1].expand(1, 3, 20, 8), v[:, :1].expand(1, 3, 20, 8))
    with pytest.raises(TypeError, match="cache_seqlens must be an int32 or int64 tensor"):
        kernels_core.decode_attention(q, k, v, cache_seqlens=torch.ones(1))


def test_decode_opcheck(generator):
    q, k, v = _cache((2, 4, 2, 2, 40, 16), torch.float32, generator)
    indices = torch.randint(0, 40, (2, 2, 8), generator=generator, dtype=torch.int32)
    torch.library.opcheck(
        torch.ops.kernels_core.decode_attention.default,
        (q, k, v, torch.tensor([30, 40], dtype=torch.int32), indices, None, True, 0.25),
        test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_dynamic"),
    )
