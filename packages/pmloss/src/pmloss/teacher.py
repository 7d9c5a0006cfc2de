"""Where the teacher pointmaps come from: a frozen model, files on disk, or the batch's ground truth.

A :class:`PointmapTeacher` maps a batch (the dataset layout of ``accel_shared``'s 3DGS data, collated):

    batch["scene"]                list[str] of length B (a str is accepted when B = 1)
    batch["context"]["image"]     [B, V, 3, H, W] in [0, 1]
    batch["context"]["index"]     [B, V] int64 frame indices within the scene
    batch["context"]["pointmap"]  [B, V, H, W, 3] world points (ground truth)
    batch["context"]["depth"]     [B, V, H, W] z-depth; ["extrinsics"] [B, V, 4, 4] camera-to-world

to teacher points [B, V·H·W, 3] (float32, on the images' device, no gradient) in the (v, h, w) order of
:func:`pmloss.loss.pointmaps_to_points`. Only the entries an adapter uses must be present.

The teacher is deliberately *not* an ``nn.Module``: assigning it to an attribute of the student
registers nothing, so its weights never enter the student's ``state_dict()`` or checkpoint, and
``student.train()`` / ``student.to()`` leave it alone (use :meth:`PointmapTeacher.to`).
"""

from __future__ import annotations

import contextlib
import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from accel_shared.gs.cameras import world_to_camera
from pmloss.loss import pointmaps_to_points

__all__ = ["PointmapTeacher"]

Batch = Mapping[str, Any]
PointmapSource = Callable[[Batch], torch.Tensor]


def _context(batch: object) -> Mapping[str, Any]:
    if not isinstance(batch, Mapping):
        raise TypeError(f"batch must be a mapping with a 'context' entry, got {type(batch).__name__}")
    context = batch.get("context")
    if not isinstance(context, Mapping):
        raise ValueError(
            "batch must have a 'context' mapping (the context views' image, index, pointmap, ...)"
        )
    return context


def _entry(context: Mapping[str, Any], key: str, layout: str, why: str) -> torch.Tensor:
    if key not in context:
        raise ValueError(f"batch['context'] has no {key!r} entry {layout}; {why}")
    value = context[key]
    if not isinstance(value, torch.Tensor):
        raise TypeError(
            f"batch['context'][{key!r}] must be a torch.Tensor {layout}, got {type(value).__name__}"
        )
    return value


def _images(batch: Batch) -> torch.Tensor:
    images = _entry(
        _context(batch), "image", "[B, V, 3, H, W]", "the teacher takes its shape and device from it"
    )
    if images.dim() != 5 or images.shape[2] != 3:
        raise ValueError(
            f"batch['context']['image'] must have shape [B, V, 3, H, W], got {list(images.shape)}"
        )
    return images


def _resize_nearest(pointmaps: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[..., H', W', 3] -> [..., H, W, 3] by nearest-neighbour resampling (a no-op at the same size)."""
    if tuple(pointmaps.shape[-3:-1]) == (height, width):
        return pointmaps
    lead = pointmaps.shape[:-3]
    flat = pointmaps.reshape(-1, *pointmaps.shape[-3:]).permute(0, 3, 1, 2)
    resized = F.interpolate(flat, size=(height, width), mode="nearest")
    return resized.permute(0, 2, 3, 1).reshape(*lead, height, width, 3)


class PointmapTeacher:
    """The source of teacher pointmaps for PM-Loss; build one with an adapter:

    - :meth:`from_model`: a frozen pointmap model (VGGT, Depth Anything 3, ...) run on the context images;
    - :meth:`from_directory`: pointmaps precomputed on disk;
    - :meth:`from_ground_truth`: the batch's ground-truth pointmap, optionally with noise.

    ``teacher(batch)`` -> [B, V·H·W, 3]; ``teacher.pointmaps(batch)`` -> [B, V, H, W, 3].

    Args:
        source: any callable mapping a batch to pointmaps [B, V, H, W, 3] at the context images' size.
        description: shown in ``repr``.
    """

    def __init__(self, source: PointmapSource, *, description: str = "custom") -> None:
        if not callable(source):
            raise TypeError(
                f"source must be callable (batch -> [B, V, H, W, 3]), got {type(source).__name__}"
            )
        self.source = source
        self.description = description

    def __repr__(self) -> str:
        return f"PointmapTeacher({self.description})"

    def pointmaps(self, batch: Batch) -> torch.Tensor:
        """Teacher pointmaps [B, V, H, W, 3], float32, on the context images' device, without gradient."""
        images = _images(batch)
        b, v, _, h, w = images.shape
        with torch.no_grad():
            out = self.source(batch)
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"the teacher's source must return a torch.Tensor, got {type(out).__name__}")
        if tuple(out.shape) != (b, v, h, w, 3):
            raise ValueError(
                f"the teacher's pointmaps must have shape [B, V, H, W, 3] = {[b, v, h, w, 3]} (the context "
                f"images'), got {list(out.shape)}"
            )
        if not out.is_floating_point():
            raise TypeError(f"the teacher's pointmaps must be floating point, got {out.dtype}")
        return out.detach().to(device=images.device, dtype=torch.float32)

    def __call__(self, batch: Batch) -> torch.Tensor:
        """Teacher points [B, V·H·W, 3] in the (v, h, w) order of ``pointmaps_to_points``."""
        return pointmaps_to_points(self.pointmaps(batch))

    def to(self, device: torch.device | str) -> PointmapTeacher:
        """Move the teacher model (if any) to ``device``; returns self."""
        mover = getattr(self.source, "to", None)
        if callable(mover):
            mover(device)
        return self

    @classmethod
    def from_model(
        cls,
        model: Callable[..., Any],
        *,
        patch_multiple: int | None = 14,
        autocast_dtype: torch.dtype | None = torch.bfloat16,
        output_key: str = "world_points",
    ) -> PointmapTeacher:
        """A frozen model run on the context images.

        ``model(images)`` gets images [B, V, 3, H', W'] in [0, 1] and returns world points
        [B, V, H', W', 3], as a tensor, a mapping with an ``output_key`` entry, or an object with that
        attribute (VGGT returns a dict with ``"world_points"``). H', W' are H, W rounded *down* to multiples
        of ``patch_multiple`` (at least one patch; VGGT needs multiples of its 14-pixel patches), resized
        bilinearly; the output is resized back to (H, W) by nearest neighbour. The teacher's frame and
        scale are arbitrary: PM-Loss aligns them away.

        An ``nn.Module`` is put in eval mode with ``requires_grad_(False)`` here; it is not moved (call
        :meth:`to` or move it yourself). It runs under ``torch.no_grad()`` and, on CUDA, under autocast
        to ``autocast_dtype`` (float16 on GPUs without bfloat16; None for full precision). CPU runs in
        full precision.
        """
        if not callable(model):
            raise TypeError(
                f"model must be callable (images [B, V, 3, H, W] -> world points), got {type(model).__name__}"
            )
        if patch_multiple is not None and (
            isinstance(patch_multiple, bool) or not isinstance(patch_multiple, int) or patch_multiple < 1
        ):
            raise ValueError(f"patch_multiple must be a positive int or None, got {patch_multiple!r}")
        if autocast_dtype is not None and autocast_dtype not in (torch.bfloat16, torch.float16):
            raise ValueError(
                f"autocast_dtype must be torch.bfloat16, torch.float16 or None, got {autocast_dtype}"
            )
        if isinstance(model, nn.Module):
            model.eval()
            model.requires_grad_(False)
        source = _ModelSource(model, patch_multiple or 1, autocast_dtype, output_key)
        return cls(source, description=f"model={type(model).__name__}, patch_multiple={patch_multiple}")

    @classmethod
    def from_directory(cls, root: str | Path) -> PointmapTeacher:
        """Pointmaps precomputed on disk, one file per scene.

        Layout: ``<root>/<scene>.npy`` (preferred: memory-mapped, only the needed views are read) or
        ``<root>/<scene>.pt`` (a tensor saved with ``torch.save``), holding [V_total, H, W, 3] world points
        of every frame of the scene in one common frame (any frame and scale). The context views are
        picked by ``batch["context"]["index"]`` and resized to the images' (H, W) by nearest neighbour.
        A scene name may contain ``/`` (sub-folders) but not ``..`` or a leading ``/``.

        Raises (when called): FileNotFoundError naming the scene and the paths tried; ValueError for a
        bad array shape or an index out of range.
        """
        path = Path(root)
        if not path.is_dir():
            raise FileNotFoundError(f"pointmap directory {str(root)!r} does not exist or is not a directory")
        return cls(_DirectorySource(path), description=f"directory={str(root)!r}")

    @classmethod
    def from_ground_truth(
        cls, noise_std: float = 0.0, seed: int | None = None, relative: bool = True
    ) -> PointmapTeacher:
        """The batch's ground-truth pointmap (``batch["context"]["pointmap"]``), optionally with Gaussian noise:
        the stand-in for a learned teacher on synthetic data.

        Args:
            noise_std: standard deviation of isotropic Gaussian noise added to every point (0: none).
            seed: None draws fresh noise from torch's global generator at every call. An int makes the
                noise a fixed function of (seed, scene, frame index): a view always gets the same
                perturbation, like a deterministic teacher (needs ``batch["scene"]`` and
                ``batch["context"]["index"]``).
            relative: the std is ``noise_std`` × the point's depth (``batch["context"]["depth"]``, or the
                z-depth computed from ``["extrinsics"]`` when there is no depth), so errors grow with
                distance as a monocular teacher's do; False: ``noise_std`` in world units.
        """
        if isinstance(noise_std, bool) or not isinstance(noise_std, (int, float)):
            raise TypeError(f"noise_std must be a number, got {noise_std!r}")
        if not (math.isfinite(noise_std) and noise_std >= 0):
            raise ValueError(f"noise_std must be a finite number >= 0, got {noise_std!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"seed must be an int or None, got {seed!r}")
        source = _GroundTruthSource(float(noise_std), seed, bool(relative))
        return cls(
            source, description=f"ground truth, noise_std={noise_std}, relative={relative}, seed={seed}"
        )


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
    if dtype is None or device.type != "cuda":
        return contextlib.nullcontext()
    if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        dtype = torch.float16
    return torch.autocast("cuda", dtype=dtype)


class _ModelSource:
    def __init__(
        self, model: Callable[..., Any], multiple: int, autocast_dtype: torch.dtype | None, key: str
    ):
        self.model = model
        self.multiple = multiple
        self.autocast_dtype = autocast_dtype
        self.key = key

    def to(self, device: torch.device | str) -> None:
        if isinstance(self.model, nn.Module):
            self.model.to(device)

    def _world_points(self, output: object) -> torch.Tensor:
        if isinstance(output, torch.Tensor):
            return output
        if isinstance(output, Mapping) and self.key in output:
            points = output[self.key]
        elif not isinstance(output, Mapping) and hasattr(output, self.key):
            points = getattr(output, self.key)
        else:
            raise TypeError(
                f"the teacher model must return world points [B, V, H, W, 3] as a tensor, a mapping with a "
                f"{self.key!r} entry or an object with that attribute; got {type(output).__name__}"
            )
        if not isinstance(points, torch.Tensor):
            raise TypeError(
                f"the teacher model's {self.key!r} must be a torch.Tensor, got {type(points).__name__}"
            )
        return points

    def __call__(self, batch: Batch) -> torch.Tensor:
        images = _images(batch)
        b, v, c, h, w = images.shape
        size_h = max(self.multiple, h // self.multiple * self.multiple)
        size_w = max(self.multiple, w // self.multiple * self.multiple)
        if (size_h, size_w) != (h, w):
            flat = F.interpolate(
                images.flatten(0, 1), size=(size_h, size_w), mode="bilinear", align_corners=False
            )
            images = flat.reshape(b, v, c, size_h, size_w)
        with _autocast(images.device, self.autocast_dtype):
            points = self._world_points(self.model(images))
        if points.dim() != 5 or tuple(points.shape[:2]) != (b, v) or points.shape[-1] != 3:
            raise ValueError(
                f"the teacher model must return world points [B, V, H', W', 3] with B, V = {b}, {v}, "
                f"got {list(points.shape)}"
            )
        return _resize_nearest(points.float(), h, w)


class _DirectorySource:
    SUFFIXES = (".npy", ".pt")

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, scene: str) -> Path:
        parts = PurePosixPath(scene)
        if not scene or parts.is_absolute() or ".." in parts.parts:
            raise ValueError(f"scene name {scene!r} must be a relative path inside the pointmap directory")
        candidates = [self.root / f"{scene}{suffix}" for suffix in self.SUFFIXES]
        for path in candidates:
            if path.is_file():
                return path
        tried = ", ".join(repr(str(p)) for p in candidates)
        raise FileNotFoundError(f"no precomputed pointmap for scene {scene!r}: tried {tried}")

    def _load(self, scene: str, index: Sequence[int]) -> torch.Tensor:
        path = self._path(scene)
        data: Any
        if path.suffix == ".npy":
            data = np.load(path, mmap_mode="r")
        else:
            data = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(data, torch.Tensor):
                raise TypeError(
                    f"{str(path)!r} must hold a tensor [V_total, H, W, 3], got {type(data).__name__}"
                )
        shape = tuple(data.shape)
        if len(shape) != 4 or shape[-1] != 3:
            raise ValueError(f"{str(path)!r} must hold pointmaps [V_total, H, W, 3], got shape {list(shape)}")
        bad = [i for i in index if not 0 <= i < shape[0]]
        if bad:
            raise ValueError(
                f"scene {scene!r}: frame indices {bad} are out of range for {shape[0]} stored pointmaps"
            )
        if isinstance(data, np.ndarray):
            return torch.from_numpy(np.asarray(data[list(index)], dtype=np.float32))
        return data[list(index)].float()

    def __call__(self, batch: Batch) -> torch.Tensor:
        images = _images(batch)
        b, v, _, h, w = images.shape
        index = _entry(
            _context(batch), "index", "[B, V] int64", "from_directory picks the stored frames with it"
        )
        if index.is_floating_point() or index.is_complex() or tuple(index.shape) != (b, v):
            raise ValueError(
                f"batch['context']['index'] must be an integer tensor [B, V] = {[b, v]}, "
                f"got {index.dtype} {list(index.shape)}"
            )
        scenes = _scenes(batch, b)
        maps = [_resize_nearest(self._load(scene, index[i].tolist()), h, w) for i, scene in enumerate(scenes)]
        return torch.stack(maps).to(images.device)


def _scenes(batch: Batch, batch_size: int) -> list[str]:
    scenes = batch.get("scene")
    if isinstance(scenes, str):
        scenes = [scenes]
    if not isinstance(scenes, Sequence) or not all(isinstance(s, str) for s in scenes):
        raise ValueError(
            f"batch['scene'] must be a list of {batch_size} scene names, got {type(scenes).__name__}"
        )
    if len(scenes) != batch_size:
        raise ValueError(f"batch['scene'] must name {batch_size} scenes (one per item), got {len(scenes)}")
    return list(scenes)


class _GroundTruthSource:
    def __init__(self, noise_std: float, seed: int | None, relative: bool) -> None:
        self.noise_std = noise_std
        self.seed = seed
        self.relative = relative

    def _noise(self, batch: Batch, shape: torch.Size, device: torch.device) -> torch.Tensor:
        if self.seed is None:
            return torch.randn(shape, device=device)
        b, v = shape[:2]
        index = _entry(
            _context(batch), "index", "[B, V] int64", "a seeded from_ground_truth keys its noise on it"
        )
        if tuple(index.shape) != (b, v):
            raise ValueError(
                f"batch['context']['index'] must have shape [B, V] = {[b, v]}, got {list(index.shape)}"
            )
        scenes = _scenes(batch, b)
        draws = []
        for i, scene in enumerate(scenes):
            for frame in index[i].tolist():
                key = zlib.crc32(f"{self.seed}/{scene}/{frame}".encode())
                generator = torch.Generator().manual_seed(key)
                draws.append(torch.randn(tuple(shape[2:]), generator=generator))
        return torch.stack(draws).reshape(shape).to(device)

    def _depth(self, batch: Batch, pointmap: torch.Tensor) -> torch.Tensor:
        context = _context(batch)
        if "depth" in context:
            depth = _entry(context, "depth", "[B, V, H, W]", "relative noise scales with it")
            if tuple(depth.shape) != tuple(pointmap.shape[:-1]):
                raise ValueError(
                    f"batch['context']['depth'] must have shape {list(pointmap.shape[:-1])}, got {list(depth.shape)}"
                )
            return depth.to(pointmap).abs()
        extrinsics = _entry(
            context,
            "extrinsics",
            "[B, V, 4, 4]",
            "relative noise needs the depth or the cameras (set relative=False)",
        )
        to_camera = world_to_camera(extrinsics.to(pointmap))[:, :, None, None]  # [B, V, 1, 1, 4, 4]
        z = (to_camera[..., 2, :3] * pointmap).sum(dim=-1) + to_camera[..., 2, 3]
        return z.abs()

    def __call__(self, batch: Batch) -> torch.Tensor:
        images = _images(batch)
        pointmap = _entry(
            _context(batch), "pointmap", "[B, V, H, W, 3]", "from_ground_truth uses it as the teacher"
        )
        if tuple(pointmap.shape) != (*images.shape[:2], *images.shape[-2:], 3):
            raise ValueError(
                f"batch['context']['pointmap'] must have shape [B, V, H, W, 3] = "
                f"{[*images.shape[:2], *images.shape[-2:], 3]}, got {list(pointmap.shape)}"
            )
        pointmap = pointmap.float()
        if self.noise_std == 0:
            return pointmap
        std = self.noise_std * (self._depth(batch, pointmap)[..., None] if self.relative else 1.0)
        return pointmap + std * self._noise(batch, pointmap.shape, pointmap.device)
