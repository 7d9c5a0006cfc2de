"""SlimKVCache: a transformers Cache that keeps, per key/value head, only the visual KV that head uses.

Until its layer is slimmed, a :class:`SlimLayer` is a plain ``DynamicLayer`` (``[B, Hkv, S, D]``). At
the end of prefill OmniSparse calls :meth:`SlimLayer.slim` with each head's kept positions; the layer
then stores one shared pool per batch item:

    pool keys / values   [B, P, D]       every head's kept tokens one after another (P = the sum over heads)
    kv_indices           [B, Hkv, L]     each head's rows in the pool (padded with -1)
    kv_counts            [B, Hkv]        valid entries per head

``update`` appends each new token once per head to the pool and returns the pool broadcast over heads
(``[B, Hkv, P, D]`` with head stride 0, no copy); OmniSparse's decode attention reads the head's rows
through ``kv_indices`` with ``kernels_core.decode_attention``. Memory is the pool plus the index lists,
against ``2 * Hkv * S * D`` elements per item for a dense cache.

The cache keeps counting logical positions, so ``get_seq_length`` (RoPE positions, masks) is that of a
dense cache. Cropping a slimmed layer is not possible (the dropped tokens are gone).
"""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

__all__ = ["SlimKVCache", "SlimLayer"]


class SlimLayer(DynamicLayer):
    """One layer of :class:`SlimKVCache`: dense until :meth:`slim`, then a per-head pool."""

    keys: torch.Tensor | None
    values: torch.Tensor | None

    def __init__(self, **kwargs: object) -> None:
        super().__init__()
        self.kv_indices: torch.Tensor | None = None
        self.kv_counts: torch.Tensor | None = None
        self.logical_length = 0
        self.pool_length: torch.Tensor | None = None  # [B] rows in use per item

    @property
    def is_slim(self) -> bool:
        return self.kv_indices is not None

    @property
    def is_croppable(self) -> bool:  # type: ignore[override,unused-ignore]
        return not self.is_slim

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: object, **kwargs: object
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_slim:
            keys, values = super().update(key_states, value_states)
            self.logical_length = keys.shape[-2]
            return keys, values
        assert self.keys is not None
        assert self.values is not None
        assert self.kv_indices is not None
        assert self.kv_counts is not None
        assert self.pool_length is not None
        batch, heads, new, dim = key_states.shape
        # every item's pool has the same padded length P; the new rows go right after each item's last row
        start = int(self.pool_length.max())
        extra = start + heads * new - self.keys.shape[1]
        if extra > 0:
            pad = self.keys.new_zeros(batch, extra, dim)
            self.keys = torch.cat([self.keys, pad], dim=1)
            self.values = torch.cat([self.values, pad.clone()], dim=1)
        rows = self.pool_length[:, None, None] + torch.arange(heads * new, device=self.keys.device).view(
            1, heads, new
        )
        flat_rows = rows.reshape(batch, heads * new)
        self.keys.scatter_(
            1, flat_rows[..., None].expand(-1, -1, dim), key_states.reshape(batch, heads * new, dim)
        )
        self.values.scatter_(
            1, flat_rows[..., None].expand(-1, -1, dim), value_states.reshape(batch, heads * new, dim)
        )
        self.pool_length = self.pool_length + heads * new
        # append the new rows to each head's list
        width = int(self.kv_counts.max()) + new
        if width > self.kv_indices.shape[-1]:
            grow = self.kv_indices.new_full((batch, heads, width - self.kv_indices.shape[-1]), -1)
            self.kv_indices = torch.cat([self.kv_indices, grow], dim=-1)
        slots = self.kv_counts[..., None].long() + torch.arange(new, device=self.kv_indices.device)
        self.kv_indices.scatter_(-1, slots, rows.to(self.kv_indices.dtype))
        self.kv_counts = self.kv_counts + new
        self.logical_length += new
        return self.pooled_keys(heads), self.pooled_values(heads)

    def pooled_keys(self, heads: int) -> torch.Tensor:
        assert self.keys is not None
        return self.keys[:, None].expand(-1, heads, -1, -1)

    def pooled_values(self, heads: int) -> torch.Tensor:
        assert self.values is not None
        return self.values[:, None].expand(-1, heads, -1, -1)

    @torch.no_grad()
    def slim(self, keep: list[list[torch.Tensor]]) -> None:
        """Keep, for item b and head h, the positions ``keep[b][h]`` (int, sorted, unique) of the dense cache."""
        if self.is_slim:
            raise RuntimeError("this cache layer is already slimmed")
        assert self.keys is not None
        assert self.values is not None
        batch, heads, _, dim = self.keys.shape
        if len(keep) != batch or any(len(row) != heads for row in keep):
            raise ValueError(f"keep must list {heads} heads for each of {batch} items")
        counts = torch.tensor([[len(p) for p in row] for row in keep], dtype=torch.int32)
        totals = counts.sum(1)
        width, pool = max(1, int(counts.max())), max(1, int(totals.max()))
        keys = self.keys.new_zeros(batch, pool, dim)
        values = self.values.new_zeros(batch, pool, dim)
        indices = torch.full((batch, heads, width), -1, dtype=torch.int32)
        for b in range(batch):
            offset = 0
            for h in range(heads):
                positions = keep[b][h].to(self.keys.device, torch.long)
                n = positions.numel()
                keys[b, offset : offset + n] = self.keys[b, h, positions]
                values[b, offset : offset + n] = self.values[b, h, positions]
                indices[b, h, :n] = torch.arange(offset, offset + n, dtype=torch.int32)
                offset += n
        self.keys, self.values = keys, values
        self.kv_indices = indices.to(keys.device)
        self.kv_counts = counts.to(keys.device)
        self.pool_length = totals.to(device=keys.device, dtype=torch.long)

    def get_seq_length(self) -> int:
        return self.logical_length

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.logical_length + query_length, 0

    def crop(self, tokens_to_remove: int) -> None:
        if self.is_slim and tokens_to_remove != 0:
            raise RuntimeError("a slimmed SlimKVCache layer cannot be cropped: the dropped tokens are gone")
        super().crop(tokens_to_remove)
        self.logical_length = self.keys.shape[-2] if self.keys is not None and self.keys.numel() else 0

    def reset(self) -> None:
        super().reset()
        self.kv_indices = self.kv_counts = self.pool_length = None
        self.logical_length = 0

    def nbytes(self) -> int:
        """Bytes held: keys and values (pool or dense), plus the index lists once slimmed."""
        total = 0
        for t in (self.keys, self.values, self.kv_indices, self.kv_counts):
            if t is not None:
                total += t.numel() * t.element_size()
        return total

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.is_slim:
            raise RuntimeError(
                "beam search / num_return_sequences > 1 is not supported on a slimmed SlimKVCache"
            )
        super().batch_repeat_interleave(repeats)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.is_slim:
            raise RuntimeError("selecting batch items is not supported on a slimmed SlimKVCache")
        super().batch_select_indices(indices)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        if self.is_slim:
            raise RuntimeError("beam search is not supported on a slimmed SlimKVCache")
        super().reorder_cache(beam_idx)


class SlimKVCache(DynamicCache):
    """A ``DynamicCache`` whose layers OmniSparse slims per head after prefill.

    Pass it as the model's cache (``model(..., cache=SlimKVCache(config=model.config))``) or let
    :func:`omnisparse.apply` swap it in for an empty ``DynamicCache``.
    """

    def __init__(self, config: object | None = None, num_layers: int | None = None) -> None:
        super().__init__()
        if num_layers is None:
            if config is None:
                raise ValueError("SlimKVCache needs config= (the model's config) or num_layers=")
            text = config.get_text_config(decoder=True)  # type: ignore[attr-defined]
            num_layers = int(text.num_hidden_layers)
        self.layers = [SlimLayer() for _ in range(num_layers)]

    def layer(self, layer_idx: int) -> SlimLayer:
        layer = self.layers[layer_idx]
        assert isinstance(layer, SlimLayer)
        return layer

    def nbytes(self) -> int:
        """Bytes held by all layers."""
        return sum(layer.nbytes() for layer in self.layers if isinstance(layer, SlimLayer))

    def kept_tokens(self) -> list[torch.Tensor]:
        """Per layer, the kept tokens per (item, head) [B, Hkv] (the logical length where not slimmed)."""
        out = []
        for layer in self.layers:
            assert isinstance(layer, SlimLayer)
            if layer.kv_counts is not None:
                out.append(layer.kv_counts.clone())
            elif layer.keys is not None:
                out.append(torch.full(layer.keys.shape[:2], layer.logical_length, dtype=torch.int32))
            else:
                out.append(torch.zeros(0, 0, dtype=torch.int32))
        return out
