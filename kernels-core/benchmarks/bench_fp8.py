"""FP8 and 3D tile-sparse attention against dense SDPA on video-shaped inputs.

Four ways to compute one self-attention over a T x H x W video latent, on the same tensors in the
same run (median of repeats): dense SDPA (the baseline), FP8 dense, tile-sparse (sliding-tile
window, ``block_sparse_attention`` on tile-ordered tokens) and FP8 + tile-sparse
(``fp8_block_sparse_attention``). Each row gives the time, the speed-up over SDPA, and the error
against float32 SDPA under the same mask (relative L2 and cosine): the sparse rows are compared
with the masked exact attention, so the error shown is what the kernel adds, not what the window
drops. The sparse rows include the tile reorder and restore of Q, K, V and the output; the FP8
rows include quantizing Q, K and V. Results: ``<out>/fp8_attention_<device>.{json,md}``.

    python kernels-core/benchmarks/bench_fp8.py                  # CPU: 8 x 32 x 40 latent, 10,240 tokens
    python kernels-core/benchmarks/bench_fp8.py --device cuda    # GPU: Wan 720p latent 20 x 48 x 80, bf16
    python kernels-core/benchmarks/bench_fp8.py --video 4 16 16 --repeats 2 --out /tmp/b   # quick
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

import kernels_core
from accel_shared.bench import BenchmarkReport, describe_machine, time_callable
from accel_shared.cli import progress

DEFAULTS = {
    # device: (video, tile, window, heads, head_dim, dtype)
    "cpu": ((8, 32, 40), (4, 8, 8), (1, 2, 5), 4, 64, "bfloat16"),
    "cuda": ((20, 48, 80), (4, 8, 8), (3, 3, 5), 12, 128, "bfloat16"),
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
COLUMNS = ["method", "density", "ms", "speed-up vs SDPA", "rel. L2 error", "cosine"]


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", choices=sorted(DEFAULTS), default="cpu")
    parser.add_argument("--video", type=int, nargs=3, metavar=("T", "H", "W"), help="latent tokens per axis")
    parser.add_argument("--tile", type=int, nargs=3, metavar=("TT", "TH", "TW"), help="3D tile")
    parser.add_argument("--window", type=int, nargs=3, metavar=("WT", "WH", "WW"), help="window in tiles")
    parser.add_argument("--heads", type=int)
    parser.add_argument("--head-dim", type=int)
    parser.add_argument("--dtype", choices=sorted(DTYPES))
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats; the median is reported")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks"))
    args = parser.parse_args(argv)
    video, tile, window, heads, head_dim, dtype = DEFAULTS[args.device]
    args.video = tuple(args.video or video)
    args.tile = tuple(args.tile or tile)
    args.window = tuple(args.window or window)
    args.heads = args.heads or heads
    args.head_dim = args.head_dim or head_dim
    args.dtype = args.dtype or dtype
    return args


def _errors(out: torch.Tensor, exact: torch.Tensor) -> tuple[float, float]:
    diff = (out.float() - exact).norm() / exact.norm()
    cosine = F.cosine_similarity(out.float().flatten(), exact.flatten(), dim=0)
    return diff.item(), cosine.item()


def run(args: argparse.Namespace) -> BenchmarkReport:
    device, video, tile, window = args.device, args.video, args.tile, args.window
    dtype = DTYPES[args.dtype]
    tokens = video[0] * video[1] * video[2]
    block = tile[0] * tile[1] * tile[2]
    g = torch.Generator().manual_seed(0)
    q, k, v = (
        torch.randn(1, args.heads, tokens, args.head_dim, generator=g).to(device, dtype) for _ in range(3)
    )
    lists = kernels_core.sliding_tile_block_indices(video, tile, window, device=device)
    valid = kernels_core.tile_key_valid(video, tile, device)
    nkb = kernels_core.masks.num_blocks(kernels_core.tiled_length(video, tile), block)
    density = float(lists.counts.float().mean()) / nkb

    def tiled(fn: Callable[..., torch.Tensor]) -> Callable[[], torch.Tensor]:
        def call() -> torch.Tensor:
            tq, tk, tv = (kernels_core.tile_reorder(x, video, tile) for x in (q, k, v))
            return kernels_core.tile_restore(fn(tq, tk, tv), video, tile)

        return call

    methods: dict[str, tuple[float, Callable[[], torch.Tensor]]] = {
        "dense SDPA": (1.0, lambda: F.scaled_dot_product_attention(q, k, v)),
        "FP8 dense": (1.0, lambda: kernels_core.fp8_block_sparse_attention(q, k, v, block_size=(64, 64))),
        "tile-sparse": (
            density,
            tiled(
                lambda a, b, c: kernels_core.block_sparse_attention(a, b, c, lists, block_size=(block, block))
            ),
        ),
        "FP8 + tile-sparse": (
            density,
            tiled(
                lambda a, b, c: kernels_core.fp8_block_sparse_attention(
                    a, b, c, lists, block_size=(block, block), key_valid=valid
                )
            ),
        ),
    }
    # Exact references in float32: dense, and dense under the sliding-tile token mask.
    with torch.no_grad():
        qf, kf, vf = (x.float() for x in (q, k, v))
        exact_dense = F.scaled_dot_product_attention(qf, kf, vf)
        tq, tk, tv = (kernels_core.tile_reorder(x, video, tile) for x in (qf, kf, vf))
        if bool(valid.all()):  # no padding: the float32 block-sparse kernel is the masked attention
            masked = kernels_core.block_sparse_attention(tq, tk, tv, lists, block_size=(block, block))
        else:
            token_mask = lists.to_mask(nkb)[0, 0].repeat_interleave(block, 0).repeat_interleave(block, 1)
            masked = F.scaled_dot_product_attention(tq, tk, tv, attn_mask=token_mask & valid[None, :])
        exact_sparse = kernels_core.tile_restore(masked, video, tile)
        del tq, tk, tv, masked
    report = BenchmarkReport(
        title=f"FP8 and tile-sparse attention vs dense SDPA ({device.upper()})",
        description=(
            f"One self-attention over a {video[0]}x{video[1]}x{video[2]} latent ({tokens} tokens), B=1, "
            f"H={args.heads}, D={args.head_dim}, {args.dtype} inputs. Tile {tile[0]}x{tile[1]}x{tile[2]} "
            f"({block} tokens), sliding window {window[0]}x{window[1]}x{window[2]} tiles (density {density:.3f} "
            "of the tile pairs). FP8: Q and K one scale per block (FP8 dense: 64 tokens; FP8 + tile-sparse: one "
            "tile), V per channel, P with the fixed scale 1/448. Errors against float32 SDPA under the same mask. "
            f"Medians of {args.repeats} repeats after {args.warmup} warm-up."
        ),
        columns=COLUMNS,
        machine=describe_machine(),
        command=f"python kernels-core/benchmarks/bench_fp8.py --device {device}  (or: nox -s bench)",
    )
    baseline = None
    with torch.no_grad():
        for name, (method_density, fn) in progress(methods.items(), desc="fp8 attention", total=len(methods)):
            timing = time_callable(fn, warmup=args.warmup, repeats=args.repeats, device=device)
            baseline = baseline or timing.median_s
            exact = exact_sparse if method_density < 1.0 else exact_dense
            rel, cos = _errors(fn(), exact)
            report.add_row(
                {
                    "method": name,
                    "density": round(method_density, 3),
                    "ms": timing.median_s * 1e3,
                    "speed-up vs SDPA": baseline / timing.median_s,
                    "rel. L2 error": rel,
                    "cosine": cos,
                }
            )
    if device == "cpu":
        report.notes.append(
            "This CPU has no FP8 arithmetic: the FP8 rows decode the e4m3 codes and compute in float32, so "
            "they bring no speed here; they show the FP8 error the GPU kernel has."
        )
    else:
        report.notes.append(
            f"GPU: {torch.cuda.get_device_name()}; FP8 rows run on FP8 tensor cores (mma e4m3)."
        )
    report.notes.append(f"kernels-core {kernels_core.__version__}; torch {torch.__version__}.")
    return report


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench_fp8: no CUDA device visible; nothing to run", file=sys.stderr)
        return 0
    report = run(args)
    print(report.to_markdown())
    paths = report.write(args.out, f"fp8_attention_{args.device}")
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
