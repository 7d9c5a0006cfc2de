"""PM-Loss against no PM-Loss: the same model, data, seed and steps, evaluated on held-out scenes.

Trains accel_shared.gs.FeedForwardGS on procedural scenes (objects in front of textured rooms,
exact depth): once with the photometric loss only, and once per ``--pm-weights`` value with
PM-Loss added (teacher: the ground-truth pointmaps, optionally with noise). Reports novel-view
PSNR / SSIM with the targets inside the context span (interpolation) and outside it (extrapolation,
the paper's bound-aware protocol), each PSNR's paired difference to the baseline over the held-out
scenes with a 95% bootstrap interval, context depth error, the Gaussian centres' distance to the true
surface and the share of floaters at depth boundaries (definitions in pmloss.geometry_metrics). Writes
``<out>/pmloss_cpu.{json,md}`` and rendered examples to ``docs/images/pmloss/``.

    python packages/pmloss/benchmarks/bench_pmloss.py            # or: nox -s bench
    python packages/pmloss/benchmarks/bench_pmloss.py --steps 200 --scenes 24   # a quick look
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import torch

from accel_shared.bench import BenchmarkReport, describe_machine, paired_difference
from accel_shared.gs.evaluation import evaluate
from accel_shared.gs.model import GSModelConfig
from accel_shared.gs.train import TrainConfig
from pmloss.experiment import (
    DataConfig,
    build_teacher,
    evaluate_model,
    load_datasets,
    psnr_with_true_centres,
    render_examples,
    scene_psnr,
    train_model,
)

ROOT = Path(__file__).resolve().parents[3]
DEFAULT_IMAGES = ROOT / "docs" / "images" / "pmloss"
METRICS = [
    ("psnr", "PSNR dB ↑"),
    ("true_centres_psnr", "PSNR, true centres"),
    ("ssim", "SSIM ↑"),
    ("extrapolation_psnr", "extrap. PSNR ↑"),
    ("extrapolation_ssim", "extrap. SSIM ↑"),
    ("depth_abs_rel", "depth abs-rel ↓"),
    ("centre_distance", "centre dist. ↓"),
    ("centre_distance_rel", "centre dist. / depth ↓"),
    ("boundary_distance_rel", "boundary dist. / depth ↓"),
    ("boundary_floaters", "boundary floaters ↓"),
    ("floaters", "floaters (all) ↓"),
]
COLUMNS = ["variant", "train s", *(label for _, label in METRICS)]
# defaults of options the report's command line names only when they differ
NON_DEFAULT_RECORDED: dict[str, float] = {"image_size": 64, "batch_size": 2, "lr": 5e-4, "teacher_noise": 0.0}


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--scenes", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=NON_DEFAULT_RECORDED["image_size"])
    parser.add_argument("--batch-size", type=int, default=NON_DEFAULT_RECORDED["batch_size"])
    parser.add_argument("--lr", type=float, default=NON_DEFAULT_RECORDED["lr"])
    parser.add_argument(
        "--depth-upsampler",
        choices=["bilinear", "convex"],
        default="bilinear",
        help="GSModelConfig.depth_upsampler of every model (default: bilinear, the default model)",
    )
    parser.add_argument(
        "--pretrain-steps",
        type=int,
        default=0,
        help="the paper's protocol: first train one model this many steps without PM-Loss, then fine-tune "
        "every variant (the baseline too) from it for --steps at --finetune-lr (default: 0, from scratch)",
    )
    parser.add_argument("--finetune-lr", type=float, default=2e-4, help="(default: 2e-4, the paper's)")
    parser.add_argument(
        "--pm-weights",
        type=float,
        nargs="*",
        default=[0.005],
        help="PM-Loss weights (with the paper's Sim(3) alignment), one trained variant each (paper: 0.005)",
    )
    parser.add_argument(
        "--unaligned-weights",
        type=float,
        nargs="*",
        default=[0.05],
        help="PM-Loss weights without the alignment (the ground-truth teacher is already in the scene's frame)",
    )
    parser.add_argument(
        "--euclidean-weights",
        type=float,
        nargs="*",
        default=[],
        help="PM-Loss weights without the alignment, with the Euclidean instead of the squared distance",
    )
    parser.add_argument(
        "--decayed-weights",
        type=float,
        nargs="*",
        default=[],
        help="PM-Loss weights without the alignment whose weight decays to 0 from --decay-start on",
    )
    parser.add_argument("--decay-start", type=float, default=0.5, help="fraction of training (default: 0.5)")
    parser.add_argument("--teacher-noise", type=float, default=NON_DEFAULT_RECORDED["teacher_noise"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, help="dataset folder (default: a temporary one)")
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks"))
    parser.add_argument("--name", default="pmloss_cpu", help="report file stem (default: pmloss_cpu)")
    return parser.parse_args(argv)


def _in_repo(path: Path) -> str | None:
    """``path`` relative to the repository, or None outside it (reports name no machine paths, and a
    folder outside the repository is nothing a reader can open)."""
    resolved = path.resolve()
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else None


def _train_config(args: argparse.Namespace, steps: int, lr: float, out_dir: Path) -> TrainConfig:
    return TrainConfig(
        steps=steps,
        batch_size=args.batch_size,
        lr=lr,
        warmup_steps=min(100, steps // 10),
        ckpt_every=0,
        out_dir=out_dir,
        seed=args.seed,
        device=args.device,
    )


def run(args: argparse.Namespace, workdir: Path) -> BenchmarkReport:
    data = DataConfig(
        root=args.data or workdir / "scenes",
        generate=args.scenes,
        image_size=args.image_size,
        data_seed=args.seed,
        num_context=2,
        num_target=4,
        test_fraction=0.2,
    )
    train_set, test_set = load_datasets(data)
    _, extrapolation_set = load_datasets(dataclasses.replace(data, test_targets="outside"))
    model_config = GSModelConfig(depth_upsampler=args.depth_upsampler)
    images = _in_repo(args.images)
    model_description = (
        "default GSModelConfig"
        if args.depth_upsampler == "bilinear"
        else f"default GSModelConfig but depth_upsampler={args.depth_upsampler!r}"
    )
    schedule = (
        f"pre-trained {args.pretrain_steps} steps without PM-Loss at lr {args.lr:g}, then every variant (the "
        f"baseline too) fine-tuned from it for {args.steps} steps at lr {args.finetune_lr:g} (the paper's protocol)"
        if args.pretrain_steps
        else f"trained from scratch for {args.steps} steps at lr {args.lr:g}"
    )
    report = BenchmarkReport(
        title=f"PM-Loss on procedural scenes ({args.device.upper()})",
        description=(
            f"FeedForwardGS ({model_description}), {schedule}, batch {args.batch_size}, "
            f"seed {args.seed}, {args.image_size}×{args.image_size} images, 2 context and 4 target views, "
            f"{len(train_set)} training and {len(test_set)} held-out procedural scenes (8 views each; the "
            "training targets lie between the context views). The "
            "variants differ only in the PM-Loss term: its weight, and whether the teacher is Sim(3)-aligned "
            "to the prediction first (the paper) or compared as it is (single-directional Chamfer either way, "
            "of squared distances unless marked Euclidean; "
            f"teacher: ground-truth pointmaps, relative noise {args.teacher_noise}). "
            "Metrics on the held-out scenes (fixed views): novel-view PSNR/SSIM of 4 targets inside the "
            "context span (interpolation) and, as 'extrap.', of 4 targets outside it (context views 2 and 5, "
            "targets 0, 1, 6, 7: the paper's bound-aware extrapolation protocol); 'PSNR, true centres': the "
            "interpolation PSNR with every Gaussian centre moved onto the true surface point of its pixel and "
            "all other parameters as predicted (a counterfactual estimate of what exact centres would give); depth "
            "abs-rel of the context views; centre distance: mean distance from a Gaussian centre to the "
            "true surface (world units; the scenes span depths of about 2–8); boundary floaters: share of "
            "pixels within one pixel of a depth discontinuity whose Gaussian is more than 5% of its depth "
            "off the surface."
        ),
        columns=COLUMNS,
        machine=describe_machine(),
        command=(
            f"python packages/pmloss/benchmarks/bench_pmloss.py --steps {args.steps} --scenes {args.scenes} "
            + (f"--seed {args.seed} " if args.seed else "")
            + "".join(
                f"--{name.replace('_', '-')} {getattr(args, name):g} "
                for name, default in NON_DEFAULT_RECORDED.items()
                if getattr(args, name) != default
            )
            + (f"--depth-upsampler {args.depth_upsampler} " if args.depth_upsampler != "bilinear" else "")
            + (
                f"--pretrain-steps {args.pretrain_steps} --finetune-lr {args.finetune_lr:g} "
                if args.pretrain_steps
                else ""
            )
            + f"--pm-weights{''.join(f' {w:g}' for w in args.pm_weights)} "
            f"--unaligned-weights{''.join(f' {w:g}' for w in args.unaligned_weights)}"
            + (
                f" --euclidean-weights {' '.join(f'{w:g}' for w in args.euclidean_weights)}"
                if args.euclidean_weights
                else ""
            )
            + (
                f" --decayed-weights {' '.join(f'{w:g}' for w in args.decayed_weights)}"
                f" --decay-start {args.decay_start:g}"
                if args.decayed_weights
                else ""
            )
            + (f" --name {args.name}" if args.name != "pmloss_cpu" else "")
            + (f" --images {images}" if images is not None and args.images != DEFAULT_IMAGES else "")
            + "  (or: nox -s bench)"
        ),
    )
    initial_state = None
    if args.pretrain_steps:
        pretrain = _train_config(args, args.pretrain_steps, args.lr, workdir / "pretrain")
        pretrained, _ = train_model(model_config, train_set, pretrain, teacher=None)
        initial_state = pretrained.state_dict()
    results = {}
    per_scene: dict[str, dict[str, list[float]]] = {}
    # (name, weight, align, distance, decay_start)
    variants: list[tuple[str, float, bool, str, float | None]] = [
        ("without PM-Loss", 0.0, True, "squared", None)
    ]
    variants += [(f"PM-Loss {w:g}, Sim(3)", w, True, "squared", None) for w in args.pm_weights]
    variants += [(f"PM-Loss {w:g}, no alignment", w, False, "squared", None) for w in args.unaligned_weights]
    variants += [
        (f"PM-Loss {w:g}, no alignment, Euclidean", w, False, "euclidean", None)
        for w in args.euclidean_weights
    ]
    decay = args.decay_start
    variants += [
        (f"PM-Loss {w:g}, no alignment, decayed from {100 * decay:g}%", w, False, "squared", decay)
        for w in args.decayed_weights
    ]
    for name, weight, align, distance, decay_start in variants:
        tag = (
            f"weight-{weight:g}"
            + ("" if align else "-unaligned")
            + ("" if distance == "squared" else f"-{distance}")
            + ("" if decay_start is None else "-decayed")
        )
        lr = args.finetune_lr if initial_state is not None else args.lr
        config = _train_config(args, args.steps, lr, workdir / tag)
        teacher = build_teacher("ground-truth", noise=args.teacher_noise, seed=args.seed) if weight else None
        start = time.perf_counter()
        model, _ = train_model(
            model_config,
            train_set,
            config,
            teacher=teacher,
            pm_weight=weight,
            align=align,
            distance=distance,
            decay_start=decay_start,
            initial_state=initial_state,
        )
        seconds = time.perf_counter() - start
        metrics = evaluate_model(model, test_set, device=args.device)
        extrapolation = evaluate(model, extrapolation_set, use_lpips=False)
        metrics["extrapolation_psnr"] = extrapolation["psnr"]
        metrics["extrapolation_ssim"] = extrapolation["ssim"]
        metrics["true_centres_psnr"] = psnr_with_true_centres(model, test_set, device=args.device)
        per_scene[name] = {
            "interpolation": scene_psnr(model, test_set, device=args.device),
            "extrapolation": scene_psnr(model, extrapolation_set, device=args.device),
        }
        results[name] = metrics
        render_examples(model, test_set, args.images / tag, count=3, device=args.device)
        report.add_row(
            {"variant": name, "train s": seconds, **{label: metrics[key] for key, label in METRICS}}
        )
    base = results["without PM-Loss"]
    for name, *_ in variants[1:]:
        pm = results[name]
        change = 1 - pm["centre_distance"] / base["centre_distance"]
        interpolation, extrapolation = (
            paired_difference(per_scene[name][part], per_scene["without PM-Loss"][part])
            for part in ("interpolation", "extrapolation")
        )
        report.notes.append(
            f"{name}: centre distance {100 * change:.1f}% lower than without; boundary floaters "
            f"{base['boundary_floaters']:.3f} → {pm['boundary_floaters']:.3f}; PSNR {base['psnr']:.2f} → "
            f"{pm['psnr']:.2f} dB, paired difference {interpolation} dB; extrapolation PSNR "
            f"{base['extrapolation_psnr']:.2f} → {pm['extrapolation_psnr']:.2f} dB, {extrapolation} dB "
            f"(mean over {interpolation.count} held-out scenes [95% bootstrap interval])."
        )
    report.notes.append(
        (
            f"Rendered examples: {images}/weight-<w>[-unaligned][-euclidean]/ (rows: context, targets, "
            "renderings, depth). "
            if images is not None
            else "Rendered examples were not kept for this run. "
        )
        + f"torch {torch.__version__}, {torch.get_num_threads()} threads; 'train s' includes waiting for "
        "other jobs when the machine is shared."
    )
    return report


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        report = run(args, Path(tmp))
    json_path, md_path = report.write(args.out, args.name)
    print(report.to_markdown())
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
