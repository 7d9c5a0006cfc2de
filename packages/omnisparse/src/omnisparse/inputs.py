"""Model inputs for a (video, question[, answer]) triple on Qwen2-VL / Qwen2.5-VL.

The visual-token positions come from the token ids themselves: the prompt holds one video token per
merged patch group, and ``mm_token_type_ids`` (0 text, 1 image, 2 video) marks them for the model and
for OmniSparse.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from omnisparse.tiny_vlm import prompt_text
from omnisparse.video import PatchSpec, frames_to_patches, resize_frames

__all__ = ["answer_ids", "video_inputs", "video_prompt"]

_VIDEO_PAD = "<|video_pad|>"


def video_prompt(tokenizer: Any, question: str, num_video_tokens: int) -> str:
    """The prompt text with ``num_video_tokens`` video tokens: the tokenizer's chat template (real
    Qwen-VL checkpoints) or, without one, the tiny benchmark model's plain format."""
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        if text.count(_VIDEO_PAD) != 1:
            raise ValueError(
                f"the chat template must place exactly one {_VIDEO_PAD} for a video, got {text!r}"
            )
        return text.replace(_VIDEO_PAD, _VIDEO_PAD * num_video_tokens)
    return prompt_text(question, num_video_tokens=num_video_tokens)


def video_inputs(
    frames: Sequence[np.ndarray],
    question: str,
    tokenizer: Any,
    model_config: Any,
    *,
    frame_pixels: tuple[int, int] = (112 * 112, 448 * 448),
    repeat_frames: int = 1,
) -> dict[str, torch.Tensor]:
    """Forward inputs (batch 1) for ``frames`` and ``question``.

    Args:
        frames: ``[H, W, 3] uint8`` frames in time order.
        model_config: the model's config (vision patching and the video token id).
        frame_pixels: (min, max) pixels per frame after resizing (multiples of 28 per side).
        repeat_frames: show each frame this many times (the benchmark uses 2 = the temporal patch, so
            every visual token covers one frame).

    Returns:
        ``input_ids``, ``attention_mask``, ``mm_token_type_ids`` [1, S]; ``pixel_values_videos``
        [t*h*w, 3*tp*p*p]; ``video_grid_thw`` [1, 3].
    """
    spec = PatchSpec.from_vision_config(model_config.vision_config)
    shown = [f for f in frames for _ in range(repeat_frames)]
    pixels, grid = frames_to_patches(
        resize_frames(shown, spec, min_pixels=frame_pixels[0], max_pixels=frame_pixels[1]), spec
    )
    num_tokens = int(grid.prod()) // spec.merge_size**2
    ids = tokenizer(
        video_prompt(tokenizer, question, num_tokens), return_tensors="pt", add_special_tokens=False
    ).input_ids
    video_id = model_config.video_token_id
    found = int((ids == video_id).sum())
    if found != num_tokens:
        raise ValueError(f"the prompt holds {found} video tokens (id {video_id}), expected {num_tokens}")
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "mm_token_type_ids": (ids == video_id).long() * 2,
        "pixel_values_videos": pixels,
        "video_grid_thw": grid,
    }


def answer_ids(tokenizer: Any, answer: str) -> torch.Tensor:
    """The answer's token ids followed by EOS, ``[n + 1]``."""
    ids = tokenizer(" " + answer, add_special_tokens=False).input_ids
    return torch.tensor([*ids, tokenizer.eos_token_id])
