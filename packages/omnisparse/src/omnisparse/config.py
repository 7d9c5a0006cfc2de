"""OmniSparseConfig: every knob of the method, with documented defaults, saved and loaded as JSON.

The paper gives the three mechanisms but not their constants; every default below is our choice
(docs/omnisparse.md explains each).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

__all__ = ["OmniSparseConfig"]

LazyMode = Literal["local", "skip"]


@dataclass
class OmniSparseConfig:
    """Settings of OmniSparse prefill (query and KV selection) and decode (KV-cache slimming).

    Prefill, per attention call of at least ``min_seq_len`` tokens, on blocks of ``block_size`` tokens:

    Attributes:
        block_size: query and key block size in tokens (the unit of selection).
        gamma: target recall: each head needs the smallest set of key blocks whose estimated attention
            mass reaches ``gamma``.
        min_budget_blocks: lower bound of the key budget (blocks per query block, besides the forced ones).
        max_budget_ratio: upper bound of the key budget as a share of the visible key blocks.
        sink_blocks: leading key blocks every active query block attends to (attention sinks, system prompt).
        local_blocks: key blocks before the diagonal one that every query block attends to (the local window).
        lazy_threshold: a (head, query block) is *lazy* when at least this share of its estimated attention
            falls in its sink and local window; otherwise it is *active*.
        lazy_keep_ratio: share of the lazy (head, query block) rows kept as active anyway (the least local
            ones); the others are dropped.
        lazy_mode: what a dropped lazy row computes: ``"local"`` attends to its sink and local window only;
            ``"skip"`` skips the attention update (output 0, the residual stream carries the token on).
        min_seq_len: calls with fewer query tokens run dense (the selection would cost more than it saves).
        dense_layers: layer indices that always run dense attention.

    Decode, when a :class:`omnisparse.SlimKVCache` holds the prefill:

    Attributes:
        slim_decode: slim the cache at the end of prefill (and swap an empty ``DynamicCache`` handed to the
            model for a :class:`SlimKVCache`, so ``generate`` slims without extra arguments).
        decode_gamma: per key/value head, keep the visual tokens (highest estimated decode attention first)
            until text, recent and kept visual tokens cover this share of the head's attention mass.
        observation_window: at most this many prompt tokens after the last visual token (the question
            after the video) stand in for the decoding queries.
        head_visual_threshold: heads whose observed attention puts less than this share on visual tokens
            keep no visual tokens at all (visual-light heads).
        recent_window: the most recent tokens are always kept.
    """

    block_size: int = 64
    gamma: float = 0.9
    min_budget_blocks: int = 2
    max_budget_ratio: float = 1.0
    sink_blocks: int = 1
    local_blocks: int = 1
    lazy_threshold: float = 0.8
    lazy_keep_ratio: float = 0.1
    lazy_mode: LazyMode = "local"
    min_seq_len: int = 1024
    dense_layers: list[int] = field(default_factory=list)
    slim_decode: bool = True
    decode_gamma: float = 0.9
    observation_window: int = 32
    head_visual_threshold: float = 0.02
    recent_window: int = 32

    def __post_init__(self) -> None:
        def need(ok: bool, name: str, expected: str) -> None:
            if not ok:
                raise ValueError(f"OmniSparseConfig.{name} must be {expected}, got {getattr(self, name)!r}")

        def integer(name: str, low: int) -> None:
            value = getattr(self, name)
            need(
                isinstance(value, int) and not isinstance(value, bool) and value >= low,
                name,
                f"an int >= {low}",
            )

        def fraction(name: str, low: float, high: float, *, open_low: bool = False) -> None:
            value = getattr(self, name)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            ok = ok and (low < value if open_low else low <= value) and value <= high
            need(ok, name, f"a number in {'(' if open_low else '['}{low:g}, {high:g}]")

        integer("block_size", 1)
        fraction("gamma", 0.0, 1.0, open_low=True)
        integer("min_budget_blocks", 0)
        fraction("max_budget_ratio", 0.0, 1.0, open_low=True)
        integer("sink_blocks", 0)
        integer("local_blocks", 0)
        fraction("lazy_threshold", 0.0, 1.0)
        fraction("lazy_keep_ratio", 0.0, 1.0)
        need(self.lazy_mode in ("local", "skip"), "lazy_mode", "'local' or 'skip'")
        integer("min_seq_len", 0)
        layers = self.dense_layers
        ok = isinstance(layers, (list, tuple)) and all(
            isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in layers
        )
        need(ok, "dense_layers", "a list of layer indices (ints >= 0)")
        need(isinstance(self.slim_decode, bool), "slim_decode", "a bool")
        fraction("decode_gamma", 0.0, 1.0, open_low=True)
        integer("observation_window", 1)
        fraction("head_visual_threshold", 0.0, 1.0)
        integer("recent_window", 0)
        self.dense_layers = list(layers)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OmniSparseConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"OmniSparseConfig: unknown keys {unknown}; known keys are {sorted(known)}")
        return cls(**data)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> OmniSparseConfig:
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from e
        if not isinstance(data, dict):
            raise ValueError(f"{path} must hold a JSON object of OmniSparseConfig fields")
        return cls.from_dict(data)
