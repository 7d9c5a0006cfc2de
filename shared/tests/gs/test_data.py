"""accel_shared.gs.data: procedural scenes, their on-disk store, and the multi-view datasets."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from accel_shared.gs.cameras import to_pixel_intrinsics, unproject_depth, world_to_camera
from accel_shared.gs.data import (
    FORMAT_VERSION,
    MultiViewDataset,
    Re10kDataset,
    convert_cameras,
    depth_boundaries,
    generate_dataset,
    load_scene,
    make_scene,
    read_meta,
    resize_and_crop,
    sample_views,
)
from accel_shared.gs.data.synthetic import _intersect_room, _rays, _sample_layout

VIEW_KEYS = {"image", "extrinsics", "intrinsics", "near", "far", "depth", "pointmap", "index"}


@pytest.fixture(scope="module")
def scene() -> dict[str, torch.Tensor]:
    return make_scene(1, 2, views_per_scene=8, image_size=(48, 64))


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("synthetic") / "data"
    return generate_dataset(root, 10, views_per_scene=6, image_size=(24, 32), seed=5, progress=False)


# ------------------------------------------------------------------------------------------- synthetic


def test_scene_shapes_ranges_and_cameras(scene):
    v, h, w = 8, 48, 64
    assert scene["image"].shape == (v, 3, h, w) and scene["image"].dtype == torch.float32
    assert float(scene["image"].min()) >= 0.0 and float(scene["image"].max()) <= 1.0
    assert scene["depth"].shape == (v, h, w) and scene["pointmap"].shape == (v, h, w, 3)
    assert scene["extrinsics"].shape == (v, 4, 4) and scene["intrinsics"].shape == (v, 3, 3)
    rotation = scene["extrinsics"][:, :3, :3]
    assert torch.allclose(rotation @ rotation.transpose(-1, -2), torch.eye(3).expand(v, 3, 3), atol=1e-5)
    assert torch.allclose(torch.linalg.det(rotation), torch.ones(v), atol=1e-5)
    fx = scene["intrinsics"][0, 0, 0]  # square pixels, fov 50-60° across the width
    assert torch.allclose(scene["intrinsics"][0, 1, 1] * h, fx * w)
    assert 50 <= math.degrees(2 * math.atan(0.5 / float(fx))) <= 60
    assert torch.all(scene["near"] < scene["depth"].amin()) and torch.all(
        scene["far"] > scene["depth"].amax()
    )


def test_scene_is_deterministic_in_seed_and_index():
    a = make_scene(7, 3, views_per_scene=3, image_size=16)
    b = make_scene(7, 3, views_per_scene=3, image_size=16)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["depth"], make_scene(7, 4, views_per_scene=3, image_size=16)["depth"])
    assert not torch.equal(a["depth"], make_scene(8, 3, views_per_scene=3, image_size=16)["depth"])


def test_pointmap_equals_unprojected_depth(scene):
    unprojected = unproject_depth(scene["depth"], scene["extrinsics"], scene["intrinsics"])
    assert (unprojected - scene["pointmap"]).abs().max() < 1e-4


def test_depth_has_foreground_in_front_of_the_room(scene):
    # Depth along the same pixel-centre rays with the objects removed: only the room.
    layout = _sample_layout(np.random.default_rng(np.random.SeedSequence([1, 2]).spawn(2)[0]))
    centre = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    o, d = _rays(scene["extrinsics"].double(), scene["intrinsics"].double(), 48, 64, centre)
    room = _intersect_room(layout, o.reshape(-1, 3), d.reshape(-1, 3))[0].reshape(8, 48, 64).float()
    assert torch.all(scene["depth"] <= room * (1 + 1e-5))  # nothing behind the walls
    foreground = scene["depth"] < 0.8 * room
    assert foreground.float().mean(dim=(1, 2)).min() > 0.01  # objects well in front, in every view
    edges = depth_boundaries(scene["depth"], 0.1)
    assert edges.shape == scene["depth"].shape and edges.dtype == torch.bool
    assert 0.005 < edges.float().mean() < 0.3
    assert torch.all(edges.flatten(1).any(dim=1))


def test_views_agree_on_geometry_and_colour(scene):
    """Points seen in view A land in view B where B sees the same depth (or something nearer, an
    occluder), never something farther; where the depths agree, the colours agree."""
    _, _, h, w = scene["image"].shape
    for a, b in [(0, 7), (7, 0), (2, 5)]:
        w2c = world_to_camera(scene["extrinsics"][b])
        points = scene["pointmap"][a].reshape(-1, 3) @ w2c[:3, :3].T + w2c[:3, 3]
        z = points[:, 2]
        pixels = (points / z[:, None]) @ to_pixel_intrinsics(scene["intrinsics"][b], h, w).T
        j, i = (pixels[:, 0] - 0.5).round().long(), (pixels[:, 1] - 0.5).round().long()
        inside = (z > 0) & (j >= 0) & (j < w) & (i >= 0) & (i < h)
        i, j, z = i[inside], j[inside], z[inside]
        smooth = ~depth_boundaries(scene["depth"][b], 0.05)[i, j]
        assert inside.float().mean() > 0.5 and smooth.float().mean() > 0.8
        i, j, z = i[smooth], j[smooth], z[smooth]
        relative = (scene["depth"][b][i, j] - z) / z
        assert (relative > 0.03).float().mean() < 0.002  # B never sees through a surface A sees
        same = relative.abs() < 0.03
        assert same.float().mean() > 0.7
        colour_a = scene["image"][a].permute(1, 2, 0).reshape(-1, 3)[inside][smooth][same]
        colour_b = scene["image"][b].permute(1, 2, 0)[i[same], j[same]]
        assert (colour_a - colour_b).abs().median() < 0.02


def test_depth_boundaries_marks_both_sides_of_a_step():
    depth = torch.ones(2, 5, 6)
    depth[..., 3:] = 2.0
    edges = depth_boundaries(depth, 0.5)
    expected = torch.zeros(2, 5, 6, dtype=torch.bool)
    expected[..., 2:4] = True
    assert torch.equal(edges, expected)
    assert not depth_boundaries(depth, 1.5).any()  # a jump of 100 % is below a 150 % threshold
    with pytest.raises(ValueError, match="threshold"):
        depth_boundaries(depth, 0.0)
    with pytest.raises(ValueError, match="positive and finite"):
        depth_boundaries(depth - 1.5, 0.1)
    with pytest.raises(TypeError, match="floating-point"):
        depth_boundaries(torch.ones(4, dtype=torch.int64), 0.1)


def test_make_scene_rejects_bad_arguments():
    with pytest.raises(ValueError, match="views_per_scene"):
        make_scene(0, views_per_scene=0)
    with pytest.raises(TypeError, match="image_size"):
        make_scene(0, image_size=(32, 32, 3))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="seed"):
        make_scene(-1)


# ------------------------------------------------------------------------------------------------ store


def test_store_round_trip(dataset_root):
    meta = read_meta(dataset_root)
    assert meta["version"] == FORMAT_VERSION and meta["num_scenes"] == 10 and meta["image_size"] == [24, 32]
    loaded = load_scene(dataset_root, 3)
    fresh = make_scene(5, 3, views_per_scene=6, image_size=(24, 32))
    assert set(loaded) == set(fresh)
    assert (loaded["image"] - fresh["image"]).abs().max() <= 0.5 / 255 + 1e-6
    for name in ("depth", "extrinsics", "intrinsics", "near", "far"):
        assert torch.equal(loaded[name], fresh[name]), name
    assert (loaded["pointmap"] - fresh["pointmap"]).abs().max() < 1e-4
    subset = load_scene(dataset_root, 3, views=[4, 1])
    assert torch.equal(subset["depth"], fresh["depth"][[4, 1]])


def test_generate_reuses_resumes_and_refuses(tmp_path):
    root = generate_dataset(tmp_path / "d", 2, views_per_scene=2, image_size=8, progress=False)
    scene_file = root / "scenes" / "000001.npz"
    stamp = scene_file.stat().st_mtime_ns
    generate_dataset(root, 2, views_per_scene=2, image_size=8, progress=False)  # same settings: reused
    assert scene_file.stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="other settings"):
        generate_dataset(root, 3, views_per_scene=2, image_size=8, progress=False)
    generate_dataset(root, 3, views_per_scene=2, image_size=8, overwrite=True, progress=False)
    assert read_meta(root)["num_scenes"] == 3

    # An interrupted generation is refused by readers, then finished by a rerun.
    scene_file.unlink()
    meta = json.loads((root / "meta.json").read_text())
    (root / "meta.json").write_text(json.dumps({**meta, "complete": False}))
    with pytest.raises(ValueError, match="incomplete"):
        load_scene(root, 0)
    generate_dataset(root, 3, views_per_scene=2, image_size=8, overwrite=False, progress=False)
    assert scene_file.is_file() and read_meta(root)["complete"] is True

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        generate_dataset(foreign, 1, progress=False)
    assert (foreign / "notes.txt").read_text() == "mine"


def test_store_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_scene(tmp_path / "missing", 0)
    root = generate_dataset(tmp_path / "d", 2, views_per_scene=2, image_size=8, progress=False)
    with pytest.raises(ValueError, match="index"):
        load_scene(root, 2)
    with pytest.raises(ValueError, match="views"):
        load_scene(root, 0, views=[2])
    (root / "scenes" / "000001.npz").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="corrupt"):
        load_scene(root, 1)
    (root / "scenes" / "000001.npz").unlink()
    with pytest.raises(FileNotFoundError, match="000001"):
        load_scene(root, 1)
    meta = json.loads((root / "meta.json").read_text())
    (root / "meta.json").write_text(json.dumps({**meta, "version": FORMAT_VERSION + 1}))
    with pytest.raises(ValueError, match="version"):
        load_scene(root, 0)
    (root / "meta.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_meta(root)


# ---------------------------------------------------------------------------------------------- dataset


def test_splits_are_disjoint_and_cover_all(dataset_root):
    train = MultiViewDataset(dataset_root, split="train", test_fraction=0.2)
    test = MultiViewDataset(dataset_root, split="test", test_fraction=0.2)
    everything = MultiViewDataset(dataset_root, split="all")
    assert test.scenes == [4, 9] and len(train) == 8
    assert set(train.scenes).isdisjoint(test.scenes)
    assert sorted(train.scenes + test.scenes) == everything.scenes == list(range(10))
    assert MultiViewDataset(dataset_root, scenes=range(2, 4)).scenes == [2, 3]
    with pytest.raises(ValueError, match="empty"):
        MultiViewDataset(dataset_root, split="test", test_fraction=0.05)


def test_items_have_documented_shapes_and_collate(dataset_root):
    data = MultiViewDataset(dataset_root, num_context=2, num_target=3, view_sampler="fixed")
    item = data[0]
    assert item["scene"] == "000000"
    for part, count in (("context", 2), ("target", 3)):
        views = item[part]
        assert set(views) == VIEW_KEYS
        assert views["image"].shape == (count, 3, 24, 32) and views["image"].dtype == torch.float32
        assert views["depth"].shape == (count, 24, 32) and views["pointmap"].shape == (count, 24, 32, 3)
        assert views["extrinsics"].shape == (count, 4, 4) and views["intrinsics"].shape == (count, 3, 3)
        assert views["near"].shape == views["far"].shape == (count,)
        assert views["index"].dtype == torch.int64
    full = load_scene(dataset_root, 0)
    assert torch.equal(item["target"]["depth"], full["depth"][item["target"]["index"]])
    batch = next(iter(DataLoader(data, batch_size=4)))
    assert batch["context"]["image"].shape == (4, 2, 3, 24, 32) and len(batch["scene"]) == 4


def test_fixed_views_are_deterministic_and_random_views_vary(dataset_root):
    fixed = MultiViewDataset(dataset_root, view_sampler="fixed", seed=3)
    again = MultiViewDataset(dataset_root, view_sampler="fixed", seed=3)
    assert all(torch.equal(fixed[i]["target"]["index"], again[i]["target"]["index"]) for i in range(3))
    random = MultiViewDataset(dataset_root, num_context=2, num_target=2, view_sampler="random")
    draws = {
        tuple(random[0]["context"]["index"].tolist() + random[0]["target"]["index"].tolist())
        for _ in range(20)
    }
    assert len(draws) > 1
    torch.manual_seed(0)
    first = [random[1]["target"]["index"] for _ in range(3)]
    torch.manual_seed(0)
    assert all(torch.equal(a, random[1]["target"]["index"]) for a in first)


def test_dataset_rejects_bad_arguments(dataset_root, tmp_path):
    with pytest.raises(ValueError, match="num_context"):
        MultiViewDataset(dataset_root, num_context=7)
    with pytest.raises(ValueError, match="view_sampler"):
        MultiViewDataset(dataset_root, view_sampler="sequential")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="split"):
        MultiViewDataset(dataset_root, split="val")  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError):
        MultiViewDataset(tmp_path / "nothing")
    with pytest.raises(IndexError):
        MultiViewDataset(dataset_root)[100]


def test_sample_views_bounds_targets_by_context():
    rng = np.random.default_rng(0)
    for _ in range(50):
        context, target = sample_views(30, num_context=2, num_target=4, rng=rng, context_gap=(10, 20))
        assert 10 <= int(context[1] - context[0]) <= 20
        assert torch.all((target > context[0]) & (target < context[1])) and len(set(target.tolist())) == 4
    context, target = sample_views(40, num_context=24, num_target=4, rng=rng)  # many context views
    assert len(set(context.tolist())) == 24 and torch.all(context[1:] > context[:-1])
    assert not set(target.tolist()) & set(context.tolist())
    context, target = sample_views(8, num_context=8, num_target=3, rng=rng)  # every view is context
    assert context.tolist() == list(range(8)) and len(target) == 3
    with pytest.raises(ValueError, match="num_context"):
        sample_views(8, num_context=9, num_target=1, rng=rng)


def test_sample_views_outside_puts_every_target_beyond_a_centred_context_span():
    rng = np.random.default_rng(0)
    sides = set()
    for _ in range(50):
        context, target = sample_views(8, num_context=2, num_target=4, rng=rng, targets="outside")
        assert context.tolist() == [2, 5]  # default: the widest span leaving 4 views outside, centred
        assert target.tolist() == [0, 1, 6, 7]
        context, target = sample_views(
            30, num_context=3, num_target=6, rng=rng, context_gap=(8, 12), targets="outside"
        )
        first, last = int(context[0]), int(context[-1])
        assert 8 <= last - first <= 12 and len(set(context.tolist())) == 3
        assert abs(first - (29 - last)) <= 1  # centred
        assert torch.all((target < first) | (target > last)) and len(set(target.tolist())) == 6
        sides.update({"before" if t < first else "after" for t in target.tolist()})
    assert sides == {"before", "after"}
    # a gap wider than the sequence allows is clamped so that num_target views stay outside
    context, target = sample_views(
        10, num_context=2, num_target=4, rng=rng, context_gap=(9, 9), targets="outside"
    )
    assert int(context[1] - context[0]) == 5 and torch.all((target < context[0]) | (target > context[1]))
    # one context view: a span of 0, centred, with every other view a candidate target
    seen = set()
    for _ in range(40):
        context, target = sample_views(9, num_context=1, num_target=3, rng=rng, targets="outside")
        assert context.tolist() == [4] and 4 not in target.tolist()
        seen.update(target.tolist())
    assert seen == {0, 1, 2, 3, 5, 6, 7, 8}
    # more context views: evenly spaced inside the span
    context, target = sample_views(12, num_context=3, num_target=4, rng=rng, targets="outside")
    assert context.tolist() == [2, 6, 9]  # span 2..9 (4 views outside), middle view rounded
    assert sorted(target.tolist()) == [0, 1, 10, 11]
    with pytest.raises(ValueError, match="num_context \\+ num_target"):
        sample_views(8, num_context=3, num_target=6, rng=rng, targets="outside")
    with pytest.raises(ValueError, match="targets"):
        sample_views(8, num_context=2, num_target=4, rng=rng, targets="beyond")


def test_dataset_with_targets_outside(dataset_root):
    data = MultiViewDataset(
        dataset_root, num_context=2, num_target=3, view_sampler="fixed", targets="outside"
    )
    for item in (data[0], data[1], data[2]):
        first, last = item["context"]["index"].tolist()
        # 6 views, 3 targets: the widest span leaving 3 views outside is 2 frames, and all 3 are targets
        assert last - first == 2 and first in (1, 2)
        assert item["target"]["index"].tolist() == [i for i in range(6) if not first <= i <= last]
    with pytest.raises(ValueError, match="targets"):
        MultiViewDataset(dataset_root, targets="between")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="views_per_scene"):
        MultiViewDataset(dataset_root, num_context=3, num_target=4, targets="outside")


def test_many_context_views(tmp_path):
    root = generate_dataset(tmp_path / "many", 2, views_per_scene=40, image_size=16, progress=False)
    item = MultiViewDataset(root, num_context=36, num_target=4, split="all")[1]
    assert item["context"]["image"].shape == (36, 3, 16, 16) and item["target"]["image"].shape == (
        4,
        3,
        16,
        16,
    )


# ------------------------------------------------------------------------------------------------ re10k


def _png(array: np.ndarray) -> torch.Tensor:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)


def _ramp(height: int, width: int) -> np.ndarray:
    """R encodes the normalised x of each pixel centre, G the normalised y."""
    u = (np.arange(width) + 0.5) / width
    v = (np.arange(height) + 0.5) / height
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[..., 0] = np.round(255 * u)[None, :]
    image[..., 1] = np.round(255 * v)[:, None]
    return image


def _fake_stage(folder, frames: int = 6, height: int = 60, width: int = 80, index: bool = True):
    folder.mkdir(parents=True)
    generator = torch.Generator().manual_seed(0)
    examples = []
    for number in range(3):
        c2w = torch.eye(4, dtype=torch.float64).repeat(frames, 1, 1)
        q = torch.randn(frames, 4, generator=generator, dtype=torch.float64)
        c2w[:, :3, :3] = torch.linalg.qr(torch.randn(frames, 3, 3, generator=generator, dtype=torch.float64))[
            0
        ]
        c2w[:, :3, :3] *= torch.linalg.det(c2w[:, :3, :3])[:, None, None]  # proper rotations
        c2w[:, :3, 3] = q[:, :3]
        w2c = torch.linalg.inv(c2w)
        cameras = torch.zeros(frames, 18)
        cameras[:, :4] = torch.tensor([0.9, 1.2, 0.48, 0.52])
        cameras[:, 6:] = w2c[:, :3, :].reshape(frames, 12).float()
        examples.append(
            {
                "key": f"clip{number}",
                "url": "",
                "timestamps": torch.arange(frames, dtype=torch.int64),
                "cameras": cameras,
                "images": [_png(_ramp(height, width)) for _ in range(frames)],
                "c2w": c2w,  # extra field, for the test only
            }
        )
    torch.save(examples[:2], folder / "000000.torch")
    torch.save(examples[2:], folder / "000001.torch")
    if index:
        mapping = {"clip0": "000000.torch", "clip1": "000000.torch", "clip2": "000001.torch"}
        (folder / "index.json").write_text(json.dumps(mapping))
    return examples


def test_convert_cameras_inverts_world_to_camera(tmp_path):
    examples = _fake_stage(tmp_path / "train")
    extrinsics, intrinsics = convert_cameras(examples[0]["cameras"])
    assert torch.allclose(extrinsics.double(), examples[0]["c2w"], atol=1e-5)
    assert torch.allclose(intrinsics[0], torch.tensor([[0.9, 0, 0.48], [0, 1.2, 0.52], [0, 0, 1]]))
    with pytest.raises(ValueError, match=r"\[N, 18\]"):
        convert_cameras(torch.zeros(3, 16))


@pytest.mark.parametrize(
    ("size", "crop_axis"), [((32, 32), "width"), ((40, 20), "height"), ((30, 40), "none")]
)
def test_resize_and_crop_adjusts_intrinsics(size, crop_axis):
    """Each output pixel shows the original point its corrected intrinsics say it sees."""
    height, width = size
    k = torch.tensor([[0.9, 0.0, 0.48], [0.0, 1.2, 0.52], [0.0, 0.0, 1.0]])
    image, k_new = resize_and_crop(torch.from_numpy(_ramp(60, 80)).permute(2, 0, 1), k, size)
    assert image.shape == (3, height, width) and image.dtype == torch.float32
    assert torch.allclose(k_new[0, 0] / k_new[1, 1] * width / height, k[0, 0] / k[1, 1] * 80 / 60, rtol=0.03)
    if crop_axis == "none":
        assert torch.allclose(k_new, k)
    # Original normalised coordinates of every output pixel centre: K · K_new⁻¹ · (u, v, 1).
    u = (torch.arange(width) + 0.5) / width
    v = (torch.arange(height) + 0.5) / height
    uv1 = torch.stack([*torch.meshgrid(u, v, indexing="xy"), torch.ones(height, width)], dim=-1)
    original = uv1 @ (k @ torch.linalg.inv(k_new)).T
    interior = (slice(2, -2), slice(2, -2))  # the antialiasing filter clamps at the border
    assert (image[0][interior] - original[..., 0][interior]).abs().max() < 0.012
    assert (image[1][interior] - original[..., 1][interior]).abs().max() < 0.012


def test_re10k_dataset_round_trip(tmp_path):
    examples = _fake_stage(tmp_path / "test")
    data = Re10kDataset(
        tmp_path, stage="test", image_size=(32, 32), num_context=2, num_target=2, near=0.5, far=50
    )
    assert len(data) == 3 and data.keys == ["clip0", "clip1", "clip2"]
    item = data[2]
    assert item["scene"] == "clip2"
    for part in ("context", "target"):
        views = item[part]
        assert set(views) == VIEW_KEYS - {"depth", "pointmap"}
        assert (
            views["image"].shape == (2, 3, 32, 32) and 0 <= views["image"].min() <= views["image"].max() <= 1
        )
        assert torch.allclose(views["extrinsics"].double(), examples[2]["c2w"][views["index"]], atol=1e-5)
        assert torch.all(views["near"] == 0.5) and torch.all(views["far"] == 50)
        # 60×80 -> scaled to 32×43 (rounded), 5 columns cropped on the left
        assert torch.allclose(
            views["intrinsics"][0, 0], torch.tensor([0.9 * 43 / 32, 0.0, (0.48 * 43 - 5) / 32])
        )
    context, target = item["context"]["index"], item["target"]["index"]
    assert int(context[1] - context[0]) == 5  # pixelSplat's gap (45..192) clamped to the 6 frames
    assert torch.all((target > context[0]) & (target < context[1]))
    batch = next(iter(DataLoader(data, batch_size=3)))
    assert batch["context"]["image"].shape == (3, 2, 3, 32, 32)


def test_re10k_without_index_and_errors(tmp_path):
    _fake_stage(tmp_path / "train", frames=3, index=False)
    data = Re10kDataset(tmp_path, image_size=16, num_context=2, num_target=1, view_sampler="fixed")
    assert len(data) == 3 and data[0]["target"]["index"].tolist() == [1]
    with pytest.raises(ValueError, match=r"clip0.*num_context"):
        Re10kDataset(tmp_path, image_size=16, num_context=4, num_target=1)[0]
    with pytest.raises(FileNotFoundError, match="stage folder"):
        Re10kDataset(tmp_path, stage="validation")
    with pytest.raises(ValueError, match="near"):
        Re10kDataset(tmp_path, near=5.0, far=1.0)
    (tmp_path / "train" / "index.json").write_text(json.dumps({"clip9": "000009.torch"}))
    with pytest.raises(FileNotFoundError, match="000009"):
        Re10kDataset(tmp_path)


def test_load_datasets_generates_once_and_checks_the_view_budget(tmp_path) -> None:
    from accel_shared.gs.data import DataConfig, load_datasets

    config = DataConfig(
        root=tmp_path / "d", generate=5, views_per_scene=4, image_size=16, num_context=2, num_target=2
    )
    train_set, test_set = load_datasets(config, show_progress=False)
    assert len(train_set) + len(test_set) == 5 and len(test_set) == 1
    assert train_set[0]["context"]["image"].shape == (2, 3, 16, 16)
    with pytest.raises(ValueError, match="needs 3 \\+ 2 target views per scene"):
        load_datasets(DataConfig(root=tmp_path / "d", num_context=3, num_target=2), show_progress=False)
    with pytest.raises(FileNotFoundError, match="pass --generate N"):
        load_datasets(DataConfig(root=tmp_path / "missing"), show_progress=False)
