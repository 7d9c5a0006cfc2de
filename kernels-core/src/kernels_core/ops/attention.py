"""Block-sparse attention: ``kernels_core::block_sparse_attention``.

Layers, top to bottom:

1. :func:`block_sparse_attention`, the public function (keyword arguments, defaults, docs);
2. the custom op ``torch.ops.kernels_core.block_sparse_attention`` with its fake (meta) kernel
   for ``torch.compile`` and its autograd formula;
3. the CPU and CUDA implementations, which check the inputs and hand raw addresses, sizes and
   strides to the compiled module ``kernels_core._C``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from kernels_core import _checks
from kernels_core._library import library
from kernels_core.masks import num_blocks
from kernels_core.reference.attention import block_sparse_attention_backward

_OP_NAME = "kernels_core::block_sparse_attention"
_LAYOUTS = {
    "q": "[B, Hq, Sq, D]",
    "k": "[B, Hkv, Sk, D]",
    "v": "[B, Hkv, Sk, D]",
    "block_mask": "[B, Hq, ceil(Sq / block_q), ceil(Sk / block_k)]",
}


def _check_tensors(**tensors: object) -> None:
    for name, x in tensors.items():
        _checks.check_tensor(name, x, 4, _LAYOUTS[name])


def _check_inputs(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask: torch.Tensor, block_q: int, block_k: int
) -> None:
    _check_tensors(q=q, k=k, v=v, block_mask=block_mask)
    _checks.check_float_dtype("q", q)
    _checks.check_same_dtype("q", q, k=k, v=v)
    _checks.check_same_device("q", q, k=k, v=v, block_mask=block_mask)
    if block_mask.dtype != torch.bool:
        raise TypeError(
            f"block_mask must have dtype torch.bool (True = compute the block), got {block_mask.dtype}"
        )
    if block_q <= 0 or block_k <= 0:
        raise ValueError(f"block_size must be positive, got ({block_q}, {block_k})")

    batch, heads_q, seqlen_q, head_dim = q.shape
    _checks.check_dim("k", k.shape[0], batch, "the batch size (dim 0) of k, as in q,")
    _checks.check_dim("v", v.shape[0], batch, "the batch size (dim 0) of v, as in q,")
    _checks.check_dim("v", v.shape[1], k.shape[1], "the number of key/value heads (dim 1) of v, as in k,")
    _checks.check_dim("v", v.shape[2], k.shape[2], "the key length (dim 2) of v, as in k,")
    _checks.check_dim("k", k.shape[3], head_dim, "the head dimension (dim 3) of k, as in q,")
    _checks.check_dim("v", v.shape[3], head_dim, "the head dimension (dim 3) of v, as in q,")
    heads_kv = k.shape[1]
    if heads_kv == 0 or heads_q % heads_kv != 0:
        raise ValueError(
            f"q has {heads_q} heads, which is not a multiple of the {heads_kv} key/value heads of k "
            "(grouped-query attention needs Hq % Hkv == 0)"
        )
    expected = (batch, heads_q, num_blocks(seqlen_q, block_q), num_blocks(k.shape[2], block_k))
    if any(m != e and m != 1 for m, e in zip(block_mask.shape, expected, strict=True)):
        raise ValueError(
            f"block_mask must have shape [B, Hq, ceil(Sq / block_q), ceil(Sk / block_k)] = {list(expected)} "
            f"for block_size ({block_q}, {block_k}) (size-1 dimensions broadcast), got {list(block_mask.shape)}"
        )


def _outputs(q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    lse = torch.empty(q.shape[:3], dtype=torch.float32, device=q.device)
    return out, lse


def _params(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    block_mask: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    block_q: int,
    block_k: int,
    causal: bool,
    scale: float,
) -> object:
    lib = library()
    p = lib.BlockSparseAttentionParams()
    p.q, p.k, p.v, p.out, p.lse = q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(), lse.data_ptr()
    p.block_mask = block_mask.data_ptr()
    p.dtype = getattr(lib.DType, str(q.dtype).removeprefix("torch."))
    p.batch, p.heads_q, p.seqlen_q, p.head_dim = q.shape
    p.heads_kv, p.seqlen_k = k.shape[1], k.shape[2]
    p.q_stride, p.k_stride = q.stride()[:3], k.stride()[:3]
    p.v_stride, p.out_stride = v.stride()[:3], out.stride()[:3]
    p.mask_stride = block_mask.stride()
    p.block_q, p.block_k, p.causal, p.scale = block_q, block_k, causal, scale
    return p


def _forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    block_mask: torch.Tensor,
    block_q: int,
    block_k: int,
    causal: bool,
    scale: float,
    launch: Callable[[Any], None],
    max_head_dim: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Shared body of the device kernels: check, allocate, handle empty inputs, call ``launch(params)``."""
    _check_inputs(q, k, v, block_mask, block_q, block_k)
    if max_head_dim is not None and q.shape[-1] > max_head_dim:
        raise ValueError(
            f"q: the {q.device.type} kernel supports head dimensions up to {max_head_dim}, got {q.shape[-1]}"
        )
    out, lse = _outputs(q)
    if q.numel() == 0 or k.shape[2] == 0:
        # No keys (or no queries): every row sees nothing, so zeros and lse = -inf.
        return out.zero_(), lse.fill_(float("-inf"))
    # Kernel-ready views: unit stride in the head dimension, the mask broadcast to full shape.
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    shape = (q.shape[0], q.shape[1], num_blocks(q.shape[2], block_q), num_blocks(k.shape[2], block_k))
    launch(_params(q, k, v, block_mask.expand(shape), out, lse, block_q, block_k, causal, scale))
    return out, lse


@torch.library.custom_op(_OP_NAME, mutates_args=(), device_types="cpu")
def _block_sparse_attention_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    block_mask: torch.Tensor,
    block_q: int,
    block_k: int,
    causal: bool,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    def launch(params: Any) -> None:
        library().block_sparse_attention_forward_cpu(params, torch.get_num_threads())

    return _forward(q, k, v, block_mask, block_q, block_k, causal, scale, launch)


@_block_sparse_attention_op.register_kernel("cuda")
def _block_sparse_attention_cuda(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    block_mask: torch.Tensor,
    block_q: int,
    block_k: int,
    causal: bool,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    def launch(params: Any) -> None:
        stream = torch.cuda.current_stream(q.device).cuda_stream
        library().block_sparse_attention_forward_cuda(params, stream, q.device.index)

    return _forward(q, k, v, block_mask, block_q, block_k, causal, scale, launch, max_head_dim=256)


@_block_sparse_attention_op.register_fake
def _block_sparse_attention_fake(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    block_mask: torch.Tensor,
    block_q: int,
    block_k: int,
    causal: bool,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    _check_inputs(q, k, v, block_mask, block_q, block_k)
    return _outputs(q)


def _setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
    q, k, v, block_mask, block_q, block_k, causal, scale = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, block_mask, out, lse)
    ctx.block_size = (block_q, block_k)
    ctx.causal = causal
    ctx.scale = scale


def _backward(
    ctx: Any, grad_out: torch.Tensor, grad_lse: torch.Tensor | None
) -> tuple[torch.Tensor | None, ...]:
    # For now the backward runs through the pure-torch reference (memory O(Sq * Sk) per head);
    # it honours the same block mask, so skipped blocks get zero gradient.
    q, k, v, block_mask, out, lse = ctx.saved_tensors
    dq, dk, dv = block_sparse_attention_backward(
        grad_out,
        grad_lse,
        q,
        k,
        v,
        out,
        lse,
        block_mask,
        block_size=ctx.block_size,
        causal=ctx.causal,
        scale=ctx.scale,
    )
    return dq, dk, dv, None, None, None, None, None


_block_sparse_attention_op.register_autograd(_backward, setup_context=_setup_context)


def block_sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    block_mask: torch.Tensor,
    *,
    block_size: tuple[int, int] = (64, 64),
    causal: bool = False,
    scale: float | None = None,
    return_lse: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Attention that computes only the (query block, key block) pairs a block mask enables.

    Args:
        q: [B, Hq, Sq, D] float32, float16 or bfloat16.
        k: [B, Hkv, Sk, D], same dtype and device; grouped-query attention when Hq is a multiple
            of Hkv (query head h uses key/value head h // (Hq / Hkv)).
        v: [B, Hkv, Sk, D].
        block_mask: bool [B, Hq, ceil(Sq / block_q), ceil(Sk / block_k)], True = compute the block;
            size-1 dimensions broadcast (e.g. one mask for all heads).
        block_size: (block_q, block_k), any positive sizes; the last block may be partial.
        causal: also mask keys in the future, aligned bottom-right as in FlashAttention:
            query i sees keys j <= i + Sk - Sq.
        scale: softmax scale, default 1 / sqrt(D).
        return_lse: also return the natural-log log-sum-exp of the scaled, masked scores.

    Returns:
        out [B, Hq, Sq, D] in the input dtype (accumulated in float32), and with
        ``return_lse`` also lse [B, Hq, Sq] float32. A query row that sees no key (every block
        masked, or causal with Sq > Sk) returns zeros and lse = -inf.

    Inputs may be strided (e.g. transposed [B, S, H, D] views) as long as the head dimension is
    contiguous; other layouts are copied. Gradients flow to q, k and v.

    Example::

        >>> q = torch.randn(1, 8, 1024, 64); k = v = torch.randn(1, 8, 1024, 64)
        >>> mask = kernels_core.masks.random_block_mask(1, 8, 1024, 1024, density=0.25)
        >>> out = kernels_core.block_sparse_attention(q, k, v, mask)
    """
    _check_tensors(q=q, k=k, v=v, block_mask=block_mask)
    block_q, block_k = _checks.check_block_size(block_size)
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be a bool, got {type(causal).__name__}")
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1]) if q.shape[-1] > 0 else 1.0
    elif isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise ValueError(f"scale must be a finite float, got {scale!r}")
    out, lse = torch.ops.kernels_core.block_sparse_attention(
        q, k, v, block_mask, block_q, block_k, causal, float(scale)
    )
    return (out, lse) if return_lse else out
