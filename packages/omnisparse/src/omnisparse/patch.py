"""``apply`` / ``remove``: route a transformers decoder's attention through OmniSparse.

``apply`` registers the attention function ``"omnisparse"`` with transformers' attention registry and
switches the language model to it (the vision tower of a Qwen-VL model keeps its implementation). A
forward pre-hook on the model records, for each call, which tokens are visual (``mm_token_type_ids``,
or the image/video token ids in ``input_ids``) and which cache the call uses. ``remove`` undoes all of
it: attention implementations, the hook and the state.

The attention function, per call of layer ``l``:

- a slimmed :class:`SlimKVCache` layer: decode attention over each head's kept tokens;
- a causal prefill of at least ``min_seq_len`` tokens with no padding: OmniSparse's query/KV selection
  and ``kernels_core.block_sparse_attention`` (differentiable, so training uses the same sparsity);
- anything else (short calls, padded batches, ``dense_layers``): dense SDPA;
- after a prefill into a :class:`SlimKVCache`: slim the layer for decoding.
"""

from __future__ import annotations

import warnings
import weakref
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

import kernels_core
from accel_shared.patching.inputs import AttentionInputs, sdpa_math
from accel_shared.patching.transformers import (
    AttentionState,
    register_attention,
    restore_attention,
    set_attention,
)
from omnisparse.config import OmniSparseConfig
from omnisparse.decode_selection import decode_keep_positions
from omnisparse.selection import select_prefill_blocks
from omnisparse.slim_cache import SlimKVCache, SlimLayer

__all__ = ["ATTENTION_NAME", "OmniSparseState", "apply", "get_state", "is_applied", "remove"]

ATTENTION_NAME = "omnisparse"
_CACHE_KWARGS = ("past_key_values", "cache")
_STATES: weakref.WeakKeyDictionary[torch.nn.Module, OmniSparseState] = weakref.WeakKeyDictionary()


@dataclass
class CallStats:
    """What one sparse prefill call did (collected when ``state.record`` is on)."""

    layer: int
    seq_len: int
    density: float
    active_share: float
    budget_ratio: float


@dataclass
class OmniSparseState:
    """Per-model state: the config, the visual-token mask of the running sequence and the current cache."""

    config: OmniSparseConfig
    visual_token_ids: tuple[int, ...]
    attention_state: AttentionState | None = None
    hook: Any = None
    visual: Tensor | None = None  # bool [B, S] over the logical sequence so far (None: unknown)
    cache: Any = None
    record: bool = False
    stats: list[CallStats] = field(default_factory=list)
    warned: set[str] = field(default_factory=set)

    def warn_once(self, key: str, message: str) -> None:
        if key not in self.warned:
            self.warned.add(key)
            warnings.warn(message, stacklevel=3)


def get_state(model: torch.nn.Module) -> OmniSparseState:
    """The state :func:`apply` attached to ``model``."""
    try:
        return _STATES[model]
    except KeyError:
        raise ValueError(
            f"{type(model).__name__} has no OmniSparse applied; call omnisparse.apply(model) first"
        ) from None


def is_applied(model: torch.nn.Module) -> bool:
    return model in _STATES


# ---------------------------------------------------------------------------------------------
# visual tokens and the cache, captured before each forward
# ---------------------------------------------------------------------------------------------
def _visual_mask(state: OmniSparseState, kwargs: dict[str, Any]) -> Tensor | None:
    types = kwargs.get("mm_token_type_ids")
    if isinstance(types, Tensor):
        return types != 0
    ids = kwargs.get("input_ids")
    if isinstance(ids, Tensor):
        if not state.visual_token_ids:
            return torch.zeros_like(ids, dtype=torch.bool)
        return torch.isin(ids, torch.tensor(state.visual_token_ids, device=ids.device))
    return None


def _pre_forward(model: torch.nn.Module, args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict[str, Any]]:
    state = _STATES.get(model)
    if state is None:
        return args, kwargs
    if args and "input_ids" not in kwargs and isinstance(args[0], Tensor):
        kwargs = {**kwargs, "input_ids": args[0]}
        args = args[1:]
    key = next((k for k in _CACHE_KWARGS if kwargs.get(k) is not None), None)
    cache = kwargs.get(key) if key else None
    if state.config.slim_decode and cache is not None and not isinstance(cache, SlimKVCache):
        from transformers.cache_utils import DynamicCache

        if type(cache) is DynamicCache and cache.get_seq_length() == 0:
            cache = SlimKVCache(config=model.config)
            assert key is not None
            kwargs = {**kwargs, key: cache}
    fresh = cache is None or cache.get_seq_length() == 0
    visual = _visual_mask(state, kwargs)
    if fresh or state.visual is None or visual is None:
        state.visual = visual
    elif visual.shape[0] == state.visual.shape[0]:
        state.visual = torch.cat([state.visual, visual.to(state.visual.device)], dim=1)
    state.cache = cache
    return args, kwargs


# ---------------------------------------------------------------------------------------------
# the attention function
# ---------------------------------------------------------------------------------------------
def _state_for(inputs: AttentionInputs) -> OmniSparseState | None:
    module = inputs.module
    return None if module is None else _MODULE_STATES.get(module)


_MODULE_STATES: weakref.WeakKeyDictionary[torch.nn.Module, OmniSparseState] = weakref.WeakKeyDictionary()


def _slim_layer(state: OmniSparseState, layer_idx: int | None) -> SlimLayer | None:
    cache = state.cache
    if layer_idx is None or not isinstance(cache, SlimKVCache) or layer_idx >= len(cache.layers):
        return None
    return cache.layer(layer_idx)


def _mask_is_plain_causal(inputs: AttentionInputs) -> bool:
    """True when the call is causal with no padding (the only case the sparse path covers)."""
    mask = inputs.attn_mask
    if mask is None:
        return inputs.is_causal
    if mask.dtype != torch.bool:
        return False
    # the mask spans the logical sequence (for a slimmed cache that is longer than the pool in ``key``)
    sq, sk = inputs.query.shape[2], mask.shape[-1]
    expected = torch.ones(sq, sk, dtype=torch.bool, device=mask.device).tril(diagonal=sk - sq)
    return bool((mask == expected).all())


def _text_tokens(state: OmniSparseState, batch: int, sk: int) -> Tensor | None:
    visual = state.visual
    if visual is None or visual.shape != (batch, sk) or not bool(visual.any()):
        return None  # no visual tokens: every token is treated alike
    return ~visual


def _slim_decode(inputs: AttentionInputs, layer: SlimLayer) -> Tensor:
    q, k, v = inputs.query, inputs.key, inputs.value
    assert layer.kv_indices is not None
    assert layer.kv_counts is not None
    if inputs.attn_mask is not None and not _mask_is_plain_causal(inputs):
        raise ValueError(
            "OmniSparse's slimmed decode does not support padded batches or custom masks; decode one sequence per "
            "batch row without padding (or pass a DynamicCache to keep the whole cache)"
        )
    if q.shape[2] == 1:
        out = kernels_core.decode_attention(
            q,
            k,
            v,
            kv_indices=layer.kv_indices,
            kv_counts=layer.kv_counts,
            scale=inputs.scale,
            check_indices=False,
        )
        assert isinstance(out, Tensor)
        return out
    # several new tokens at once: gather each head's list and attend causally among the new tokens
    idx = layer.kv_indices.long().clamp(min=0)  # [B, Hkv, L]
    gather = idx[..., None].expand(-1, -1, -1, k.shape[-1])
    keys = torch.gather(k, 2, gather)
    values = torch.gather(v, 2, gather)
    width = idx.shape[-1]
    sq = q.shape[2]
    cols = torch.arange(width, device=q.device)
    counts = layer.kv_counts.long()[..., None, None]  # [B, Hkv, 1, 1]
    rows = torch.arange(sq, device=q.device)[:, None]
    allowed = cols[None, None, None, :] <= counts - sq + rows  # [B, Hkv, Sq, L]
    allowed = allowed.repeat_interleave(inputs.num_kv_groups, dim=1)
    return sdpa_math(AttentionInputs(q, keys, values, attn_mask=allowed, scale=inputs.scale))


def omnisparse_attention(inputs: AttentionInputs) -> Tensor:
    """The attention function registered as ``"omnisparse"`` (see the module docstring)."""
    state = _state_for(inputs)
    if state is None:
        return sdpa_math(inputs)
    config = state.config
    layer_idx = inputs.layer_idx
    cache_layer = _slim_layer(state, layer_idx)
    if cache_layer is not None and cache_layer.is_slim:
        return _slim_decode(inputs, cache_layer)

    q, k, v = inputs.query, inputs.key, inputs.value
    sq, sk = q.shape[2], k.shape[2]
    sparse = (
        sq > 1
        and sq >= config.min_seq_len
        and layer_idx not in config.dense_layers
        and inputs.dropout_p == 0.0
        and _mask_is_plain_causal(inputs)
    )
    if sq > 1 and sq >= config.min_seq_len and not sparse and inputs.attn_mask is not None:
        state.warn_once("mask", "OmniSparse runs dense attention for calls with padding or custom masks")
    text_tokens = _text_tokens(state, q.shape[0], sk)
    if sparse:
        selection = select_prefill_blocks(q, k, config, scale=inputs.scale, text_tokens=text_tokens)
        block = config.block_size
        out = kernels_core.block_sparse_attention(
            q,
            k,
            v,
            selection.indices,
            block_size=(block, block),
            causal=True,
            scale=inputs.scale,
            check_indices=False,
        )
        assert isinstance(out, Tensor)
        if state.record:
            active = float(selection.active.float().mean())
            state.stats.append(
                CallStats(
                    layer_idx if layer_idx is not None else -1,
                    sq,
                    selection.density,
                    active,
                    selection.budget_ratio,
                )
            )
    else:
        out = sdpa_math(inputs)

    if cache_layer is not None and config.slim_decode and sq > 1:
        if text_tokens is None:
            state.warn_once(
                "slim", "OmniSparse keeps the whole KV cache: this prompt has no visual tokens to slim"
            )
        elif cache_layer.keys is not None and cache_layer.keys.shape[2] == sk:
            keep = decode_keep_positions(q, k, ~text_tokens, config, inputs.scale)
            cache_layer.slim(keep)
    return out


# ---------------------------------------------------------------------------------------------
# apply / remove
# ---------------------------------------------------------------------------------------------
def _visual_token_ids(config: Any) -> tuple[int, ...]:
    ids = []
    for name in ("image_token_id", "video_token_id"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            ids.append(value)
    return tuple(ids)


def apply(model: torch.nn.Module, config: OmniSparseConfig | None = None) -> OmniSparseState:
    """Switch ``model``'s language-model attention to OmniSparse.

    Args:
        model: a transformers model: ``Qwen2VLForConditionalGeneration``,
            ``Qwen2_5_VLForConditionalGeneration`` (their vision tower is left dense), or any decoder that
            goes through transformers' attention registry (``Qwen2ForCausalLM``, ``LlamaForCausalLM``, ...).
        config: :class:`OmniSparseConfig` (defaults when None).

    Returns:
        the model's :class:`OmniSparseState` (``state.record = True`` collects per-call statistics).
    """
    from transformers import PreTrainedModel

    if not isinstance(model, PreTrainedModel):
        raise TypeError(
            f"omnisparse.apply: model must be a transformers PreTrainedModel, got {type(model).__name__}"
        )
    if config is None:
        config = OmniSparseConfig()
    elif not isinstance(config, OmniSparseConfig):
        raise TypeError(f"omnisparse.apply: config must be an OmniSparseConfig, got {type(config).__name__}")
    if is_applied(model):
        raise ValueError(
            "omnisparse.apply: OmniSparse is already applied to this model; call omnisparse.remove(model) first"
        )
    register_attention(ATTENTION_NAME, omnisparse_attention)
    sub_configs = getattr(model.config, "sub_configs", {}) or {}
    if "text_config" in sub_configs:
        attention_state = set_attention(model, ATTENTION_NAME, sub_configs={"text_config": ATTENTION_NAME})
    else:
        attention_state = set_attention(model, ATTENTION_NAME)
    state = OmniSparseState(
        config=config, visual_token_ids=_visual_token_ids(model.config), attention_state=attention_state
    )
    state.hook = model.register_forward_pre_hook(_pre_forward, with_kwargs=True)
    _STATES[model] = state
    vision = _vision_modules(model)
    for module in model.modules():
        if module not in vision:
            _MODULE_STATES[module] = state
    return state


def _vision_modules(model: torch.nn.Module) -> set[torch.nn.Module]:
    found: set[torch.nn.Module] = set()
    for name, module in model.named_modules():
        if name.split(".")[-1] in ("visual", "vision_tower", "vision_model"):
            found.update(module.modules())
    return found


def remove(model: torch.nn.Module) -> None:
    """Undo :func:`apply`: the original attention implementations, no hook, no state."""
    state = _STATES.pop(model, None)
    if state is None:
        raise ValueError(f"omnisparse.remove: {type(model).__name__} has no OmniSparse applied")
    if state.hook is not None:
        state.hook.remove()
    if state.attention_state is not None:
        restore_attention(model, state.attention_state)
    for module in model.modules():
        _MODULE_STATES.pop(module, None)
    state.cache = state.visual = None
