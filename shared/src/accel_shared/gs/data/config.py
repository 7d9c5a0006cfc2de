"""Where an experiment's multi-view data lives and how its train / test datasets are drawn."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from accel_shared.gs.data.dataset import MultiViewDataset
from accel_shared.gs.data.store import generate_dataset, read_meta

__all__ = ["DataConfig", "check_views", "load_datasets"]


@dataclass
class DataConfig:
    """Where the multi-view data lives and how items are drawn from it.

    Attributes:
        root: a dataset of :mod:`accel_shared.gs.data` (generated there when ``generate`` > 0 and the
            folder holds none).
        generate: number of procedural scenes to generate when ``root`` holds no dataset (0: never).
        views_per_scene, image_size, data_seed: generator settings (used only when generating).
        num_context, num_target: views per item (targets are never context views).
        test_fraction: share of scenes held out for evaluation.
        test_targets: where the held-out items' target views lie: ``"inside"`` the context span
            (interpolation) or ``"outside"`` it (extrapolation, the bound-aware protocol PM-Loss evaluates
            with); see :func:`~accel_shared.gs.data.sample_views`. Training items always interpolate.
    """

    root: str | Path
    generate: int = 0
    views_per_scene: int = 8
    image_size: int = 64
    data_seed: int = 0
    num_context: int = 2
    num_target: int = 4
    test_fraction: float = 0.2
    test_targets: Literal["inside", "outside"] = "inside"


def check_views(root: str | Path, num_context: int, num_target: int, *, what: str = "--num-context") -> None:
    """ValueError unless the dataset at ``root`` has ``num_context + num_target`` views per scene (so the
    targets are novel views, never context views); ``what`` names the option in the message."""
    have = int(read_meta(root)["views_per_scene"])
    if num_context < 1 or num_target < 1:
        raise ValueError(f"{what} and --num-target must be >= 1, got {num_context} and {num_target}")
    if num_context + num_target > have:
        raise ValueError(
            f"{what} {num_context} needs {num_context} + {num_target} target views per scene, but the dataset "
            f"at {root} has {have}; generate one with --views-per-scene {num_context + num_target} or more"
        )


def load_datasets(
    config: DataConfig, *, show_progress: bool = True
) -> tuple[MultiViewDataset, MultiViewDataset]:
    """(train, test) datasets; generates the scenes first when asked to and none are there. The train
    set draws random views, the test set fixed ones (the same for every model evaluated), placed as
    ``config.test_targets`` says."""
    root = Path(config.root)
    if not (root / "meta.json").is_file():
        if config.generate <= 0:
            raise FileNotFoundError(f"no multi-view dataset at {root} (meta.json missing); pass --generate N")
        generate_dataset(
            root,
            config.generate,
            views_per_scene=config.views_per_scene,
            image_size=(config.image_size, config.image_size),
            seed=config.data_seed,
            progress=show_progress,
        )
    check_views(root, config.num_context, config.num_target)
    views, fraction = (config.num_context, config.num_target), config.test_fraction
    train_set = MultiViewDataset(
        root, num_context=views[0], num_target=views[1], split="train", test_fraction=fraction
    )
    test_set = MultiViewDataset(
        root,
        num_context=views[0],
        num_target=views[1],
        split="test",
        test_fraction=fraction,
        view_sampler="fixed",
        targets=config.test_targets,
    )
    return train_set, test_set
