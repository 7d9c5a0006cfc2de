"""Frames -> Qwen-VL patches: parity with transformers' image processor, sizes, frame folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from omnisparse.video import PatchSpec, frames_to_patches, load_frames, resize_frames, smart_size


def random_frame(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.RandomState(seed).randint(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize(("height", "width"), [(112, 112), (64, 64), (56, 112)])
def test_patches_match_transformers_image_processor(height: int, width: int) -> None:
    from PIL import Image
    from transformers import Qwen2VLImageProcessorPil

    frame = random_frame(height, width, seed=height + width)
    processor = Qwen2VLImageProcessorPil(min_pixels=112 * 112, max_pixels=112 * 112)
    expected = processor(images=[Image.fromarray(frame)], return_tensors="pt")

    spec = PatchSpec()
    # an image is one frame shown for the whole temporal patch (2 frames)
    frames = resize_frames([frame, frame], spec, min_pixels=112 * 112, max_pixels=112 * 112)
    h, w = smart_size(height, width, 28, 112 * 112, 112 * 112)
    assert frames.shape == (2, 3, h, w)
    pixels, grid = frames_to_patches(frames, spec)
    assert grid.tolist() == expected["image_grid_thw"].tolist() == [[1, h // 14, w // 14]]
    assert pixels.shape == expected["pixel_values"].shape == (h * w // 196, 3 * 2 * 14 * 14)
    torch.testing.assert_close(pixels, expected["pixel_values"], atol=1e-5, rtol=0)


def test_patch_layout_is_time_then_merged_groups() -> None:
    """Two different frame pairs: the first 16 rows (t=0) come from the first pair only, and the
    rows of one merged group are its 2x2 patches in row-major order."""
    spec = PatchSpec()
    frames = torch.zeros(4, 3, 56, 56)
    frames[2:] = 1.0  # the second temporal patch is white
    frames[0, :, :14, 14:28] = 0.5  # patch (row 0, col 1) of frame 0
    pixels, grid = frames_to_patches(frames, spec)
    assert grid.tolist() == [[2, 4, 4]]
    black = (0.0 - torch.tensor(spec.mean)) / torch.tensor(spec.std)
    white = (1.0 - torch.tensor(spec.mean)) / torch.tensor(spec.std)
    per_channel = pixels.view(32, 3, 2, 14 * 14)  # [rows, C, tp, p*p]
    torch.testing.assert_close(per_channel[16:], white.view(1, 3, 1, 1).expand(16, 3, 2, 196))
    assert torch.allclose(per_channel[0], black.view(3, 1, 1).expand(3, 2, 196))
    # patch (0, 1) is the second row of the first merged group; only its frame-0 half is grey
    grey = (0.5 - torch.tensor(spec.mean)) / torch.tensor(spec.std)
    torch.testing.assert_close(per_channel[1, :, 0], grey.view(3, 1).expand(3, 196))
    torch.testing.assert_close(per_channel[1, :, 1], black.view(3, 1).expand(3, 196))


def test_odd_frame_count_repeats_the_last_frame() -> None:
    spec = PatchSpec()
    frames = torch.rand(3, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    pixels, grid = frames_to_patches(frames, spec)
    padded, padded_grid = frames_to_patches(torch.cat([frames, frames[-1:]]), spec)
    assert grid.tolist() == padded_grid.tolist() == [[2, 2, 2]]
    assert torch.equal(pixels, padded)


def test_frames_to_patches_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError, match="multiple of 28"):
        frames_to_patches(torch.zeros(2, 3, 56, 50), PatchSpec())
    with pytest.raises(ValueError, match=r"\[T, 3, H, W\]"):
        frames_to_patches(torch.zeros(2, 56, 56), PatchSpec())


@pytest.mark.parametrize(
    ("height", "width", "min_pixels", "max_pixels"),
    [
        (112, 112, 112 * 112, 112 * 112),
        (64, 64, 112 * 112, 112 * 112),
        (100, 150, 56 * 56, 448 * 448),
        (480, 640, 56 * 56, 448 * 448),
        (1080, 1920, 56 * 56, 448 * 448),
        (20, 300, 56 * 56, 448 * 448),
        (37, 41, 224 * 224, 448 * 448),
        (333, 777, 4 * 28 * 28, 16 * 28 * 28),
    ],
)
def test_smart_size_rounds_to_multiples_of_28(
    height: int, width: int, min_pixels: int, max_pixels: int
) -> None:
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    h, w = smart_size(height, width, 28, min_pixels, max_pixels)
    assert h % 28 == 0 and w % 28 == 0 and h >= 28 and w >= 28
    assert (h, w) == smart_resize(height, width, factor=28, min_pixels=min_pixels, max_pixels=max_pixels)
    assert h * w <= max_pixels
    if min(height, width) >= 28:
        assert h * w >= min_pixels


def test_smart_size_examples() -> None:
    assert smart_size(100, 150, 28, 56 * 56, 448 * 448) == (112, 140)
    assert smart_size(64, 64, 28, 112 * 112, 112 * 112) == (112, 112)
    assert smart_size(1000, 1000, 28, 56 * 56, 224 * 224) == (224, 224)
    with pytest.raises(ValueError, match="positive"):
        smart_size(0, 10, 28, 56 * 56, 448 * 448)


def write_frames(folder: Path, count: int) -> list[np.ndarray]:
    """PNG frames frame_00.png .. written in reverse order (so name order != creation order), each a
    distinct solid colour; returns them in name order."""
    from PIL import Image

    folder.mkdir()
    frames = [np.full((30, 40, 3), (10 * i, 255 - 10 * i, 7 * i), dtype=np.uint8) for i in range(count)]
    for i in reversed(range(count)):
        Image.fromarray(frames[i]).save(folder / f"frame_{i:02d}.png")
    (folder / "notes.txt").write_text("not a frame")
    return frames


def test_load_frames_reads_a_folder_sorted_by_name(tmp_path: Path) -> None:
    frames = write_frames(tmp_path / "clip", 7)
    loaded = load_frames(tmp_path / "clip")
    assert len(loaded) == 7
    for got, want in zip(loaded, frames, strict=True):
        assert got.dtype == np.uint8 and got.shape == (30, 40, 3)
        assert np.array_equal(got, want)


@pytest.mark.parametrize(
    ("num_frames", "expected"), [(3, [0, 3, 6]), (4, [0, 2, 4, 6]), (2, [0, 6]), (10, list(range(7)))]
)
def test_load_frames_samples_evenly(tmp_path: Path, num_frames: int, expected: list[int]) -> None:
    frames = write_frames(tmp_path / "clip", 7)
    loaded = load_frames(str(tmp_path / "clip"), num_frames=num_frames)
    assert len(loaded) == len(expected)
    for got, index in zip(loaded, expected, strict=True):
        assert np.array_equal(got, frames[index])


def test_load_frames_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing"):
        load_frames(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image frames"):
        load_frames(tmp_path / "empty")


def test_load_frames_reads_an_animated_gif(tmp_path: Path) -> None:
    from PIL import Image

    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    images = [Image.new("RGB", (16, 16), c) for c in colours]
    images[0].save(tmp_path / "clip.gif", save_all=True, append_images=images[1:], duration=40, loop=0)
    loaded = load_frames(tmp_path / "clip.gif")
    assert [tuple(int(x) for x in f[0, 0]) for f in loaded] == colours


def test_resize_frames_checks_frames() -> None:
    spec = PatchSpec()
    with pytest.raises(ValueError, match="must not be empty"):
        resize_frames([], spec)
    with pytest.raises(ValueError, match=r"frame 1 must be \[H, W, 3\] uint8"):
        resize_frames([random_frame(28, 28, 0), np.zeros((28, 28, 3), dtype=np.float32)], spec)
    out = resize_frames([random_frame(56, 84, 1)], spec, min_pixels=56 * 56, max_pixels=448 * 448)
    assert out.shape == (1, 3, 56, 84) and out.dtype == torch.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
