"""Training checkpoints: atomic writes, a ``latest`` pointer, pruning, and the RNG states to restore.

Layout under a run's ``out_dir``::

    checkpoints/step-00001000.pt   torch.save of a dict (model, optimizer, scheduler, step, rng, data, ...)
    checkpoints/latest             the file name of the newest complete checkpoint

A checkpoint is written to a temporary file and renamed into place, then the pointer is replaced the
same way, so an interruption at any moment leaves the previous checkpoint and pointer intact.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

__all__ = [
    "checkpoint_dir",
    "get_rng_state",
    "latest_checkpoint",
    "load_checkpoint",
    "save_checkpoint",
    "set_rng_state",
]

_LATEST = "latest"


def checkpoint_dir(out_dir: str | Path) -> Path:
    return Path(out_dir) / "checkpoints"


def _atomic_write(path: Path, write: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def get_rng_state() -> dict[str, Any]:
    """The RNG states of Python, NumPy and torch (CPU and every CUDA device), as plain tensors and
    tuples so the checkpoint loads with ``weights_only=True``."""
    # The legacy global NumPy RNG is the one seed_everything seeds.
    legacy = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state(legacy=True))  # noqa: NPY002
    kind, keys, pos, has_gauss, cached = legacy
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`get_rng_state` captured."""
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["cached"]))  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(out_dir: str | Path, step: int, state: dict[str, Any], *, keep: int = 2) -> Path:
    """Write ``state`` as the checkpoint of ``step``, point ``latest`` at it and keep the newest ``keep``
    checkpoints (0 keeps all). Returns the checkpoint's path."""
    directory = checkpoint_dir(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"step-{step:08d}.pt"
    _atomic_write(path, lambda f: torch.save(state, f))
    _atomic_write(directory / _LATEST, lambda f: f.write(path.name.encode() + b"\n"))
    if keep > 0:
        for old in sorted(directory.glob("step-*.pt"))[:-keep]:
            if old != path:
                old.unlink(missing_ok=True)
    return path


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The checkpoint ``latest`` points at, or None when the run has none."""
    pointer = checkpoint_dir(out_dir) / _LATEST
    if not pointer.is_file():
        return None
    path = pointer.parent / pointer.read_text().strip()
    if not path.is_file():
        raise FileNotFoundError(f"latest_checkpoint: {pointer} points at {path.name}, which does not exist")
    return path


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only``: no code is unpickled)."""
    state: dict[str, Any] = torch.load(path, map_location=map_location, weights_only=True)
    return state
