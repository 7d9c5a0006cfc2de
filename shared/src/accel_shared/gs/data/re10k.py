"""RealEstate10K / DL3DV in the chunk layout of pixelSplat, MVSplat and DepthSplat.

Layout: ``<root>/<stage>/`` holds ``*.torch`` chunk files and ``index.json`` (an object mapping each
example key to the file name of its chunk; when it is missing, the chunks are scanned instead). A chunk
is a list of examples saved with ``torch.save``; an example is a dict:

- ``key`` (str), ``url`` (str), ``timestamps``: int64 [N];
- ``cameras``: float [N, 18]: ``fx, fy, cx, cy`` normalised by the image size, two unused values, then
  the 3×4 world-to-camera matrix (OpenCV axes), row-major;
- ``images``: N uint8 1-D tensors, each an encoded JPEG or PNG.

Items follow :mod:`accel_shared.gs.data.dataset` (``scene`` = the example key) without ``depth`` and
``pointmap``: extrinsics are the inverse of the 4×4 world-to-camera matrices, images are decoded
(Pillow, else torchvision), scaled to cover ``image_size`` and centre-cropped, and the normalised
intrinsics are corrected for the crop. ``near`` / ``far`` are constants given by the user (pixelSplat's
1 and 100 for RealEstate10K by default).
"""

from __future__ import annotations

import io
import json
import os
import zlib
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from accel_shared.gs.data.dataset import _check_count, _check_gap, _check_sampler, sample_views
from accel_shared.gs.data.synthetic import check_image_size

__all__ = ["Re10kDataset", "convert_cameras", "decode_image", "resize_and_crop"]


def convert_cameras(cameras: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """RE10K camera rows [N, 18] -> camera-to-world extrinsics [N, 4, 4], normalised intrinsics [N, 3, 3]
    (float32; the inversion runs in float64)."""
    if not isinstance(cameras, torch.Tensor) or cameras.ndim != 2 or cameras.shape[1] != 18:
        shape = list(cameras.shape) if isinstance(cameras, torch.Tensor) else type(cameras).__name__
        raise ValueError(f"cameras must be a tensor [N, 18], got {shape}")
    cameras = cameras.double()
    count = cameras.shape[0]
    fx, fy, cx, cy = cameras[:, :4].unbind(-1)
    intrinsics = torch.zeros(count, 3, 3, dtype=torch.float64)
    intrinsics[:, 0, 0], intrinsics[:, 1, 1], intrinsics[:, 0, 2], intrinsics[:, 1, 2] = fx, fy, cx, cy
    intrinsics[:, 2, 2] = 1.0
    world_to_camera = torch.eye(4, dtype=torch.float64).repeat(count, 1, 1)
    world_to_camera[:, :3, :] = cameras[:, 6:].reshape(count, 3, 4)
    return torch.linalg.inv(world_to_camera).float(), intrinsics.float()


def decode_image(data: torch.Tensor) -> torch.Tensor:
    """An encoded JPEG/PNG (uint8 1-D tensor) -> RGB uint8 [3, H, W]. Uses Pillow, else torchvision."""
    if not isinstance(data, torch.Tensor) or data.dtype != torch.uint8 or data.ndim != 1:
        raise TypeError("decode_image: data must be a uint8 1-D tensor holding an encoded image")
    try:
        from PIL import Image
    except ImportError:
        try:
            from torchvision.io import ImageReadMode
            from torchvision.io import decode_image as tv_decode
        except ImportError:
            raise ImportError(
                "decoding RE10K images needs Pillow (pip install pillow) or torchvision; neither is installed"
            ) from None
        return tv_decode(data, mode=ImageReadMode.RGB)
    with Image.open(io.BytesIO(data.numpy().tobytes())) as image:
        array = np.asarray(image.convert("RGB"))
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def resize_and_crop(
    image: torch.Tensor, intrinsics: torch.Tensor, image_size: int | tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale ``image`` [3, h, w] (uint8 or float) to cover ``image_size`` = (H, W), keeping its aspect
    ratio, and centre-crop; returns float32 [3, H, W] in [0, 1] and the normalised intrinsics [3, 3] of
    the crop. Scaling leaves normalised intrinsics unchanged; a crop of (top, left) from (h', w') maps
    ``fx -> fx w' / W`` and ``cx -> (cx w' - left) / W`` (likewise y)."""
    height, width = check_image_size(image_size)
    if not isinstance(image, torch.Tensor) or image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"image must be a tensor [3, h, w], got {getattr(image, 'shape', type(image))}")
    pixels = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
    h, w = image.shape[1:]
    scale = max(height / h, width / w)
    scaled_h, scaled_w = max(height, round(h * scale)), max(width, round(w * scale))
    if (scaled_h, scaled_w) != (h, w):
        pixels = F.interpolate(
            pixels[None], size=(scaled_h, scaled_w), mode="bilinear", align_corners=False, antialias=True
        )[0]
    top, left = (scaled_h - height) // 2, (scaled_w - width) // 2
    pixels = pixels[:, top : top + height, left : left + width].clamp(0.0, 1.0)
    k = intrinsics.clone().float()
    k[0, 0], k[0, 2] = k[0, 0] * scaled_w / width, (k[0, 2] * scaled_w - left) / width
    k[1, 1], k[1, 2] = k[1, 1] * scaled_h / height, (k[1, 2] * scaled_h - top) / height
    return pixels.contiguous(), k


def _load_chunk(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise FileNotFoundError(f"chunk file {str(path)!r} is missing")
    try:
        chunk = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a damaged or foreign file
        raise ValueError(f"chunk file {str(path)!r} could not be read: {e}") from None
    if not isinstance(chunk, list) or not all(isinstance(x, dict) and "key" in x for x in chunk):
        raise ValueError(f"chunk file {str(path)!r} is not a list of examples (dicts with a 'key')")
    return chunk


class Re10kDataset(Dataset[dict[str, Any]]):
    """One item per example (video) of ``<root>/<stage>``, with context and target views.

    Args:
        root: the dataset root (holding ``train/`` and ``test/``); stage: the sub-folder to read.
        image_size: output H×W (an int for square).
        num_context, num_target, view_sampler, seed, context_gap: as in
            :class:`~accel_shared.gs.data.dataset.MultiViewDataset`; ``context_gap`` defaults to
            pixelSplat's (45, 192) frames, clamped for shorter videos.
        near, far: depth bounds reported for every view.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        stage: str = "train",
        image_size: int | tuple[int, int] = (256, 256),
        num_context: int = 2,
        num_target: int = 4,
        view_sampler: Literal["random", "fixed"] = "random",
        seed: int = 0,
        near: float = 1.0,
        far: float = 100.0,
        context_gap: tuple[int, int] | None = (45, 192),
    ) -> None:
        self.folder = Path(root) / stage
        if not self.folder.is_dir():
            raise FileNotFoundError(f"RE10K stage folder {str(self.folder)!r} does not exist")
        self.image_size = check_image_size(image_size)
        self.num_context = _check_count(num_context, "num_context")
        self.num_target = _check_count(num_target, "num_target")
        self.view_sampler = _check_sampler(view_sampler)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        self.seed = seed
        if not 0 < near < far:
            raise ValueError(f"near and far must satisfy 0 < near < far, got near={near}, far={far}")
        self.near, self.far = float(near), float(far)
        self.context_gap = _check_gap(context_gap)
        self.index = self._read_index()
        self.keys = sorted(self.index)
        self._chunk_name: str | None = None
        self._chunk: dict[str, dict[str, Any]] = {}

    def _read_index(self) -> dict[str, str]:
        path = self.folder / "index.json"
        if path.is_file():
            try:
                index = json.loads(path.read_text())
            except ValueError as e:
                raise ValueError(f"{str(path)!r} is not valid JSON ({e})") from None
            if not isinstance(index, dict) or not all(isinstance(v, str) for v in index.values()):
                raise ValueError(f"{str(path)!r} must map example keys to chunk file names")
        else:  # no index: scan the chunks (slow for the full dataset, fine for a subset)
            index = {}
            for chunk_path in sorted(self.folder.glob("*.torch")):
                index.update({str(x["key"]): chunk_path.name for x in _load_chunk(chunk_path)})
        if not index:
            raise ValueError(f"RE10K stage folder {str(self.folder)!r} holds no examples")
        missing = sorted({name for name in index.values() if not (self.folder / name).is_file()})
        if missing:
            raise FileNotFoundError(
                f"chunk files named in {str(self.folder)!r}/index.json are missing: {missing}"
            )
        return index

    def __len__(self) -> int:
        return len(self.keys)

    def _example(self, key: str) -> dict[str, Any]:
        name = self.index[key]
        if name != self._chunk_name:
            self._chunk = {str(x["key"]): x for x in _load_chunk(self.folder / name)}
            self._chunk_name = name
        if key not in self._chunk:
            raise ValueError(f"example {key!r} is not in chunk {name!r} although index.json says so")
        return self._chunk[key]

    def _views(
        self,
        example: dict[str, Any],
        indices: torch.Tensor,
        extrinsics: torch.Tensor,
        intrinsics: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        images, ks = [], []
        for i in indices.tolist():
            try:
                decoded = decode_image(example["images"][i])
            except (OSError, ValueError, RuntimeError) as e:
                raise ValueError(f"example {example['key']!r}: frame {i} could not be decoded: {e}") from None
            image, k = resize_and_crop(decoded, intrinsics[i], self.image_size)
            images.append(image)
            ks.append(k)
        count = len(indices)
        return {
            "image": torch.stack(images),
            "extrinsics": extrinsics[indices],
            "intrinsics": torch.stack(ks),
            "near": torch.full((count,), self.near),
            "far": torch.full((count,), self.far),
            "index": indices,
        }

    def __getitem__(self, item: int) -> dict[str, Any]:
        if not -len(self) <= item < len(self):
            raise IndexError(f"item {item} out of range for a dataset of {len(self)} examples")
        key = self.keys[item]
        example = self._example(key)
        cameras, images = example.get("cameras"), example.get("images")
        if (
            not isinstance(cameras, torch.Tensor)
            or not isinstance(images, (list, tuple))
            or len(images) != len(cameras)
        ):
            raise ValueError(f"example {key!r} needs 'cameras' [N, 18] and a list of N encoded 'images'")
        extrinsics, intrinsics = convert_cameras(cameras)
        stream = [self.seed, zlib.crc32(key.encode())]  # "fixed": a function of (seed, key)
        if self.view_sampler == "random":
            stream.append(int(torch.randint(0, 2**62, ()).item()))
        rng = np.random.default_rng(stream)
        try:
            context, target = sample_views(
                len(cameras),
                num_context=self.num_context,
                num_target=self.num_target,
                rng=rng,
                context_gap=self.context_gap,
            )
        except ValueError as e:
            raise ValueError(f"example {key!r}: {e}") from None
        return {
            "scene": key,
            "context": self._views(example, context, extrinsics, intrinsics),
            "target": self._views(example, target, extrinsics, intrinsics),
        }
