"""On-disk format of a synthetic multi-view dataset: format ``accel_shared.gs.synthetic``, version 1.

A dataset is a folder::

    <root>/meta.json
    <root>/scenes/000000.npz, 000001.npz, ...   (scene index, zero-padded to 6 digits)

``meta.json`` is a JSON object with exactly these fields:

- ``format`` (str): ``"accel_shared.gs.synthetic"``; marks the folder as ours.
- ``version`` (int): format version, 1. Readers refuse any other version.
- ``generator_version`` (int): :data:`synthetic.GENERATOR_VERSION` of the code that rendered the scenes.
- ``num_scenes`` (int) N, ``views_per_scene`` (int) V, ``image_size`` ([H, W] ints).
- ``seed`` (int) and ``antialias`` (int): the arguments of :func:`synthetic.make_scene`; scene ``i`` is
  ``make_scene(seed, i, views_per_scene=V, image_size=(H, W), antialias=antialias)``.
- ``complete`` (bool): false while scenes are being written, true once all N are on disk.

Each scene file is a NumPy ``.npz`` archive (``numpy.savez_compressed``, no pickled objects) holding:

- ``image``: uint8 [V, 3, H, W], ``round(255 · colour)``; loaded as float32 / 255.
- ``depth``: float32 [V, H, W], z-depth (exact ray-cast distance along the camera's z axis).
- ``extrinsics``: float32 [V, 4, 4], camera-to-world, OpenCV axes.
- ``intrinsics``: float32 [V, 3, 3], normalised by the image size (fx/W, fy/H, cx/W, cy/H).
- ``near``, ``far``: float32 [V], depth bounds of the scene (the same value in every view).

Views are ordered along the camera trajectory. Pointmaps are not stored: :func:`load_scene` recomputes
them from depth with :func:`accel_shared.gs.cameras.unproject_depth`, which matches the renderer's
pointmaps to float32 rounding. Scene files are written to a temporary name and renamed, so a file
that exists is whole; ``meta.json`` is rewritten with ``complete: true`` last.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from accel_shared.cli import progress as progress_bar
from accel_shared.gs.cameras import unproject_depth
from accel_shared.gs.data.synthetic import GENERATOR_VERSION, _check_int, check_image_size, make_scene

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "generate_dataset", "load_scene", "read_meta", "scene_name"]

FORMAT_NAME = "accel_shared.gs.synthetic"
FORMAT_VERSION = 1
_SETTINGS = ("generator_version", "num_scenes", "views_per_scene", "image_size", "seed", "antialias")
_ARRAYS = {  # name -> (dtype, shape given V, H, W)
    "image": (np.uint8, lambda v, h, w: (v, 3, h, w)),
    "depth": (np.float32, lambda v, h, w: (v, h, w)),
    "extrinsics": (np.float32, lambda v, h, w: (v, 4, 4)),
    "intrinsics": (np.float32, lambda v, h, w: (v, 3, 3)),
    "near": (np.float32, lambda v, h, w: (v,)),
    "far": (np.float32, lambda v, h, w: (v,)),
}


def scene_name(index: int) -> str:
    """File stem (and item ``"scene"`` name) of scene ``index``: ``"000042"``."""
    return f"{index:06d}"


def _scene_path(root: Path, index: int) -> Path:
    return root / "scenes" / f"{scene_name(index)}.npz"


def _write_json(path: Path, data: dict[str, Any]) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(temporary, path)


def _is_ours(root: Path) -> bool:
    try:
        meta = json.loads((root / "meta.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("format") == FORMAT_NAME


def read_meta(root: str | os.PathLike[str]) -> dict[str, Any]:
    """The checked ``meta.json`` of a complete dataset at ``root`` (fields: see the module docstring).

    Raises FileNotFoundError if ``root`` or its ``meta.json`` is missing, ValueError if the file is not
    valid JSON, not of this format, of another version, or of a dataset whose generation did not finish.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {str(root)!r} does not exist or is not a folder")
    path = root / "meta.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{str(path)!r} is missing: {str(root)!r} is not a synthetic multi-view dataset"
        )
    try:
        meta = json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"{str(path)!r} is not valid JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise ValueError(f"{str(path)!r}: format must be {FORMAT_NAME!r}, got {found!r}")
    if meta.get("version") != FORMAT_VERSION:
        raise ValueError(
            f"{str(path)!r}: format version {meta.get('version')!r} is not supported (this code reads "
            f"version {FORMAT_VERSION}); regenerate the dataset with generate_dataset"
        )
    missing = [key for key in (*_SETTINGS, "complete") if key not in meta]
    if missing:
        raise ValueError(f"{str(path)!r} is corrupt: missing fields {missing}")
    if meta["complete"] is not True:
        raise ValueError(f"{str(root)!r} is incomplete (generation was interrupted); rerun generate_dataset")
    return meta


def generate_dataset(
    root: str | os.PathLike[str],
    num_scenes: int,
    *,
    views_per_scene: int = 8,
    image_size: int | tuple[int, int] = (64, 64),
    seed: int = 0,
    antialias: int = 2,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Render ``num_scenes`` scenes into ``root`` (format: module docstring); returns ``root`` as a Path.

    ``root`` may be missing or empty. A complete dataset of ours with the same settings is reused as it
    is; one whose generation was interrupted is finished (scenes already on disk are kept). A dataset
    of ours with other settings is replaced only with ``overwrite=True``; a non-empty folder that is not
    a dataset of ours is never touched (ValueError).
    """
    _check_int(num_scenes, "num_scenes", 1)
    _check_int(views_per_scene, "views_per_scene", 1)
    _check_int(seed, "seed", 0)
    _check_int(antialias, "antialias", 1)
    height, width = check_image_size(image_size)
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise ValueError(f"root {str(root)!r} exists and is not a folder")
    settings = {
        "generator_version": GENERATOR_VERSION,
        "num_scenes": num_scenes,
        "views_per_scene": views_per_scene,
        "image_size": [height, width],
        "seed": seed,
        "antialias": antialias,
    }
    keep_existing = False
    if root.is_dir() and any(root.iterdir()):
        if not _is_ours(root):
            raise ValueError(
                f"root {str(root)!r} is not empty and holds no {FORMAT_NAME} dataset; refusing to write there"
            )
        old = json.loads((root / "meta.json").read_text())
        same = old.get("version") == FORMAT_VERSION and all(old.get(k) == settings[k] for k in _SETTINGS)
        if same and old.get("complete") is True:
            return root
        if same:
            keep_existing = True
        elif not overwrite:
            changed = {k: (old.get(k), settings[k]) for k in _SETTINGS if old.get(k) != settings[k]}
            raise ValueError(
                f"root {str(root)!r} holds a dataset with other settings (old, new): {changed}; "
                "pass overwrite=True to replace it or choose another root"
            )
        else:
            for path in (root / "scenes").glob("*.npz"):
                path.unlink()
    (root / "scenes").mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT_NAME, "version": FORMAT_VERSION, **settings, "complete": False}
    _write_json(root / "meta.json", meta)
    # The ray-cast tensors are small: intra-op threads gain little and, on a busy machine, spin-wait
    # for cores (4x slower measured on 2 busy cores). Render single-threaded, then restore.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for index in progress_bar(range(num_scenes), desc="scenes", enabled=progress):
            path = _scene_path(root, index)
            if not (keep_existing and path.is_file()):
                _write_scene(
                    path,
                    make_scene(
                        seed,
                        index,
                        views_per_scene=views_per_scene,
                        image_size=(height, width),
                        antialias=antialias,
                    ),
                )
    finally:
        torch.set_num_threads(threads)
    _write_json(root / "meta.json", {**meta, "complete": True})
    return root


def _write_scene(path: Path, scene: dict[str, torch.Tensor]) -> None:
    arrays: dict[str, Any] = {name: scene[name].numpy() for name in _ARRAYS if name != "image"}
    arrays["image"] = (scene["image"] * 255).round().clamp(0, 255).to(torch.uint8).numpy()
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("wb") as file:
        np.savez_compressed(file, **arrays)
    os.replace(temporary, path)


def _read_scene(
    root: Path, meta: dict[str, Any], index: int, views: torch.Tensor | None
) -> dict[str, torch.Tensor]:
    """Arrays of one scene (checked against ``meta``), restricted to ``views`` [K] int64 when given."""
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < meta["num_scenes"]:
        raise ValueError(f"index must be an int in [0, {meta['num_scenes']}), got {index!r}")
    path = _scene_path(root, index)
    if not path.is_file():
        raise FileNotFoundError(f"scene file {str(path)!r} is missing")
    shape_args = (meta["views_per_scene"], *meta["image_size"])
    arrays: dict[str, np.ndarray] = {}
    try:
        with np.load(path, allow_pickle=False) as archive:
            for name, (dtype, shape) in _ARRAYS.items():
                if name not in archive.files:
                    raise ValueError(f"array {name!r} is missing")
                array = archive[name]
                if array.dtype != dtype or array.shape != shape(*shape_args):
                    raise ValueError(
                        f"array {name!r} is {array.dtype} {list(array.shape)}, expected "
                        f"{np.dtype(dtype)} {list(shape(*shape_args))}"
                    )
                arrays[name] = array
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"scene file {str(path)!r} is corrupt: {e}") from None
    scene = {name: torch.from_numpy(array) for name, array in arrays.items()}
    if views is not None:
        scene = {name: value[views] for name, value in scene.items()}
    scene["image"] = scene["image"].float() / 255.0
    scene["pointmap"] = unproject_depth(scene["depth"], scene["extrinsics"], scene["intrinsics"])
    return scene


def load_scene(
    root: str | os.PathLike[str], index: int, *, views: torch.Tensor | list[int] | None = None
) -> dict[str, torch.Tensor]:
    """Scene ``index`` of the dataset at ``root``: the stored arrays plus ``pointmap`` [V, H, W, 3].

    ``image`` comes back as float32 [V, 3, H, W] in [0, 1]; ``views`` (view indices) selects and orders
    a subset of the views. Raises FileNotFoundError for a missing root or scene file and ValueError for a
    bad index or a corrupt file (missing array, wrong dtype or shape, unreadable archive).
    """
    root = Path(root)
    meta = read_meta(root)
    selected = None
    if views is not None:
        selected = torch.as_tensor(views)
        if selected.is_floating_point() or selected.is_complex() or selected.dtype == torch.bool:
            raise TypeError(f"views must hold integer view indices, got {views!r}")
        selected = selected.long()
        count = meta["views_per_scene"]
        if selected.ndim != 1 or bool(((selected < 0) | (selected >= count)).any()):
            raise ValueError(f"views must be a 1-D list of view indices in [0, {count}), got {views!r}")
    return _read_scene(root, meta, index, selected)
