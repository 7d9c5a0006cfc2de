"""The ``zpressor`` command: train and evaluate feed-forward 3DGS with ZPressor (many views -> K anchors),
and a demo.

Usage::

zpressor train --data DIR [--generate N] [--min-anchors 4 --max-anchors 8 | --no-compress] --out DIR
zpressor eval --model DIR --data DIR --views 12 24 36 [--anchors 6]
zpressor demo [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from accel_shared.cli import CLIError, DemoResult, add_command, add_common_args, emit, make_parser, run_cli
from accel_shared.gs.cli_args import (
    add_data_args,
    add_train_args,
    data_config_from_args,
    model_config_from_args,
)

if TYPE_CHECKING:
    from zpressor.experiment import CompressorConfig

PROG = "zpressor"
RUN_NAME = "zpressor_run.json"  # the settings of a run folder, checked on resume

_EPILOG = """\
examples:
  # 200 procedural scenes of 40 views; ZPressor with K drawn in [4, 8] per step, 12 context views
  zpressor train --data ./scenes --generate 200 --out ./runs/zp --steps 2000
  # the uncompressed baseline: same data, seed, steps and context views
  zpressor train --data ./scenes --out ./runs/base --steps 2000 --no-compress
  # novel-view PSNR / SSIM with 12, 24 and 36 input views (K = 6 anchors)
  zpressor eval --model ./runs/zp/model --data ./scenes --views 12 24 36 --anchors 6
  zpressor demo
"""


def _compressor_config(args: argparse.Namespace) -> CompressorConfig | None:
    from zpressor.experiment import CompressorConfig

    if args.no_compress:
        return None
    low, high, k = args.min_anchors, args.max_anchors, args.anchors
    if low < 1 or low > high:
        raise CLIError(f"need 1 <= --min-anchors <= --max-anchors, got {low} and {high}")
    if high >= args.num_context:
        raise CLIError(
            f"--max-anchors ({high}) must be smaller than --num-context ({args.num_context}): with K >= the "
            "number of views there is nothing to compress"
        )
    if k < 1:
        raise CLIError(f"--anchors must be >= 1, got {k}")
    if args.zpressor_layers < 1 or args.zpressor_heads < 1:
        raise CLIError("--zpressor-layers and --zpressor-heads must be >= 1")
    return CompressorConfig(
        num_layers=args.zpressor_layers,
        num_heads=args.zpressor_heads,
        min_anchors=low,
        max_anchors=high,
        num_anchors=k,
    )


def _check_run_folder(out: Path, settings: dict[str, Any], resume: bool) -> None:
    """Refuse to resume a run folder that holds a run with other settings (e.g. the other variant)."""
    path = out / RUN_NAME
    if resume and path.is_file():
        old = json.loads(path.read_text())
        changed = {k: (old.get(k), v) for k, v in settings.items() if old.get(k) != v}
        if changed:
            raise CLIError(
                f"--out {out} holds a run with other settings (old, new): {changed}; choose another --out "
                "or pass --no-resume"
            )
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=2) + "\n")


def _rounded(metrics: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 6) for k, v in metrics.items()}


def _train(args: argparse.Namespace) -> int:
    from accel_shared.cli import resolve_device
    from accel_shared.distributed import launched_rank
    from accel_shared.gs.train import TrainConfig
    from zpressor.experiment import evaluate_views, load_datasets, train_model

    compressor = _compressor_config(args)
    if args.steps < 1:
        raise CLIError(f"--steps must be >= 1, got {args.steps}")
    model_config = model_config_from_args(args)
    train_set, _ = load_datasets(data_config_from_args(args), show_progress=not args.json)
    device = resolve_device(args.device)
    settings = {
        "compress": compressor is not None,
        "compressor": compressor.to_dict() if compressor else None,
        "model_config": model_config.to_dict(),
        "num_context": args.num_context,
        "num_target": args.num_target,
    }
    _check_run_folder(args.out, settings, resume=not args.no_resume)
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
    start = time.perf_counter()
    model, result = train_model(model_config, train_set, train_config, compressor=compressor)
    seconds = time.perf_counter() - start
    if launched_rank() != 0:  # under torchrun, rank 0 evaluates and reports
        return 0
    k = compressor.num_anchors if compressor else None
    metrics = evaluate_views(
        model,
        args.data,
        [args.num_context],
        num_anchors=k,
        num_target=args.num_target,
        test_fraction=args.test_fraction,
        test_targets=args.test_targets,
        device=device,
        show_progress=not args.json,
    )[args.num_context]
    summary = {
        "model": str(args.out / "model"),
        "compressed": compressor is not None,
        "min_anchors": compressor.min_anchors if compressor else None,
        "max_anchors": compressor.max_anchors if compressor else None,
        "anchors": k,
        "num_context": args.num_context,
        "steps": result.step,
        "resumed_from": result.resumed_from,
        "train_seconds": round(seconds, 2),
        **_rounded(metrics),
    }
    (args.out / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    emit(summary, as_json=args.json)
    return 0


def _views(values: list[int]) -> list[int]:
    bad = [v for v in values if v < 1]
    if bad:
        raise CLIError(f"--views must be positive numbers of context views, got {bad}")
    return list(dict.fromkeys(values))  # in the given order, without repeats


def _eval(args: argparse.Namespace) -> int:
    from accel_shared.cli import resolve_device
    from zpressor.experiment import evaluate_views, load_model

    if not args.model.is_dir():
        raise FileNotFoundError(f"--model: no saved model folder at {args.model}")
    views = _views(args.views)
    device = resolve_device(args.device)
    model = load_model(args.model, map_location=device)
    compressed = model.compressor is not None
    k = args.anchors if args.anchors is not None else model.config.num_anchors
    if compressed and (k is None or k < 1):
        raise CLIError(f"--anchors must be >= 1, got {k}")
    results = evaluate_views(
        model,
        args.data,
        views,
        num_anchors=k if compressed else None,
        num_target=args.num_target,
        test_fraction=args.test_fraction,
        test_targets=args.test_targets,
        batch_size=args.batch_size,
        device=device,
        show_progress=not args.json,
    )
    rows = [{"views": v, **_rounded(m)} for v, m in results.items()]
    summary: dict[str, Any] = {
        "model": str(args.model),
        "compressed": compressed,
        "anchors": k if compressed else None,
        "results": rows,
    }
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    if args.json:
        emit(summary, as_json=True)
        return 0
    print(f"model : {args.model}")
    print(
        f"views : {'ZPressor, K = ' + str(k) + ' anchors' if compressed else 'all input views (no compressor)'}"
    )
    names = [n for n in ("psnr", "ssim", "lpips", "depth_abs_rel", "num_scenes", "seconds") if n in rows[0]]
    print("  ".join(["views".rjust(5), *(n.rjust(13) for n in names)]))
    for row in rows:
        print("  ".join([str(row["views"]).rjust(5), *(f"{row[n]:13.4f}" for n in names)]))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from accel_shared.bench import time_callable
    from accel_shared.cli import seed_everything
    from accel_shared.gs.model import GSModelConfig
    from accel_shared.gs.train import TrainConfig
    from zpressor.experiment import (
        CompressorConfig,
        DataConfig,
        evaluate_views,
        load_datasets,
        synthetic_context,
        train_model,
    )

    if args.steps < 1 or args.scenes < 2:
        raise CLIError("demo: need --steps >= 1 and --scenes >= 2")
    seed_everything(args.seed)
    views, speed_views, size, k = 12, 24, 32, 4
    with tempfile.TemporaryDirectory() as tmp:
        data = DataConfig(
            root=Path(tmp) / "scenes",
            generate=args.scenes,
            views_per_scene=views + 4,
            image_size=size,
            num_context=8,
            num_target=4,
            test_fraction=0.25,
        )
        train_set, _ = load_datasets(data, show_progress=False)
        model_config = GSModelConfig(
            feature_dim=32, num_heads=2, transformer_layers=1, num_depth_candidates=16, head_hidden=16
        )
        results = {}
        for name, compressor in (
            ("uncompressed", None),
            ("zpressor", CompressorConfig(num_layers=2, min_anchors=3, max_anchors=5, num_anchors=k)),
        ):
            config = TrainConfig(
                steps=args.steps,
                batch_size=1,
                warmup_steps=5,
                lr=1e-3,
                ckpt_every=0,
                out_dir=Path(tmp) / name,
                seed=args.seed,
                device="cpu",
                show_progress=not args.json,
            )
            model, _ = train_model(model_config, train_set, config, compressor=compressor)
            metrics = evaluate_views(
                model, data.root, [views], num_anchors=k, test_fraction=0.25, show_progress=False
            )[views]
            context = synthetic_context(speed_views, size, seed=args.seed)
            anchors = k if compressor else None

            def forward(m: Any = model, c: Any = context, a: int | None = anchors) -> None:
                import torch

                with torch.no_grad():
                    m(c, num_anchors=a)

            model.eval()
            timing = time_callable(forward, warmup=1, repeats=5)
            results[name] = (timing.median_s, metrics)
    (base_s, base), (zp_s, zp) = results["uncompressed"], results["zpressor"]
    emit(
        DemoResult(
            method="zpressor",
            baseline=f"FeedForwardGS on all {speed_views} input views",
            accelerated=f"ZPressor: {speed_views} views compressed to K = {k} anchors",
            baseline_time_s=base_s,
            accelerated_time_s=zp_s,
            speed_ratio=base_s / zp_s,
            quality_metric="PSNR ZPressor - uncompressed (dB)",
            quality_value=zp["psnr"] - base["psnr"],
            notes=(
                f"forward (no grad) at {speed_views} views, {size}x{size}, random images; {args.steps} training steps "
                f"each on {args.scenes} procedural scenes with 8 context views (K in [3, 5]); held-out PSNR "
                f"at {views} views {base['psnr']:.2f} -> {zp['psnr']:.2f} dB, SSIM {base['ssim']:.3f} -> "
                f"{zp['ssim']:.3f}"
            ),
        ),
        as_json=args.json,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(
        PROG,
        "ZPressor: compress many input views into a few anchor views so that feed-forward 3D Gaussian\n"
        "Splatting scales to 100+ views. Trains the accel_shared.gs model (DepthSplat/MVSplat style) with\n"
        "ZPressor at its extension point (or without, the baseline) and evaluates novel views as the\n"
        "number of input views grows.",
        epilog=_EPILOG,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = add_command(
        commands,
        "train",
        help="train a feed-forward 3DGS model with ZPressor (or without: --no-compress)",
        description="Trains FeedForwardGS on a multi-view dataset, with ZPressor compressing the --num-context "
        "views to K anchors, K drawn per step from [--min-anchors, --max-anchors]. Checkpoints go to --out and "
        "an interrupted run resumes from there. Writes OUT/model (from_pretrained folder plus zpressor.json) "
        "and OUT/metrics.json (held-out PSNR, SSIM, depth error at --num-context views, K = --anchors).",
        epilog=_EPILOG,
    )
    add_data_args(
        train,
        num_context=12,
        generation=(48, 40),
        views_help="views of generated scenes; evaluating V views needs V + --num-target",
    )
    add_train_args(train, out=Path("runs/zpressor"), batch_size=1)
    zp = train.add_argument_group("ZPressor")
    zp.add_argument("--no-compress", action="store_true", help="train the uncompressed baseline")
    zp.add_argument(
        "--min-anchors", type=int, default=4, help="smallest K drawn per training step (default: 4)"
    )
    zp.add_argument(
        "--max-anchors", type=int, default=8, help="largest K drawn per training step (default: 8)"
    )
    zp.add_argument(
        "--anchors", type=int, default=6, help="K for evaluation, stored with the model (default: 6)"
    )
    zp.add_argument("--zpressor-layers", type=int, default=6, help="ZPressor layers (default: 6)")
    zp.add_argument("--zpressor-heads", type=int, default=1, help="ZPressor attention heads (default: 1)")
    add_common_args(train, dtype=False)
    train.set_defaults(func=_train)

    evaluate = add_command(
        commands,
        "eval",
        help="held-out novel-view PSNR / SSIM of a trained model at several numbers of input views",
        description="Evaluates a saved model on the held-out scenes of --data once per number of context views "
        "in --views (fixed views per scene), rendering --num-target novel views each time. A model with "
        "ZPressor compresses the views to --anchors anchors (default: the K it was saved with).",
        epilog=_EPILOG,
    )
    evaluate.add_argument(
        "--model", required=True, type=Path, help="folder written by `zpressor train` (OUT/model)"
    )
    add_data_args(evaluate, num_context=None)
    evaluate.add_argument(
        "--views",
        type=int,
        nargs="+",
        default=[12, 24, 36],
        help="numbers of input (context) views to evaluate (default: 12 24 36)",
    )
    evaluate.add_argument("--anchors", type=int, help="K anchors (default: the model's)")
    evaluate.add_argument("--batch-size", type=int, default=1)
    evaluate.add_argument("--out", type=Path, help="also write OUT/metrics.json")
    add_common_args(evaluate, dtype=False)
    evaluate.set_defaults(func=_eval)

    demo = add_command(
        commands,
        "demo",
        help="train tiny models with and without ZPressor offline and compare them",
        description="Generates a few procedural scenes of 16 views (32×32) in a temporary folder, trains the same "
        "tiny model twice (same seed and steps, 8 context views), without and with ZPressor, and reports the "
        "forward-time ratio at 24 input views and the held-out PSNR difference at 12.",
    )
    demo.add_argument("--steps", type=int, default=30, help="training steps per model (default: 30)")
    demo.add_argument("--scenes", type=int, default=8, help="procedural scenes (default: 8)")
    add_common_args(demo, device=False, dtype=False)
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    return run_cli(lambda args: args.func(args), parser, argv)


if __name__ == "__main__":
    sys.exit(main())
