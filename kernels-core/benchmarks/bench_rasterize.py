"""Gaussian rasterizer (projection + tile lists + compositing, forward + backward) on the CPU.

The baseline is the dense pure-torch reference (every pixel against every splat, autograd for
the backward), the same math without tiles or a compiled kernel. Scenes: N random Gaussians in
front of one camera, world-space sizes that give splats of a few pixels, RGB + expected depth.
Times are medians of repeats in one run; the peak memory of one forward + backward is measured
in a fresh process (peak resident size
above the size before the call, ``accel_shared.bench.peak_rss_mib``). Results go to
``<out>/rasterize_cpu.{json,md}``.

    python kernels-core/benchmarks/bench_rasterize.py        # or: nox -s bench
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import torch

import kernels_core
from accel_shared.bench import BenchmarkReport, describe_machine, time_callable
from accel_shared.cli import progress

COLUMNS = [
    "image",
    "Gaussians",
    "tile pairs",
    "dense reference ms",
    "kernels-core ms",
    "speed-up",
    "kernels-core peak MiB",
    "reference peak MiB",
    "grad rel. error",
]
LEAVES = ("means", "quats", "scales", "opacities", "colors")


def make_scene(n: int, size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    focal = 1.1 * size
    return {
        "means": torch.randn(1, n, 3, generator=g) * 0.6,
        "quats": torch.randn(1, n, 4, generator=g),
        "scales": torch.rand(1, n, 3, generator=g) * 0.04 + 0.005,
        "opacities": torch.rand(1, n, generator=g) * 0.95 + 0.04,
        "colors": torch.rand(1, n, 3, generator=g),
        "viewmats": torch.tensor([[[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 3], [0, 0, 0, 1]]]).unsqueeze(0),
        "Ks": torch.tensor([[[focal, 0, size / 2], [0, focal, size / 2], [0, 0, 1]]]).unsqueeze(0),
    }


def forward_backward(fn, scene: dict[str, torch.Tensor], size: int) -> dict[str, torch.Tensor]:
    inputs = {k: v.clone().requires_grad_(k in LEAVES) for k, v in scene.items()}
    out = fn(**inputs, width=size, height=size, render_mode="RGB+ED")
    (out.render.sum() + out.alphas.sum()).backward()
    return {k: inputs[k].grad for k in LEAVES}


def _peak_mib(which: str, n: int, size: int) -> float:
    """Peak extra memory (MiB) of one forward + backward, in a fresh process."""
    code = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
import torch, kernels_core
from kernels_core import reference
from accel_shared.bench import peak_rss_mib
from bench_rasterize import make_scene, forward_backward
scene = make_scene({n}, {size})
fn = {"kernels_core.rasterize_gaussians" if which == "ours" else "reference.rasterize_gaussians"}
forward_backward(fn, make_scene(8, 16), 16)  # load everything once
print(peak_rss_mib(lambda: forward_backward(fn, scene, {size})))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(result.stdout.strip().splitlines()[-1])


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", choices=["cpu"], default="cpu", help="the op is CPU-only (CUDA: gsplat)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--reference-repeats", type=int, default=2)
    parser.add_argument(
        "--scenes",
        nargs="+",
        default=["128x4096", "256x65536"],
        help="SIZExN: image SIZE×SIZE with N Gaussians (default: 128x4096 256x65536)",
    )
    parser.add_argument(
        "--reference-limit",
        type=float,
        default=1e8,
        help="run the dense reference only where pixels × Gaussians is at most this (default: 1e8)",
    )
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks"))
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> BenchmarkReport:
    report = BenchmarkReport(
        title="Gaussian rasterizer, forward + backward (CPU)",
        description=(
            "One camera, N random Gaussians, RGB + expected depth, float32. Each timed call projects, builds "
            "the tile lists, composites, and backpropagates a sum of the outputs to means, quaternions, scales, "
            "opacities and colours. Baseline: the dense pure-torch reference (kernels_core.reference."
            "rasterize_gaussians), same scene, same run; it is measured only where its pixels × Gaussians "
            f"tensors fit. Medians of {args.repeats} repeats ({args.reference_repeats} for the reference) after "
            f"{args.warmup} warm-up. Peak memory: extra RSS of one call in a fresh process."
        ),
        columns=COLUMNS,
        machine=describe_machine(),
        command="python kernels-core/benchmarks/bench_rasterize.py  (or: nox -s bench)",
    )
    configs = []
    for spec in args.scenes:
        size, n = (int(part) for part in spec.lower().split("x"))
        configs.append((size, n, size * size * n <= args.reference_limit))
    for size, n, with_reference in progress(configs, desc="rasterize", total=len(configs)):
        scene = make_scene(n, size)
        projected = kernels_core.project_gaussians(
            scene["means"], scene["quats"], scene["scales"], scene["viewmats"], scene["Ks"], size, size
        )
        pairs = kernels_core.intersect_tiles(
            projected.means2d[0], projected.radii[0], projected.depths[0], 16, size, size
        ).flatten_ids.numel()
        ours = time_callable(
            lambda s=scene, z=size: forward_backward(kernels_core.rasterize_gaussians, s, z),
            warmup=args.warmup,
            repeats=args.repeats,
        )
        row = {
            "image": f"{size}×{size}",
            "Gaussians": n,
            "tile pairs": pairs,
            "kernels-core ms": ours.median_s * 1e3,
            "kernels-core peak MiB": _peak_mib("ours", n, size),
        }
        if with_reference:
            reference = kernels_core.reference.rasterize_gaussians
            base = time_callable(
                lambda s=scene, z=size, r=reference: forward_backward(r, s, z),
                warmup=0,
                repeats=args.reference_repeats,
            )
            grads = forward_backward(kernels_core.rasterize_gaussians, scene, size)
            ref_grads = forward_backward(reference, scene, size)
            error = max(float((grads[k] - ref_grads[k]).norm() / ref_grads[k].norm()) for k in LEAVES)
            row |= {
                "dense reference ms": base.median_s * 1e3,
                "speed-up": base.median_s / ours.median_s,
                "reference peak MiB": _peak_mib("reference", n, size),
                "grad rel. error": error,
            }
        report.add_row(row)
    report.notes.append(
        f"kernels-core {kernels_core.__version__}, {torch.get_num_threads()} threads; tile size 16. "
        "'grad rel. error' is the largest ‖g − g_ref‖ / ‖g_ref‖ over the five Gaussian parameters."
    )
    return report


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    report = run(args)
    json_path, md_path = report.write(args.out, "rasterize_cpu")
    print(report.to_markdown())
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
