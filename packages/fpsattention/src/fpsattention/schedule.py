"""The denoising-step-aware schedule: three phases, each with its quantization and window.

FPSAttention splits the D denoising steps at alpha1 * D and alpha2 * D:

- early steps (global layout forms): coarse quantization, sparse window;
- middle steps (structure forms): fine quantization, dense (or wide) window;
- late steps (details): intermediate quantization and window.

A phase says whether Q/K/V go to FP8, how many tokens share one Q/K scale (``quant_group``: the
granularity, at most one tile), and the sliding window in tiles per axis (``None``: dense). The paper
gives the phases but not alpha1, alpha2 or the window sizes; our defaults are documented choices.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

Triple = tuple[int, int, int]


def _positive_triple(name: str, value: object) -> Triple:
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 3
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        raise ValueError(f"{name} must be three positive ints (t, h, w), got {value!r}")
    return (int(value[0]), int(value[1]), int(value[2]))


@dataclass(frozen=True)
class Phase:
    """How attention runs in one phase of denoising.

    Attributes:
        fp8: Q, K, V and P in FP8 e4m3 (False: the input dtype).
        quant_group: tokens per Q/K scale, as a divisor of the tile's token count: ``tile`` (one
            scale per tile, coarse), or a number of tokens (e.g. 16 = fine). ``"tile"`` by default.
        window: key tiles per axis (t, h, w) around each query tile, or None for dense attention.
    """

    fp8: bool = True
    quant_group: int | str = "tile"
    window: Triple | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.fp8, bool):
            raise TypeError(f"Phase.fp8 must be a bool, got {self.fp8!r}")
        group = self.quant_group
        if group != "tile" and (isinstance(group, bool) or not isinstance(group, int) or group <= 0):
            raise ValueError(f"Phase.quant_group must be 'tile' or a positive int, got {group!r}")
        if self.window is not None:
            object.__setattr__(self, "window", _positive_triple("Phase.window", self.window))

    def group_size(self, tile_tokens: int) -> int:
        """Tokens per Q/K scale for a tile of ``tile_tokens``."""
        if self.quant_group == "tile":
            return tile_tokens
        assert isinstance(self.quant_group, int)
        if tile_tokens % self.quant_group:
            raise ValueError(
                f"Phase.quant_group {self.quant_group} must divide the tile's {tile_tokens} tokens"
            )
        return self.quant_group

    def density(self, grid: Triple) -> float:
        """Share of (query tile, key tile) pairs computed on a tile grid."""
        if self.window is None:
            return 1.0
        return math.prod(min(w, n) / n for w, n in zip(self.window, grid, strict=True))


def _phase(data: dict[str, Any]) -> Phase:
    window = data.get("window")
    return Phase(
        fp8=data.get("fp8", True),
        quant_group=data.get("quant_group", "tile"),
        window=None if window is None else tuple(window),
    )


@dataclass(frozen=True)
class FPSSchedule:
    """Three phases over the denoising steps, plus the tile they share.

    Attributes:
        tile: the 3D tile (t, h, w) in latent tokens after patching; the unit of both
            quantization and sparsity. Wan at 480p/720p: (4, 8, 8) or (6, 8, 8) [our default for real
            models is (4, 8, 8), 256 tokens: a multiple of the kernels' 64-token chunks].
        alpha1, alpha2: phase boundaries as fractions of the steps, 0 <= alpha1 <= alpha2 <= 1.
        early, middle, late: the phases.
    """

    tile: Triple = (4, 8, 8)
    alpha1: float = 0.25
    alpha2: float = 0.75
    early: Phase = field(default_factory=lambda: Phase(fp8=True, quant_group="tile", window=(3, 3, 3)))
    middle: Phase = field(default_factory=lambda: Phase(fp8=True, quant_group=64, window=None))
    late: Phase = field(default_factory=lambda: Phase(fp8=True, quant_group=128, window=(3, 5, 5)))

    def __post_init__(self) -> None:
        object.__setattr__(self, "tile", _positive_triple("FPSSchedule.tile", self.tile))
        for name in ("alpha1", "alpha2"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"FPSSchedule.{name} must be a number in [0, 1], got {value!r}")
        if self.alpha1 > self.alpha2:
            raise ValueError(f"FPSSchedule needs alpha1 <= alpha2, got {self.alpha1} > {self.alpha2}")
        for name in ("early", "middle", "late"):
            if not isinstance(getattr(self, name), Phase):
                raise TypeError(
                    f"FPSSchedule.{name} must be a Phase, got {type(getattr(self, name)).__name__}"
                )
        tokens = self.tile_tokens
        for phase in (self.early, self.middle, self.late):
            phase.group_size(tokens)  # raises when the group does not divide the tile

    @property
    def tile_tokens(self) -> int:
        return self.tile[0] * self.tile[1] * self.tile[2]

    @classmethod
    def fixed(cls, phase: Phase, tile: Triple = (4, 8, 8)) -> FPSSchedule:
        """The same phase at every step (a step-unaware baseline)."""
        return cls(tile=tile, alpha1=0.0, alpha2=1.0, early=phase, middle=phase, late=phase)

    def phase_index(self, step: int, num_steps: int) -> int:
        """0 (early), 1 (middle) or 2 (late) for denoising step ``step`` of ``num_steps`` (0-based)."""
        if num_steps <= 0 or not 0 <= step < num_steps:
            raise ValueError(f"step must be in [0, num_steps), got step={step}, num_steps={num_steps}")
        if step < self.alpha1 * num_steps:
            return 0
        if step < self.alpha2 * num_steps:
            return 1
        return 2

    def phase_at(self, step: int, num_steps: int) -> Phase:
        """The phase that runs denoising step ``step`` of ``num_steps``."""
        return (self.early, self.middle, self.late)[self.phase_index(step, num_steps)]

    def average_density(self, grid: Triple, num_steps: int) -> float:
        """Mean share of tile pairs computed over the steps, on a tile grid."""
        return sum(self.phase_at(s, num_steps).density(grid) for s in range(num_steps)) / num_steps

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FPSSchedule:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"FPSSchedule: unknown fields {unknown} (known: {sorted(known)})")
        kwargs: dict[str, Any] = {k: v for k, v in data.items() if k in ("alpha1", "alpha2")}
        if "tile" in data:
            kwargs["tile"] = tuple(data["tile"])
        for name in ("early", "middle", "late"):
            if name in data:
                kwargs[name] = _phase(data[name])
        return cls(**kwargs)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> FPSSchedule:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"schedule file {path} does not exist")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"schedule file {path} is not valid JSON: {e}") from None
        if not isinstance(data, dict):
            raise ValueError(f"schedule file {path} must hold a JSON object")
        return cls.from_dict(data)
