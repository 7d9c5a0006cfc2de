"""Reduce a context batch to its anchor views (the official ``center_filter``, for a whole dict)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

__all__ = ["reduce_to_anchors"]

_VIEW_KEYS = ("image", "extrinsics", "intrinsics")


def reduce_to_anchors(
    context: Mapping[str, Any],
    anchor_index: torch.Tensor,
    *,
    keys: Iterable[str] | None = None,
    num_views: int | None = None,
) -> dict[str, Any]:
    """Gather every per-view tensor of ``context`` to the K anchor views.

    A per-view tensor has the leading layout [b, v, ...]: "image" [b, v, 3, H, W], "extrinsics",
    "intrinsics", "near" / "far" [b, v], "depth", "pointmap", "index", ... Each becomes
    ``value[i, anchor_index[i]]``, i.e. [b, K, ...] in the order of ``anchor_index``. Other values
    (non-tensors, tensors of another layout) are passed through unchanged.

    Args:
        context: the context dict of a collated batch.
        anchor_index: [b, K] int64 view indices, e.g. the second output of :class:`~zpressor.ZPressor`.
        keys: reduce exactly these keys (each must be a [b, v, ...] tensor); default: every tensor
            whose first two dimensions are [b, v].
        num_views: v; default: dim 1 of "image", "extrinsics" or "intrinsics" (the first present).

    Returns:
        a new dict with the same keys.
    """
    if not isinstance(context, Mapping):
        raise TypeError(f"reduce_to_anchors: context must be a mapping, got {type(context).__name__}")
    if (
        not isinstance(anchor_index, torch.Tensor)
        or anchor_index.dtype != torch.int64
        or anchor_index.dim() != 2
    ):
        got = (
            list(anchor_index.shape)
            if isinstance(anchor_index, torch.Tensor)
            else type(anchor_index).__name__
        )
        raise TypeError(f"reduce_to_anchors: anchor_index must be an int64 tensor [b, K], got {got}")
    b = anchor_index.shape[0]
    if num_views is None:
        present = [
            k for k in _VIEW_KEYS if isinstance(context.get(k), torch.Tensor) and context[k].dim() >= 2
        ]
        if not present:
            raise ValueError(f"reduce_to_anchors: pass num_views= (context has none of {list(_VIEW_KEYS)})")
        num_views = int(context[present[0]].shape[1])
    if bool(((anchor_index < 0) | (anchor_index >= num_views)).any()):
        raise ValueError(f"reduce_to_anchors: anchor_index holds view indices outside [0, {num_views})")

    def per_view(value: object) -> bool:
        return (
            isinstance(value, torch.Tensor) and value.dim() >= 2 and tuple(value.shape[:2]) == (b, num_views)
        )

    selected = set(context) if keys is None else set(keys)
    if keys is not None:
        wrong = sorted(k for k in selected if k not in context or not per_view(context[k]))
        if wrong:
            raise ValueError(
                f"reduce_to_anchors: keys {wrong} are missing or not [b={b}, v={num_views}, ...] tensors"
            )
    out: dict[str, Any] = {}
    for key, value in context.items():
        if key in selected and per_view(value):
            batch = torch.arange(b, device=value.device)[:, None]
            out[key] = value[batch, anchor_index.to(value.device)]
        else:
            out[key] = value
    return out
