"""The ``pmloss`` command: train and evaluate feed-forward 3DGS with PM-Loss, and a demo.

Usage::

pmloss train --data DIR [--generate N] [--pm-weight 0.005] [--teacher ground-truth|DIR] --out DIR
pmloss eval --model DIR --data DIR --out DIR
pmloss demo [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from accel_shared.cli import CLIError, DemoResult, add_command, add_common_args, emit, make_parser, run_cli
from accel_shared.gs.cli_args import (
    add_data_args,
    add_train_args,
    data_config_from_args,
    model_config_from_args,
)

PROG = "pmloss"

_EPILOG = """\
examples:
  # generate 120 procedural scenes, train with PM-Loss against the ground-truth pointmaps
  pmloss train --data ./scenes --generate 120 --out ./runs/pm --steps 2000
  # the same without PM-Loss (the baseline), same seed
  pmloss train --data ./scenes --out ./runs/base --steps 2000 --pm-weight 0
  # the paper's protocol: fine-tune one trained model with and without PM-Loss
  pmloss train --data ./scenes --out ./runs/pm-ft --init-model ./runs/base/model --steps 1000
  pmloss train --data ./scenes --out ./runs/base-ft --init-model ./runs/base/model --steps 1000 --pm-weight 0
  # held-out metrics with the targets outside the context span (the paper's extrapolation protocol)
  pmloss eval --model ./runs/pm-ft/model --data ./scenes --out ./eval/pm-ft --test-targets outside
  # held-out metrics and rendered examples
  pmloss eval --model ./runs/pm/model --data ./scenes --out ./eval/pm
  pmloss demo
"""


_INIT_RECORD = "init_model.json"  # in OUT: the model a fine-tuning run started from


def _check_init_record(out: Path, init_model: Path, *, resume: bool) -> None:
    """A fine-tuning run resumes only its own checkpoints: CLIError when ``out`` holds a checkpoint that
    was not started from ``init_model`` (its weights would silently replace the ones asked for)."""
    from accel_shared.checkpoint import latest_checkpoint

    if not resume or latest_checkpoint(out) is None:
        return
    record = out / _INIT_RECORD
    started_from = json.loads(record.read_text())["init_model"] if record.is_file() else None
    if started_from != str(init_model.resolve()):
        origin = f"fine-tuned from {started_from}" if started_from else "trained from scratch"
        raise CLIError(
            f"--out {out} holds a checkpoint of a run {origin}, not from --init-model {init_model}; "
            "pass --no-resume to start over there, or choose another --out"
        )


def _train(args: argparse.Namespace) -> int:
    from accel_shared.cli import resolve_device
    from accel_shared.distributed import launched_rank
    from accel_shared.gs.train import TrainConfig
    from pmloss.experiment import build_teacher, evaluate_model, load_datasets, train_model

    if args.pm_weight < 0:
        raise CLIError(f"--pm-weight must be >= 0 (0 trains without PM-Loss), got {args.pm_weight}")
    if args.pm_decay_start is not None and not 0 <= args.pm_decay_start < 1:
        raise CLIError(f"--pm-decay-start must be in [0, 1), got {args.pm_decay_start}")
    initial_state = None
    if args.init_model is not None:
        from accel_shared.gs.model import FeedForwardGS

        if args.model_config is not None:
            raise CLIError("--init-model brings its own model config; drop --model-config")
        if not args.init_model.is_dir():
            raise FileNotFoundError(f"--init-model: no saved model folder at {args.init_model}")
        _check_init_record(args.out, args.init_model, resume=not args.no_resume)
        pretrained = FeedForwardGS.from_pretrained(args.init_model)
        model_config, initial_state = pretrained.config, pretrained.state_dict()
    else:
        model_config = model_config_from_args(args)
    train_set, test_set = load_datasets(data_config_from_args(args), show_progress=not args.json)
    device = resolve_device(args.device)
    train_config = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_steps=args.warmup,
        ckpt_every=args.ckpt_every,
        out_dir=args.out,
        seed=args.seed,
        resume=not args.no_resume,
        device=str(device),
        show_progress=not args.json,
    )
    teacher = (
        build_teacher(args.teacher, noise=args.teacher_noise, seed=args.seed) if args.pm_weight > 0 else None
    )
    if args.init_model is not None and launched_rank() == 0:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / _INIT_RECORD).write_text(
            json.dumps({"init_model": str(args.init_model.resolve())}) + "\n"
        )
    start = time.perf_counter()
    model, result = train_model(
        model_config,
        train_set,
        train_config,
        teacher=teacher,
        pm_weight=args.pm_weight,
        align=not args.no_align,
        distance=args.pm_distance,
        decay_start=args.pm_decay_start,
        initial_state=initial_state,
    )
    seconds = time.perf_counter() - start
    if launched_rank() != 0:  # under torchrun, rank 0 evaluates and reports
        return 0
    metrics = evaluate_model(model, test_set, device=device, show_progress=not args.json)
    summary = {
        "model": str(Path(args.out) / "model"),
        "steps": result.step,
        "resumed_from": result.resumed_from,
        "train_seconds": round(seconds, 2),
        "pm_weight": args.pm_weight,
        "align": not args.no_align,
        "distance": args.pm_distance,
        "teacher": args.teacher if teacher is not None else None,
        "init_model": str(args.init_model) if args.init_model is not None else None,
        **{k: round(v, 6) for k, v in metrics.items()},
    }
    (Path(args.out) / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    emit(summary, as_json=args.json)
    return 0


def _eval(args: argparse.Namespace) -> int:
    from accel_shared.cli import resolve_device
    from accel_shared.gs.model import FeedForwardGS
    from pmloss.experiment import evaluate_model, load_datasets, render_examples

    if not args.model.is_dir():
        raise FileNotFoundError(f"--model: no saved model folder at {args.model}")
    device = resolve_device(args.device)
    _, test_set = load_datasets(data_config_from_args(args), show_progress=not args.json)
    model = FeedForwardGS.from_pretrained(args.model)
    metrics = evaluate_model(
        model, test_set, batch_size=args.batch_size, device=device, show_progress=not args.json
    )
    images = render_examples(model, test_set, args.out / "images", count=args.images, device=str(device))
    summary = {
        "model": str(args.model),
        "test_targets": args.test_targets,
        **{k: round(v, 6) for k, v in metrics.items()},
    }
    summary["images"] = [str(p) for p in images]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    emit(summary, as_json=args.json)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from accel_shared.cli import seed_everything
    from accel_shared.gs.model import GSModelConfig
    from accel_shared.gs.train import TrainConfig
    from pmloss.experiment import DataConfig, build_teacher, evaluate_model, load_datasets, train_model

    seed_everything(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        data = DataConfig(root=Path(tmp) / "scenes", generate=args.scenes, views_per_scene=6, image_size=32)
        data.test_fraction = 0.25
        train_set, test_set = load_datasets(data, show_progress=False)
        model_config = GSModelConfig(
            feature_dim=32, transformer_layers=1, num_depth_candidates=16, head_hidden=16
        )
        results = {}
        for name, weight in (("without", 0.0), ("with", 0.005)):
            config = TrainConfig(
                steps=args.steps,
                batch_size=2,
                warmup_steps=5,
                lr=1e-3,
                ckpt_every=0,
                out_dir=Path(tmp) / name,
                seed=args.seed,
                device="cpu",
                show_progress=not args.json,
            )
            start = time.perf_counter()
            teacher = build_teacher("ground-truth") if weight > 0 else None
            model, _ = train_model(model_config, train_set, config, teacher=teacher, pm_weight=weight)
            seconds = time.perf_counter() - start
            results[name] = (seconds, evaluate_model(model, test_set, show_progress=False))
    (base_s, base), (pm_s, pm) = results["without"], results["with"]
    emit(
        DemoResult(
            method="pmloss",
            baseline="3DGS training without PM-Loss",
            accelerated="with PM-Loss (ground-truth teacher)",
            baseline_time_s=base_s,
            accelerated_time_s=pm_s,
            speed_ratio=base_s / pm_s,
            quality_metric="centre distance with/without",
            quality_value=pm["centre_distance"] / base["centre_distance"],
            notes=(
                f"{args.steps} steps each, 32x32, {args.scenes} procedural scenes; PSNR {base['psnr']:.2f} -> "
                f"{pm['psnr']:.2f} dB; boundary floaters {base['boundary_floaters']:.3f} -> "
                f"{pm['boundary_floaters']:.3f}"
            ),
        ),
        as_json=args.json,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(
        PROG,
        "PM-Loss: a pointmap-guided loss on the Gaussian centres of feed-forward 3D Gaussian Splatting.\n"
        "Trains the accel_shared.gs model (DepthSplat/MVSplat style) with or without it and measures\n"
        "novel-view quality and how well the Gaussians sit on the true surface.",
        epilog=_EPILOG,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = add_command(
        commands,
        "train",
        help="train a feed-forward 3DGS model with (or without) PM-Loss",
        description="Trains FeedForwardGS on a multi-view dataset; checkpoints go to --out and an interrupted "
        "run resumes from there. Writes OUT/model (from_pretrained folder) and OUT/metrics.json (held-out "
        "PSNR, SSIM, depth error, Gaussian-centre distance to the true surface, boundary floaters).",
        epilog=_EPILOG,
    )
    add_data_args(train, num_context=2, generation=(64, 8))
    add_train_args(train, out=Path("runs/pmloss"), batch_size=2)
    train.add_argument(
        "--init-model",
        type=Path,
        metavar="DIR",
        help="fine-tune this saved model (OUT/model of an earlier run) instead of starting from scratch; "
        "the paper's protocol fine-tunes a trained DepthSplat with and without PM-Loss",
    )
    pm = train.add_argument_group("PM-Loss")
    pm.add_argument(
        "--pm-weight", type=float, default=0.005, help="loss weight; 0 = baseline (default: 0.005)"
    )
    pm.add_argument(
        "--teacher",
        default="ground-truth",
        help="'ground-truth' (the dataset's pointmaps) or a folder of precomputed pointmaps <scene>.npy",
    )
    pm.add_argument(
        "--teacher-noise", type=float, default=0.0, help="relative noise on ground-truth pointmaps"
    )
    pm.add_argument(
        "--no-align",
        action="store_true",
        help="skip the Sim(3) alignment (only for teachers already in the scene's frame and scale)",
    )
    pm.add_argument(
        "--pm-distance",
        choices=["squared", "euclidean"],
        default="squared",
        help="Chamfer term: mean squared distance to the nearest teacher point (the paper, default) or mean "
        "Euclidean distance (our option: the same pull on every centre)",
    )
    pm.add_argument(
        "--pm-decay-start",
        type=float,
        metavar="FRACTION",
        help="from this fraction of training on, decay the PM-Loss weight linearly to 0 (default: constant)",
    )
    add_common_args(train, dtype=False)
    train.set_defaults(func=_train)

    evaluate = add_command(
        commands,
        "eval",
        help="held-out metrics and rendered images of a trained model",
        description="Evaluates a saved model on the held-out scenes of --data: PSNR, SSIM, context depth error, "
        "Gaussian-centre distance to the true surface and boundary floaters; saves example renderings.",
        epilog=_EPILOG,
    )
    evaluate.add_argument(
        "--model", required=True, type=Path, help="folder written by `pmloss train` (OUT/model)"
    )
    add_data_args(evaluate, num_context=2)
    evaluate.add_argument("--out", type=Path, default=Path("eval/pmloss"), help="output folder")
    evaluate.add_argument("--images", type=int, default=4, help="scenes to render as PNG (default: 4)")
    evaluate.add_argument("--batch-size", type=int, default=1)
    add_common_args(evaluate, dtype=False)
    evaluate.set_defaults(func=_eval)

    demo = add_command(
        commands,
        "demo",
        help="train tiny models with and without PM-Loss offline and compare them",
        description="Generates a few procedural scenes in a temporary folder, trains the same tiny model twice "
        "(same seed and steps) without and with PM-Loss, and reports the geometry and image metrics.",
    )
    demo.add_argument("--steps", type=int, default=40, help="training steps per model (default: 40)")
    demo.add_argument("--scenes", type=int, default=12, help="procedural scenes (default: 12)")
    add_common_args(demo, dtype=False)
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    return run_cli(lambda args: args.func(args), parser, argv)


if __name__ == "__main__":
    sys.exit(main())
