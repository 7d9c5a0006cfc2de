"""Decode attention: ``kernels_core::decode_attention``.

A few new query tokens attend to a KV cache; each key/value head may keep its own list of cache
positions (KV-cache slimming, as in OmniSparse's decoding stage), and each batch item its own
valid cache length. Inference only: the op has no backward.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from kernels_core import _checks
from kernels_core._library import library


def _check_inputs(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    cache_seqlens: torch.Tensor | None,
    kv_indices: torch.Tensor | None,
    kv_counts: torch.Tensor | None,
) -> None:
    _checks.check_tensor("q", q, 4, "[B, Hq, Sq, D]")
    _checks.check_tensor("k_cache", k_cache, 4, "[B, Hkv, S, D]")
    _checks.check_tensor("v_cache", v_cache, 4, "[B, Hkv, S, D]")
    _checks.check_float_dtype("q", q)
    _checks.check_same_dtype("q", q, k_cache=k_cache, v_cache=v_cache)
    _checks.check_same_device("q", q, k_cache=k_cache, v_cache=v_cache)
    batch, heads_q, _, head_dim = q.shape
    if k_cache.shape != v_cache.shape:
        raise ValueError(
            f"v_cache must have the shape of k_cache {list(k_cache.shape)}, got {list(v_cache.shape)}"
        )
    _checks.check_dim("k_cache", k_cache.shape[0], batch, "the batch size (dim 0) of k_cache, as in q,")
    _checks.check_dim(
        "k_cache", k_cache.shape[3], head_dim, "the head dimension (dim 3) of k_cache, as in q,"
    )
    heads_kv = k_cache.shape[1]
    if heads_kv == 0 or heads_q % heads_kv != 0:
        raise ValueError(f"q has {heads_q} heads, which is not a multiple of the {heads_kv} heads of k_cache")
    if cache_seqlens is not None:
        _checks.check_tensor("cache_seqlens", cache_seqlens, 1, "[B]")
        if cache_seqlens.dtype != torch.int32 or cache_seqlens.shape[0] != batch:
            raise ValueError(
                f"cache_seqlens must be int32 [B={batch}], got {cache_seqlens.dtype} {list(cache_seqlens.shape)}"
            )
        _checks.check_same_device("q", q, cache_seqlens=cache_seqlens)
    if kv_indices is not None:
        _checks.check_tensor("kv_indices", kv_indices, 3, "[B, Hkv, N]")
        if kv_indices.dtype != torch.int32:
            raise TypeError(f"kv_indices must have dtype torch.int32, got {kv_indices.dtype}")
        if any(s not in (e, 1) for s, e in zip(kv_indices.shape[:2], (batch, heads_kv), strict=True)):
            raise ValueError(
                f"kv_indices must have shape [B, Hkv, N] with [B, Hkv] = [{batch}, {heads_kv}] (size 1 broadcasts), "
                f"got {list(kv_indices.shape)}"
            )
        _checks.check_same_device("q", q, kv_indices=kv_indices)
    if kv_counts is not None:
        if kv_indices is None:
            raise ValueError("kv_counts needs kv_indices")
        _checks.check_tensor("kv_counts", kv_counts, 2, "[B, Hkv]")
        if kv_counts.dtype != torch.int32:
            raise TypeError(f"kv_counts must have dtype torch.int32, got {kv_counts.dtype}")
        if any(s not in (e, 1) for s, e in zip(kv_counts.shape, (batch, heads_kv), strict=True)):
            raise ValueError(
                f"kv_counts must have shape [B={batch}, Hkv={heads_kv}], got {list(kv_counts.shape)}"
            )
        _checks.check_same_device("q", q, kv_counts=kv_counts)


def check_kv_indices_unique(kv_indices: torch.Tensor, kv_counts: torch.Tensor | None) -> None:
    """Raises ValueError when a head lists a cache position twice (it would be counted twice)."""
    used = kv_indices >= 0
    if kv_counts is not None:
        used = used & (torch.arange(kv_indices.shape[-1], device=kv_indices.device) < kv_counts.unsqueeze(-1))
    if _checks.has_repeated_entries(kv_indices, used):
        raise ValueError(
            "kv_indices lists a cache position twice for some head; each head's list must be duplicate-free"
        )


def _outputs(q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.empty(q.shape, dtype=q.dtype, device=q.device), torch.empty(
        q.shape[:3], dtype=torch.float32, device=q.device
    )


def _params(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    cache_seqlens: torch.Tensor | None,
    kv_indices: torch.Tensor | None,
    kv_counts: torch.Tensor | None,
    causal: bool,
    scale: float,
) -> Any:
    lib = library()
    p = lib.DecodeAttentionParams()
    p.q, p.k, p.v, p.out, p.lse = q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(), lse.data_ptr()
    p.dtype = getattr(lib.DType, str(q.dtype).removeprefix("torch."))
    p.batch, p.heads_q, p.seqlen_q, p.head_dim = q.shape
    p.heads_kv, p.cache_len = k.shape[1], k.shape[2]
    p.q_stride, p.k_stride, p.v_stride, p.out_stride = (x.stride()[:3] for x in (q, k, v, out))
    if cache_seqlens is not None:
        p.cache_seqlens = cache_seqlens.data_ptr()
    if kv_indices is not None:
        kv_indices = kv_indices.expand(q.shape[0], k.shape[1], kv_indices.shape[-1])
        p.kv_indices, p.indices_stride, p.num_indices = (
            kv_indices.data_ptr(),
            kv_indices.stride(),
            kv_indices.shape[-1],
        )
    if kv_counts is not None:
        kv_counts = kv_counts.expand(q.shape[0], k.shape[1])
        p.kv_counts, p.counts_stride = kv_counts.data_ptr(), kv_counts.stride()
    p.causal, p.scale = causal, scale
    return p


def _run(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cache_seqlens: torch.Tensor | None,
    kv_indices: torch.Tensor | None,
    kv_counts: torch.Tensor | None,
    causal: bool,
    scale: float,
    on_cuda: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    _check_inputs(q, k, v, cache_seqlens, kv_indices, kv_counts)
    _checks.check_cuda_head_dim("q", q)
    out, lse = _outputs(q)
    if q.numel() == 0 or k.shape[2] == 0 or (kv_indices is not None and kv_indices.shape[-1] == 0):
        return out.zero_(), lse.fill_(float("-inf"))
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    p = _params(q, k, v, out, lse, cache_seqlens, kv_indices, kv_counts, causal, scale)
    if on_cuda:
        library().decode_attention_cuda(p, torch.cuda.current_stream(q.device).cuda_stream, q.device.index)
    else:
        library().decode_attention_cpu(p, torch.get_num_threads())
    return out, lse


@torch.library.custom_op("kernels_core::decode_attention", mutates_args=(), device_types="cpu")
def _decode_op(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    cache_seqlens: torch.Tensor | None,
    kv_indices: torch.Tensor | None,
    kv_counts: torch.Tensor | None,
    causal: bool,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    return _run(q, k_cache, v_cache, cache_seqlens, kv_indices, kv_counts, causal, scale, on_cuda=False)


@_decode_op.register_kernel("cuda")
def _decode_op_cuda(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    cache_seqlens: torch.Tensor | None,
    kv_indices: torch.Tensor | None,
    kv_counts: torch.Tensor | None,
    causal: bool,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    return _run(q, k_cache, v_cache, cache_seqlens, kv_indices, kv_counts, causal, scale, on_cuda=True)


@_decode_op.register_fake
def _decode_op_fake(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    cache_seqlens: torch.Tensor | None,
    kv_indices: torch.Tensor | None,
    kv_counts: torch.Tensor | None,
    causal: bool,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    _check_inputs(q, k_cache, v_cache, cache_seqlens, kv_indices, kv_counts)
    return _outputs(q)


def _as_int32(name: str, x: torch.Tensor | None) -> torch.Tensor | None:
    if x is None:
        return None
    if not isinstance(x, torch.Tensor) or x.dtype not in (torch.int32, torch.int64):
        raise TypeError(
            f"{name} must be an int32 or int64 tensor, got {getattr(x, 'dtype', type(x).__name__)}"
        )
    return x.to(torch.int32)


def decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    *,
    cache_seqlens: torch.Tensor | None = None,
    kv_indices: torch.Tensor | None = None,
    kv_counts: torch.Tensor | None = None,
    causal: bool = False,
    scale: float | None = None,
    return_lse: bool = False,
    check_indices: bool = True,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Attention of a few new queries against a KV cache, optionally per-head slimmed.

    Args:
        q: [B, Hq, Sq, D] (Sq is small: 1 for plain decoding, a few for speculative decoding).
        k_cache, v_cache: [B, Hkv, S, D], same dtype and device; Hq a multiple of Hkv.
        cache_seqlens: int [B], valid cache length per batch item (default S); positions at or
            past it are ignored.
        kv_indices: int [B, Hkv, N]: the cache positions each key/value head attends to (size-1
            dims broadcast). Negative or out-of-range entries are skipped, so lists can be padded
            with -1. Default: every valid position.
        kv_counts: int [B, Hkv]: how many leading entries of each list to use (default N).
        causal: the Sq queries are the last Sq positions (query i sits at cache_seqlens - Sq + i)
            and see only positions up to their own.
        scale: softmax scale, default 1 / sqrt(D).
        return_lse: also return lse [B, Hq, Sq] float32 (natural log).
        check_indices: verify that no head lists a position twice (one sort per call; turn off
            when the caller guarantees it).

    Returns:
        out [B, Hq, Sq, D] in q's dtype (and lse). Rows that see no key return zeros, lse -inf.
        Inference only: there is no backward.
    """
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be a bool, got {type(causal).__name__}")
    _checks.check_tensor("q", q, 4, "[B, Hq, Sq, D]")
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1]) if q.shape[-1] > 0 else 1.0
    elif isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise ValueError(f"scale must be a finite float, got {scale!r}")
    cache_seqlens = _as_int32("cache_seqlens", cache_seqlens)
    kv_indices = _as_int32("kv_indices", kv_indices)
    kv_counts = _as_int32("kv_counts", kv_counts)
    if check_indices and kv_indices is not None and kv_indices.dim() == 3:
        check_kv_indices_unique(kv_indices, kv_counts if kv_counts is None or kv_counts.dim() == 2 else None)
    out, lse = torch.ops.kernels_core.decode_attention(
        q, k_cache, v_cache, cache_seqlens, kv_indices, kv_counts, causal, float(scale)
    )
    return (out, lse) if return_lse else out
