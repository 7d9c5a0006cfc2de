"""Frames in, Qwen-VL video inputs out: loading, resizing, normalising and patching.

Qwen2-VL and Qwen2.5-VL take a video as flat patches ``pixel_values_videos [t*h*w, C*tp*p*p]`` with
``video_grid_thw [[t, h, w]]`` (t = frames / temporal_patch, h and w in patches), and the prompt
holds one ``<|video_pad|>`` token per merged patch group (``t*h*w / merge**2`` of them). This module
does the vision side in plain torch with the processors' layout (checked against transformers' image
processor in the tests), so no torchvision or video decoder is needed for folders of images.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = ["PatchSpec", "frames_to_patches", "load_frames", "resize_frames", "smart_size"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
# The CLIP statistics every Qwen-VL processor normalises with.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class PatchSpec:
    """How a Qwen-VL vision tower cuts frames into patches (read from the model's vision config)."""

    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD

    @classmethod
    def from_vision_config(cls, vision_config: object) -> PatchSpec:
        return cls(
            patch_size=int(getattr(vision_config, "patch_size", 14)),
            temporal_patch_size=int(getattr(vision_config, "temporal_patch_size", 2)),
            merge_size=int(getattr(vision_config, "spatial_merge_size", 2)),
        )

    @property
    def factor(self) -> int:
        """Frame sides must be multiples of this (one merged patch group)."""
        return self.patch_size * self.merge_size


def smart_size(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """The processors' rule: sides rounded to multiples of ``factor``, area within [min, max] pixels."""
    if height <= 0 or width <= 0:
        raise ValueError(f"frame size must be positive, got {height}x{width}")
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


def _sample_indices(total: int, num_frames: int | None) -> list[int]:
    if num_frames is None or num_frames >= total:
        return list(range(total))
    return [round(i * (total - 1) / max(1, num_frames - 1)) for i in range(num_frames)]


def load_frames(path: str | Path, *, num_frames: int | None = None) -> list[np.ndarray]:
    """Frames as ``[H, W, 3] uint8`` arrays from a folder of images (sorted by name) or a video file.

    Args:
        path: a folder of .png/.jpg/... frames, an animated GIF/WebP, or a video file (.mp4, .mkv, ...;
            needs the ``av`` package).
        num_frames: sample this many frames evenly over the clip (default: all).
    """
    from PIL import Image

    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"--video folder {path} holds no image frames ({', '.join(IMAGE_SUFFIXES)})")
        picked = [files[i] for i in _sample_indices(len(files), num_frames)]
        return [np.asarray(Image.open(f).convert("RGB")) for f in picked]
    if not path.is_file():
        raise FileNotFoundError(f"--video {path} is neither a folder of frames nor a file")
    if path.suffix.lower() in (".gif", ".webp", *IMAGE_SUFFIXES):
        image = Image.open(path)
        frames = []
        for i in range(getattr(image, "n_frames", 1)):
            image.seek(i)
            frames.append(np.asarray(image.convert("RGB")))
        return [frames[i] for i in _sample_indices(len(frames), num_frames)]
    try:
        import av
    except ImportError as e:
        raise ImportError(
            f"reading {path.suffix} videos needs PyAV (pip install av); or pass a folder of frames"
        ) from e
    with av.open(str(path)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    if not decoded:
        raise ValueError(f"--video {path} has no video frames")
    return [decoded[i] for i in _sample_indices(len(decoded), num_frames)]


def resize_frames(
    frames: Sequence[np.ndarray], spec: PatchSpec, *, min_pixels: int = 56 * 56, max_pixels: int = 448 * 448
) -> torch.Tensor:
    """Resize (bicubic) every frame to the processor size; returns ``[T, 3, H, W]`` float32 in [0, 1]."""
    from PIL import Image

    if not frames:
        raise ValueError("frames must not be empty")
    height, width = frames[0].shape[:2]
    h, w = smart_size(height, width, spec.factor, min_pixels, max_pixels)
    out = []
    for i, frame in enumerate(frames):
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"frame {i} must be [H, W, 3] uint8, got {frame.shape} {frame.dtype}")
        if frame.shape[:2] != (h, w):
            frame = np.asarray(Image.fromarray(frame).resize((w, h), Image.Resampling.BICUBIC))
        out.append(torch.from_numpy(frame.copy()).permute(2, 0, 1))
    return torch.stack(out).float() / 255.0


def frames_to_patches(frames: torch.Tensor, spec: PatchSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalise and patch frames the way Qwen-VL's video processor does.

    Args:
        frames: ``[T, 3, H, W]`` float in [0, 1]; H and W multiples of ``spec.factor``. T is padded up
            to a multiple of the temporal patch by repeating the last frame.

    Returns:
        pixel_values ``[t*h*w, 3*tp*p*p]`` float32 and grid_thw ``[1, 3]`` int64 (t, h, w in patches).
        Patches run over time, then merged groups row-major, then the ``merge x merge`` patches of each
        group, so that every run of ``merge**2`` rows is one visual token.
    """
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"frames must be [T, 3, H, W], got {tuple(frames.shape)}")
    num, _, height, width = frames.shape
    p, tp, m = spec.patch_size, spec.temporal_patch_size, spec.merge_size
    if height % spec.factor or width % spec.factor:
        raise ValueError(
            f"frame size {height}x{width} must be a multiple of {spec.factor} (resize_frames does it)"
        )
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    x = (frames.float() - mean) / std
    if pad := -num % tp:
        x = torch.cat([x, x[-1:].expand(pad, -1, -1, -1)])
    t, gh, gw = x.shape[0] // tp, height // p, width // p
    x = x.view(t, tp, 3, gh // m, m, p, gw // m, m, p)
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)  # t, gh/m, gw/m, m, m, C, tp, p, p
    patches = x.reshape(t * gh * gw, 3 * tp * p * p).contiguous()
    return patches, torch.tensor([[t, gh, gw]], dtype=torch.long)
