"""FP8 (e4m3) quantization and FP8 block-sparse attention.

``kernels_core::fp8_encode``     float32 -> e4m3 codes, saturating at ±448 (CPU and CUDA, same bits)
``kernels_core::fp8_attention``  attention on e4m3 Q, K, V with per-group Q/K scales, per-channel V
                                 scales and P in e4m3 with the fixed scale 1/448 (SageAttention2's
                                 recipe); CPU (float32 arithmetic on the decoded codes) and CUDA (FP8
                                 tensor cores, sm_89 and newer), the same steps on both
                                 (csrc/quant/fp8_attention.h)

:func:`fp8_block_sparse_attention` quantizes and runs the kernel in one call and is differentiable:
the forward is the FP8 kernel, the backward treats quantization as the identity (straight-through)
and runs the block-sparse backward on the dequantized inputs with the FP8 forward's output and lse.
That is the quantization-aware training path.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import torch

from kernels_core import _checks
from kernels_core._library import library
from kernels_core.masks import BlockIndices, block_indices_to_mask, block_mask_to_indices, num_blocks
from kernels_core.ops import attention_checks as checks
from kernels_core.ops.attention import _split_sparsity

E4M3_MAX = 448.0
"""Largest finite float8_e4m3fn value."""

_DTYPE_CODES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}


# ---------------------------------------------------------------------------------------------
# Conversion
# ---------------------------------------------------------------------------------------------
@torch.library.custom_op("kernels_core::fp8_encode", mutates_args=(), device_types="cpu")
def _encode_op(x: torch.Tensor) -> torch.Tensor:
    x = x.contiguous()
    codes = torch.empty(x.shape, dtype=torch.uint8, device=x.device)
    library().fp8_encode_cpu(x.data_ptr(), codes.data_ptr(), x.numel(), torch.get_num_threads())
    return codes


@_encode_op.register_kernel("cuda")
def _encode_op_cuda(x: torch.Tensor) -> torch.Tensor:
    x = x.contiguous()
    codes = torch.empty(x.shape, dtype=torch.uint8, device=x.device)
    stream = torch.cuda.current_stream(x.device).cuda_stream
    library().fp8_encode_cuda(x.data_ptr(), codes.data_ptr(), x.numel(), stream, x.device.index)
    return codes


@_encode_op.register_fake
def _encode_op_fake(x: torch.Tensor) -> torch.Tensor:
    return torch.empty(x.shape, dtype=torch.uint8, device=x.device)


def _check_scale(x: torch.Tensor, scale: object) -> torch.Tensor | float:
    if isinstance(scale, bool) or not isinstance(scale, (int, float, torch.Tensor)):
        raise TypeError(f"scale must be a positive float or a float tensor, got {type(scale).__name__}")
    if isinstance(scale, torch.Tensor):
        if not scale.is_floating_point():
            raise TypeError(f"scale must be a floating-point tensor, got {scale.dtype}")
        if scale.device != x.device:
            raise ValueError(f"scale is on {scale.device} but x is on {x.device}")
        try:
            torch.broadcast_shapes(scale.shape, x.shape)
        except RuntimeError:
            raise ValueError(
                f"scale of shape {list(scale.shape)} does not broadcast to x of shape {list(x.shape)}"
            ) from None
        return scale.float()
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be positive and finite, got {scale!r}")
    return float(scale)


def quantize_fp8_e4m3(x: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """``x / scale`` as ``torch.float8_e4m3fn``, rounded to nearest even, saturating at ±448.

    For values inside ±448 the bits equal torch's own ``(x / scale).to(torch.float8_e4m3fn)``;
    beyond it torch produces NaN and this saturates to ±448 (NaN stays NaN). Not differentiable:
    :func:`fake_quantize_fp8_e4m3` is the straight-through version for training.

    Args:
        x: any shape, float32/float16/bfloat16 (divided in float32), on cpu or cuda.
        scale: a positive float, or a float tensor that broadcasts to x (per-tile or per-channel
            scales), on x's device.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    _checks.check_float_dtype("x", x)
    scaled = x.float() / _check_scale(x, scale)
    return torch.ops.kernels_core.fp8_encode(scaled).view(torch.float8_e4m3fn)


def dequantize_fp8(
    x8: torch.Tensor, scale: torch.Tensor | float, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """``x8 * scale`` in ``dtype`` (x8: float8_e4m3fn, scale broadcastable)."""
    if not isinstance(x8, torch.Tensor) or x8.dtype != torch.float8_e4m3fn:
        raise TypeError(
            f"x8 must be a torch.float8_e4m3fn tensor, got {getattr(x8, 'dtype', type(x8).__name__)}"
        )
    return (x8.float() * scale).to(dtype)


class _StraightThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, quantized: torch.Tensor) -> torch.Tensor:
        return quantized

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


def fake_quantize_fp8_e4m3(x: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """Quantize to e4m3 and back (x's dtype), with a straight-through gradient (d out / d x = 1)."""
    checked = _check_scale(x, scale)
    quantized = dequantize_fp8(quantize_fp8_e4m3(x.detach(), checked), checked, x.dtype)
    return _StraightThrough.apply(x, quantized)


def group_scales(x: torch.Tensor, group: int) -> torch.Tensor:
    """Per-group scales of x [B, H, S, D]: amax over each group of ``group`` tokens (and D) / 448.

    Returns float32 [B, H, ceil(S / group)]; an all-zero group gets scale 1.
    """
    _checks.check_tensor("x", x, 4, "[B, H, S, D]")
    if isinstance(group, bool) or not isinstance(group, int) or group <= 0:
        raise ValueError(f"group must be a positive int, got {group!r}")
    b, h, s, d = x.shape
    groups = num_blocks(s, group)
    padded = torch.nn.functional.pad(x.detach().float().abs(), (0, 0, 0, groups * group - s))
    amax = padded.view(b, h, groups, group * d).amax(dim=-1)
    return torch.where(amax > 0, amax / E4M3_MAX, torch.ones_like(amax))


def channel_scales(x: torch.Tensor) -> torch.Tensor:
    """Per-channel scales of x [B, H, S, D]: amax over the tokens / 448, float32 [B, H, D]."""
    _checks.check_tensor("x", x, 4, "[B, H, S, D]")
    amax = x.detach().float().abs().amax(dim=2)
    return torch.where(amax > 0, amax / E4M3_MAX, torch.ones_like(amax))


class Fp8AttentionInputs(NamedTuple):
    """Q, K, V in e4m3 with their scales (see :func:`quantize_attention_inputs`)."""

    q: torch.Tensor  # float8_e4m3fn [B, Hq, Sq, D]
    k: torch.Tensor  # float8_e4m3fn [B, Hkv, Sk, D]
    v: torch.Tensor  # float8_e4m3fn [B, Hkv, Sk, D]
    q_scale: torch.Tensor  # float32 [B, Hq, ceil(Sq / q_group)]
    k_scale: torch.Tensor  # float32 [B, Hkv, ceil(Sk / k_group)]
    v_scale: torch.Tensor  # float32 [B, Hkv, D]
    q_group: int
    k_group: int

    def dequantized(
        self, dtype: torch.dtype = torch.float32
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(q, k, v) as the kernel sees them, in ``dtype``."""
        return (
            dequantize_fp8(self.q, _expand_groups(self.q_scale, self.q_group, self.q.shape[2]), dtype),
            dequantize_fp8(self.k, _expand_groups(self.k_scale, self.k_group, self.k.shape[2]), dtype),
            dequantize_fp8(self.v, self.v_scale.unsqueeze(2), dtype),
        )


def _expand_groups(scale: torch.Tensor, group: int, length: int) -> torch.Tensor:
    """[B, H, groups] -> [B, H, length, 1]: each token's scale."""
    return scale.repeat_interleave(group, dim=2)[:, :, :length].unsqueeze(-1)


def quantize_attention_inputs(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, q_group: int, k_group: int
) -> Fp8AttentionInputs:
    """Q and K with one scale per group of tokens (a tile), V with one scale per channel."""
    checks.check_qkv(q, k, v)
    q_scale, k_scale, v_scale = group_scales(q, q_group), group_scales(k, k_group), channel_scales(v)
    return Fp8AttentionInputs(
        quantize_fp8_e4m3(q, _expand_groups(q_scale, q_group, q.shape[2])),
        quantize_fp8_e4m3(k, _expand_groups(k_scale, k_group, k.shape[2])),
        quantize_fp8_e4m3(v, v_scale.unsqueeze(2)),
        q_scale,
        k_scale,
        v_scale,
        q_group,
        k_group,
    )


# ---------------------------------------------------------------------------------------------
# FP8 attention op
# ---------------------------------------------------------------------------------------------
@functools.cache
def _value_permutation(device: torch.device) -> torch.Tensor:
    """Position L of every 16-key group holds key 2t + (i & 1) + 8 (i >> 1), L = 4t + i (see the CUDA kernel)."""
    order = [2 * (pos // 4) + (pos % 4 & 1) + 8 * (pos % 4 >> 1) for pos in range(16)]
    return torch.tensor(order, dtype=torch.long, device=device)


def _channel_major_values(v8: torch.Tensor) -> torch.Tensor:
    """uint8 [B, H, S, D] -> [B, H, D, S padded to 16] with the tensor-core key order."""
    b, h, s, d = v8.shape
    padded = torch.nn.functional.pad(v8, (0, 0, 0, num_blocks(s, 16) * 16 - s))
    groups = padded.view(b, h, -1, 16, d).index_select(3, _value_permutation(v8.device))
    return groups.view(b, h, -1, d).transpose(2, 3).contiguous()


def _run_fp8(
    q8: torch.Tensor,
    k8: torch.Tensor,
    v8: torch.Tensor,
    q_scale: torch.Tensor,
    k_scale: torch.Tensor,
    v_scale: torch.Tensor,
    block_counts: torch.Tensor | None,
    block_indices: torch.Tensor | None,
    key_valid: torch.Tensor | None,
    q_group: int,
    k_group: int,
    block_q: int,
    block_k: int,
    scale: float,
    out_dtype: torch.dtype,
    on_cuda: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    lib = library()
    b, hq, sq, d = q8.shape
    hkv, sk = k8.shape[1], k8.shape[2]
    q8, k8 = q8.contiguous(), k8.contiguous()
    values = _channel_major_values(v8) if on_cuda else v8.contiguous()
    out = torch.empty(b, hq, sq, d, dtype=out_dtype if on_cuda else torch.float32, device=q8.device)
    lse = torch.empty(b, hq, sq, dtype=torch.float32, device=q8.device)
    scales = [x.float().contiguous() for x in (q_scale, k_scale, v_scale)]
    p = lib.Fp8AttentionParams()
    p.q, p.k, p.v = q8.data_ptr(), k8.data_ptr(), values.data_ptr()
    p.q_scale, p.k_scale, p.v_scale = (x.data_ptr() for x in scales)
    p.out, p.lse = out.data_ptr(), lse.data_ptr()
    p.out_dtype = getattr(lib.DType, _DTYPE_CODES[out.dtype])
    valid = key_valid.to(torch.uint8).contiguous() if key_valid is not None else None
    p.key_valid = valid.data_ptr() if valid is not None else 0
    p.batch, p.heads_q, p.heads_kv, p.seqlen_q, p.seqlen_k, p.head_dim = b, hq, hkv, sq, sk, d
    p.q_stride, p.k_stride = q8.stride()[:3], k8.stride()[:3]
    p.v_stride, p.v_transposed = values.stride()[:3], on_cuda
    p.out_stride, p.lse_stride = out.stride()[:3], lse.stride()
    p.q_group, p.k_group = q_group, k_group
    if block_counts is not None and block_indices is not None:
        grid = (b, hq, num_blocks(sq, block_q))
        counts = block_counts.expand(grid)
        indices = block_indices.expand(*grid, block_indices.shape[-1])
        p.block_counts, p.block_indices = counts.data_ptr(), indices.data_ptr()
        p.indices_width = indices.shape[-1]
        p.counts_stride, p.indices_stride = counts.stride(), indices.stride()
    p.block_q, p.block_k, p.scale = block_q, block_k, scale
    if on_cuda:
        lib.fp8_attention_cuda(p, torch.cuda.current_stream(q8.device).cuda_stream, q8.device.index)
    else:
        lib.fp8_attention_cpu(p, torch.get_num_threads())
    return out.to(out_dtype), lse


@torch.library.custom_op("kernels_core::fp8_attention", mutates_args=(), device_types="cpu")
def _fp8_op(
    q8: torch.Tensor,
    k8: torch.Tensor,
    v8: torch.Tensor,
    q_scale: torch.Tensor,
    k_scale: torch.Tensor,
    v_scale: torch.Tensor,
    block_counts: torch.Tensor | None,
    block_indices: torch.Tensor | None,
    key_valid: torch.Tensor | None,
    q_group: int,
    k_group: int,
    block_q: int,
    block_k: int,
    scale: float,
    out_dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    return _run_fp8(
        q8, k8, v8, q_scale, k_scale, v_scale, block_counts, block_indices, key_valid, q_group, k_group,
        block_q, block_k, scale, out_dtype, on_cuda=False,
    )  # fmt: skip


@_fp8_op.register_kernel("cuda")
def _fp8_op_cuda(
    q8: torch.Tensor,
    k8: torch.Tensor,
    v8: torch.Tensor,
    q_scale: torch.Tensor,
    k_scale: torch.Tensor,
    v_scale: torch.Tensor,
    block_counts: torch.Tensor | None,
    block_indices: torch.Tensor | None,
    key_valid: torch.Tensor | None,
    q_group: int,
    k_group: int,
    block_q: int,
    block_k: int,
    scale: float,
    out_dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    return _run_fp8(
        q8, k8, v8, q_scale, k_scale, v_scale, block_counts, block_indices, key_valid, q_group, k_group,
        block_q, block_k, scale, out_dtype, on_cuda=True,
    )  # fmt: skip


@_fp8_op.register_fake
def _fp8_op_fake(
    q8: torch.Tensor,
    k8: torch.Tensor,
    v8: torch.Tensor,
    q_scale: torch.Tensor,
    k_scale: torch.Tensor,
    v_scale: torch.Tensor,
    block_counts: torch.Tensor | None,
    block_indices: torch.Tensor | None,
    key_valid: torch.Tensor | None,
    q_group: int,
    k_group: int,
    block_q: int,
    block_k: int,
    scale: float,
    out_dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    out = torch.empty(q8.shape, dtype=out_dtype, device=q8.device)
    return out, torch.empty(q8.shape[:3], dtype=torch.float32, device=q8.device)


def _check_fp8_call(
    q: torch.Tensor, k: torch.Tensor, key_valid: torch.Tensor | None, q_group: object, k_group: object
) -> None:
    for name, group in (("q_group", q_group), ("k_group", k_group)):
        if isinstance(group, bool) or not isinstance(group, int) or group <= 0:
            raise ValueError(f"{name} must be a positive int (tokens per scale), got {group!r}")
    if key_valid is not None:
        if not isinstance(key_valid, torch.Tensor) or key_valid.dtype != torch.bool or key_valid.dim() != 1:
            raise TypeError("key_valid must be a bool tensor [Sk] (True = a real key)")
        _checks.check_dim("key_valid", key_valid.shape[0], k.shape[2], "the length (Sk, dim 2 of k)")
        _checks.check_same_device("q", q, key_valid=key_valid)
    if q.device.type == "cuda" and q.shape[-1] not in (64, 128):
        raise ValueError(f"fp8 attention on cuda supports head dimensions 64 and 128, got {q.shape[-1]}")


class _Fp8Attention(torch.autograd.Function):
    """FP8 forward; straight-through backward through the block-sparse backward kernel."""

    @staticmethod
    def forward(
        ctx: Any,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        counts: torch.Tensor | None,
        indices: torch.Tensor | None,
        key_valid: torch.Tensor | None,
        q_group: int,
        k_group: int,
        block_q: int,
        block_k: int,
        scale: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        quantized = quantize_attention_inputs(q, k, v, q_group=q_group, k_group=k_group)
        out, lse = torch.ops.kernels_core.fp8_attention(
            quantized.q.view(torch.uint8), quantized.k.view(torch.uint8), quantized.v.view(torch.uint8),
            quantized.q_scale, quantized.k_scale, quantized.v_scale, counts, indices, key_valid,
            q_group, k_group, block_q, block_k, scale, q.dtype,
        )  # fmt: skip
        if any(ctx.needs_input_grad[:3]):
            qd, kd, vd = quantized.dequantized(q.dtype)
            if key_valid is not None:
                # Keys the forward ignored must add nothing to dQ in the recomputed backward.
                keep = key_valid.view(1, 1, -1, 1).to(kd.dtype)
                kd, vd = kd * keep, vd * keep
            ctx.save_for_backward(qd, kd, vd, out, lse, counts, indices, key_valid)
        ctx.static = (block_q, block_k, scale)
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    def backward(
        ctx: Any, grad_out: torch.Tensor, _grad_lse: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        qd, kd, vd, out, lse, counts, indices, key_valid = ctx.saved_tensors
        block_q, block_k, scale = ctx.static
        mask = None
        if counts is not None and indices is not None:
            grid = (qd.shape[0], qd.shape[1], num_blocks(qd.shape[2], block_q))
            lists = BlockIndices(counts.expand(grid), indices.expand(*grid, indices.shape[-1]))
            mask = block_indices_to_mask(lists, num_blocks(kd.shape[2], block_k))
        dq, dk, dv = torch.ops.kernels_core.block_sparse_attention_backward(
            grad_out.contiguous(),
            None,
            qd,
            kd,
            vd,
            out,
            lse,
            mask,
            None,
            None,
            0,
            0,
            block_q,
            block_k,
            False,
            scale,
        )
        if key_valid is not None:
            keep = key_valid.view(1, 1, -1, 1).to(dk.dtype)
            dk, dv = dk * keep, dv * keep
        return (dq, dk, dv) + (None,) * 8


def fp8_block_sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    block_mask: torch.Tensor | BlockIndices | None = None,
    *,
    block_size: tuple[int, int] = (64, 64),
    q_group: int | None = None,
    k_group: int | None = None,
    key_valid: torch.Tensor | None = None,
    scale: float | None = None,
    return_lse: bool = False,
    check_indices: bool = True,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Block-sparse attention with Q, K, V and the probabilities P in FP8 (e4m3).

    Q and K get one scale per group of tokens (``q_group``/``k_group``, default one per block:
    with tile-ordered tokens, one per 3D tile), V one scale per channel, P the fixed scale 1/448.
    Accumulation is float32. Bidirectional (no causal option).

    Args:
        q: [B, Hq, Sq, D]; k, v: [B, Hkv, Sk, D]; float32/float16/bfloat16, cpu or cuda (cuda:
            compute capability 8.9+, D 64 or 128, block_k a multiple of 16).
        block_mask: bool block mask, :class:`~kernels_core.masks.BlockIndices` (walked in list
            order, which fixes the online-softmax order) or None for dense.
        block_size: (block_q, block_k).
        q_group, k_group: tokens per Q / K scale (default block_q / block_k).
        key_valid: optional bool [Sk]; False marks padding keys (e.g. from
            :func:`kernels_core.tile_reorder`), which get no probability.
        scale: softmax scale, default 1 / sqrt(D).
        return_lse: also return the natural-log log-sum-exp [B, Hq, Sq] (float32).
        check_indices: verify index lists first (see :func:`block_sparse_attention`).

    Returns:
        out [B, Hq, Sq, D] in q's dtype (and lse). Gradients reach q, k and v straight through
        the quantization (the quantization-aware training path).
    """
    checks.check_qkv(q, k, v)
    block_q, block_k = _checks.check_block_size(block_size)
    q_group = block_q if q_group is None else q_group
    k_group = block_k if k_group is None else k_group
    _check_fp8_call(q, k, key_valid, q_group, k_group)
    if q.device.type == "cuda" and block_k % 16:
        raise ValueError(f"fp8 attention on cuda needs block_size[1] to be a multiple of 16, got {block_k}")
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    elif isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise ValueError(f"scale must be a finite float, got {scale!r}")
    nkb = num_blocks(k.shape[2], block_k)
    mask, counts, indices = _split_sparsity(block_mask, nkb, check_indices)
    if mask is not None:
        expected = (q.shape[2] + block_q - 1) // block_q, nkb
        if mask.dim() != 4 or tuple(mask.shape[2:]) != expected:
            raise ValueError(
                f"block_mask must be [B, Hq, {expected[0]}, {expected[1]}], got {list(mask.shape)}"
            )
        full = mask.expand(q.shape[0], q.shape[1], *expected)
        lists = block_mask_to_indices(full)
        counts, indices = lists.counts.to(torch.int32), lists.indices.to(torch.int32)
    out, lse = _Fp8Attention.apply(
        q, k, v, counts, indices, key_valid, q_group, k_group, block_q, block_k, float(scale)
    )
    return (out, lse) if return_lse else out
