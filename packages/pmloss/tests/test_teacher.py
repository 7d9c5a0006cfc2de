"""PointmapTeacher adapters: a model, a directory of pointmaps, the ground truth."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from pmloss import PointmapTeacher, pointmaps_to_points


class _FakePointmapModel(nn.Module):
    """Returns a VGGT-like dict; world point (h, w) of view v encodes (v, h, w) and the image mean."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(3, 3)
        self.seen: list[tuple[int, ...]] = []

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        self.seen.append(tuple(images.shape))
        b, v, _, h, w = images.shape
        grid = torch.stack(
            torch.meshgrid(torch.arange(v), torch.arange(h), torch.arange(w), indexing="ij"), dim=-1
        ).float()
        points = grid.expand(b, v, h, w, 3) + images.mean(dim=2, keepdim=True).permute(0, 1, 3, 4, 2)
        return {"world_points": self.proj(points), "world_points_conf": torch.ones(b, v, h, w)}


def test_from_model_resizes_to_patch_multiples_and_back(make_batch: Callable[..., dict[str, Any]]) -> None:
    batch = make_batch(b=2, v=3, h=30, w=45)
    seen: list[torch.Size] = []

    def model(images: torch.Tensor) -> torch.Tensor:
        seen.append(images.shape)
        b, v, _, h, w = images.shape
        return torch.arange(b * v * h * w * 3, dtype=torch.float32).reshape(b, v, h, w, 3)

    points = PointmapTeacher.from_model(model)(batch)
    assert seen == [torch.Size([2, 3, 3, 28, 42])]  # rounded down to multiples of 14
    small = torch.arange(2 * 3 * 28 * 42 * 3, dtype=torch.float32).reshape(6, 28, 42, 3).permute(0, 3, 1, 2)
    expected = torch.nn.functional.interpolate(small, size=(30, 45), mode="nearest").permute(0, 2, 3, 1)
    assert points.shape == (2, 3 * 30 * 45, 3) and points.dtype == torch.float32
    torch.testing.assert_close(points, expected.reshape(2, -1, 3))


def test_from_model_needs_at_least_one_patch(make_batch: Callable[..., dict[str, Any]]) -> None:
    model = _FakePointmapModel()
    teacher = PointmapTeacher.from_model(model, patch_multiple=14)
    assert teacher(make_batch(h=6, w=8)).shape == (2, 2 * 6 * 8, 3)
    assert model.seen == [(2, 2, 3, 14, 14)]


def test_from_model_without_resizing_keeps_the_order(make_batch: Callable[..., dict[str, Any]]) -> None:
    batch = make_batch(b=1, v=2, h=5, w=7)
    model = _FakePointmapModel()
    pointmaps = PointmapTeacher.from_model(model, patch_multiple=None).pointmaps(batch)
    assert model.seen == [(1, 2, 3, 5, 7)]
    with torch.no_grad():
        expected = model(batch["context"]["image"])["world_points"]
    torch.testing.assert_close(pointmaps, expected)
    torch.testing.assert_close(
        PointmapTeacher.from_model(model, patch_multiple=1)(batch), pointmaps_to_points(expected)
    )


def test_from_model_freezes_and_stays_out_of_the_students_state_dict(
    make_batch: Callable[..., dict[str, Any]],
) -> None:
    model = _FakePointmapModel().train()
    teacher = PointmapTeacher.from_model(model)
    assert not model.training and not any(p.requires_grad for p in model.parameters())

    class Student(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Linear(2, 2)
            self.teacher = teacher

    student = Student().train()
    assert set(student.state_dict()) == {"head.weight", "head.bias"}
    assert not model.training  # student.train() does not reach the teacher
    assert teacher.to("cpu") is teacher
    with torch.enable_grad():
        points = teacher(make_batch())
    assert not points.requires_grad


@pytest.mark.parametrize("wrap", ["tensor", "mapping", "attribute"])
def test_from_model_output_forms(wrap: str, make_batch: Callable[..., dict[str, Any]]) -> None:
    class Output:
        def __init__(self, world_points: torch.Tensor) -> None:
            self.world_points = world_points

    def model(images: torch.Tensor) -> object:
        b, v, _, h, w = images.shape
        points = torch.ones(b, v, h, w, 3)
        return {"tensor": points, "mapping": {"world_points": points}, "attribute": Output(points)}[wrap]

    assert torch.equal(PointmapTeacher.from_model(model)(make_batch()), torch.ones(2, 96, 3))


def test_from_model_errors(make_batch: Callable[..., dict[str, Any]]) -> None:
    with pytest.raises(TypeError, match="model must be callable"):
        PointmapTeacher.from_model("vggt")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="patch_multiple"):
        PointmapTeacher.from_model(lambda x: x, patch_multiple=0)
    with pytest.raises(ValueError, match="autocast_dtype"):
        PointmapTeacher.from_model(lambda x: x, autocast_dtype=torch.float32)
    with pytest.raises(TypeError, match="'world_points' entry"):
        PointmapTeacher.from_model(lambda x: {"depth": x})(make_batch())
    with pytest.raises(ValueError, match=r"\[B, V, H', W', 3\]"):
        PointmapTeacher.from_model(lambda x: x)(make_batch())  # returns images [B, V, 3, H, W]
    with pytest.raises(ValueError, match="'image'"):
        PointmapTeacher.from_model(lambda x: x)({"context": {}})
    with pytest.raises(TypeError, match="batch must be a mapping"):
        PointmapTeacher.from_model(lambda x: x)([1, 2])  # type: ignore[arg-type]


def test_from_directory_npy_and_pt(tmp_path: Path, make_batch: Callable[..., dict[str, Any]]) -> None:
    batch = make_batch(b=2, v=2, h=6, w=8)  # indices [[0, 1], [1, 2]]
    g = torch.Generator().manual_seed(1)
    stored0 = torch.randn(4, 6, 8, 3, generator=g)
    stored1 = torch.randn(3, 3, 4, 3, generator=g)  # half resolution: nearest-upsampled
    np.save(tmp_path / "scene0.npy", stored0.numpy().astype(np.float16))
    torch.save(stored1, tmp_path / "scene1.pt")
    pointmaps = PointmapTeacher.from_directory(tmp_path).pointmaps(batch)
    torch.testing.assert_close(pointmaps[0], stored0[[0, 1]].half().float())
    upsampled = stored1[[1, 2]].repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)
    torch.testing.assert_close(pointmaps[1], upsampled)


def test_from_directory_subfolders_and_single_scene_string(
    tmp_path: Path, make_batch: Callable[..., dict[str, Any]]
) -> None:
    batch = make_batch(b=1, v=2)
    batch["scene"] = "1K/abc"
    (tmp_path / "1K").mkdir()
    np.save(tmp_path / "1K" / "abc.npy", np.ones((2, 6, 8, 3), dtype=np.float32))
    assert torch.equal(PointmapTeacher.from_directory(str(tmp_path))(batch), torch.ones(1, 96, 3))


def test_from_directory_errors(tmp_path: Path, make_batch: Callable[..., dict[str, Any]]) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        PointmapTeacher.from_directory(tmp_path / "missing")
    teacher = PointmapTeacher.from_directory(tmp_path)
    with pytest.raises(FileNotFoundError, match="scene 'scene0'"):
        teacher(make_batch())
    np.save(tmp_path / "scene0.npy", np.zeros((1, 6, 8, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"scene 'scene0': frame indices \[1\] are out of range"):
        teacher(make_batch(b=1))
    np.save(tmp_path / "scene0.npy", np.zeros((2, 6, 8), dtype=np.float32))
    with pytest.raises(ValueError, match=r"\[V_total, H, W, 3\]"):
        teacher(make_batch(b=1))
    batch = make_batch(b=1)
    batch["scene"] = ["../escape"]
    with pytest.raises(ValueError, match="relative path"):
        teacher(batch)
    batch["scene"] = ["a", "b"]
    with pytest.raises(ValueError, match="must name 1 scenes"):
        teacher(batch)
    del batch["context"]["index"]
    with pytest.raises(ValueError, match="'index'"):
        teacher(batch)


def test_from_ground_truth_without_noise(make_batch: Callable[..., dict[str, Any]]) -> None:
    batch = make_batch()
    points = PointmapTeacher.from_ground_truth()(batch)
    torch.testing.assert_close(points, pointmaps_to_points(batch["context"]["pointmap"]))


def test_from_ground_truth_relative_noise_scales_with_depth(
    make_batch: Callable[..., dict[str, Any]],
) -> None:
    batch = make_batch(b=2, v=2, h=40, w=40)
    ctx = batch["context"]
    torch.manual_seed(0)
    noisy = PointmapTeacher.from_ground_truth(noise_std=0.01).pointmaps(batch)
    normalised = (noisy - ctx["pointmap"]) / ctx["depth"][..., None]
    assert abs(normalised.std().item() - 0.01) < 0.0005
    # Without a depth entry the z-depth comes from the cameras: the same scaling.
    del ctx["depth"]
    torch.manual_seed(0)
    torch.testing.assert_close(PointmapTeacher.from_ground_truth(noise_std=0.01).pointmaps(batch), noisy)
    absolute = PointmapTeacher.from_ground_truth(noise_std=0.01, relative=False).pointmaps(batch)
    assert abs((absolute - ctx["pointmap"]).std().item() - 0.01) < 0.0005


def test_from_ground_truth_seeded_noise_is_a_function_of_the_view(
    make_batch: Callable[..., dict[str, Any]],
) -> None:
    batch = make_batch(b=2, v=2)  # scene0 frames [0, 1], scene1 frames [1, 2]
    teacher = PointmapTeacher.from_ground_truth(noise_std=0.05, seed=3)
    first, second = teacher.pointmaps(batch), teacher.pointmaps(batch)
    assert torch.equal(first, second)

    def unit_noise(batch: dict[str, Any], pointmaps: torch.Tensor) -> torch.Tensor:
        return (pointmaps - batch["context"]["pointmap"]) / (0.05 * batch["context"]["depth"][..., None])

    single = make_batch(b=1, v=2, seed=5)  # scene0 frames [0, 1] again, other geometry: the same draws
    torch.testing.assert_close(unit_noise(single, teacher.pointmaps(single))[0], unit_noise(batch, first)[0])
    assert not torch.allclose(
        unit_noise(batch, first)[0, 1], unit_noise(batch, first)[1, 0]
    )  # frame 1 of another scene
    other = PointmapTeacher.from_ground_truth(noise_std=0.05, seed=4).pointmaps(batch)
    assert not torch.allclose(other, first)


def test_from_ground_truth_errors(make_batch: Callable[..., dict[str, Any]]) -> None:
    with pytest.raises(ValueError, match="noise_std"):
        PointmapTeacher.from_ground_truth(noise_std=-0.1)
    with pytest.raises(TypeError, match="seed"):
        PointmapTeacher.from_ground_truth(seed=1.5)  # type: ignore[arg-type]
    batch = make_batch()
    del batch["context"]["pointmap"]
    with pytest.raises(ValueError, match="'pointmap'"):
        PointmapTeacher.from_ground_truth()(batch)
    batch = make_batch()
    batch["context"]["pointmap"] = batch["context"]["pointmap"][:, :1]
    with pytest.raises(ValueError, match="pointmap'] must have shape"):
        PointmapTeacher.from_ground_truth()(batch)
    batch = make_batch()
    del batch["context"]["depth"], batch["context"]["extrinsics"]
    with pytest.raises(ValueError, match="relative=False"):
        PointmapTeacher.from_ground_truth(noise_std=0.1)(batch)


def test_custom_source_is_checked(make_batch: Callable[..., dict[str, Any]]) -> None:
    with pytest.raises(TypeError, match="source must be callable"):
        PointmapTeacher(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must have shape"):
        PointmapTeacher(lambda batch: torch.zeros(2, 2, 6, 7, 3))(make_batch())
    teacher = PointmapTeacher(lambda batch: batch["context"]["pointmap"].double())
    assert teacher(make_batch()).dtype == torch.float32 and "custom" in repr(teacher)
