"""Block-sparse attention: ``kernels_core::block_sparse_attention`` and its backward.

Layers, top to bottom:

1. :func:`block_sparse_attention` and :func:`block_sparse_attention_varlen`, the public
   functions (keyword arguments, defaults, docs);
2. the custom ops ``torch.ops.kernels_core.block_sparse_attention`` and
   ``..._backward`` with fake (meta) kernels for ``torch.compile`` and the autograd formula;
3. the CPU and CUDA implementations, which check the inputs and hand raw addresses, sizes and
   strides to the compiled module ``kernels_core._C``.

Both ops work in one 4-D layout (see :mod:`kernels_core.ops.attention_checks`); a
variable-length batch is a [1, H, total, D] view plus ``cu_seqlens``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from kernels_core import _checks
from kernels_core._library import library
from kernels_core.masks import BlockIndices, block_indices_to_mask, check_block_indices, num_blocks
from kernels_core.ops import attention_checks as checks


def _strides(x: torch.Tensor, varlen: bool) -> tuple[int, ...]:
    """(batch, head, token) element strides; a variable-length call is one [1, H, total, D] view
    whose sequences are found through cu_seqlens, so its batch stride is 0."""
    strides = tuple(x.stride()[:3])
    return (0, *strides[1:]) if varlen else strides


def _kernel_view(x: torch.Tensor) -> torch.Tensor:
    """The kernels need a contiguous last dimension; anything else is copied."""
    return x if x.stride(-1) == 1 else x.contiguous()


def _fill_params(
    p: Any,
    geometry: checks.AttentionGeometry,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    block_mask: torch.Tensor | None,
    block_counts: torch.Tensor | None,
    block_indices: torch.Tensor | None,
    cu_seqlens_q: torch.Tensor | None,
    cu_seqlens_k: torch.Tensor | None,
    causal: bool,
    scale: float,
) -> Any:
    lib = library()
    g = geometry
    p.q, p.k, p.v, p.out, p.lse = q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(), lse.data_ptr()
    p.dtype = getattr(lib.DType, str(q.dtype).removeprefix("torch."))
    p.batch, p.heads_q, p.heads_kv = g.batch, g.heads_q, g.heads_kv
    p.seqlen_q, p.seqlen_k, p.head_dim = g.seqlen_q, g.seqlen_k, g.head_dim
    p.tokens_q, p.tokens_k = q.shape[2], k.shape[2]
    varlen = cu_seqlens_q is not None
    p.q_stride, p.k_stride, p.v_stride = (_strides(x, varlen) for x in (q, k, v))
    p.out_stride, p.lse_stride = _strides(out, varlen), _strides(lse, varlen)
    if cu_seqlens_q is not None and cu_seqlens_k is not None:
        p.cu_seqlens_q, p.cu_seqlens_k = cu_seqlens_q.data_ptr(), cu_seqlens_k.data_ptr()
    grid = g.block_grid
    if block_mask is not None:
        block_mask = block_mask.expand(grid)
        p.block_mask, p.mask_stride = block_mask.data_ptr(), block_mask.stride()
    if block_counts is not None and block_indices is not None:
        block_counts = block_counts.expand(grid[:3])
        block_indices = block_indices.expand(*grid[:3], block_indices.shape[-1])
        p.block_counts, p.counts_stride = block_counts.data_ptr(), block_counts.stride()
        p.block_indices, p.indices_stride = block_indices.data_ptr(), block_indices.stride()
        p.indices_width = block_indices.shape[-1]
    p.block_q, p.block_k, p.causal, p.scale = g.block_q, g.block_k, causal, scale
    return p


def _forward_outputs(q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # Keep q's layout (e.g. [B, S, H, D] seen through a transpose) when its head dim is contiguous,
    # as the kernels write it; otherwise a plain contiguous output.
    out = torch.empty_like(q) if q.stride(-1) == 1 else torch.empty(q.shape, dtype=q.dtype, device=q.device)
    lse = torch.empty(q.shape[:3], dtype=torch.float32, device=q.device)
    return out, lse


def _check_forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    block_mask: torch.Tensor | None,
    block_counts: torch.Tensor | None,
    block_indices: torch.Tensor | None,
    cu_seqlens_q: torch.Tensor | None,
    cu_seqlens_k: torch.Tensor | None,
    max_seqlen_q: int,
    max_seqlen_k: int,
    block_q: int,
    block_k: int,
) -> checks.AttentionGeometry:
    checks.check_qkv(q, k, v)
    geometry = checks.check_geometry(
        q, k, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, block_q, block_k
    )
    checks.check_sparsity(q, geometry, block_mask, block_counts, block_indices)
    return geometry


def _check_offsets(
    geometry: checks.AttentionGeometry,
    q: torch.Tensor,
    k: torch.Tensor,
    cu_seqlens_q: torch.Tensor | None,
    cu_seqlens_k: torch.Tensor | None,
) -> None:
    """Offsets that would read outside q or k (only in the real kernels, never while tracing)."""
    if cu_seqlens_q is not None and cu_seqlens_k is not None:
        checks.check_cu_seqlens_values("cu_seqlens_q", cu_seqlens_q, q.shape[2], geometry.seqlen_q)
        checks.check_cu_seqlens_values("cu_seqlens_k", cu_seqlens_k, k.shape[2], geometry.seqlen_k)


Launcher = Callable[[Any, torch.device], None]


def _run_forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    block_mask: torch.Tensor | None,
    block_counts: torch.Tensor | None,
    block_indices: torch.Tensor | None,
    cu_seqlens_q: torch.Tensor | None,
    cu_seqlens_k: torch.Tensor | None,
    max_seqlen_q: int,
    max_seqlen_k: int,
    block_q: int,
    block_k: int,
    causal: bool,
    scale: float,
    launch: Launcher,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Shared body of the device kernels: check, allocate, handle empty inputs, launch."""
    geometry = _check_forward(
        q, k, v, block_mask, block_counts, block_indices, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
        block_q, block_k,
    )  # fmt: skip
    _checks.check_cuda_head_dim("q", q)
    out, lse = _forward_outputs(q)
    if q.numel() == 0 or k.shape[2] == 0:
        # No keys (or no queries): every row sees nothing, so zeros and lse = -inf.
        return out.zero_(), lse.fill_(float("-inf"))
    _check_offsets(geometry, q, k, cu_seqlens_q, cu_seqlens_k)
    q, k, v = (_kernel_view(x) for x in (q, k, v))
    params = _fill_params(
        library().BlockSparseAttentionParams(), geometry, q, k, v, out, lse, block_mask, block_counts, block_indices,
        cu_seqlens_q, cu_seqlens_k, causal, scale,
    )  # fmt: skip
    launch(params, q.device)
    return out, lse


def _launch_forward_cpu(params: Any, device: torch.device) -> None:
    library().block_sparse_attention_forward_cpu(params, torch.get_num_threads())


def _launch_forward_cuda(params: Any, device: torch.device) -> None:
    stream = torch.cuda.current_stream(device).cuda_stream
    library().block_sparse_attention_forward_cuda(params, stream, device.index)


def _launch_backward_cpu(params: Any, device: torch.device) -> None:
    library().block_sparse_attention_backward_cpu(params, torch.get_num_threads())


def _launch_backward_cuda(params: Any, device: torch.device) -> None:
    stream = torch.cuda.current_stream(device).cuda_stream
    library().block_sparse_attention_backward_cuda(params, stream, device.index)


# ---------------------------------------------------------------------------------------------
# Forward op
# ---------------------------------------------------------------------------------------------
@torch.library.custom_op("kernels_core::block_sparse_attention", mutates_args=(), device_types="cpu")
def _forward_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    block_mask: torch.Tensor | None,
    block_counts: torch.Tensor | None,
    block_indices: torch.Tensor | None,
    cu_seqlens_q: torch.Tensor | None,
    cu_seqlens_k: torch.Tensor | None,
    max_seqlen_q: int,
    max_seqlen_k: int,
    block_q: int,
    block_k: int,
    causal: bool,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    return _run_forward(
        q, k, v, block_mask, block_counts, block_indices, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
        block_q, block_k, causal, scale, _launch_forward_cpu,
    )  # fmt: skip


@_forward_op.register_kernel("cuda")
def _forward_op_cuda(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    block_mask: torch.Tensor | None,
    block_counts: torch.Tensor | None,
    block_indices: torch.Tensor | None,
    cu_seqlens_q: torch.Tensor | None,
    cu_seqlens_k: torch.Tensor | None,
    max_seqlen_q: int,
    max_seqlen_k: int,
    block_q: int,
    block_k: int,
    causal: bool,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    return _run_forward(
        q, k, v, block_mask, block_counts, block_indices, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
        block_q, block_k, causal, scale, _launch_forward_cuda,
    )  # fmt: skip


@_forward_op.register_fake
def _forward_op_fake(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    block_mask: torch.Tensor | None,
    block_counts: torch.Tensor | None,
    block_indices: torch.Tensor | None,
    cu_seqlens_q: torch.Tensor | None,
    cu_seqlens_k: torch.Tensor | None,
    max_seqlen_q: int,
    max_seqlen_k: int,
    block_q: int,
    block_k: int,
    causal: bool,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    _check_forward(
        q, k, v, block_mask, block_counts, block_indices, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
        block_q, block_k,
    )  # fmt: skip
    return _forward_outputs(q)


# ---------------------------------------------------------------------------------------------
# Backward op
# ---------------------------------------------------------------------------------------------
def _backward_outputs(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, varlen: bool
) -> tuple[torch.Tensor, ...]:
    dq_accum = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
    # Variable-length batches may leave packed tokens outside every sequence: zero them.
    make = torch.zeros if varlen else torch.empty
    dk = make(k.shape, dtype=k.dtype, device=k.device)
    dv = make(v.shape, dtype=v.dtype, device=v.device)
    return dq_accum, dk, dv


def _run_backward(
    dout: torch.Tensor,
    dlse: torch.Tensor | None,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    block_mask: torch.Tensor | None,
    cu_seqlens_q: torch.Tensor | None,
    cu_seqlens_k: torch.Tensor | None,
    max_seqlen_q: int,
    max_seqlen_k: int,
    block_q: int,
    block_k: int,
    causal: bool,
    scale: float,
    launch: Launcher,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    geometry = _check_forward(
        q,
        k,
        v,
        block_mask,
        None,
        None,
        cu_seqlens_q,
        cu_seqlens_k,
        max_seqlen_q,
        max_seqlen_k,
        block_q,
        block_k,
    )
    dq_accum, dk, dv = _backward_outputs(q, k, v, cu_seqlens_q is not None)
    if q.numel() == 0 or k.shape[2] == 0:
        return dq_accum.to(q.dtype), dk.zero_(), dv.zero_()
    q, k, v, out, dout = (_kernel_view(x) for x in (q, k, v, out, dout))
    p = _fill_params(
        library().BlockSparseAttentionBackwardParams(), geometry, q, k, v, out, lse, block_mask, None, None,
        cu_seqlens_q, cu_seqlens_k, causal, scale,
    )  # fmt: skip
    varlen = cu_seqlens_q is not None
    p.dout, p.dq_accum, p.dk, p.dv = dout.data_ptr(), dq_accum.data_ptr(), dk.data_ptr(), dv.data_ptr()
    p.dout_stride, p.dq_stride = _strides(dout, varlen), _strides(dq_accum, varlen)
    p.dk_stride, p.dv_stride = _strides(dk, varlen), _strides(dv, varlen)
    if dlse is not None:
        dlse = dlse.float()
        p.dlse, p.dlse_stride = dlse.data_ptr(), _strides(dlse, varlen)
    launch(p, q.device)
    return dq_accum.to(q.dtype), dk, dv


@torch.library.custom_op("kernels_core::block_sparse_attention_backward", mutates_args=(), device_types="cpu")
def _backward_op(
    dout: torch.Tensor,
    dlse: torch.Tensor | None,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    block_mask: torch.Tensor | None,
    cu_seqlens_q: torch.Tensor | None,
    cu_seqlens_k: torch.Tensor | None,
    max_seqlen_q: int,
    max_seqlen_k: int,
    block_q: int,
    block_k: int,
    causal: bool,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _run_backward(
        dout, dlse, q, k, v, out, lse, block_mask, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
        block_q, block_k, causal, scale, _launch_backward_cpu,
    )  # fmt: skip


@_backward_op.register_kernel("cuda")
def _backward_op_cuda(
    dout: torch.Tensor,
    dlse: torch.Tensor | None,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    block_mask: torch.Tensor | None,
    cu_seqlens_q: torch.Tensor | None,
    cu_seqlens_k: torch.Tensor | None,
    max_seqlen_q: int,
    max_seqlen_k: int,
    block_q: int,
    block_k: int,
    causal: bool,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _run_backward(
        dout, dlse, q, k, v, out, lse, block_mask, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
        block_q, block_k, causal, scale, _launch_backward_cuda,
    )  # fmt: skip


@_backward_op.register_fake
def _backward_op_fake(
    dout: torch.Tensor,
    dlse: torch.Tensor | None,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    block_mask: torch.Tensor | None,
    cu_seqlens_q: torch.Tensor | None,
    cu_seqlens_k: torch.Tensor | None,
    max_seqlen_q: int,
    max_seqlen_k: int,
    block_q: int,
    block_k: int,
    causal: bool,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
    (
        q,
        k,
        v,
        block_mask,
        block_counts,
        block_indices,
        cu_q,
        cu_k,
        max_q,
        max_k,
        block_q,
        block_k,
        causal,
        scale,
    ) = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, block_mask, block_counts, block_indices, cu_q, cu_k)
    ctx.static = (max_q, max_k, block_q, block_k, causal, scale)


def _backward(
    ctx: Any, grad_out: torch.Tensor, grad_lse: torch.Tensor | None
) -> tuple[torch.Tensor | None, ...]:
    q, k, v, out, lse, block_mask, block_counts, block_indices, cu_q, cu_k = ctx.saved_tensors
    max_q, max_k, block_q, block_k, causal, scale = ctx.static
    if block_counts is not None and block_indices is not None:
        # The backward walks the mask by key block, so index lists become a bool mask here.
        geometry = checks.check_geometry(q, k, cu_q, cu_k, max_q, max_k, block_q, block_k)
        grid = geometry.block_grid
        lists = BlockIndices(
            block_counts.expand(grid[:3]), block_indices.expand(*grid[:3], block_indices.shape[-1])
        )
        block_mask = block_indices_to_mask(lists, grid[3])
    dq, dk, dv = torch.ops.kernels_core.block_sparse_attention_backward(
        grad_out,
        grad_lse,
        q,
        k,
        v,
        out,
        lse,
        block_mask,
        cu_q,
        cu_k,
        max_q,
        max_k,
        block_q,
        block_k,
        causal,
        scale,
    )
    return (dq, dk, dv) + (None,) * 11


_forward_op.register_autograd(_backward, setup_context=_setup_context)


# ---------------------------------------------------------------------------------------------
# Public functions
# ---------------------------------------------------------------------------------------------
def _check_options(
    q: torch.Tensor, block_size: object, causal: object, scale: object
) -> tuple[int, int, float]:
    block_q, block_k = _checks.check_block_size(block_size)
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be a bool, got {type(causal).__name__}")
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1]) if q.shape[-1] > 0 else 1.0
    elif isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise ValueError(f"scale must be a finite float, got {scale!r}")
    return block_q, block_k, float(scale)


def _split_sparsity(
    block_mask: torch.Tensor | BlockIndices | None, num_key_blocks: int, check_indices: bool
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """(mask, counts, indices) from the public ``block_mask`` argument.

    Index lists are checked here (range, counts, duplicates: a sort and a device sync) unless
    the caller vouches for them; the kernels themselves only clamp counts to the list width.
    """
    if block_mask is None or isinstance(block_mask, torch.Tensor):
        return block_mask, None, None
    if isinstance(block_mask, BlockIndices):
        counts, indices = block_mask
        for name, x in (("block_mask.counts", counts), ("block_mask.indices", indices)):
            if not isinstance(x, torch.Tensor) or x.dtype not in (torch.int32, torch.int64):
                raise TypeError(f"{name} must be an int32 (or int64) tensor")
        counts, indices = counts.to(torch.int32), indices.to(torch.int32)
        if check_indices:
            check_block_indices("block_mask", BlockIndices(counts, indices), num_key_blocks)
        return None, counts, indices
    raise TypeError(
        "block_mask must be a bool tensor [B, Hq, nqb, nkb], a kernels_core.masks.BlockIndices or None, "
        f"got {type(block_mask).__name__}"
    )


def block_sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    block_mask: torch.Tensor | BlockIndices | None,
    *,
    block_size: tuple[int, int] = (64, 64),
    causal: bool = False,
    scale: float | None = None,
    return_lse: bool = False,
    check_indices: bool = True,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Attention that computes only the (query block, key block) pairs a block mask enables.

    Args:
        q: [B, Hq, Sq, D] float32, float16 or bfloat16.
        k: [B, Hkv, Sk, D], same dtype and device; grouped-query attention when Hq is a multiple
            of Hkv (query head h uses key/value head h // (Hq / Hkv)).
        v: [B, Hkv, Sk, D].
        block_mask: which blocks to compute, one of
            - a bool tensor [B, Hq, ceil(Sq / block_q), ceil(Sk / block_k)], True = compute;
              size-1 dimensions broadcast (e.g. one mask for all heads);
            - :class:`kernels_core.masks.BlockIndices` (counts [B, Hq, nqb], indices
              [B, Hq, nqb, L]): per row, the key blocks to compute (any order, no duplicates);
            - None: every block (dense attention).
        block_size: (block_q, block_k), any positive sizes; the last block may be partial.
        causal: also mask keys in the future, aligned bottom-right as in FlashAttention:
            query i sees keys j <= i + Sk - Sq.
        scale: softmax scale, default 1 / sqrt(D).
        return_lse: also return the natural-log log-sum-exp of the scaled, masked scores.
        check_indices: verify index lists (range, counts, no duplicates) before the kernel; one
            sort and, on CUDA, a device sync per call. Turn off for lists that come from
            :func:`kernels_core.select_top_blocks` or are otherwise known to be valid.

    Returns:
        out [B, Hq, Sq, D] in the input dtype (accumulated in float32), and with
        ``return_lse`` also lse [B, Hq, Sq] float32. A query row that sees no key (every block
        masked, or causal with Sq > Sk) returns zeros and lse = -inf.

    Inputs may be strided (e.g. transposed [B, S, H, D] views) as long as the head dimension is
    contiguous; other layouts are copied. Gradients flow to q, k and v (and to lse); the
    backward runs in the same kernels and skips the same blocks.

    Example::

        >>> q = torch.randn(1, 8, 1024, 64); k = v = torch.randn(1, 8, 1024, 64)
        >>> mask = kernels_core.masks.random_block_mask(1, 8, 1024, 1024, density=0.25)
        >>> out = kernels_core.block_sparse_attention(q, k, v, mask)
    """
    checks.check_qkv(q, k, v)
    block_q, block_k, scale = _check_options(q, block_size, causal, scale)
    mask, counts, indices = _split_sparsity(block_mask, num_blocks(k.shape[2], block_k), check_indices)
    out, lse = torch.ops.kernels_core.block_sparse_attention(
        q, k, v, mask, counts, indices, None, None, 0, 0, block_q, block_k, causal, scale
    )
    return (out, lse) if return_lse else out


def block_sparse_attention_varlen(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    block_mask: torch.Tensor | BlockIndices | None = None,
    *,
    block_size: tuple[int, int] = (64, 64),
    causal: bool = False,
    scale: float | None = None,
    return_lse: bool = False,
    check_indices: bool = True,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Block-sparse attention over sequences of different lengths packed along the token axis.

    The layout follows FlashAttention's ``flash_attn_varlen_func``.

    Args:
        q: [total_q, Hq, D]; sequence b owns rows cu_seqlens_q[b] .. cu_seqlens_q[b + 1] - 1.
        k, v: [total_k, Hkv, D].
        cu_seqlens_q, cu_seqlens_k: int32 [N + 1], prefix sums of the N sequence lengths
            (starting at 0).
        max_seqlen_q, max_seqlen_k: the longest sequence lengths; block masks are laid out for
            them: [N, Hq, ceil(max_seqlen_q / block_q), ceil(max_seqlen_k / block_k)], and
            blocks past a sequence's end are ignored.
        block_mask, block_size, causal, scale, return_lse, check_indices: as in
            :func:`block_sparse_attention`;
            causal is aligned bottom-right within each sequence.

    Returns:
        out [total_q, Hq, D], and with ``return_lse`` also lse [Hq, total_q] float32.
    """
    for name, x in (("q", q), ("k", k), ("v", v)):
        _checks.check_tensor(name, x, 3, f"[total_{'q' if name == 'q' else 'k'}, H, D]")
    block_q, block_k, scale = _check_options(q, block_size, causal, scale)
    for name, value in (("max_seqlen_q", max_seqlen_q), ("max_seqlen_k", max_seqlen_k)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    mask, counts, indices = _split_sparsity(block_mask, num_blocks(max_seqlen_k, block_k), check_indices)
    q4, k4, v4 = (x.permute(1, 0, 2).unsqueeze(0) for x in (q, k, v))  # [1, H, total, D] views
    out, lse = torch.ops.kernels_core.block_sparse_attention(
        q4, k4, v4, mask, counts, indices, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, block_q, block_k,
        causal, scale,
    )  # fmt: skip
    out = out.squeeze(0).permute(1, 0, 2)
    lse = lse.squeeze(0)
    return (out, lse) if return_lse else out
