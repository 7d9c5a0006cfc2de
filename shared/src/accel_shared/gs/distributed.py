"""Moved to :mod:`accel_shared.distributed` (it serves every training loop, not only 3DGS); kept as an alias."""

from accel_shared.distributed import (
    DistContext,
    all_reduce_mean,
    launched_rank,
    setup_distributed,
    teardown_distributed,
)

__all__ = ["DistContext", "all_reduce_mean", "launched_rank", "setup_distributed", "teardown_distributed"]
