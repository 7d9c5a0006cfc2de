"""Multi-view data for the 3DGS base: procedural scenes with exact depth, their on-disk store, and
context/target datasets (synthetic and RealEstate10K / DL3DV chunks).

- :func:`make_scene`: render one procedural scene (images, depth, pointmaps, cameras, near/far).
- :func:`depth_boundaries`: pixels next to a depth discontinuity.
- :func:`generate_dataset`, :func:`load_scene`, :func:`read_meta`, :func:`scene_name`: the on-disk
  format (documented in :mod:`accel_shared.gs.data.store`).
- :class:`DataConfig`, :func:`load_datasets`, :func:`check_views`: an experiment's train / test
  datasets, generated on first use.
- :class:`MultiViewDataset`: context/target items from a generated dataset; :func:`sample_views`: the
  bounded view sampler it uses.
- :class:`Re10kDataset`: the same items from pixelSplat-style ``*.torch`` chunks, with
  :func:`convert_cameras`, :func:`decode_image` and :func:`resize_and_crop`.
"""

from accel_shared.gs.data.config import DataConfig, check_views, load_datasets
from accel_shared.gs.data.dataset import MultiViewDataset, sample_views
from accel_shared.gs.data.re10k import Re10kDataset, convert_cameras, decode_image, resize_and_crop
from accel_shared.gs.data.store import (
    FORMAT_NAME,
    FORMAT_VERSION,
    generate_dataset,
    load_scene,
    read_meta,
    scene_name,
)
from accel_shared.gs.data.synthetic import GENERATOR_VERSION, depth_boundaries, make_scene

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "GENERATOR_VERSION",
    "DataConfig",
    "MultiViewDataset",
    "Re10kDataset",
    "check_views",
    "convert_cameras",
    "decode_image",
    "depth_boundaries",
    "generate_dataset",
    "load_datasets",
    "load_scene",
    "make_scene",
    "read_meta",
    "resize_and_crop",
    "sample_views",
    "scene_name",
]
