"""A resumable data order: DistributedSampler's per-epoch permutation, able to start mid-epoch."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch.utils.data import Dataset, DistributedSampler

__all__ = ["ResumableSampler"]


class ResumableSampler(DistributedSampler[int]):
    """The indices of one rank for one epoch, a function of (seed, epoch) only, skipping the first
    ``start`` of them.

    With ``set_state(epoch, start)`` a resumed run continues with exactly the samples an uninterrupted
    run would have drawn next. Works with one process too (``num_replicas=1, rank=0``).
    """

    def __init__(
        self, dataset: Dataset[Any], *, num_replicas: int, rank: int, seed: int, shuffle: bool = True
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.start = 0

    def set_state(self, epoch: int, start: int) -> None:
        """Iterate epoch ``epoch`` from its ``start``-th sample (of this rank) on."""
        if not 0 <= start <= self.num_samples:
            raise ValueError(f"ResumableSampler: start must be in [0, {self.num_samples}], got {start}")
        self.set_epoch(epoch)
        self.start = start

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.start :])

    def __len__(self) -> int:
        return self.num_samples - self.start
