"""ZPressor against the uncompressed model: cost as the number of input views grows, and quality.

Two reports, both on accel_shared.gs.FeedForwardGS (default GSModelConfig) with and without ZPressor
(6 layers, 1 head) at its extension point:

- scaling: forward time (inference, no grad, median of repeats) and peak memory of one scene as the
  number of input views grows (default 6 to 96), K = 6 anchors; random weights and random images seen by
  cameras on an arc (the cost of a forward does not depend on the values). On the CPU each point runs in
  a fresh process and its peak memory is the peak resident size above the size before the forward; on
  CUDA the peak of torch.cuda.max_memory_allocated above what was allocated before. Writes
  ``<out>/zpressor_scaling_<device>.{json,md}`` and the plot ``<images>/scaling.png``.
- quality: both models trained the same way (same seed, data order, steps, 12 context views; ZPressor with
  K drawn per step in [4, 8]) on procedural scenes, then novel-view PSNR / SSIM on held-out scenes with
  12, 24 and 36 input views (ZPressor: K = 6). Writes ``<out>/zpressor_quality_<device>.{json,md}``.

    python packages/zpressor/benchmarks/bench_zpressor.py            # or: nox -s bench
    python packages/zpressor/benchmarks/bench_zpressor.py --skip-quality --views 6 12 24   # a quick look
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from accel_shared.bench import BenchmarkReport, describe_machine
from accel_shared.gs.model import GSModelConfig
from accel_shared.gs.train import TrainConfig
from zpressor.experiment import (
    CompressorConfig,
    DataConfig,
    evaluate_views,
    load_datasets,
    measure_scaling,
    train_model,
)

ROOT = Path(__file__).resolve().parents[3]
SCALING_COLUMNS = [
    "views",
    "uncompressed ms",
    "ZPressor ms",
    "time ratio",
    "uncompressed MiB",
    "ZPressor MiB",
    "memory ratio",
    "uncompressed ms/view",
    "ZPressor ms/view",
    "uncompressed MiB/view",
    "ZPressor MiB/view",
]
QUALITY_METRICS = [("psnr", "PSNR"), ("ssim", "SSIM"), ("depth_abs_rel", "depth abs-rel")]
QUALITY_COLUMNS = [
    "views",
    "uncompressed PSNR",
    "ZPressor PSNR",
    "Δ PSNR",
    "uncompressed SSIM",
    "ZPressor SSIM",
    "uncompressed depth abs-rel",
    "ZPressor depth abs-rel",
    "uncompressed eval s",
    "ZPressor eval s",
]


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--image-size", type=int, default=48, help="square image size (default: 48)")
    parser.add_argument("--anchors", type=int, default=6, help="K at measurement and evaluation (default: 6)")
    parser.add_argument("--zpressor-layers", type=int, default=6)
    parser.add_argument("--model-config", type=Path, help="JSON of GSModelConfig fields (default: defaults)")
    parser.add_argument("--seed", type=int, default=0)
    scaling = parser.add_argument_group("scaling")
    scaling.add_argument(
        "--views", type=int, nargs="+", default=[6, 12, 24, 36, 48, 72, 96], help="input view counts"
    )
    scaling.add_argument("--repeats", type=int, default=3, help="timed forwards per point (default: 3)")
    scaling.add_argument("--warmup", type=int, default=0, help="extra untimed forwards per point")
    scaling.add_argument("--skip-scaling", action="store_true")
    quality = parser.add_argument_group("quality")
    quality.add_argument("--steps", type=int, default=600, help="training steps per model (default: 600)")
    quality.add_argument(
        "--scenes", type=int, default=100, help="procedural scenes (default: 100, 20%% held out)"
    )
    quality.add_argument("--batch-size", type=int, default=1)
    quality.add_argument("--lr", type=float, default=5e-4)
    quality.add_argument(
        "--train-context", type=int, default=12, help="context views in training (default: 12)"
    )
    quality.add_argument("--min-anchors", type=int, default=4)
    quality.add_argument("--max-anchors", type=int, default=8)
    quality.add_argument(
        "--eval-views", type=int, nargs="+", default=[12, 24, 36], help="input view counts evaluated"
    )
    quality.add_argument("--num-target", type=int, default=4)
    quality.add_argument("--data", type=Path, help="dataset folder (default: a temporary one)")
    quality.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks"))
    parser.add_argument("--images", type=Path, default=ROOT / "docs" / "images" / "zpressor")
    return parser.parse_args(argv)


def _model_config(args: argparse.Namespace) -> GSModelConfig:
    if args.model_config is None:
        return GSModelConfig()
    return GSModelConfig.from_dict(json.loads(args.model_config.read_text()))


def _growth(rows: list[dict[str, Any]], key: str) -> list[float | None]:
    """Per-view increment of ``key`` from the previous view count: Δvalue / Δviews (None for the first)."""
    out: list[float | None] = [None]
    for prev, cur in itertools.pairwise(rows):
        out.append((cur[key] - prev[key]) / (cur["views"] - prev["views"]))
    return out


def _linear_fit(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """Least-squares y ≈ a + b·x: (a, b, R²)."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0
    a = my - b * mx
    total = sum((y - my) ** 2 for y in ys)
    residual = sum((y - a - b * x) ** 2 for x, y in zip(xs, ys, strict=True))
    return a, b, 1.0 - residual / total if total else 1.0


def _plot(rows: list[dict[str, Any]], path: Path, title: str) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: the plot is skipped", file=sys.stderr)
        return None
    views = [r["views"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    panels = (("ms", "forward time (ms)"), ("MiB", "peak memory (MiB)"))
    for ax, (unit, label) in zip(axes, panels, strict=True):
        for name, style in (("uncompressed", "o-"), ("ZPressor", "s-")):
            ax.plot(views, [r[f"{name} {unit}"] for r in rows], style, label=name)
        ax.set_xlabel("input views")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def run_scaling(args: argparse.Namespace) -> BenchmarkReport:
    model_config = _model_config(args)
    points = measure_scaling(
        model_config,
        args.views,
        num_anchors=args.anchors,
        image_size=args.image_size,
        num_layers=args.zpressor_layers,
        warmup=args.warmup,
        repeats=args.repeats,
        device=args.device,
        seed=args.seed,
    )
    by_key = {(p["views"], p["model"]): p for p in points}
    rows: list[dict[str, Any]] = []
    for v in args.views:
        base, zp = by_key[(v, "uncompressed")], by_key[(v, "zpressor")]
        rows.append(
            {
                "views": v,
                "uncompressed ms": base["forward_ms"],
                "ZPressor ms": zp["forward_ms"],
                "time ratio": base["forward_ms"] / zp["forward_ms"],
                "uncompressed MiB": base["peak_mib"],
                "ZPressor MiB": zp["peak_mib"],
                "memory ratio": base["peak_mib"] / zp["peak_mib"] if zp["peak_mib"] > 0 else float("nan"),
            }
        )
    for name in ("uncompressed", "ZPressor"):
        for unit in ("ms", "MiB"):
            for row, step in zip(rows, _growth(rows, f"{name} {unit}"), strict=True):
                row[f"{name} {unit}/view"] = step
    memory = (
        "peak CUDA memory allocated"
        if args.device == "cuda"
        else "peak resident memory (a fresh process per point; glibc's mmap threshold fixed at 128 KiB during "
        "that call, so freed blocks go back to the system and the resident size follows live memory)"
    )
    sources = (
        "all other views"
        if model_config.cost_volume_views is None
        else f"the {model_config.cost_volume_views} nearest views"
    )
    report = BenchmarkReport(
        title=f"ZPressor: forward time and peak memory vs input views ({args.device.upper()})",
        description=(
            f"FeedForwardGS ({'default GSModelConfig' if args.model_config is None else 'GSModelConfig from JSON'}: "
            f"feature_dim {model_config.feature_dim}, {model_config.transformer_layers} cross-view transformer "
            f"layers over all views, plane-sweep cost volume against "
            f"{sources}, "
            f"{model_config.num_depth_candidates} depth candidates) without and with ZPressor "
            f"({args.zpressor_layers} layers, 1 head) compressing the input views to K = {args.anchors} anchors. "
            f"One scene, {args.image_size}×{args.image_size} random images seen by cameras on a forward-facing "
            "arc, random weights (the cost does not depend on their values). Forward only (no grad), median of "
            f"{args.repeats} timed calls after an untimed one at the same size; memory: {memory} of that first "
            "call, above what was in use before it (model weights and inputs excluded). With V <= K the model "
            "skips the compressor, so both columns measure the same computation there. The ms/view and MiB/view "
            "columns are the increments from the previous row divided by the added views: constant or falling "
            "means at most linear growth."
        ),
        columns=SCALING_COLUMNS,
        machine=describe_machine(),
        command=(
            f"python packages/zpressor/benchmarks/bench_zpressor.py --skip-quality --device {args.device} --views "
            f"{' '.join(map(str, args.views))} --image-size {args.image_size}  (or: nox -s bench)"
        ),
    )
    for row in rows:
        report.add_row(row)
    compressed = [r for r in rows if r["views"] > args.anchors]
    if len(compressed) >= 2:
        xs = [float(r["views"]) for r in compressed]
        span = f"{compressed[0]['views']}–{compressed[-1]['views']} views"
        for unit, label in (("ms", "time"), ("MiB", "memory")):
            a, b, r2 = _linear_fit(xs, [r[f"ZPressor {unit}"] for r in compressed])
            report.notes.append(
                f"ZPressor {label} over {span}: least-squares line {a:.4g} + {b:.4g}·V {unit} (R² = {r2:.4f})."
            )
    for row in rows:
        if row["views"] == 36:
            report.notes.append(
                f"At 36 views ZPressor is {row['time ratio']:.3g}× faster and uses {row['memory ratio']:.3g}× less "
                "peak memory than the uncompressed model."
            )
    report.notes.append(
        f"Plot: docs/images/zpressor/{_plot_name(args)}. torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads."
    )
    return report


def _plot_name(args: argparse.Namespace) -> str:
    return "scaling.png" if args.device == "cpu" else f"scaling_{args.device}.png"


def _fmt_views(views: list[int]) -> str:
    return "/".join(map(str, views))


def run_quality(args: argparse.Namespace, workdir: Path) -> BenchmarkReport:
    most = max(args.eval_views)
    data = DataConfig(
        root=args.data or workdir / "scenes",
        generate=args.scenes,
        views_per_scene=most + args.num_target,
        image_size=args.image_size,
        data_seed=args.seed,
        num_context=args.train_context,
        num_target=args.num_target,
        test_fraction=0.2,
    )
    train_set, test_set = load_datasets(data)
    model_config = _model_config(args)
    compressor = CompressorConfig(
        num_layers=args.zpressor_layers,
        min_anchors=args.min_anchors,
        max_anchors=args.max_anchors,
        num_anchors=args.anchors,
    )
    report = BenchmarkReport(
        title=f"ZPressor: novel-view quality vs input views ({args.device.upper()})",
        description=(
            f"FeedForwardGS ({'default GSModelConfig' if args.model_config is None else 'GSModelConfig from JSON'}) "
            f"trained twice with the same seed ({args.seed}), data order, {args.steps} steps, batch "
            f"{args.batch_size}, lr {args.lr} and {args.train_context} context + {args.num_target} target views "
            f"per item: without a compressor, and with ZPressor ({args.zpressor_layers} layers, 1 head; K drawn "
            f"uniformly in [{args.min_anchors}, {args.max_anchors}] per step). {len(train_set)} training and "
            f"{len(test_set)} held-out procedural scenes of {data.views_per_scene} views along a trajectory, "
            f"{args.image_size}×{args.image_size}. Evaluation on the held-out scenes with "
            f"{_fmt_views(args.eval_views)} input views (fixed views per scene, the same for both models; "
            f"{args.num_target} novel target views inside the span of the input views); ZPressor compresses "
            f"them to K = {args.anchors} anchors. "
            "Depth abs-rel: predicted depth of the views the Gaussians come from (the anchors for ZPressor)."
        ),
        columns=QUALITY_COLUMNS,
        machine=describe_machine(),
        command=(
            f"python packages/zpressor/benchmarks/bench_zpressor.py --skip-scaling --device {args.device} --steps "
            f"{args.steps} --scenes {args.scenes}  (or: nox -s bench)"
        ),
    )
    results: dict[str, dict[int, dict[str, float]]] = {}
    seconds: dict[str, float] = {}
    for name, settings in (("uncompressed", None), ("ZPressor", compressor)):
        config = TrainConfig(
            steps=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            warmup_steps=min(100, args.steps // 10),
            ckpt_every=0,
            out_dir=workdir / name,
            seed=args.seed,
            device=args.device,
        )
        start = time.perf_counter()
        model, _ = train_model(model_config, train_set, config, compressor=settings)
        seconds[name] = time.perf_counter() - start
        results[name] = evaluate_views(
            model,
            data.root,
            args.eval_views,
            num_anchors=args.anchors,
            num_target=args.num_target,
            test_fraction=data.test_fraction,
            device=args.device,
        )
    for v in args.eval_views:
        base, zp = results["uncompressed"][v], results["ZPressor"][v]
        row: dict[str, Any] = {"views": v, "Δ PSNR": zp["psnr"] - base["psnr"]}
        for key, label in QUALITY_METRICS:
            row[f"uncompressed {label}"] = base.get(key)
            row[f"ZPressor {label}"] = zp.get(key)
        row["uncompressed eval s"], row["ZPressor eval s"] = base["seconds"], zp["seconds"]
        report.add_row(row)
    report.notes.append(
        f"Training time: uncompressed {seconds['uncompressed']:.0f} s, ZPressor {seconds['ZPressor']:.0f} s "
        f"({args.steps} steps each). torch {torch.__version__}, {torch.get_num_threads()} threads."
    )
    if "lpips" in results["uncompressed"][args.eval_views[0]]:
        lp = ", ".join(
            f"{v}: {results['uncompressed'][v]['lpips']:.4f} → {results['ZPressor'][v]['lpips']:.4f}"
            for v in args.eval_views
        )
        report.notes.append(f"LPIPS (uncompressed → ZPressor) {lp}.")
    return report


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.skip_scaling and args.skip_quality:
        print("nothing to do: --skip-scaling and --skip-quality", file=sys.stderr)
        return 2
    written: list[Path] = []
    if not args.skip_scaling:
        report = run_scaling(args)
        written += report.write(args.out, f"zpressor_scaling_{args.device}")
        print(report.to_markdown())
        rows = report.rows
        plot = _plot(
            rows,
            args.images / _plot_name(args),
            f"FeedForwardGS with and without ZPressor (K = {args.anchors}), "
            f"{args.image_size}×{args.image_size}, {args.device.upper()}",
        )
        if plot is not None:
            written.append(plot)
    if not args.skip_quality:
        with tempfile.TemporaryDirectory() as tmp:
            report = run_quality(args, Path(tmp))
        written += report.write(args.out, f"zpressor_quality_{args.device}")
        print(report.to_markdown())
    print("wrote " + ", ".join(str(p) for p in written), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
