"""Synthetic text-to-video data: one coloured shape moving across a dark frame.

A prompt names the colour, the shape and the direction ("a red circle moving right"); the video
shows exactly that, from a random start position. Small enough to train the tiny Wan on a CPU in
minutes, and it needs attention across frames (the motion) and across space (the shape).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

COLORS = {
    "red": (0.9, 0.15, 0.1),
    "green": (0.15, 0.8, 0.2),
    "blue": (0.15, 0.3, 0.95),
    "yellow": (0.95, 0.85, 0.1),
}
SHAPES = ("circle", "square")
DIRECTIONS = {"right": (0, 1), "left": (0, -1), "down": (1, 0), "up": (-1, 0)}


@dataclass(frozen=True)
class Clip:
    """One prompt's content."""

    color: str
    shape: str
    direction: str

    @property
    def prompt(self) -> str:
        return f"a {self.color} {self.shape} moving {self.direction}"


def all_clips() -> list[Clip]:
    """Every (colour, shape, direction): 32 prompts."""
    return [Clip(c, s, d) for c, s, d in itertools.product(COLORS, SHAPES, DIRECTIONS)]


def render_clip(clip: Clip, *, frames: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """Video [3, F, size, size] in [-1, 1] (the VAE's range): the shape moves 1/16 of the frame per frame."""
    radius = size / 8
    speed = size / 16
    dy, dx = DIRECTIONS[clip.direction]
    travel = speed * (frames - 1)
    # Start so that the whole path stays inside the frame.
    low = radius + (travel if (dy < 0 or dx < 0) else 0)
    high = size - radius - (travel if (dy > 0 or dx > 0) else 0)

    def pick(moving: bool) -> float:
        lo, hi = (low, high) if moving else (radius, size - radius)
        return float(lo + (hi - lo) * torch.rand((), generator=generator))

    y0, x0 = pick(dy != 0), pick(dx != 0)
    ys = torch.arange(size).float().view(size, 1) + 0.5
    xs = torch.arange(size).float().view(1, size) + 0.5
    color = torch.tensor(COLORS[clip.color]).view(3, 1, 1)
    video = torch.full((3, frames, size, size), -0.8)
    for f in range(frames):
        cy, cx = y0 + dy * speed * f, x0 + dx * speed * f
        if clip.shape == "circle":
            inside = (ys - cy) ** 2 + (xs - cx) ** 2 <= radius**2
        else:
            inside = ((ys - cy).abs() <= radius) & ((xs - cx).abs() <= radius)
        video[:, f] = torch.where(inside, color * 2 - 1, video[:, f])
    return video
