"""Phase adapters: low-rank weight corrections that are switched on with the FPSAttention phase.

Quantization-aware fine-tuning of one set of weights must serve every phase at once: the sparse
phases need a correction, while the dense phase, nearly exact without training, drifts when the
shared weights learn that correction (docs/fpsattention.md measures both). Phase adapters keep the
base weights frozen and add, for each adapted phase, a LoRA delta ``(alpha / rank) * B A x`` to the
chosen ``nn.Linear`` layers. At run time an adapter is active only while FPSAttention runs its phase;
in other phases, and whenever the transformer is not patched (the full-precision reference), the
transformer computes exactly what it did before. This is our choice, not the paper's (the paper
fine-tunes all weights jointly); for a 14B Wan it also costs a few MB per phase instead of a copy of
the model.

    import fpsattention
    adapters = fpsattention.add_adapters(transformer, AdapterConfig(phases=("early", "late")))
    ...train adapters.parameters() with FPSAttention applied (fpsattention train --adapters)...
    fpsattention.save_adapters(transformer, "runs/qat/adapters")
    fpsattention.load_adapters(other_transformer, "runs/qat/adapters")
"""

from __future__ import annotations

import json
import math
import weakref
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fpsattention.processor import STATE_ATTR

PHASE_NAMES = ("early", "middle", "late")
ADAPTERS_ATTR = "fps_adapters"  # the submodule name: DDP and .to() then see the adapters
_WEIGHTS_FILE = "adapters.safetensors"
_CONFIG_FILE = "adapters.json"


@dataclass(frozen=True)
class AdapterConfig:
    """Which phases get an adapter, on which layers, of which rank.

    Attributes:
        phases: the adapted phases (``early``, ``middle``, ``late``); the others run the base weights.
        rank: the LoRA rank r of every adapted layer.
        alpha: the LoRA scale numerator: the delta is (alpha / r) B A x.
        prefix: adapt every ``nn.Linear`` whose module name starts with this (Wan: ``blocks.``, the
            transformer blocks' attention and feed-forward projections).
        seed: seeds the initial A matrices, so that a run is reproducible (B starts at zero).
    """

    phases: tuple[str, ...] = ("early", "late")
    rank: int = 16
    alpha: float = 16.0
    prefix: str = "blocks."
    seed: int = 0

    def __post_init__(self) -> None:
        phases = tuple(self.phases)
        if not phases or any(p not in PHASE_NAMES for p in phases) or len(set(phases)) != len(phases):
            raise ValueError(
                f"AdapterConfig.phases must be distinct names from {PHASE_NAMES}, got {self.phases!r}"
            )
        object.__setattr__(self, "phases", phases)
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank <= 0:
            raise ValueError(f"AdapterConfig.rank must be a positive int, got {self.rank!r}")
        if not isinstance(self.alpha, (int, float)) or not math.isfinite(self.alpha) or self.alpha <= 0:
            raise ValueError(f"AdapterConfig.alpha must be a positive number, got {self.alpha!r}")

    @classmethod
    def for_sparse_phases(cls, schedule: Any, **kwargs: Any) -> AdapterConfig:
        """Adapters for the phases of ``schedule`` (an FPSSchedule) that run a window (the lossy ones)."""
        phases = tuple(name for name in PHASE_NAMES if getattr(schedule, name).window is not None)
        if not phases:
            raise ValueError("the schedule has no sparse phase to adapt; pass AdapterConfig(phases=...)")
        return cls(phases=phases, **kwargs)


class LowRankDelta(nn.Module):
    """(alpha / r) B A x for x [..., in_features]: A [r, in] (Kaiming-uniform), B [out, r] (zeros at start)."""

    def __init__(
        self, in_features: int, out_features: int, rank: int, alpha: float, generator: torch.Generator
    ) -> None:
        super().__init__()
        self.down = nn.Parameter(torch.empty(rank, in_features))
        self.up = nn.Parameter(torch.zeros(out_features, rank))
        nn.init.kaiming_uniform_(self.down, a=math.sqrt(5), generator=generator)
        self.scaling = alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.down.dtype)
        return nn.functional.linear(nn.functional.linear(x, self.down), self.up) * self.scaling


class PhaseAdapters(nn.Module):
    """Per-phase low-rank deltas on a transformer's linear layers, active in their FPSAttention phase.

    Built by :func:`add_adapters`, which registers it as ``transformer.fps_adapters`` and hooks every
    adapted layer; :func:`remove_adapters` takes it off again.
    """

    def __init__(self, transformer: nn.Module, config: AdapterConfig) -> None:
        super().__init__()
        self.config = config
        layers = {
            name: module
            for name, module in transformer.named_modules()
            if isinstance(module, nn.Linear) and name.startswith(config.prefix)
        }
        if not layers:
            raise ValueError(
                f"the transformer has no nn.Linear layer whose name starts with {config.prefix!r}"
            )
        self.layer_names = sorted(layers)
        generator = torch.Generator().manual_seed(config.seed)
        self.deltas = nn.ModuleDict(
            {
                phase: nn.ModuleDict(
                    {
                        _key(name): LowRankDelta(
                            layer.in_features, layer.out_features, config.rank, config.alpha, generator
                        )
                        for name, layer in sorted(layers.items())
                    }
                )
                for phase in config.phases
            }
        )
        weight = next(iter(layers.values())).weight
        self.to(device=weight.device, dtype=weight.dtype)
        # A weak reference: a strong one would make the transformer a submodule of its own child.
        self._owner = weakref.ref(transformer)
        self._handles = [layer.register_forward_hook(self._hook(name)) for name, layer in layers.items()]

    def active_phase(self) -> str | None:
        """The phase whose adapter runs now, or None (transformer not patched, FPSAttention off, or a
        phase without an adapter)."""
        owner = self._owner()
        state = getattr(owner, STATE_ATTR, None) if owner is not None else None
        if state is None or not state.enabled:
            return None
        name: str = state.phase_name()
        return name if name in self.deltas else None

    def _hook(self, name: str):  # type: ignore[no-untyped-def]
        key = _key(name)

        def add_delta(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
            phase = self.active_phase()
            if phase is None:
                return output
            phase_deltas: Any = self.deltas[phase]
            delta: torch.Tensor = phase_deltas[key](args[0])
            return output + delta.to(output.dtype)

        return add_delta

    def __deepcopy__(self, memo: dict[int, Any]) -> PhaseAdapters:
        # The hooks are closures over this object: a copied transformer would still run these adapters.
        raise RuntimeError(
            "a transformer with phase adapters cannot be deep-copied: copy it before add_adapters(), or "
            "remove_adapters() first and load_adapters() on the copy"
        )

    def detach_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def _key(layer_name: str) -> str:
    return layer_name.replace(".", "__")  # ModuleDict keys cannot hold dots


def add_adapters(transformer: nn.Module, config: AdapterConfig | None = None) -> PhaseAdapters:
    """Attach fresh phase adapters (zero deltas: the outputs do not change until trained) to ``transformer``."""
    if get_adapters(transformer) is not None:
        raise RuntimeError("the transformer already has phase adapters; call remove_adapters() first")
    adapters = PhaseAdapters(transformer, AdapterConfig() if config is None else config)
    transformer.add_module(ADAPTERS_ATTR, adapters)
    return adapters


def get_adapters(transformer: nn.Module) -> PhaseAdapters | None:
    adapters = getattr(transformer, ADAPTERS_ATTR, None)
    return adapters if isinstance(adapters, PhaseAdapters) else None


def remove_adapters(transformer: nn.Module) -> None:
    """Take the phase adapters off ``transformer``: its outputs are again the base weights' in every phase."""
    adapters = get_adapters(transformer)
    if adapters is None:
        raise RuntimeError("the transformer has no phase adapters")
    adapters.detach_hooks()
    delattr(transformer, ADAPTERS_ATTR)


def save_adapters(transformer: nn.Module, folder: str | Path) -> Path:
    """Write the adapters of ``transformer`` to ``folder`` (adapters.safetensors and adapters.json)."""
    from safetensors.torch import save_file

    adapters = get_adapters(transformer)
    if adapters is None:
        raise RuntimeError("the transformer has no phase adapters to save")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in adapters.state_dict().items()}
    save_file(tensors, folder / _WEIGHTS_FILE)
    config = {**asdict(adapters.config), "layers": adapters.layer_names}
    (folder / _CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    return folder


def load_adapters(transformer: nn.Module, folder: str | Path) -> PhaseAdapters:
    """Attach the adapters saved by :func:`save_adapters` in ``folder`` to ``transformer``."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / _CONFIG_FILE).is_file() or not (folder / _WEIGHTS_FILE).is_file():
        raise FileNotFoundError(
            f"{folder} has no {_CONFIG_FILE} and {_WEIGHTS_FILE} (written by save_adapters)"
        )
    data: dict[str, Any] = json.loads((folder / _CONFIG_FILE).read_text())
    layers = data.pop("layers", None)
    config = AdapterConfig(**{**data, "phases": tuple(data.get("phases", ()))})
    adapters = add_adapters(transformer, config)
    if layers is not None and layers != adapters.layer_names:
        remove_adapters(transformer)
        raise ValueError(f"the adapters in {folder} were trained on other layers than this transformer has")
    weight = next(adapters.parameters())
    state = {
        k: v.to(device=weight.device, dtype=weight.dtype)
        for k, v in load_file(folder / _WEIGHTS_FILE).items()
    }
    adapters.load_state_dict(state)
    return adapters
