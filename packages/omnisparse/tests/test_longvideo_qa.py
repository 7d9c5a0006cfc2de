"""The long-video QA benchmark: labels of the easy-vqa frames, a deterministic stream of videos, and
exactly one frame that answers each question."""

from __future__ import annotations

import re

import numpy as np
import pytest

from omnisparse.longvideo_qa import (
    COLORS,
    SHAPES,
    frame_labels,
    load_frame,
    make_videos,
    video_at,
)

pytest.importorskip("easy_vqa")

SPLITS = ("train", "test")
COLOR_QUESTION = re.compile(r"^what color is the (\w+)\?$")
SHAPE_QUESTION = re.compile(r"^what shape is the (\w+) one\?$")


@pytest.mark.parametrize("split", SPLITS)
def test_frame_labels_cover_every_shape_and_colour(split: str) -> None:
    labels = frame_labels(split)
    assert len(labels) > 100
    assert all(shape in SHAPES and color in COLORS for shape, color in labels.values())
    assert set(labels.values()) == {(s, c) for s in SHAPES for c in COLORS}
    assert list(labels) == sorted(labels)


def test_frame_labels_match_the_pixels() -> None:
    """A red frame is mostly red among its coloured pixels (the labels come from questions, so check one)."""
    labels = frame_labels("test")
    image_id = next(i for i, (_, color) in labels.items() if color == "red")
    frame = load_frame("test", image_id)
    assert frame.shape == (64, 64, 3) and frame.dtype == np.uint8
    r, g, b = (frame[..., i].astype(int) for i in range(3))
    red = (r > 150) & (g < 100) & (b < 100)
    assert red.sum() > 50


def test_unknown_split_raises() -> None:
    with pytest.raises(ValueError, match="split must be"):
        frame_labels("val")


def _target_check(split: str, video) -> None:  # type: ignore[no-untyped-def]
    labels = frame_labels(split)
    frame_labels_ = [labels[i] for i in video.frame_ids]
    if m := COLOR_QUESTION.match(video.question):
        shape = m.group(1)
        assert shape in SHAPES and video.answer in COLORS
        matching = [k for k, (s, _) in enumerate(frame_labels_) if s == shape]
        assert matching == [video.target]
        assert frame_labels_[video.target][1] == video.answer
    else:
        m = SHAPE_QUESTION.match(video.question)
        assert m is not None, video.question
        color = m.group(1)
        assert color in COLORS and video.answer in SHAPES
        matching = [k for k, (_, c) in enumerate(frame_labels_) if c == color]
        assert matching == [video.target]
        assert frame_labels_[video.target][0] == video.answer


@pytest.mark.parametrize("split", SPLITS)
def test_exactly_one_frame_answers_the_question(split: str) -> None:
    videos = make_videos(split, 60, num_frames=12, seed=3)
    kinds = {COLOR_QUESTION.match(v.question) is not None for v in videos}
    assert kinds == {True, False}  # both kinds of question occur
    for video in videos:
        assert video.split == split and len(video.frame_ids) == 12 and 0 <= video.target < 12
        _target_check(split, video)
    targets = {v.target for v in videos}
    assert len(targets) > 3  # the target moves around the video


def test_video_at_is_deterministic_per_split_index_and_seed() -> None:
    a = video_at("train", 5, num_frames=8, seed=1)
    assert video_at("train", 5, num_frames=8, seed=1) == a
    assert make_videos("train", 6, num_frames=8, seed=1)[5] == a
    others = [video_at("train", i, num_frames=8, seed=1) for i in range(5)]
    assert all(o.frame_ids != a.frame_ids for o in others)
    assert len({o.frame_ids for o in others}) == 5
    assert video_at("train", 5, num_frames=8, seed=2).frame_ids != a.frame_ids
    test = video_at("test", 5, num_frames=8, seed=1)
    assert test.split == "test" and test.frame_ids != a.frame_ids
    assert set(test.frame_ids) <= set(frame_labels("test"))
    assert set(a.frame_ids) <= set(frame_labels("train"))


def test_frames_load_as_uint8_images() -> None:
    video = video_at("test", 0, num_frames=3)
    frames = video.frames()
    assert len(frames) == 3
    assert all(f.shape == (64, 64, 3) and f.dtype == np.uint8 for f in frames)


def test_single_frame_video_is_the_target() -> None:
    for index in range(10):
        video = video_at("train", index, num_frames=1)
        assert len(video.frame_ids) == 1 and video.target == 0
        _target_check("train", video)


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="num_frames must be >= 1"):
        video_at("train", 0, num_frames=0)
    with pytest.raises(ValueError, match="index must be >= 0"):
        video_at("train", -1)


def test_blank_distractors_by_default() -> None:
    """With the default (0 shape distractors) only the target frame shows a shape."""
    for item in make_videos("test", 5, num_frames=6):
        assert len(item.blank) == 6 and not item.blank[item.target]
        assert sum(item.blank) == 5
        for position, frame in enumerate(item.frames()):
            colours = len(np.unique(frame.reshape(-1, 3), axis=0))
            assert (colours == 1) == item.blank[position]


@pytest.mark.parametrize("count", [1, 3])
def test_shape_distractors_show_shapes(count: int) -> None:
    item = video_at("train", 7, num_frames=8, shape_distractors=count)
    shown = [i for i, blank in enumerate(item.blank) if not blank]
    assert item.target in shown and len(shown) == count + 1
    everything = video_at("train", 7, num_frames=8, shape_distractors=None)
    assert not any(everything.blank)
