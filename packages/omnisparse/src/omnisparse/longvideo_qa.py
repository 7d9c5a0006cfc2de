"""An offline long-video QA benchmark built from easy-vqa frames: find one frame among many distractors.

Each easy-vqa image (64x64) shows one shape (circle, rectangle, triangle) in one of eight colours. A
video is ``num_frames`` such images in a row, each held for one temporal patch (so every visual token
belongs to exactly one image). Exactly one frame is the *target*, and the question names what makes it
unique:

- ``what color is the circle?`` -- the only frame with that shape; answer: its colour;
- ``what shape is the red one?`` -- the only frame with that colour; answer: its shape.

The answer needs one frame among many, the setting where query/KV sparsity and per-head KV slimming
can fail. Train and test videos draw from easy-vqa's train and test images respectively, so test
frames are unseen.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cache

import numpy as np

__all__ = ["COLORS", "SHAPES", "VideoQA", "frame_labels", "load_frame", "make_videos", "video_at"]

SHAPES = ("circle", "rectangle", "triangle")
SHAPE_DISTRACTORS = 0  # distractor frames that show a shape; the rest of the video is blank frames
COLORS = ("red", "green", "blue", "yellow", "teal", "brown", "gray", "black")


def _easy_vqa():  # type: ignore[no-untyped-def]
    try:
        import easy_vqa
    except ImportError as e:
        raise ImportError("the long-video QA benchmark needs easy-vqa: pip install easy-vqa") from e
    return easy_vqa


@cache
def frame_labels(split: str) -> dict[int, tuple[str, str]]:
    """``image id -> (shape, colour)`` for easy-vqa's ``train`` or ``test`` images, from their questions."""
    ev = _easy_vqa()
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    questions, answers, ids = ev.get_train_questions() if split == "train" else ev.get_test_questions()
    shapes: dict[int, str] = {}
    colors: dict[int, str] = {}
    for question, answer, image_id in zip(questions, answers, ids, strict=True):
        if question.startswith("what") and "color" in question and answer in COLORS:
            colors[image_id] = answer  # "what color is the shape?" / "what color is the circle?"
        elif question.startswith("what") and answer in SHAPES:
            shapes[image_id] = answer  # "what is the blue shape?" / "what shape is ...?"
    return {i: (shapes[i], colors[i]) for i in sorted(shapes.keys() & colors.keys())}


@cache
def _image_paths(split: str) -> dict[int, str]:
    ev = _easy_vqa()
    return dict(ev.get_train_image_paths() if split == "train" else ev.get_test_image_paths())


def load_frame(split: str, image_id: int) -> np.ndarray:
    """One easy-vqa image as ``[64, 64, 3] uint8``."""
    from PIL import Image

    return np.asarray(Image.open(_image_paths(split)[image_id]).convert("RGB"))


@dataclass(frozen=True)
class VideoQA:
    """One benchmark item: frame image ids, the target's position, the question and its answer."""

    split: str
    frame_ids: tuple[int, ...]
    target: int
    question: str
    answer: str
    blank: tuple[bool, ...] = ()  # frames shown as their image's plain background (no shape)

    def frames(self) -> list[np.ndarray]:
        out = []
        for position, image_id in enumerate(self.frame_ids):
            frame = load_frame(self.split, image_id)
            if self.blank and self.blank[position]:
                frame = blank_frame(frame)
            out.append(frame)
        return out


def blank_frame(frame: np.ndarray) -> np.ndarray:
    """The frame's most common colour (its background) everywhere: a frame without a shape."""
    colors, counts = np.unique(frame.reshape(-1, 3), axis=0, return_counts=True)
    return np.broadcast_to(colors[counts.argmax()], frame.shape).copy()


def _one_video(
    rng: random.Random,
    split: str,
    num_frames: int,
    by_label: dict[tuple[str, str], list[int]],
    shape_distractors: int | None,
) -> VideoQA:
    shape, color = rng.choice(SHAPES), rng.choice(COLORS)
    if rng.random() < 0.5:
        question, answer = f"what color is the {shape}?", color
        distractor_labels = [k for k in by_label if k[0] != shape]
    else:
        question, answer = f"what shape is the {color} one?", shape
        distractor_labels = [k for k in by_label if k[1] != color]
    frames = [rng.choice(by_label[rng.choice(distractor_labels)]) for _ in range(num_frames - 1)]
    target = rng.randrange(num_frames)
    frames.insert(target, rng.choice(by_label[(shape, color)]))
    blank = [False] * num_frames
    if shape_distractors is not None:
        others = [i for i in range(num_frames) if i != target]
        shown = set(rng.sample(others, min(shape_distractors, len(others))))
        blank = [i != target and i not in shown for i in range(num_frames)]
    return VideoQA(split, tuple(frames), target, question, answer, tuple(blank))


@cache
def _images_by_label(split: str) -> dict[tuple[str, str], list[int]]:
    by_label: dict[tuple[str, str], list[int]] = {}
    for image_id, label in frame_labels(split).items():
        by_label.setdefault(label, []).append(image_id)
    missing = [(s, c) for s in SHAPES for c in COLORS if (s, c) not in by_label]
    if missing:
        raise ValueError(f"easy-vqa {split} split lacks images for {missing}")
    return by_label


def video_at(
    split: str,
    index: int,
    *,
    num_frames: int = 32,
    seed: int = 0,
    shape_distractors: int | None = SHAPE_DISTRACTORS,
) -> VideoQA:
    """Video number ``index`` of the stream ``(split, seed)``: the same item on every call and every rank.

    ``shape_distractors``: how many distractor frames show a shape (the others are blank); None: all.
    """
    if num_frames < 1:
        raise ValueError(
            f"num_frames must be >= 1 (the target; the others are distractors), got {num_frames}"
        )
    if index < 0:
        raise ValueError(f"index must be >= 0, got {index}")
    rng = random.Random(f"{split}-{seed}-{index}")
    return _one_video(rng, split, num_frames, _images_by_label(split), shape_distractors)


def make_videos(
    split: str,
    count: int,
    *,
    num_frames: int = 32,
    seed: int = 0,
    shape_distractors: int | None = SHAPE_DISTRACTORS,
) -> list[VideoQA]:
    """Videos ``0 .. count-1`` of the stream ``(split, seed)``."""
    return [
        video_at(split, i, num_frames=num_frames, seed=seed, shape_distractors=shape_distractors)
        for i in range(count)
    ]
