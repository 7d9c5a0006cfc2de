"""FP8 conversion and FP8 block-sparse attention against their pure-torch references."""

import math

import pytest
import torch

import kernels_core
from kernels_core import masks, reference

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _all_finite_codes() -> torch.Tensor:
    codes = torch.arange(256, dtype=torch.uint8)
    return codes[(codes & 0x7F) != 0x7F]


def test_encode_matches_torch_on_every_code_and_midpoint() -> None:
    exact = _all_finite_codes().view(torch.float8_e4m3fn).float()
    sorted_values = exact.unique()
    midpoints = (sorted_values[1:] + sorted_values[:-1]) / 2  # ties: round to even
    nudged = torch.cat(
        [midpoints, torch.nextafter(midpoints, midpoints + 1), torch.nextafter(midpoints, midpoints - 1)]
    )
    values = torch.cat([exact, nudged, torch.randn(20000) * 50, torch.randn(2000) * 1e-3])
    values = values[values.abs() <= 448]
    ours = kernels_core.quantize_fp8_e4m3(values, 1.0).view(torch.uint8)
    torch_own = values.to(torch.float8_e4m3fn).view(torch.uint8)
    assert torch.equal(ours, torch_own)


def test_encode_saturates_and_keeps_nan() -> None:
    values = torch.tensor([448.0, 449.0, 463.9, 464.0, 1e6, math.inf, -500.0, -math.inf, math.nan])
    out = kernels_core.quantize_fp8_e4m3(values, 1.0).float()
    assert out[:8].tolist() == [448.0, 448.0, 448.0, 448.0, 448.0, 448.0, -448.0, -448.0]
    assert math.isnan(out[8].item())


@pytest.mark.parametrize("device", DEVICES)
def test_encode_with_broadcast_scales_matches_reference(device: str) -> None:
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(2, 3, 37, 16, generator=g) * 10).to(device, torch.bfloat16)
    scale = (torch.rand(2, 3, 37, 1, generator=g) + 0.01).to(device)
    ours = kernels_core.quantize_fp8_e4m3(x, scale)
    assert ours.dtype == torch.float8_e4m3fn and ours.shape == x.shape
    expected = reference.quantize_fp8_e4m3(x.cpu(), scale.cpu())
    assert torch.equal(ours.cpu().view(torch.uint8), expected.view(torch.uint8))


def test_encode_rejects_bad_scale() -> None:
    x = torch.randn(4, 4)
    with pytest.raises(ValueError, match="scale must be positive"):
        kernels_core.quantize_fp8_e4m3(x, 0.0)
    with pytest.raises(ValueError, match="does not broadcast"):
        kernels_core.quantize_fp8_e4m3(x, torch.ones(3))
    with pytest.raises(TypeError, match="x must have dtype"):
        kernels_core.quantize_fp8_e4m3(x.int(), 1.0)


def test_fake_quantize_is_straight_through() -> None:
    x = torch.randn(8, 8, requires_grad=True)
    y = kernels_core.fake_quantize_fp8_e4m3(x, 0.01)
    assert not torch.equal(y, x)  # really quantized
    assert ((y - x).abs() <= x.abs() / 16 + 0.01 * 2**-9).all()  # half an e4m3 step
    y.sum().backward()
    torch.testing.assert_close(x.grad, torch.ones_like(x))


def test_group_and_channel_scales() -> None:
    x = torch.zeros(1, 1, 10, 4)
    x[0, 0, 3, 1] = -4.48
    x[0, 0, 9, 2] = 8.96
    scales = kernels_core.group_scales(x, 4)
    torch.testing.assert_close(scales, torch.tensor([[[0.01, 1.0, 0.02]]]))
    channels = kernels_core.channel_scales(x)
    torch.testing.assert_close(channels, torch.tensor([[[1.0, 0.01, 0.02, 1.0]]]))


# (batch, heads_q, heads_kv, seqlen_q, seqlen_k, head_dim, block_size, groups)
FP8_SHAPES = [
    (1, 1, 1, 64, 64, 64, (64, 64), (64, 64)),
    (2, 4, 2, 100, 130, 64, (64, 64), (32, 16)),
    (1, 2, 1, 200, 150, 128, (48, 32), (48, 32)),
    (1, 3, 3, 77, 333, 64, (16, 128), (16, 128)),
    (1, 2, 2, 130, 200, 32, (128, 80), (7, 50)),
]


def _inputs(shape, seed=0, dtype=torch.float32, device="cpu"):
    b, hq, hkv, sq, sk, d, _, _ = shape
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, hq, sq, d, generator=g) * 2
    k = torch.randn(b, hkv, sk, d, generator=g)
    v = torch.randn(b, hkv, sk, d, generator=g)
    return (x.to(device, dtype) for x in (q, k, v))


def _random_lists(shape, seed=1):
    b, hq, _, sq, sk, _, (bq, bk), _ = shape
    mask = masks.random_block_mask(
        b, hq, sq, sk, block_size=(bq, bk), density=0.5, generator=torch.Generator().manual_seed(seed)
    )
    lists = masks.block_mask_to_indices(mask)
    # Shuffle each list: the kernels must follow list order.
    perm = torch.argsort(
        torch.rand(lists.indices.shape, generator=torch.Generator().manual_seed(seed)), dim=-1
    )
    shuffled = torch.gather(lists.indices, -1, perm)
    valid = shuffled >= 0
    order = torch.argsort((~valid).int(), dim=-1, stable=True)
    return masks.BlockIndices(lists.counts, torch.gather(shuffled, -1, order))


def _reference(q, k, v, lists, shape, key_valid=None):
    bq, bk = shape[6]
    qg, kg = shape[7]
    quant = kernels_core.quantize_attention_inputs(q, k, v, q_group=qg, k_group=kg)
    return reference.fp8_attention(
        quant.q.cpu(), quant.k.cpu(), quant.v.cpu(), quant.q_scale.cpu(), quant.k_scale.cpu(), quant.v_scale.cpu(),
        None if lists is None else masks.BlockIndices(lists.counts.cpu(), lists.indices.cpu()),
        block_size=(bq, bk), q_group=qg, k_group=kg, key_valid=None if key_valid is None else key_valid.cpu(),
    )  # fmt: skip


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
@pytest.mark.parametrize(
    "shape", FP8_SHAPES, ids=lambda s: "x".join(map(str, s[:6])) + f"-b{s[6][0]}x{s[6][1]}"
)
def test_cpu_fp8_attention_matches_reference(shape, sparse: bool) -> None:
    q, k, v = _inputs(shape)
    lists = _random_lists(shape) if sparse else None
    out, lse = kernels_core.fp8_block_sparse_attention(
        q, k, v, lists, block_size=shape[6], q_group=shape[7][0], k_group=shape[7][1], return_lse=True
    )
    ref_out, ref_lse = _reference(q, k, v, lists, shape)
    torch.testing.assert_close(out, ref_out, atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(lse, ref_lse, atol=1e-4, rtol=1e-4)


def test_fp8_attention_error_is_small_against_full_precision() -> None:
    shape = (1, 2, 2, 512, 512, 64, (64, 64), (64, 64))
    q, k, v = _inputs(shape)
    out = kernels_core.fp8_block_sparse_attention(q, k, v)
    exact = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    rel_l2 = ((out - exact).norm() / exact.norm()).item()
    assert 1e-3 < rel_l2 < 0.08  # quantized (not exact), but close


def test_key_valid_matches_attention_without_the_padding() -> None:
    shape = (1, 2, 1, 96, 160, 64, (32, 32), (32, 32))
    q, k, v = _inputs(shape)
    valid = torch.ones(160, dtype=torch.bool)
    valid[40:72] = False  # one whole key block of padding
    k_pad, v_pad = k.clone(), v.clone()
    k_pad[:, :, ~valid] = 0
    v_pad[:, :, ~valid] = 0
    out = kernels_core.fp8_block_sparse_attention(q, k_pad, v_pad, block_size=(32, 32), key_valid=valid)
    # Dropping the padded block [32, 64) ... only keys 40..71 are invalid: compare with the reference.
    ref, _ = _reference(q, k_pad, v_pad, None, shape, key_valid=valid)
    torch.testing.assert_close(out, ref, atol=2e-3, rtol=2e-3)
    exact = torch.nn.functional.scaled_dot_product_attention(
        q, k[:, :, valid], v[:, :, valid], enable_gqa=True
    )
    assert ((out - exact).norm() / exact.norm()).item() < 0.08


def test_fp8_attention_gradients_are_straight_through() -> None:
    shape = (1, 2, 1, 70, 90, 32, (32, 32), (32, 32))
    q, k, v = (x.requires_grad_() for x in _inputs(shape))
    lists = _random_lists(shape)
    out = kernels_core.fp8_block_sparse_attention(q, k, v, lists, block_size=(32, 32))
    grad = torch.randn_like(out)
    dq, dk, dv = torch.autograd.grad(out, (q, k, v), grad)
    quant = kernels_core.quantize_attention_inputs(q.detach(), k.detach(), v.detach(), q_group=32, k_group=32)
    qd, kd, vd = (x.requires_grad_() for x in quant.dequantized())
    exact = kernels_core.block_sparse_attention(qd, kd, vd, lists, block_size=(32, 32))
    expected = torch.autograd.grad(exact, (qd, kd, vd), grad)
    for actual, want in zip((dq, dk, dv), expected, strict=True):
        # The backward recomputes P from the FP8 forward's lse, so it is the exact-attention
        # gradient of the dequantized inputs up to the FP8 error of the forward.
        assert ((actual - want).norm() / want.norm()).item() < 0.05


def test_fp8_attention_bad_input() -> None:
    q = torch.randn(1, 2, 64, 64)
    with pytest.raises(ValueError, match="q_group must be a positive int"):
        kernels_core.fp8_block_sparse_attention(q, q, q, q_group=0)
    with pytest.raises(ValueError, match="key_valid"):
        kernels_core.fp8_block_sparse_attention(q, q, q, key_valid=torch.ones(10, dtype=torch.bool))
    with pytest.raises(TypeError, match="key_valid must be a bool"):
        kernels_core.fp8_block_sparse_attention(q, q, q, key_valid=torch.ones(64))


def test_fp8_attention_opcheck() -> None:
    shape = (1, 2, 1, 40, 50, 32, (16, 16), (16, 16))
    q, k, v = _inputs(shape)
    quant = kernels_core.quantize_attention_inputs(q, k, v, q_group=16, k_group=16)
    args = (
        quant.q.view(torch.uint8), quant.k.view(torch.uint8), quant.v.view(torch.uint8),
        quant.q_scale, quant.k_scale, quant.v_scale, None, None, None, 16, 16, 16, 16, 0.2, torch.float32,
    )  # fmt: skip
    torch.library.opcheck(torch.ops.kernels_core.fp8_attention.default, args)
    torch.library.opcheck(torch.ops.kernels_core.fp8_encode.default, (torch.randn(5, 7),))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
@pytest.mark.parametrize(
    "shape",
    [s for s in FP8_SHAPES if s[5] in (64, 128) and s[6][1] % 16 == 0],
    ids=lambda s: "x".join(map(str, s[:6])) + f"-b{s[6][0]}x{s[6][1]}",
)
def test_cuda_fp8_attention_matches_reference(shape, sparse: bool, dtype: torch.dtype) -> None:
    q, k, v = _inputs(shape, dtype=dtype, device="cuda")
    lists = _random_lists(shape) if sparse else None
    cuda_lists = None if lists is None else masks.BlockIndices(lists.counts.cuda(), lists.indices.cuda())
    out, lse = kernels_core.fp8_block_sparse_attention(
        q, k, v, cuda_lists, block_size=shape[6], q_group=shape[7][0], k_group=shape[7][1], return_lse=True
    )
    assert out.dtype == dtype
    ref_out, ref_lse = _reference(q, k, v, lists, shape)
    # FP8 products and a different summation order can flip a P code now and then.
    tol = 1e-2 if dtype == torch.float32 else 3e-2
    torch.testing.assert_close(out.float().cpu(), ref_out, atol=tol, rtol=tol)
    torch.testing.assert_close(lse.cpu(), ref_lse, atol=1e-3, rtol=1e-3)
    rel = ((out.float().cpu() - ref_out).norm() / ref_out.norm()).item()
    assert rel < 5e-3


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_fp8_key_valid_and_gradients() -> None:
    shape = (1, 2, 1, 128, 192, 64, (64, 64), (64, 64))
    q, k, v = _inputs(shape, device="cuda")
    valid = torch.ones(192, dtype=torch.bool, device="cuda")
    valid[100:140] = False
    k[:, :, ~valid] = 0
    v[:, :, ~valid] = 0
    q, k, v = (x.requires_grad_() for x in (q, k, v))
    out = kernels_core.fp8_block_sparse_attention(q, k, v, key_valid=valid)
    ref, _ = _reference(q.detach(), k.detach(), v.detach(), None, shape, key_valid=valid)
    assert ((out.detach().cpu() - ref).norm() / ref.norm()).item() < 5e-3
    out.sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()
    assert k.grad is not None and (k.grad[:, :, ~valid] == 0).all()
