"""Context/target multi-view items from a synthetic dataset on disk, and the view sampler they share.

An item is ``{"scene": str, "context": views, "target": views}`` where ``views`` holds, for K views:
``image`` [K, 3, H, W] float32 in [0, 1], ``extrinsics`` [K, 4, 4] camera-to-world, ``intrinsics``
[K, 3, 3] normalised, ``near`` and ``far`` [K], ``depth`` [K, H, W], ``pointmap`` [K, H, W, 3] and
``index`` [K] int64 (view indices in the scene). torch's default collate adds a leading batch dim.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from accel_shared.gs.data.store import _read_scene, read_meta, scene_name

__all__ = ["MultiViewDataset", "sample_views"]


def _check_count(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def _check_gap(context_gap: tuple[int, int] | None) -> tuple[int, int] | None:
    if context_gap is None:
        return None
    if (
        not isinstance(context_gap, (tuple, list))
        or len(context_gap) != 2
        or not all(isinstance(g, int) and not isinstance(g, bool) for g in context_gap)
    ):
        raise TypeError(f"context_gap must be None or a pair (min, max) of ints, got {context_gap!r}")
    low, high = context_gap
    if not 0 <= low <= high:
        raise ValueError(f"context_gap must satisfy 0 <= min <= max, got {tuple(context_gap)}")
    return int(low), int(high)


def _check_sampler(view_sampler: str) -> str:
    if view_sampler not in ("random", "fixed"):
        raise ValueError(f"view_sampler must be 'random' or 'fixed', got {view_sampler!r}")
    return view_sampler


def _check_targets(targets: str) -> str:
    if targets not in ("inside", "outside"):
        raise ValueError(f"targets must be 'inside' or 'outside', got {targets!r}")
    return targets


def sample_views(
    num_views: int,
    *,
    num_context: int,
    num_target: int,
    rng: np.random.Generator,
    context_gap: tuple[int, int] | None = None,
    targets: str = "inside",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounded view sampler for ordered (video-like) sequences, in the manner of pixelSplat's.

    The outer context views are ``gap`` frames apart (``gap`` uniform in ``context_gap``, clamped to
    what the sequence allows; default: from the smallest span that holds every view distinct up to
    ``num_views - 1``), at a uniform position; the other context views are evenly spaced between
    them. Targets are distinct non-context views drawn inside that span; when the span has too few,
    the nearest non-context views outside it, then context views, fill up (so ``num_context`` may be
    as large as ``num_views``).

    ``targets="outside"`` is the extrapolation protocol of PM-Loss's bound-aware evaluation: every target
    lies outside the context span. The span is centred in the sequence, so views remain on both of its
    sides; ``gap`` is uniform in ``context_gap`` clamped to the widest span that leaves ``num_target``
    views outside (default: that widest span; 0 for one context view), and the targets are drawn at
    random from the views outside it (with the default gap, exactly those views).

    Returns:
        context [num_context] and target [num_target] int64 view indices, each ascending.
    """
    _check_count(num_views, "num_views")
    _check_count(num_context, "num_context")
    _check_count(num_target, "num_target")
    gap_range = _check_gap(context_gap)
    if num_context > num_views:
        raise ValueError(f"num_context ({num_context}) exceeds the number of views ({num_views})")
    if num_target > num_views:
        raise ValueError(f"num_target ({num_target}) exceeds the number of views ({num_views})")
    fewest = num_context - 1
    if _check_targets(targets) == "outside":
        return _sample_extrapolation(num_views, num_context, num_target, rng, gap_range)
    if gap_range is None:
        distinct = num_context + num_target - 1
        gap_range = (distinct if distinct < num_views else fewest, num_views - 1)
    high = min(max(gap_range[1], fewest), num_views - 1)
    low = min(max(gap_range[0], fewest), high)
    gap = int(rng.integers(low, high + 1))
    left = int(rng.integers(0, num_views - gap))
    context = np.unique(np.round(np.linspace(left, left + gap, num_context)).astype(np.int64))
    inside = np.setdiff1d(np.arange(left, left + gap + 1), context)
    if len(inside) >= num_target:
        target = rng.choice(inside, size=num_target, replace=False)
    else:
        outside = np.setdiff1d(np.arange(num_views), np.concatenate([inside, context]))
        distance = np.maximum(left - outside, outside - (left + gap))
        outside = outside[np.argsort(distance, kind="stable")]
        extra = rng.choice(context, size=max(0, num_target - len(inside) - len(outside)), replace=False)
        target = np.concatenate([inside, outside, extra])[:num_target]
    return torch.from_numpy(context), torch.from_numpy(np.sort(target).astype(np.int64))


def _sample_extrapolation(
    num_views: int,
    num_context: int,
    num_target: int,
    rng: np.random.Generator,
    gap_range: tuple[int, int] | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``sample_views(..., targets="outside")``: a centred context span, every target outside it."""
    fewest, widest = num_context - 1, num_views - 1 - num_target
    if widest < fewest:
        raise ValueError(
            f"targets='outside' needs num_context + num_target <= num_views, got {num_context} + "
            f"{num_target} > {num_views}"
        )
    low, high = gap_range if gap_range is not None else (widest, widest)
    if num_context == 1:  # one context view spans nothing: every other view lies outside it
        low = high = 0
    high = min(max(high, fewest), widest)
    low = min(max(low, fewest), high)
    gap = int(rng.integers(low, high + 1))
    spare = num_views - 1 - gap  # views outside the span, split as evenly as they go
    left = spare // 2 + (int(rng.integers(0, 2)) if spare % 2 else 0)
    context = np.unique(np.round(np.linspace(left, left + gap, num_context)).astype(np.int64))
    outside = np.concatenate([np.arange(left), np.arange(left + gap + 1, num_views)])
    target = np.sort(rng.choice(outside, size=num_target, replace=False)).astype(np.int64)
    return torch.from_numpy(context), torch.from_numpy(target)


def _split_scenes(num_scenes: int, split: str, test_fraction: float) -> list[int]:
    """Scene ``i`` is a test scene iff ``floor((i + 1) f) > floor(i f)``: every 1/f-th scene, exactly
    ``floor(N f)`` of the first N, and the same scenes whatever N is."""
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)):
        raise TypeError(f"test_fraction must be a number, got {type(test_fraction).__name__}")
    if not 0.0 <= test_fraction <= 1.0:
        raise ValueError(f"test_fraction must be in [0, 1], got {test_fraction}")
    if split == "all":
        return list(range(num_scenes))
    fraction = Fraction(test_fraction).limit_denominator(1_000_000)
    is_test = [(i + 1) * fraction // 1 > i * fraction // 1 for i in range(num_scenes)]
    scenes = [i for i in range(num_scenes) if is_test[i] == (split == "test")]
    if not scenes:
        raise ValueError(
            f"split {split!r} is empty: {num_scenes} scenes with test_fraction={test_fraction}; "
            "generate more scenes or change test_fraction"
        )
    return scenes


class MultiViewDataset(Dataset[dict[str, Any]]):
    """Items of context and target views from a dataset written by :func:`store.generate_dataset`.

    Args:
        root: dataset folder.
        num_context, num_target: views per item, each between 1 and the dataset's ``views_per_scene``.
        split: ``"train"``, ``"test"`` (every ``1 / test_fraction``-th scene, disjoint from train and
            stable as the dataset grows) or ``"all"``.
        test_fraction: share of scenes in the test split.
        scenes: explicit scene indices; when given they replace ``split`` / ``test_fraction``.
        view_sampler: ``"fixed"``: the views of a scene are a function of ``(seed, scene)`` (evaluation);
            ``"random"``: drawn anew at every access from torch's global RNG mixed with ``seed``
            (reproducible with ``torch.manual_seed``; DataLoader workers get their own streams).
        seed: seed of the view sampler.
        context_gap: (min, max) frames between the outer context views; see :func:`sample_views`.
        targets: ``"inside"`` the context span (interpolation, the default) or ``"outside"`` it
            (extrapolation, PM-Loss's bound-aware protocol); see :func:`sample_views`.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        num_context: int = 2,
        num_target: int = 4,
        split: Literal["train", "test", "all"] = "train",
        test_fraction: float = 0.1,
        scenes: list[int] | range | None = None,
        view_sampler: Literal["random", "fixed"] = "random",
        seed: int = 0,
        context_gap: tuple[int, int] | None = None,
        targets: Literal["inside", "outside"] = "inside",
    ) -> None:
        self.root = Path(root)
        self.meta = read_meta(self.root)
        views = self.meta["views_per_scene"]
        self.num_context = _check_count(num_context, "num_context")
        self.num_target = _check_count(num_target, "num_target")
        if num_context > views or num_target > views:
            raise ValueError(
                f"num_context ({num_context}) and num_target ({num_target}) may not exceed the dataset's "
                f"views_per_scene ({views}); generate it with more views per scene"
            )
        self.view_sampler = _check_sampler(view_sampler)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        self.seed = seed
        self.context_gap = _check_gap(context_gap)
        self.targets = _check_targets(targets)
        if targets == "outside" and num_context + num_target > views:
            raise ValueError(
                f"targets='outside' needs num_context + num_target ({num_context} + {num_target}) <= the "
                f"dataset's views_per_scene ({views})"
            )
        if scenes is None:
            self.scenes = _split_scenes(self.meta["num_scenes"], split, test_fraction)
        else:
            self.scenes = [int(i) for i in scenes]
            bad = [i for i in self.scenes if not 0 <= i < self.meta["num_scenes"]]
            if not self.scenes or bad:
                raise ValueError(
                    f"scenes must be non-empty indices in [0, {self.meta['num_scenes']}), got bad entries {bad}"
                )

    def __len__(self) -> int:
        return len(self.scenes)

    def _rng(self, scene: int) -> np.random.Generator:
        if self.view_sampler == "fixed":
            return np.random.default_rng([self.seed, scene])
        draw = int(torch.randint(0, 2**62, ()).item())
        return np.random.default_rng([self.seed, scene, draw])

    def __getitem__(self, item: int) -> dict[str, Any]:
        if not -len(self) <= item < len(self):
            raise IndexError(f"item {item} out of range for a dataset of {len(self)} scenes")
        scene = self.scenes[item]
        context, target = sample_views(
            self.meta["views_per_scene"],
            num_context=self.num_context,
            num_target=self.num_target,
            rng=self._rng(scene),
            context_gap=self.context_gap,
            targets=self.targets,
        )
        data = _read_scene(self.root, self.meta, scene, torch.cat([context, target]))
        k = len(context)
        return {
            "scene": scene_name(scene),
            "context": {**{name: value[:k] for name, value in data.items()}, "index": context},
            "target": {**{name: value[k:] for name, value in data.items()}, "index": target},
        }
