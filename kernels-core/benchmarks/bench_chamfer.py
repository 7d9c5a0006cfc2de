"""Chamfer distance (forward + backward) against the dense torch formulation on the same points.

The baseline is what PM-Loss's code and most 3DGS repositories do without a kernel: pairwise
squared distances with torch.cdist, a min over each axis, and autograd through it. Times are
medians of repeats in one run; results go to ``<out>/chamfer_<device>.{json,md}``.

    python kernels-core/benchmarks/bench_chamfer.py                # CPU, the documented sizes
    python kernels-core/benchmarks/bench_chamfer.py --device cuda
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

import kernels_core
from accel_shared.bench import BenchmarkReport, describe_machine, time_callable
from accel_shared.cli import progress

COLUMNS = ["B", "N", "M", "direction", "torch cdist ms", "kernels-core ms", "speed-up", "max |loss diff|"]


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 16384], help="N = M point counts")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks"))
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible")
    return args


def _dense_chamfer(x: torch.Tensor, y: torch.Tensor, single_directional: bool) -> torch.Tensor:
    d = torch.cdist(x, y).square()
    loss = d.min(dim=2).values.mean(dim=1)
    return loss if single_directional else loss + d.min(dim=1).values.mean(dim=1)


def run(args: argparse.Namespace) -> BenchmarkReport:
    report = BenchmarkReport(
        title=f"Chamfer distance, forward + backward ({args.device.upper()})",
        description=(
            "Random points, N = M, float32. Each timed call computes the per-item loss and the gradients of its sum "
            "with respect to both point sets. Baseline: torch.cdist, squared, min over each axis, autograd. "
            f"Medians of {args.repeats} repeats after {args.warmup} warm-up, same tensors, same run."
        ),
        columns=COLUMNS,
        machine=describe_machine(),
        command=f"python kernels-core/benchmarks/bench_chamfer.py --device {args.device}  (or: nox -s bench)",
    )
    generator = torch.Generator().manual_seed(0)
    configs = [(n, single) for n in args.sizes for single in (True, False)]
    for n, single in progress(configs, desc="chamfer", total=len(configs)):
        x = torch.randn(args.batch, n, 3, generator=generator).to(args.device).requires_grad_()
        y = torch.randn(args.batch, n, 3, generator=generator).to(args.device).requires_grad_()

        def dense(x: torch.Tensor = x, y: torch.Tensor = y, single: bool = single) -> torch.Tensor:
            loss = _dense_chamfer(x, y, single)
            torch.autograd.grad(loss.sum(), (x, y))
            return loss

        def ours(x: torch.Tensor = x, y: torch.Tensor = y, single: bool = single) -> torch.Tensor:
            loss = kernels_core.chamfer_distance(x, y, single_directional=single).loss
            torch.autograd.grad(loss.sum(), (x, y))
            return loss

        base = time_callable(dense, warmup=args.warmup, repeats=args.repeats, device=args.device)
        fast = time_callable(ours, warmup=args.warmup, repeats=args.repeats, device=args.device)
        report.add_row(
            {
                "B": args.batch,
                "N": n,
                "M": n,
                "direction": "single" if single else "both",
                "torch cdist ms": base.median_s * 1e3,
                "kernels-core ms": fast.median_s * 1e3,
                "speed-up": base.median_s / fast.median_s,
                "max |loss diff|": (dense() - ours()).abs().max().item(),
            }
        )
    report.notes.append(f"kernels-core {kernels_core.__version__}, CPU ISA {kernels_core.cpu_isa()}.")
    return report


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    report = run(args)
    json_path, md_path = report.write(args.out, f"chamfer_{args.device}")
    print(report.to_markdown())
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
