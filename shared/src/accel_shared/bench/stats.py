"""Paired comparisons of a quality metric between two models evaluated on the same items."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["PairedDifference", "paired_difference"]

_MAX_DRAWS = 1 << 20


@dataclass(frozen=True)
class PairedDifference:
    """Mean of ``candidate - baseline`` over paired items, with a bootstrap confidence interval.

    Attributes:
        mean: mean difference.
        low, high: bounds of the percentile-bootstrap interval at ``confidence``.
        count: number of pairs.
        confidence: coverage of the interval (e.g. 0.95).
    """

    mean: float
    low: float
    high: float
    count: int
    confidence: float

    def __str__(self) -> str:
        return f"{_signed(self.mean)} [{_signed(self.low)}, {_signed(self.high)}]"


def _signed(value: float) -> str:
    text = f"{value:+.3f}"
    return "+0.000" if text == "-0.000" else text


def paired_difference(
    candidate: Sequence[float],
    baseline: Sequence[float],
    *,
    confidence: float = 0.95,
    resamples: int = 10_000,
    seed: int = 0,
) -> PairedDifference:
    """The mean of ``candidate[i] - baseline[i]`` and its percentile-bootstrap interval.

    Items are resampled with replacement ``resamples`` times from a generator seeded with ``seed``, so
    the interval is a fixed function of the inputs. An interval that contains 0 means the two models
    are not distinguishable on these items at that confidence.
    """
    a = np.asarray(candidate, dtype=np.float64)
    b = np.asarray(baseline, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape or a.size == 0:
        raise ValueError(
            f"paired_difference: candidate and baseline must be non-empty 1-D sequences of one length, got "
            f"shapes {a.shape} and {b.shape}"
        )
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError(
            "paired_difference: candidate and baseline must be finite (inf PSNR: identical images?)"
        )
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"paired_difference: confidence must be in (0, 1), got {confidence}")
    if resamples < 1:
        raise ValueError(f"paired_difference: resamples must be >= 1, got {resamples}")
    difference = a - b
    rng = np.random.default_rng(seed)
    chunk = max(1, _MAX_DRAWS // difference.size)  # bounds the index matrix at about 8 MB
    means = np.concatenate(
        [
            difference[
                rng.integers(0, difference.size, size=(min(chunk, resamples - start), difference.size))
            ].mean(axis=1)
            for start in range(0, resamples, chunk)
        ]
    )
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return PairedDifference(
        mean=float(difference.mean()),
        low=float(low),
        high=float(high),
        count=int(difference.size),
        confidence=confidence,
    )
