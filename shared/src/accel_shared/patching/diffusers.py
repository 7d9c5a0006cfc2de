"""Route a diffusers model's attention through an :data:`AttentionMath`.

diffusers' processors (``FluxAttnProcessor``, ``WanAttnProcessor``, ...) compute attention by calling the
module-level function ``dispatch_attention_fn(query, key, value, ...)`` with ``[B, S, H, D]`` tensors. Its
backend registry is a closed enum, so the supported hook is the processor itself.

:class:`RoutedAttnProcessor` wraps an existing processor instance and runs a copy of that processor's
``__call__`` whose globals see our ``dispatch_attention_fn`` instead of the library's. The library module
is never mutated, so other models (and other processors of the same class) are unaffected; everything
the processor does around attention (projections, norms, RoPE, output projection) is the library's code.

Layouts: the routed dispatch receives ``[B, S, H, D]``, hands the math ``[B, H, S, D]`` views (no copies)
in an :class:`AttentionInputs`, and returns the math's ``[B, Hq, Sq, Dv]`` output transposed back to
``[B, Sq, Hq, Dv]`` (a view).

:func:`route_attention` installs routed processors on a model (optionally only some of them);
:func:`restore_processors` puts back the original processor objects.
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from accel_shared.patching.inputs import AttentionInputs, AttentionMath, sdpa_math

__all__ = [
    "FunctionAttnProcessor",
    "ProcessorFactory",
    "RoutedAttnProcessor",
    "is_routed",
    "restore_processors",
    "route_attention",
]

_DISPATCH = "dispatch_attention_fn"
_ORIGINALS_ATTR = "_accel_shared_original_processors"


def _check_diffusers() -> None:
    try:
        import diffusers  # noqa: F401
    except ImportError as e:
        raise ImportError(
            "accel_shared.patching.diffusers needs diffusers: pip install 'accel-shared[diffusers]'"
        ) from e


def _code_names(code: types.CodeType) -> set[str]:
    """Global names used by ``code`` and by functions nested in it."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


class RoutedAttnProcessor:
    """A diffusers processor that runs ``processor``'s own code but computes attention with :meth:`attention`.

    Subclass and override :meth:`attention` (the base class uses :func:`sdpa_math`), or use
    :class:`FunctionAttnProcessor` to plug in a function.

    Args:
        processor: the processor instance to wrap. Its class's ``__call__`` must call
            ``dispatch_attention_fn`` (true of the current diffusers processors: Flux, Wan, SD3, ...).
        name: the processor's name in the model (``"transformer_blocks.0.attn.processor"``); it becomes
            ``AttentionInputs.layer_name``.

    Not re-entrant: one processor instance serves one attention module at a time.
    """

    def __init__(self, processor: Any, *, name: str = "") -> None:
        if isinstance(processor, RoutedAttnProcessor):
            raise TypeError(f"processor {name!r} is already a {type(processor).__name__}; wrap the original")
        if isinstance(processor, torch.nn.Module):
            # The model would lose track of its weights (state_dict, .to()) while it is wrapped.
            raise TypeError(
                f"{type(processor).__name__} has its own weights (torch.nn.Module); "
                "routing processors with weights is not supported"
            )
        call = type(processor).__call__ if callable(processor) else None
        code = getattr(call, "__code__", None)
        if not isinstance(call, types.FunctionType) or code is None or _DISPATCH not in _code_names(code):
            raise TypeError(
                f"{type(processor).__name__} does not route its attention through {_DISPATCH}; "
                "cannot be patched"
            )
        self._processor = processor
        self.name = name
        self._active_module: torch.nn.Module | None = None
        self._install_routed_call()

    def _install_routed_call(self) -> None:
        # A copy of the processor's __call__ that looks up globals in our own dict, where
        # dispatch_attention_fn is this object's _dispatch. The library module stays untouched.
        call = type(self._processor).__call__
        scope = dict(call.__globals__)
        scope[_DISPATCH] = self._dispatch
        routed = types.FunctionType(call.__code__, scope, call.__name__, call.__defaults__, call.__closure__)
        routed.__kwdefaults__ = dict(call.__kwdefaults__) if call.__kwdefaults__ else None
        routed.__qualname__ = call.__qualname__
        routed.__doc__ = call.__doc__
        self._routed_call = routed

        # diffusers' attention modules keep only the keyword arguments named in
        # inspect.signature(processor.__call__); expose the wrapped signature so the same ones get through.
        bound_call = functools.partial(type(self).__call__, self)
        bound_call.__signature__ = inspect.signature(self._processor.__call__)  # type: ignore[attr-defined]
        self.__dict__["__call__"] = bound_call

    # copy.deepcopy / pickle: the routed function is bound to this instance, so rebuild it for the copy.
    def __getstate__(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k not in ("_routed_call", "__call__")}
        state["_active_module"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._install_routed_call()

    @property
    def processor(self) -> Any:
        """The wrapped processor."""
        return self._processor

    # diffusers' set_attention_backend / parallel config write these on processors: keep them on the
    # wrapped one, whose __call__ reads them (as ``self._attention_backend``).
    @property
    def _attention_backend(self) -> Any:
        return getattr(self._processor, "_attention_backend", None)

    @_attention_backend.setter
    def _attention_backend(self, value: Any) -> None:
        self._processor._attention_backend = value

    @property
    def _parallel_config(self) -> Any:
        return getattr(self._processor, "_parallel_config", None)

    @_parallel_config.setter
    def _parallel_config(self, value: Any) -> None:
        self._processor._parallel_config = value

    def __getattr__(self, attr: str) -> Any:
        # Only reached when normal lookup fails: read other processor attributes from the wrapped one.
        if attr.startswith("__") or attr in ("_processor", "_routed_call", "_active_module"):
            raise AttributeError(attr)
        return getattr(self._processor, attr)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._processor!r}, name={self.name!r})"

    def __call__(self, attn: torch.nn.Module, hidden_states: Tensor, *args: Any, **kwargs: Any) -> Any:
        """Run the wrapped processor's ``__call__`` with attention routed to :meth:`attention`."""
        self._active_module = attn
        try:
            return self._routed_call(self._processor, attn, hidden_states, *args, **kwargs)
        finally:
            self._active_module = None

    def attention(self, inputs: AttentionInputs) -> Tensor:
        """The attention math: ``inputs`` -> ``[B, Hq, Sq, Dv]``. Override in subclasses."""
        return sdpa_math(inputs)

    def _dispatch(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        attn_mask: Tensor | None = None,
        dropout_p: float = 0.0,
        is_causal: bool = False,
        scale: float | None = None,
        enable_gqa: bool = False,
        attention_kwargs: dict[str, Any] | None = None,
        *,
        backend: Any = None,
        parallel_config: Any = None,
    ) -> Tensor:
        """Stands in for ``dispatch_attention_fn``: ``[B, S, H, D]`` in, ``[B, Sq, Hq, Dv]`` out."""
        if parallel_config is not None:
            raise NotImplementedError(
                f"{self.name or type(self._processor).__name__}: context parallelism (parallel_config) "
                "is not supported by routed attention"
            )
        inputs = AttentionInputs(
            query=query.transpose(1, 2),
            key=key.transpose(1, 2),
            value=value.transpose(1, 2),
            attn_mask=attn_mask,
            is_causal=is_causal,
            scale=scale,  # type: ignore[arg-type]  # None -> 1/sqrt(D)
            dropout_p=dropout_p,
            module=self._active_module,
            layer_name=self.name,
            layer_idx=None,
            extra=dict(attention_kwargs or {}),
        )
        out = self.attention(inputs)
        b, hq, sq, _ = inputs.query.shape
        dv = inputs.value.shape[-1]
        if not isinstance(out, Tensor) or out.ndim != 4 or tuple(out.shape[1:]) != (hq, sq, dv):
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(
                f"{type(self).__name__}.attention for {self.name!r} must return [B, Hq, Sq, Dv] = "
                f"[{b}, {hq}, {sq}, {dv}], got {got}"
            )
        return out.transpose(1, 2)


class FunctionAttnProcessor(RoutedAttnProcessor):
    """A :class:`RoutedAttnProcessor` whose attention is the function ``math``.

    Args:
        processor: the processor instance to wrap.
        math: ``AttentionInputs -> Tensor [B, Hq, Sq, Dv]``.
        name: the processor's name in the model.
    """

    def __init__(self, processor: Any, math: AttentionMath, *, name: str = "") -> None:
        if not callable(math):
            raise TypeError(f"FunctionAttnProcessor: math must be callable, got {type(math).__name__}")
        super().__init__(processor, name=name)
        self.math = math

    def attention(self, inputs: AttentionInputs) -> Tensor:
        return self.math(inputs)


ProcessorFactory = Callable[[str, Any], RoutedAttnProcessor]
"""``(processor_name, original_processor) -> RoutedAttnProcessor``."""


def _required_positional(fn: Callable[..., Any]) -> int | None:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(1 for p in params if p.kind in kinds and p.default is inspect.Parameter.empty)


def route_attention(
    model: torch.nn.Module,
    math_or_factory: AttentionMath | ProcessorFactory,
    *,
    include: Callable[[str], bool] | None = None,
) -> list[str]:
    """Replace ``model``'s attention processors by routed ones; returns the names replaced.

    Args:
        model: a diffusers model with ``attn_processors`` / ``set_attn_processor`` (Flux, Wan, SD3, ...).
        math_or_factory: either an :data:`AttentionMath` (one required argument; each processor becomes a
            :class:`FunctionAttnProcessor`), or a factory ``(name, processor) -> RoutedAttnProcessor`` (two
            required arguments).
        include: ``include(name) -> bool`` selects processors by name, e.g.
            ``lambda n: ".attn1." in n`` for Wan self-attention only. Default: all.

    The originals stay on the model so that :func:`restore_processors` puts back the same objects.
    """
    _check_diffusers()
    if not hasattr(model, "attn_processors") or not hasattr(model, "set_attn_processor"):
        raise TypeError(
            f"route_attention: model must be a diffusers model with attn_processors/set_attn_processor, "
            f"got {type(model).__name__}"
        )
    if getattr(model, _ORIGINALS_ATTR, None) is not None:
        raise RuntimeError(
            f"route_attention: {type(model).__name__} is already routed; call restore_processors(model) first"
        )
    arity = _required_positional(math_or_factory)
    if arity not in (1, 2):
        raise TypeError(
            "route_attention: math_or_factory must be an AttentionMath f(inputs) or a factory "
            f"f(name, processor); got {math_or_factory!r} with {arity} required positional arguments"
        )

    dm: Any = model  # diffusers' ModelMixin API, untyped for mypy
    fn: Any = math_or_factory
    originals: dict[str, Any] = dict(dm.attn_processors)
    selected = [n for n in originals if include is None or include(n)]
    if not selected:
        raise ValueError(
            f"route_attention: include selected none of the {len(originals)} processors "
            f"(names look like {list(originals)[:3]})"
        )
    replacements = dict(originals)
    for name in selected:
        if arity == 1:
            routed: Any = FunctionAttnProcessor(originals[name], fn, name=name)
        else:
            routed = fn(name, originals[name])
            if not isinstance(routed, RoutedAttnProcessor):
                raise TypeError(
                    f"route_attention: the factory must return a RoutedAttnProcessor, got "
                    f"{type(routed).__name__} for {name!r}"
                )
        replacements[name] = routed
    dm.set_attn_processor(replacements)
    setattr(model, _ORIGINALS_ATTR, originals)
    return selected


def restore_processors(model: torch.nn.Module) -> None:
    """Put back the processor objects :func:`route_attention` replaced."""
    originals = getattr(model, _ORIGINALS_ATTR, None)
    if originals is None:
        raise RuntimeError(f"restore_processors: {type(model).__name__} was not routed by route_attention")
    dm: Any = model
    dm.set_attn_processor(dict(originals))
    delattr(model, _ORIGINALS_ATTR)


def is_routed(model: torch.nn.Module) -> bool:
    """Whether :func:`route_attention` is in effect on ``model``."""
    return getattr(model, _ORIGINALS_ATTR, None) is not None
