"""Wall-clock timing of a callable: warm-up calls, then timed repeats.

On CPU each call is timed with ``time.perf_counter``. On CUDA each call is bracketed by CUDA events and
the device is synchronized, so the time is the GPU time of the work the call queued.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["Timing", "time_callable"]


@dataclass
class Timing:
    """Summary of ``repeats`` timed calls, in seconds."""

    median_s: float
    min_s: float
    max_s: float
    mean_s: float
    repeats: int
    warmup: int
    samples: list[float] = field(default_factory=list)

    @classmethod
    def from_samples(cls, samples: list[float], *, warmup: int) -> Timing:
        """Summarise per-call times ``samples`` (seconds)."""
        if not samples:
            raise ValueError("Timing.from_samples: samples must not be empty")
        return cls(
            median_s=statistics.median(samples),
            min_s=min(samples),
            max_s=max(samples),
            mean_s=statistics.fmean(samples),
            repeats=len(samples),
            warmup=warmup,
            samples=list(samples),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "median_s": self.median_s,
            "min_s": self.min_s,
            "max_s": self.max_s,
            "mean_s": self.mean_s,
            "repeats": self.repeats,
            "warmup": self.warmup,
            "samples": list(self.samples),
        }


def _resolve(device: torch.device | str | None) -> torch.device:
    if device is None:
        return torch.device("cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(
            f"time_callable: device must be a torch.device or a string like 'cuda:0', got {device!r}"
        ) from e


def time_callable(
    fn: Callable[[], Any],
    *,
    warmup: int = 2,
    repeats: int = 10,
    device: torch.device | str | None = None,
) -> Timing:
    """Call ``fn()`` ``warmup`` times untimed, then ``repeats`` times timed.

    Args:
        fn: a callable without arguments (wrap arguments with ``functools.partial`` or a lambda).
        warmup: untimed calls first (compilation, caches, allocator); ``>= 0``.
        repeats: timed calls; ``>= 1``.
        device: where ``fn`` runs. ``cuda`` devices are timed with CUDA events; anything else
            (default: CPU) with ``time.perf_counter``.
    """
    if not callable(fn):
        raise TypeError(f"time_callable: fn must be callable, got {type(fn).__name__}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"time_callable: warmup must be an int >= 0, got {warmup!r}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"time_callable: repeats must be an int >= 1, got {repeats!r}")
    dev = _resolve(device)
    on_cuda = dev.type == "cuda"
    if on_cuda and not torch.cuda.is_available():
        raise ValueError(f"time_callable: device={str(dev)!r} but CUDA is not available")

    for _ in range(warmup):
        fn()
    samples: list[float] = []
    if on_cuda:
        with torch.cuda.device(dev):
            torch.cuda.synchronize()
            for _ in range(repeats):
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                samples.append(start.elapsed_time(end) / 1000.0)  # elapsed_time is in ms
    else:
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t0)
    return Timing.from_samples(samples, warmup=warmup)
