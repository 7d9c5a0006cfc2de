"""The one input type every attention hook receives, and the dense reference math.

Layout convention (the same for every hook in ``accel_shared.patching``): tensors are head-major,
``[batch, heads, sequence, head_dim]``, like ``torch.nn.functional.scaled_dot_product_attention`` and
kernels_core. Attention math takes an :class:`AttentionInputs` and returns ``[B, Hq, Sq, Dv]``.
Adapters for libraries that use another layout (diffusers: ``[B, S, H, D]``) convert with views.

Grouped-query attention is passed as is: key/value carry ``Hkv`` heads, ``Hq % Hkv == 0``, and query head
``h`` reads key/value head ``h // (Hq // Hkv)``. Nothing is repeated before the math sees it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["AttentionInputs", "AttentionMath", "causal_mask", "sdpa_math"]


@dataclass(frozen=True)
class AttentionInputs:
    """Everything one attention call needs.

    Attributes:
        query: ``[B, Hq, Sq, D]``.
        key: ``[B, Hkv, Sk, D]`` with ``Hq % Hkv == 0`` (grouped-query attention, not repeated).
        value: ``[B, Hkv, Sk, Dv]``.
        attn_mask: ``None``, a bool mask (``True`` = attend) or an additive float mask, broadcastable to
            ``[B, Hq, Sq, Sk]``. It may be combined with ``is_causal``: both then apply.
        is_causal: causal mask aligned bottom-right as in FlashAttention: query ``i`` sees keys
            ``j <= i + Sk - Sq``. With ``Sq == Sk`` this is the usual lower-triangular mask.
        scale: softmax scale, already resolved (the libraries default to ``1 / sqrt(D)``).
        dropout_p: attention dropout probability (``0.0`` at inference).
        module: the ``torch.nn.Module`` making the call, when known.
        layer_name: qualified module name or processor name, e.g. ``"model.layers.3.self_attn"``.
        layer_idx: the layer index the library gave the module (transformers' ``module.layer_idx``).
        extra: other keyword arguments the library passed (``sliding_window``, ``position_ids``, ...).
    """

    query: Tensor
    key: Tensor
    value: Tensor
    attn_mask: Tensor | None = None
    is_causal: bool = False
    scale: float = None  # type: ignore[assignment]  # None -> 1 / sqrt(D), resolved in __post_init__
    dropout_p: float = 0.0
    module: torch.nn.Module | None = None
    layer_name: str = ""
    layer_idx: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        q, k, v = self.query, self.key, self.value
        for arg, t in (("query", q), ("key", k), ("value", v)):
            if not isinstance(t, Tensor) or t.ndim != 4:
                got = f"shape {tuple(t.shape)}" if isinstance(t, Tensor) else type(t).__name__
                raise ValueError(f"AttentionInputs.{arg} must be a 4-D tensor [B, H, S, D], got {got}")
        if k.shape[:3] != v.shape[:3]:
            raise ValueError(
                f"AttentionInputs: key {tuple(k.shape)} and value {tuple(v.shape)} must agree on [B, Hkv, Sk]"
            )
        if q.shape[-1] != k.shape[-1]:
            raise ValueError(
                f"AttentionInputs: query head dim {q.shape[-1]} != key head dim {k.shape[-1]} "
                f"(query {tuple(q.shape)}, key {tuple(k.shape)})"
            )
        if q.shape[1] % k.shape[1] != 0:
            raise ValueError(
                f"AttentionInputs: query heads ({q.shape[1]}) must be a multiple of key/value heads "
                f"({k.shape[1]}) for grouped-query attention"
            )
        if self.attn_mask is not None and not isinstance(self.attn_mask, Tensor):
            raise ValueError(
                f"AttentionInputs.attn_mask must be a tensor or None, got {type(self.attn_mask).__name__}"
            )
        if self.scale is None:
            # frozen dataclass: resolve the default through object.__setattr__
            object.__setattr__(self, "scale", 1.0 / math.sqrt(q.shape[-1]))
        if not 0.0 <= self.dropout_p < 1.0:
            raise ValueError(f"AttentionInputs.dropout_p must be in [0, 1), got {self.dropout_p}")

    @property
    def num_kv_groups(self) -> int:
        """``Hq // Hkv``: how many query heads share one key/value head."""
        return self.query.shape[1] // self.key.shape[1]


AttentionMath = Callable[[AttentionInputs], Tensor]
"""A function ``AttentionInputs -> Tensor [B, Hq, Sq, Dv]``."""


def causal_mask(q_len: int, kv_len: int, device: torch.device | str | None = None) -> Tensor:
    """Bottom-right aligned causal mask: ``[Sq, Sk]`` bool, ``True`` where query ``i`` may see key ``j``.

    ``j <= i + (Sk - Sq)``. With ``Sq > Sk`` the first ``Sq - Sk`` rows see no key at all.
    """
    rows = torch.arange(q_len, device=device)[:, None]
    cols = torch.arange(kv_len, device=device)[None, :]
    return cols <= rows + (kv_len - q_len)


def _merge_causal(mask: Tensor | None, causal: Tensor) -> Tensor:
    """Combine an optional bool/float mask with a bool causal mask ``[Sq, Sk]`` (result broadcasts)."""
    if mask is None:
        return causal
    if mask.dtype == torch.bool:
        return mask & causal
    return mask.masked_fill(~causal, float("-inf"))


# SDPA's enable_gqa arrived in torch 2.5; older versions get repeated key/value heads.
_SDPA_HAS_GQA = tuple(int(p) for p in torch.__version__.split(".")[:2]) >= (2, 5)


def sdpa_math(inputs: AttentionInputs) -> Tensor:
    """Dense reference attention through ``torch.nn.functional.scaled_dot_product_attention``.

    Args:
        inputs: see :class:`AttentionInputs`.

    Returns:
        ``[B, Hq, Sq, Dv]``. Rows that see no key (fully masked) come out as SDPA makes them
        (zeros on recent torch).

    SDPA's own ``is_causal`` is aligned top-left, so it is used only when ``Sq == Sk`` and no other mask is
    given; otherwise the bottom-right causal mask is built explicitly and merged with ``attn_mask``.
    """
    q, k, v = inputs.query, inputs.key, inputs.value
    q_len, kv_len = q.shape[2], k.shape[2]
    mask = inputs.attn_mask
    is_causal = inputs.is_causal
    if is_causal and (mask is not None or q_len != kv_len):
        mask = _merge_causal(mask, causal_mask(q_len, kv_len, device=q.device))
        is_causal = False

    sdpa_kwargs: dict[str, Any] = {}
    groups = inputs.num_kv_groups
    if groups > 1:
        if _SDPA_HAS_GQA:
            sdpa_kwargs["enable_gqa"] = True
        else:  # torch < 2.5
            k = k.repeat_interleave(groups, dim=1)
            v = v.repeat_interleave(groups, dim=1)
    return F.scaled_dot_product_attention(
        q,
        k,
        v,
        attn_mask=mask,
        dropout_p=inputs.dropout_p,
        is_causal=is_causal,
        scale=inputs.scale,
        **sdpa_kwargs,
    )
