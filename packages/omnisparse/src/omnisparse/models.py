"""The shipped benchmark model: a tiny Qwen2-VL trained on long-video QA (see docs/omnisparse.md)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import torch

from omnisparse.tiny_vlm import load_vlm

__all__ = ["SHIPPED_MODELS", "load_model", "shipped_model_path"]

SHIPPED_MODELS = {
    "tiny-vlm": "the dense model, trained from scratch (omnisparse train-base)",
    "tiny-vlm-omnisparse": "tiny-vlm fine-tuned with OmniSparse in the loop (omnisparse finetune)",
}


def shipped_model_path(name: str = "tiny-vlm") -> Path:
    """The folder of a shipped checkpoint (``from_pretrained`` layout)."""
    if name not in SHIPPED_MODELS:
        raise ValueError(f"unknown shipped model {name!r}; choose one of {sorted(SHIPPED_MODELS)}")
    path = Path(str(resources.files("omnisparse") / "checkpoints" / name))
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"the shipped model {name!r} is missing from {path} (broken install?)")
    return path


def load_model(name_or_path: str | Path, *, dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    """A shipped model by name (``tiny-vlm``) or any Qwen2-VL / Qwen2.5-VL folder, with its tokenizer."""
    if str(name_or_path) in SHIPPED_MODELS:
        name_or_path = shipped_model_path(str(name_or_path))
    return load_vlm(name_or_path, dtype=dtype)
