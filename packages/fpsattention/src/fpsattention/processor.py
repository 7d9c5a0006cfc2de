"""Patching a diffusers video transformer: FPSAttention on self-attention, cross-attention untouched.

``apply(transformer, schedule)`` wraps every self-attention processor (``attn1`` in Wan) in an
:class:`FPSAttnProcessor` (a routed copy of diffusers' own processor: projections, norms and RoPE
stay the library's code; only the attention call changes) and registers a forward pre-hook on the
transformer that records the latent's token grid and timestep for the processors. ``remove``
restores the original processors and removes the hook.

Which phase runs: the denoising step set by :meth:`FPSState.set_step`, the pipeline callback
:meth:`FPSState.pipeline_callback` or the :func:`denoising_step` context; with none of them, the
transformer's ``timestep`` argument decides (fraction of denoising = 1 - t / 1000).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from accel_shared.patching.diffusers import (
    RoutedAttnProcessor,
    is_routed,
    restore_processors,
    route_attention,
)
from accel_shared.patching.inputs import AttentionInputs, sdpa_math
from fpsattention.attention import fps_attention
from fpsattention.schedule import FPSSchedule, Phase, Triple

STATE_ATTR = "_fpsattention_state"  # the attribute of a patched transformer that holds its FPSState
_TIMESTEP_RANGE = 1000.0  # diffusers' flow-matching schedulers count timesteps in [0, 1000]


@dataclass
class FPSState:
    """What the processors of one transformer share: the schedule, the current grid and step."""

    schedule: FPSSchedule
    video_grid: Triple | None = None  # (T, H, W) tokens after patching, from the last forward
    timestep: float | None = None
    step: int | None = None
    num_steps: int | None = None
    enabled: bool = True
    calls: dict[str, int] = field(default_factory=lambda: {"early": 0, "middle": 0, "late": 0, "dense": 0})
    _hook: Any = None

    def set_step(self, step: int, num_steps: int) -> None:
        """Run the phase of denoising step ``step`` (0-based) of ``num_steps`` from now on."""
        self.schedule.phase_index(step, num_steps)  # validates
        self.step, self.num_steps = step, num_steps

    def clear_step(self) -> None:
        """Go back to choosing the phase from the timestep."""
        self.step = self.num_steps = None

    def pipeline_callback(
        self, pipe: Any, step: int, timestep: Any, callback_kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        """``callback_on_step_end`` for diffusers pipelines: after step ``step``, the next one runs."""
        if self.num_steps is not None and step + 1 < self.num_steps:
            self.step = step + 1
        return callback_kwargs

    def phase_name(self) -> str:
        if self.step is not None and self.num_steps is not None:
            index = self.schedule.phase_index(self.step, self.num_steps)
        elif self.timestep is not None:
            fraction = min(max(1.0 - self.timestep / _TIMESTEP_RANGE, 0.0), 1.0)
            steps = 1000
            index = self.schedule.phase_index(min(int(fraction * steps), steps - 1), steps)
        else:
            raise RuntimeError(
                "fpsattention: no denoising step is known: call state.set_step(step, num_steps), pass "
                "state.pipeline_callback to the pipeline, or call the transformer with a timestep"
            )
        return ("early", "middle", "late")[index]

    def phase(self) -> Phase:
        phase: Phase = getattr(self.schedule, self.phase_name())
        return phase


class FPSAttnProcessor(RoutedAttnProcessor):
    """A self-attention processor that computes attention with :func:`fps_attention`."""

    def __init__(self, processor: Any, state: FPSState, *, name: str = "") -> None:
        super().__init__(processor, name=name)
        self.state = state

    def attention(self, inputs: AttentionInputs) -> torch.Tensor:
        state = self.state
        if not state.enabled or inputs.attn_mask is not None or inputs.is_causal:
            state.calls["dense"] += 1
            return sdpa_math(inputs)
        if state.video_grid is None:
            raise RuntimeError(
                f"fpsattention ({self.name}): the video grid is unknown; call the transformer itself"
            )
        name = state.phase_name()
        state.calls[name] += 1
        return fps_attention(
            inputs.query, inputs.key, inputs.value, state.video_grid, state.schedule.tile,
            getattr(state.schedule, name), scale=inputs.scale,
        )  # fmt: skip


def _patch_size(transformer: torch.nn.Module) -> Triple:
    config = getattr(transformer, "config", None)
    patch = getattr(config, "patch_size", None)
    if not isinstance(patch, (tuple, list)) or len(patch) != 3:
        raise TypeError(
            f"fpsattention.apply needs a video transformer whose config.patch_size is (t, h, w) "
            f"(diffusers WanTransformer3DModel), got {type(transformer).__name__} with patch_size={patch!r}"
        )
    return (int(patch[0]), int(patch[1]), int(patch[2]))


def _record_inputs(state: FPSState, patch: Triple):  # type: ignore[no-untyped-def]
    def hook(module: torch.nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        if not isinstance(hidden, torch.Tensor) or hidden.dim() != 5:
            raise ValueError("fpsattention: the transformer's hidden_states must be a [B, C, F, H, W] latent")
        _, _, frames, height, width = hidden.shape
        state.video_grid = (frames // patch[0], height // patch[1], width // patch[2])
        timestep = kwargs.get("timestep", args[1] if len(args) > 1 else None)
        if isinstance(timestep, torch.Tensor) and timestep.numel() > 0:
            state.timestep = float(timestep.reshape(-1)[0])
        elif isinstance(timestep, (int, float)):
            state.timestep = float(timestep)

    return hook


def is_self_attention(name: str) -> bool:
    """Wan names its self-attention ``blocks.N.attn1`` (cross-attention: ``attn2``)."""
    return ".attn1." in name or name.startswith("attn1.")


def apply(transformer: torch.nn.Module, schedule: FPSSchedule | None = None) -> FPSState:
    """Route ``transformer``'s self-attention through FPSAttention; returns the shared state.

    Args:
        transformer: a diffusers ``WanTransformer3DModel`` (or another video DiT whose self-attention
            processors are named ``...attn1...`` and whose config has a 3D ``patch_size``).
        schedule: the phases; default :class:`FPSSchedule` ().
    """
    if getattr(transformer, STATE_ATTR, None) is not None or is_routed(transformer):
        raise RuntimeError("fpsattention.apply: the transformer is already patched; call remove() first")
    schedule = FPSSchedule() if schedule is None else schedule
    if not isinstance(schedule, FPSSchedule):
        raise TypeError(f"schedule must be an FPSSchedule, got {type(schedule).__name__}")
    patch = _patch_size(transformer)
    state = FPSState(schedule)
    route_attention(
        transformer, lambda name, proc: FPSAttnProcessor(proc, state, name=name), include=is_self_attention
    )
    state._hook = transformer.register_forward_pre_hook(_record_inputs(state, patch), with_kwargs=True)
    setattr(transformer, STATE_ATTR, state)
    return state


def remove(transformer: torch.nn.Module) -> None:
    """Undo :func:`apply`: the original processors come back, the hook goes."""
    state = getattr(transformer, STATE_ATTR, None)
    if state is None:
        raise RuntimeError("fpsattention.remove: the transformer is not patched")
    state._hook.remove()
    restore_processors(transformer)
    delattr(transformer, STATE_ATTR)


def get_state(transformer: torch.nn.Module) -> FPSState:
    """The :class:`FPSState` of a patched transformer."""
    state = getattr(transformer, STATE_ATTR, None)
    if state is None:
        raise RuntimeError("fpsattention: the transformer is not patched (call fpsattention.apply first)")
    assert isinstance(state, FPSState)
    return state


@contextlib.contextmanager
def denoising_step(transformer: torch.nn.Module, step: int, num_steps: int) -> Iterator[FPSState]:
    """Run the transformer's calls inside the block as denoising step ``step`` of ``num_steps``."""
    state = get_state(transformer)
    previous = (state.step, state.num_steps)
    state.set_step(step, num_steps)
    try:
        yield state
    finally:
        state.step, state.num_steps = previous
