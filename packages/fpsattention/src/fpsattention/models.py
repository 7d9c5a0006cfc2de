"""The shipped tiny Wan (trained here on the synthetic videos) and how pipelines are loaded.

``tiny-wan``: the tiny pipeline's transformer after ``fpsattention train-base`` (flow matching on
the 32 moving-shape prompts, command in docs/fpsattention.md), its VAE the seeded random one it
was trained with; both in ``checkpoints/tiny-wan``. ``tiny-wan-qat``: tiny-wan with phase adapters
(``fpsattention train``: the early and late phases' low-rank corrections, base weights untouched)
for :data:`~fpsattention.pipeline.TINY_SCHEDULE`. ``tiny-wan-qat-full``: tiny-wan with all weights
fine-tuned (``fpsattention train --full-weights``, the paper's way). ``random``: the untrained tiny
pipeline.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from fpsattention.adapters import load_adapters
from fpsattention.pipeline import build_tiny_pipeline, load_pipeline

CHECKPOINTS = Path(__file__).parent / "checkpoints"
SHIPPED = {
    "tiny-wan": "the tiny Wan trained on the synthetic moving-shape videos",
    "tiny-wan-qat": "tiny-wan with phase adapters trained with FPSAttention (TINY_SCHEDULE) toward tiny-wan",
    "tiny-wan-qat-full": "tiny-wan with all weights fine-tuned with FPSAttention (TINY_SCHEDULE) toward tiny-wan",
}


def save_components(pipe: Any, folder: str | Path) -> Path:
    """Write the pipeline's transformer and VAE (diffusers layout) to ``folder``."""
    folder = Path(folder)
    pipe.transformer.save_pretrained(folder / "transformer")
    pipe.vae.save_pretrained(folder / "vae")
    for part in ("transformer", "vae"):
        # diffusers records where a model was loaded from; a saved model should not name this machine.
        config_file = folder / part / "config.json"
        config = json.loads(config_file.read_text())
        config.pop("_name_or_path", None)
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return folder


def load_components(pipe: Any, folder: str | Path) -> Any:
    """Load what ``folder`` holds into ``pipe``: a transformer and a VAE saved by :func:`save_components`,
    and phase adapters (``adapters/``, from :func:`~fpsattention.adapters.save_adapters`) for the transformer."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    folder = Path(folder)
    parts = [p for p in ("transformer", "vae", "adapters") if (folder / p).is_dir()]
    if "transformer" not in parts and "adapters" not in parts:
        raise FileNotFoundError(
            f"{folder} has neither transformer/ nor adapters/ (the layouts of save_components and save_adapters)"
        )
    dtype = pipe.transformer.dtype
    if "transformer" in parts:
        pipe.transformer = WanTransformer3DModel.from_pretrained(folder / "transformer").to(dtype)
    if "vae" in parts:
        pipe.vae = AutoencoderKLWan.from_pretrained(folder / "vae").to(dtype)
    if "adapters" in parts:
        load_adapters(pipe.transformer, folder / "adapters")
    return pipe


def get_pipeline(
    model: str = "tiny-wan", *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> Any:
    """A Wan pipeline: a shipped name (``tiny-wan``, ``tiny-wan-qat``, ``tiny-wan-qat-full``), ``random``, a
    folder written by :func:`save_components`, or a diffusers Wan pipeline folder (e.g.
    Wan2.1-T2V-1.3B-Diffusers)."""
    if model == "random":
        pipe = build_tiny_pipeline(dtype=dtype)
    elif model in SHIPPED:
        pipe = load_components(build_tiny_pipeline(dtype=dtype), CHECKPOINTS / "tiny-wan")
        if model != "tiny-wan":  # adapters, or a fine-tuned transformer, for the same VAE
            pipe = load_components(pipe, CHECKPOINTS / model)
    else:
        path = Path(model)
        if (path / "model_index.json").is_file():
            pipe = load_pipeline(path, dtype)
        elif (path / "transformer").is_dir():  # with adapters/ too, if the run trained them
            pipe = load_components(build_tiny_pipeline(dtype=dtype), path)
        else:
            raise FileNotFoundError(
                f"--model {model}: not a shipped model ({', '.join(SHIPPED)}, random), a diffusers Wan pipeline "
                "folder (model_index.json) or a folder with transformer/"
            )
    return pipe.to(device)
