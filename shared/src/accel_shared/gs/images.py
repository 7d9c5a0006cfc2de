"""Saving rendered views as PNG files without an imaging library (zlib + the PNG chunk format)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import torch

__all__ = ["colorize_depth", "image_grid", "save_png"]


def save_png(path: str | Path, image: torch.Tensor) -> Path:
    """Writes image [3, H, W] or [H, W] with values in [0, 1] (clamped) as an 8-bit PNG."""
    if image.dim() == 2:
        image = image.unsqueeze(0).expand(3, -1, -1)
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"save_png: image must be [3, H, W] or [H, W], got {list(image.shape)}")
    height, width = image.shape[1:]
    pixels = (image.detach().float().clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).cpu()
    rows = torch.cat([torch.zeros(height, 1, dtype=torch.uint8), pixels.reshape(height, -1)], dim=1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    payload = (
        chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows.numpy().tobytes(), 9))
        + chunk(b"IEND", b"")
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + payload)
    return path


def colorize_depth(depth: torch.Tensor, near: float | None = None, far: float | None = None) -> torch.Tensor:
    """Depth [H, W] -> [3, H, W] in [0, 1]: inverse depth mapped to a blue (far) to yellow (near) ramp."""
    inverse = 1.0 / depth.float().clamp(min=1e-6)
    low = 1.0 / far if far else float(inverse.min())
    high = 1.0 / near if near else float(inverse.max())
    t = ((inverse - low) / max(high - low, 1e-12)).clamp(0, 1)
    return torch.stack([t, 0.2 + 0.6 * t, 1.0 - t])


def image_grid(rows: list[list[torch.Tensor]], pad: int = 2) -> torch.Tensor:
    """Tiles equally sized [3, H, W] images into one [3, H', W'] image (white gaps of ``pad`` pixels)."""
    height, width = rows[0][0].shape[1:]
    columns = max(len(r) for r in rows)
    grid = torch.ones(3, len(rows) * (height + pad) - pad, columns * (width + pad) - pad)
    for i, row in enumerate(rows):
        for j, image in enumerate(row):
            y, x = i * (height + pad), j * (width + pad)
            grid[:, y : y + height, x : x + width] = image.detach().float().cpu()
    return grid
