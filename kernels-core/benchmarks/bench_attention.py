"""Block-sparse attention against dense torch SDPA on the same tensors.

For each head dimension, dtype and block density it times dense SDPA and
``kernels_core.block_sparse_attention`` in the same run (median of repeats) and reports the
speed-up, the kernel's effective throughput (FLOPs of the enabled blocks per second) and, on the
CPU, that throughput as a share of a same-run fp32 matmul (the CPU kernel computes in fp32 for
every input dtype). Results go to ``<out>/attention_<device>.{json,md}``.

    python kernels-core/benchmarks/bench_attention.py                 # CPU, the documented shapes
    python kernels-core/benchmarks/bench_attention.py --device cuda   # GPU: bf16, D=128, S=16k
    python kernels-core/benchmarks/bench_attention.py --seq-len 1024 --repeats 2 --out /tmp/b  # quick
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

import kernels_core
from accel_shared.bench import BenchmarkReport, Timing, describe_machine, time_callable
from accel_shared.cli import progress

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEFAULTS = {
    # device: (seq_len, heads, head dims, dtypes, densities)
    "cpu": (8192, 8, [64, 128], ["float32", "bfloat16"], [1.0, 0.25, 0.1]),
    "cuda": (16384, 8, [128], ["bfloat16"], [1.0, 0.25, 0.1]),
}
COLUMNS = [
    "dtype",
    "D",
    "density",
    "SDPA ms",
    "block-sparse ms",
    "speed-up vs SDPA",
    "effective TFLOP/s",
    "share of matmul",
]


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", choices=sorted(DEFAULTS), default="cpu")
    parser.add_argument("--seq-len", type=int, help="Sq = Sk (default: 8192 on cpu, 16384 on cuda)")
    parser.add_argument("--heads", type=int, help="heads (default 8)")
    parser.add_argument("--head-dims", type=int, nargs="+", help="head dimensions (default: 64 128 on cpu)")
    parser.add_argument("--dtypes", choices=sorted(DTYPES), nargs="+", help="input dtypes")
    parser.add_argument("--densities", type=float, nargs="+", help="block densities (default 1.0 0.25 0.1)")
    parser.add_argument("--block-size", type=int, nargs=2, default=[64, 64], metavar=("BQ", "BK"))
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats; the median is reported")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks"), help="directory for the report")
    args = parser.parse_args(argv)
    seq_len, heads, head_dims, dtypes, densities = DEFAULTS[args.device]
    args.seq_len = args.seq_len or seq_len
    args.heads = args.heads or heads
    args.head_dims = args.head_dims or head_dims
    args.dtypes = args.dtypes or dtypes
    args.densities = args.densities or densities
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible")
    return args


@contextlib.contextmanager
def _sdpa_backend(device: str) -> Iterator[str]:
    """On CUDA, pin SDPA to its flash backend (the baseline the targets are stated against)."""
    if device != "cuda":
        yield "default"
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        yield "flash"


def _matmul_tflops(device: str, repeats: int) -> float:
    """fp32 matmul throughput (CPU: the precision the CPU kernel computes in; GPU: bf16)."""
    n = 2048 if device == "cpu" else 8192
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    timing = time_callable(lambda: torch.mm(a, b), warmup=2, repeats=repeats, device=device)
    return 2 * n**3 / timing.median_s / 1e12


def _time(fn: Callable[[], object], args: argparse.Namespace) -> Timing:
    return time_callable(fn, warmup=args.warmup, repeats=args.repeats, device=args.device)


def run(args: argparse.Namespace) -> BenchmarkReport:
    device, s, h = args.device, args.seq_len, args.heads
    block = tuple(args.block_size)
    matmul = _matmul_tflops(device, args.repeats)
    report = BenchmarkReport(
        title=f"Block-sparse attention vs dense SDPA ({device.upper()})",
        description=(
            f"Forward pass, B=1, H={h}, Sq=Sk={s}, blocks {block[0]}x{block[1]}, random block masks with the "
            "same number of key blocks in every row (diagonal block always kept), not causal. Both sides run "
            "on the same tensors in the same process; times are medians of "
            f"{args.repeats} repeats after {args.warmup} warm-up. Effective TFLOP/s counts 4·B·H·Sq·Sk·D·density "
            f"(the work of the enabled blocks). Same-run matmul reference: {matmul * 1e3:.0f} GFLOP/s "
            f"({'fp32 2048³ on CPU' if device == 'cpu' else 'bf16 8192³'})."
        ),
        columns=COLUMNS,
        machine=describe_machine(),
        command=f"python kernels-core/benchmarks/bench_attention.py --device {device}  (or: nox -s bench)",
    )
    configs = [(d, dt, dens) for d in args.head_dims for dt in args.dtypes for dens in args.densities]
    generator = torch.Generator().manual_seed(0)
    dense_cache: dict[tuple[int, str], tuple[tuple[torch.Tensor, ...], Timing]] = {}
    with _sdpa_backend(device) as backend:
        for head_dim, dtype_name, density in progress(configs, desc="attention configs", total=len(configs)):
            dtype = DTYPES[dtype_name]
            key = (head_dim, dtype_name)
            if key not in dense_cache:
                qkv = tuple(
                    torch.randn(1, h, s, head_dim, generator=generator).to(device, dtype) for _ in range(3)
                )
                q, k, v = qkv
                dense_time = _time(
                    functools.partial(torch.nn.functional.scaled_dot_product_attention, q, k, v), args
                )
                dense_cache[key] = (qkv, dense_time)
            (q, k, v), dense_time = dense_cache[key]
            mask = kernels_core.masks.random_block_mask(1, h, s, s, density, block, generator=generator).to(
                device
            )
            sparse = functools.partial(kernels_core.block_sparse_attention, q, k, v, mask, block_size=block)
            sparse_time = _time(sparse, args)
            actual_density = kernels_core.masks.block_density(mask)
            tflops = 4 * h * s * s * head_dim * actual_density / sparse_time.median_s / 1e12
            report.add_row(
                {
                    "dtype": dtype_name,
                    "D": head_dim,
                    "density": round(actual_density, 3),
                    "SDPA ms": dense_time.median_s * 1e3,
                    "block-sparse ms": sparse_time.median_s * 1e3,
                    "speed-up vs SDPA": dense_time.median_s / sparse_time.median_s,
                    "effective TFLOP/s": tflops,
                    "share of matmul": tflops / matmul,
                }
            )
    report.notes.append(
        f"SDPA backend: {backend}; kernels-core {kernels_core.__version__}, CPU ISA "
        f"{kernels_core.cpu_isa()}, {torch.get_num_threads()} threads."
    )
    report.notes.append("Speed-up = SDPA ms / block-sparse ms (> 1: block-sparse is faster).")
    return report


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    report = run(args)
    json_path, md_path = report.write(args.out, f"attention_{args.device}")
    print(report.to_markdown())
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
