"""Bad input gets a clear error that names the argument and what was expected."""

import pytest
import torch

import kernels_core
from kernels_core import masks


def _good(dtype=torch.float32, hq=4, hkv=2, sq=100, sk=80, d=32, block=(32, 32)):
    q = torch.randn(1, hq, sq, d, dtype=dtype)
    k = torch.randn(1, hkv, sk, d, dtype=dtype)
    v = torch.randn(1, hkv, sk, d, dtype=dtype)
    return q, k, v, masks.dense_block_mask(1, hq, sq, sk, block), block


def _call(q, k, v, mask, block=(32, 32), **kw):
    return kernels_core.block_sparse_attention(q, k, v, mask, block_size=block, **kw)


def test_good_inputs_pass():
    q, k, v, mask, block = _good()
    assert _call(q, k, v, mask, block).shape == q.shape


def test_wrong_rank():
    q, k, v, mask, _block = _good()
    with pytest.raises(
        ValueError, match=r"q must have 4 dimensions \[B, Hq, Sq, D\], got shape \[4, 100, 32\]"
    ):
        _call(q[0], k, v, mask)
    with pytest.raises(ValueError, match=r"k must have 4 dimensions"):
        _call(q, k[0], v, mask)
    with pytest.raises(ValueError, match=r"block_mask must have 4 dimensions"):
        _call(q, k, v, mask[0])


def test_not_a_tensor():
    q, k, v, mask, _block = _good()
    with pytest.raises(TypeError, match=r"v must be a torch.Tensor"):
        _call(q, k, v.numpy(), mask)


def test_heads_not_divisible():
    q, k, v, _, block = _good(hq=6, hkv=4)
    mask = masks.dense_block_mask(1, 6, 100, 80, block)
    with pytest.raises(ValueError, match=r"q has 6 heads, which is not a multiple of the 4 key/value heads"):
        _call(q, k, v, mask)


def test_dtype_mix_and_unsupported_dtype():
    q, k, v, mask, _block = _good()
    with pytest.raises(TypeError, match=r"k has dtype torch.float16 but q has torch.float32"):
        _call(q, k.half(), v, mask)
    with pytest.raises(TypeError, match=r"q must have dtype .*float32.*; got torch.float64"):
        _call(q.double(), k.double(), v.double(), mask)
    with pytest.raises(TypeError, match=r"block_mask must have dtype torch.bool"):
        _call(q, k, v, mask.int())


def test_wrong_device():
    q, k, v, mask, _block = _good()
    with pytest.raises(ValueError, match=r"k is on meta but q is on cpu"):
        _call(q, k.to("meta"), v, mask)
    with pytest.raises(ValueError, match=r"block_mask is on meta but q is on cpu"):
        _call(q, k, v, mask.to("meta"))


def test_mask_shape():
    q, k, v, mask, _block = _good()
    with pytest.raises(
        ValueError, match=r"block_mask must have shape .* = \[1, 4, 4, 3\] .* got \[1, 4, 4, 4\]"
    ):
        _call(q, k, v, torch.ones(1, 4, 4, 4, dtype=torch.bool))
    # The same mask is wrong for another block size.
    with pytest.raises(ValueError, match=r"for block_size \(64, 64\)"):
        _call(q, k, v, mask, block=(64, 64))


def test_size_mismatches():
    q, k, v, mask, _block = _good()
    with pytest.raises(ValueError, match=r"head dimension \(dim 3\) of k"):
        _call(q, k[..., :16], v, mask)
    with pytest.raises(ValueError, match=r"key length \(dim 2\) of v"):
        _call(q, k, v[:, :, :40], mask)
    with pytest.raises(ValueError, match=r"batch size \(dim 0\) of k"):
        _call(q, torch.cat([k, k]), v, mask)


def test_bad_options():
    q, k, v, mask, _block = _good()
    with pytest.raises(TypeError, match=r"block_size must be a pair of ints"):
        _call(q, k, v, mask, block=64)
    with pytest.raises(ValueError, match=r"block_size must be positive"):
        _call(q, k, v, mask, block=(0, 32))
    with pytest.raises(ValueError, match=r"scale must be a finite float"):
        _call(q, k, v, mask, scale=float("nan"))
    with pytest.raises(TypeError, match=r"causal must be a bool"):
        _call(q, k, v, mask, causal="yes")


def test_compiled_binding_validates_too():
    """Calling the raw binding with bad sizes raises instead of crashing."""
    lib = kernels_core._library.library()
    params = lib.BlockSparseAttentionParams()
    with pytest.raises(ValueError, match=r"a tensor address is null"):
        lib.block_sparse_attention_forward_cpu(params, 1)
