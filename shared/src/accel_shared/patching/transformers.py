"""Route a transformers model's attention through an :data:`AttentionMath`.

transformers looks attention functions up by name in ``AttentionInterface``. :func:`register_attention`
adds an adapter under a name; :func:`set_attention` switches a model (or some of its sub-models) to it
and returns a snapshot that :func:`restore_attention` puts back exactly.

Layouts: transformers hands the registry query ``[B, Hq, Sq, D]`` and key/value ``[B, Hkv, Sk, D]``
(grouped-query heads not repeated), which is the :class:`AttentionInputs` layout as is. The math returns
``[B, Hq, Sq, Dv]``; the adapter gives transformers ``[B, Sq, Hq, Dv]`` (contiguous), as
``sdpa_attention_forward`` does.

The adapter normalises its arguments exactly like transformers' ``sdpa`` integration, so that the stock
``sdpa`` path and ``sdpa_math`` behind this adapter compute the same thing:

- ``is_causal`` comes from the call (``is_causal=``) or ``module.is_causal`` (default ``True``), and holds
  only when ``Sq > 1`` and no mask was built (transformers then relies on the causal flag).
- With the causal flag and ``Sk > Sq`` (prefill into an empty ``StaticCache``) key/value are cut to the
  first ``Sq`` positions: transformers' sdpa path relies on top-left alignment there, whereas
  :class:`AttentionInputs` is aligned bottom-right.
- The mask function registered for the name is transformers' ``sdpa_mask``: bool masks, ``True`` = attend,
  ``None`` when the causal flag suffices. Without a registered mask function transformers silently drops
  padding masks for custom implementations.

The Qwen2-VL / Qwen2.5-VL vision towers go through the same registry, one call per image chunk, with
``is_causal=False``.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from accel_shared.patching.inputs import AttentionInputs, AttentionMath

__all__ = [
    "AttentionState",
    "register_attention",
    "registered_attention",
    "restore_attention",
    "set_attention",
    "use_attention",
]

# Qualified module names, filled by set_attention so that the adapter can name the calling layer.
_LAYER_NAMES: weakref.WeakKeyDictionary[torch.nn.Module, str] = weakref.WeakKeyDictionary()
_REGISTERED: dict[str, AttentionMath] = {}
# kwargs the adapter consumes itself; everything else goes to AttentionInputs.extra
_CONSUMED = ("is_causal", "softcap", "output_attentions", "position_bias")


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as e:
        raise ImportError(
            "accel_shared.patching.transformers needs transformers: pip install 'accel-shared[transformers]'"
        ) from e
    return transformers


def _make_adapter(math: AttentionMath) -> Any:
    def adapter(
        module: torch.nn.Module,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        attention_mask: Tensor | None,
        scaling: float | None = None,
        dropout: float = 0.0,
        **kwargs: Any,
    ) -> tuple[Tensor, None]:
        if kwargs.get("softcap") is not None:
            raise ValueError(
                f"attention softcap={kwargs['softcap']} is not supported by accel_shared attention adapters"
            )
        is_causal = kwargs.get("is_causal")
        if is_causal is None:
            is_causal = getattr(module, "is_causal", True)
        q_len, kv_len = query.shape[2], key.shape[2]
        is_causal = bool(q_len > 1 and attention_mask is None and is_causal)
        position_bias = kwargs.get("position_bias")
        if is_causal and kv_len > q_len:
            key, value = key[:, :, :q_len], value[:, :, :q_len]
            if position_bias is not None:
                position_bias = position_bias[..., :q_len]
        if position_bias is not None:
            attention_mask = _fold_position_bias(position_bias, attention_mask)

        inputs = AttentionInputs(
            query=query,
            key=key,
            value=value,
            attn_mask=attention_mask,
            is_causal=is_causal,
            scale=scaling,  # type: ignore[arg-type]  # None -> 1/sqrt(D)
            dropout_p=dropout if module.training else 0.0,
            module=module,
            layer_name=_LAYER_NAMES.get(module, type(module).__name__),
            layer_idx=getattr(module, "layer_idx", None),
            extra={k: v for k, v in kwargs.items() if k not in _CONSUMED},
        )
        out = math(inputs)
        expected = (query.shape[1], q_len, value.shape[-1])
        if not isinstance(out, Tensor) or out.ndim != 4 or tuple(out.shape[1:]) != expected:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(
                f"attention math for {inputs.layer_name!r} must return [B, Hq, Sq, Dv] = "
                f"[{query.shape[0]}, {expected[0]}, {expected[1]}, {expected[2]}], got {got}"
            )
        return out.transpose(1, 2).contiguous(), None

    return adapter


def _fold_position_bias(bias: Tensor, mask: Tensor | None) -> Tensor:
    """Turn a learned additive bias ``[B|1, H, Sq, Sk]`` plus an optional mask into one additive mask."""
    if mask is None:
        return bias
    if mask.dtype == torch.bool:
        return bias.masked_fill(~mask, float("-inf"))
    return bias + mask


def register_attention(name: str, math: AttentionMath) -> None:
    """Register ``math`` with transformers under ``name`` (attention function and mask function).

    Afterwards ``set_attention(model, name)`` or ``from_pretrained(..., attn_implementation=name)`` use it.
    Registering a name again replaces the previous math.

    Args:
        name: a new implementation name; must not shadow transformers' built-ins (``sdpa``, ``eager``, ...).
        math: ``AttentionInputs -> Tensor [B, Hq, Sq, Dv]``.
    """
    tf = _transformers()
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    if not isinstance(name, str) or not name:
        raise ValueError(f"register_attention: name must be a non-empty string, got {name!r}")
    if not callable(math):
        raise TypeError(f"register_attention: math must be callable, got {type(math).__name__}")
    if name == "eager" or (name in tf.AttentionInterface._global_mapping and name not in _REGISTERED):
        raise ValueError(f"register_attention: name {name!r} is a transformers built-in; choose another name")
    tf.AttentionInterface.register(name, _make_adapter(math))
    AttentionMaskInterface.register(name, sdpa_mask)
    _REGISTERED[name] = math


def registered_attention() -> dict[str, AttentionMath]:
    """Names registered through :func:`register_attention`, with their math."""
    return dict(_REGISTERED)


@dataclass(frozen=True)
class AttentionState:
    """What :func:`set_attention` changed: each reachable config with its previous implementation."""

    entries: tuple[tuple[Any, str | None], ...]

    def __len__(self) -> int:
        return len(self.entries)


def _reachable_configs(model: torch.nn.Module) -> list[Any]:
    """``model.config``, its sub-configs (recursively) and the configs of all PreTrainedModel submodules."""
    tf = _transformers()
    seen: dict[int, Any] = {}
    stack: list[Any] = [model.config]
    stack += [m.config for m in model.modules() if isinstance(m, tf.PreTrainedModel)]
    while stack:
        config = stack.pop()
        if config is None or id(config) in seen:
            continue
        seen[id(config)] = config
        for key in getattr(config, "sub_configs", {}) or {}:
            stack.append(getattr(config, key, None))
    return list(seen.values())


def _check_name(name: str, arg: str) -> None:
    tf = _transformers()
    known = set(tf.AttentionInterface._global_mapping) | {"eager"}
    if name not in known:
        raise ValueError(
            f"set_attention: {arg}={name!r} is not a registered attention implementation; call "
            f"register_attention({name!r}, math) first (registered here: {sorted(_REGISTERED)})"
        )


def set_attention(
    model: torch.nn.Module, name: str, *, sub_configs: Mapping[str, str] | None = None
) -> AttentionState:
    """Switch ``model`` to the attention implementation ``name``; returns the state to restore.

    Args:
        model: a transformers ``PreTrainedModel``.
        name: a name given to :func:`register_attention` (or a transformers built-in such as ``"sdpa"``).
            Without ``sub_configs`` it applies to the model and all its sub-models.
        sub_configs: patch only these sub-models, e.g. ``{"text_config": name}`` for Qwen2-VL leaves the
            vision tower on its current implementation. ``name`` then applies to the top-level config only
            and sub-configs not listed keep their implementation.
    """
    tf = _transformers()
    if not isinstance(model, tf.PreTrainedModel):
        raise TypeError(
            f"set_attention: model must be a transformers PreTrainedModel, got {type(model).__name__}"
        )
    _check_name(name, "name")
    request: str | dict[str, str] = name
    if sub_configs is not None:
        valid = list(getattr(model.config, "sub_configs", {}) or {})
        for key, value in sub_configs.items():
            if key not in valid:
                raise ValueError(
                    f"set_attention: sub_configs key {key!r} is not a sub-config of "
                    f"{type(model.config).__name__}; expected one of {valid}"
                )
            _check_name(value, f"sub_configs[{key!r}]")
        request = {"": name, **sub_configs}

    state = AttentionState(
        tuple((c, getattr(c, "_attn_implementation_internal", None)) for c in _reachable_configs(model))
    )
    for module_name, module in model.named_modules():
        _LAYER_NAMES[module] = module_name
    try:
        model.set_attn_implementation(request)
        # transformers only logs a warning for models that cannot switch; make that an error here.
        expected = {"": name, **(sub_configs or {})}
        for key, wanted in expected.items():
            config = model.config if key == "" else getattr(model.config, key)
            if config._attn_implementation != wanted:
                where = type(model).__name__ + (f".config.{key}" if key else "")
                raise ValueError(
                    f"set_attention: {where} is on {config._attn_implementation!r} instead of {wanted!r} "
                    "after switching (does the model support setting its attention implementation?)"
                )
    except BaseException:
        restore_attention(model, state)
        raise
    return state


def restore_attention(model: torch.nn.Module, state: AttentionState) -> None:
    """Put back the implementations recorded in ``state`` exactly (no re-validation)."""
    if not isinstance(state, AttentionState):
        raise TypeError(f"restore_attention: state must be an AttentionState, got {type(state).__name__}")
    for config, implementation in state.entries:
        config._attn_implementation_internal = implementation


@contextlib.contextmanager
def use_attention(
    model: torch.nn.Module, name: str, *, sub_configs: Mapping[str, str] | None = None
) -> Iterator[AttentionState]:
    """``with use_attention(model, name): ...`` — :func:`set_attention` then :func:`restore_attention`."""
    state = set_attention(model, name, sub_configs=sub_configs)
    try:
        yield state
    finally:
        restore_attention(model, state)
