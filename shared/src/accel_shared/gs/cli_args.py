"""Command-line options shared by the 3DGS packages' ``train`` / ``eval`` commands, and what they build.

Each package keeps its own defaults (views per item, image size, run folder) and adds its method's
options; the option names, help texts and checks live here once.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: `--help` should not load the model code
    from accel_shared.gs.data.config import DataConfig
    from accel_shared.gs.model import GSModelConfig

__all__ = ["add_data_args", "add_train_args", "data_config_from_args", "model_config_from_args"]


def add_data_args(
    parser: argparse.ArgumentParser,
    *,
    num_context: int | None,
    generation: tuple[int, int] | None = None,
    views_help: str = "views of generated scenes",
) -> None:
    """The ``data`` group: ``--data``, ``--num-context`` (unless None), ``--num-target``, ``--test-fraction``,
    ``--test-targets``;
    with ``generation = (image_size, views_per_scene)`` also ``--generate``, ``--image-size`` and
    ``--views-per-scene`` with those defaults."""
    group = parser.add_argument_group("data")
    group.add_argument(
        "--data", required=True, type=Path, help="multi-view dataset folder (accel_shared.gs.data)"
    )
    if num_context is not None:
        group.add_argument(
            "--num-context",
            type=int,
            default=num_context,
            help=f"context (input) views per item (default: {num_context})",
        )
    group.add_argument("--num-target", type=int, default=4, help="target views per item (default: 4)")
    group.add_argument(
        "--test-fraction", type=float, default=0.2, help="held-out share of scenes (default: 0.2)"
    )
    group.add_argument(
        "--test-targets",
        choices=["inside", "outside"],
        default="inside",
        help="held-out target views inside the context span (interpolation, the default) or outside it "
        "(extrapolation, PM-Loss's bound-aware protocol); training items always interpolate",
    )
    if generation is not None:
        image_size, views_per_scene = generation
        group.add_argument(
            "--generate", type=int, default=0, help="generate N procedural scenes if --data is empty"
        )
        group.add_argument(
            "--image-size",
            type=int,
            default=image_size,
            help=f"image size of generated scenes (default: {image_size})",
        )
        group.add_argument(
            "--views-per-scene",
            type=int,
            default=views_per_scene,
            help=f"{views_help} (default: {views_per_scene})",
        )


def add_train_args(parser: argparse.ArgumentParser, *, out: Path, batch_size: int) -> None:
    """The ``training`` group: ``--out``, ``--steps``, ``--batch-size``, ``--lr``, ``--warmup``,
    ``--ckpt-every``, ``--no-resume`` and ``--model-config``."""
    group = parser.add_argument_group("training")
    group.add_argument("--out", type=Path, default=out, help=f"run folder (default: {out})")
    group.add_argument("--steps", type=int, default=1000, help="optimizer steps (default: 1000)")
    group.add_argument(
        "--batch-size", type=int, default=batch_size, help=f"scenes per step (default: {batch_size})"
    )
    group.add_argument("--lr", type=float, default=2e-4, help="peak learning rate (default: 2e-4)")
    group.add_argument("--warmup", type=int, default=100, help="warm-up steps (default: 100)")
    group.add_argument("--ckpt-every", type=int, default=200, help="checkpoint interval (default: 200)")
    group.add_argument("--no-resume", action="store_true", help="start fresh even if --out has a checkpoint")
    group.add_argument("--model-config", type=Path, help="JSON of accel_shared.gs.GSModelConfig fields")


def data_config_from_args(args: argparse.Namespace, *, num_context: int | None = None) -> DataConfig:
    """A :class:`DataConfig` from the options of :func:`add_data_args` (generation only where the command
    has ``--generate``); ``num_context`` overrides ``--num-context``."""
    from accel_shared.gs.data.config import DataConfig

    defaults = DataConfig(root=args.data)
    return DataConfig(
        root=args.data,
        generate=getattr(args, "generate", 0),
        views_per_scene=getattr(args, "views_per_scene", defaults.views_per_scene),
        image_size=getattr(args, "image_size", defaults.image_size),
        data_seed=args.seed,
        num_context=num_context
        if num_context is not None
        else getattr(args, "num_context", defaults.num_context),
        num_target=args.num_target,
        test_fraction=args.test_fraction,
        test_targets=getattr(args, "test_targets", defaults.test_targets),
    )


def model_config_from_args(args: argparse.Namespace) -> GSModelConfig:
    """``--model-config`` read as a :class:`GSModelConfig`, or the defaults without it."""
    from accel_shared.gs.model import GSModelConfig

    if args.model_config is None:
        return GSModelConfig()
    if not args.model_config.is_file():
        raise FileNotFoundError(f"--model-config: no such file {args.model_config}")
    try:
        fields = json.loads(args.model_config.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"--model-config: {args.model_config} is not valid JSON ({e.msg})") from None
    return GSModelConfig.from_dict(fields)
