"""Loading an SLM/LLM pair, and the small pair this package ships (trained here on the arithmetic set).

The shipped checkpoints live in ``rstitch/checkpoints/`` (``slm/`` and ``llm/`` in ``save_pretrained``
format with the tokenizer, ``router.pt`` for R-Stitch+). The commands that made them are in
docs/rstitch.md; ``rstitch train-lm`` and ``rstitch train-router`` reproduce them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rstitch.generator import check_same_tokenizer
from rstitch.tokenizer import load_tokenizer

__all__ = ["CHECKPOINTS", "ModelPair", "load_pair", "shipped_path"]

CHECKPOINTS = Path(__file__).resolve().parent / "checkpoints"
_HOW_TO_TRAIN = {
    "slm": "rstitch train-lm --preset slm --out runs/slm",
    "llm": "rstitch train-lm --preset llm --out runs/llm",
    "router.pt": "rstitch train-router --out runs/router",
}


def shipped_path(name: str) -> Path:
    """``slm``, ``llm`` or ``router.pt`` of the shipped checkpoints (a clear error when absent)."""
    if name not in _HOW_TO_TRAIN:
        raise ValueError(f"shipped_path: expected one of {sorted(_HOW_TO_TRAIN)}, got {name!r}")
    path = CHECKPOINTS / name
    if not path.exists():
        raise FileNotFoundError(
            f"the shipped checkpoint {name} is missing from this installation ({path}); "
            f"train one with `{_HOW_TO_TRAIN[name]}` and pass its path"
        )
    return path


@dataclass
class ModelPair:
    """A small and a large causal LM and their shared tokenizer."""

    slm: Any
    llm: Any
    tokenizer: Any


def _load_tokenizer(path: Path, label: str) -> Any:
    try:
        return load_tokenizer(path)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"--{label}: {e}") from None


def _load_model(path: Path, label: str, device: torch.device, dtype: torch.dtype) -> Any:
    from transformers import AutoModelForCausalLM

    try:
        model: Any = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
    except OSError as e:  # transformers' "not found" for folders and ids alike
        raise FileNotFoundError(
            f"--{label}: cannot load a causal LM from {path} (a save_pretrained folder, or a model id in "
            f"the local Hugging Face cache): {e}"
        ) from None
    return model.to(device).eval()


def load_pair(
    slm: str | Path | None = None,
    llm: str | Path | None = None,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> ModelPair:
    """Load the two models (``from_pretrained`` folders; None: the shipped pair) and their tokenizer.

    Each folder's tokenizer is loaded and the two must map the same strings to the same ids."""
    device = torch.device(device)
    slm_path = Path(slm) if slm is not None else shipped_path("slm")
    llm_path = Path(llm) if llm is not None else shipped_path("llm")
    slm_tokenizer, llm_tokenizer = _load_tokenizer(slm_path, "slm"), _load_tokenizer(llm_path, "llm")
    check_same_tokenizer(slm_tokenizer, llm_tokenizer)
    return ModelPair(
        slm=_load_model(slm_path, "slm", device, dtype),
        llm=_load_model(llm_path, "llm", device, dtype),
        tokenizer=llm_tokenizer,
    )
