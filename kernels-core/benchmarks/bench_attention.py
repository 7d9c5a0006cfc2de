"""Block-sparse attention (forward and backward) and the mask predictor, against dense torch SDPA.

For each head dimension, dtype and block density it times dense SDPA and
``kernels_core.block_sparse_attention`` on the same tensors in the same run (median of repeats):
the forward, and the backward alone (dq, dk, dv from a saved forward). It reports the speed-up,
the kernel's effective throughput (FLOPs of the enabled blocks per second) and that throughput as
a share of a same-run matmul (fp32 on the CPU, where the kernels compute in fp32 for every input
dtype). It then times the mask predictor at a long sequence against the sparse attention it
feeds, and decode attention (full and per-head slimmed KV cache) against SDPA. Results go to
``<out>/attention_<device>.{json,md}``, ``<out>/mask_predictor_<device>.*``, ``<out>/decode_<device>.*``
and the combined page ``<out>/attention.md``.

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
from accel_shared.bench import BenchmarkReport, Timing, compose_page, describe_machine, time_callable
from accel_shared.cli import progress

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEFAULTS = {
    # device: (seq_len, heads, head dims, dtypes, densities, predictor seq_len)
    "cpu": (8192, 8, [64, 128], ["float32", "bfloat16"], [1.0, 0.25, 0.1], 32768),
    "cuda": (16384, 8, [128], ["bfloat16"], [1.0, 0.25, 0.1], 32768),
}
# FLOPs per (query, key, head-dim) element: the forward does 2 matmuls, the backward 5.
FLOPS_PER_ELEMENT = {"forward": 4, "backward": 10}
COLUMNS = [
    "pass",
    "dtype",
    "D",
    "density",
    "SDPA ms",
    "block-sparse ms",
    "speed-up vs SDPA",
    "effective TFLOP/s",
    "share of matmul",
]
DECODE_COLUMNS = ["dtype", "cache", "kept per head", "SDPA ms", "decode ms", "speed-up vs SDPA", "GB/s"]
PREDICTOR_COLUMNS = [
    "dtype",
    "S",
    "gamma",
    "max density",
    "predicted density",
    "scores ms",
    "predictor ms",
    "sparse attention ms",
    "predictor / attention",
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
    parser.add_argument(
        "--passes", choices=["forward", "backward"], nargs="+", default=["forward", "backward"]
    )
    parser.add_argument("--block-size", type=int, nargs=2, default=[64, 64], metavar=("BQ", "BK"))
    parser.add_argument(
        "--predictor-seq-len",
        type=int,
        help="sequence length of the mask-predictor run (default 32768; 0 skips it)",
    )
    parser.add_argument(
        "--no-decode", dest="decode", action="store_false", help="skip the decode-attention run"
    )
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats; the median is reported")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks"), help="directory for the report")
    parser.add_argument(
        "--compose-only",
        action="store_true",
        help="only rebuild <out>/attention.md from the reports already there",
    )
    args = parser.parse_args(argv)
    seq_len, heads, head_dims, dtypes, densities, predictor_len = DEFAULTS[args.device]
    args.seq_len = args.seq_len or seq_len
    args.heads = args.heads or heads
    args.head_dims = args.head_dims or head_dims
    args.dtypes = args.dtypes or dtypes
    args.densities = args.densities or densities
    args.predictor_seq_len = predictor_len if args.predictor_seq_len is None else args.predictor_seq_len
    if args.device == "cuda" and not torch.cuda.is_available() and not args.compose_only:
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


def _backward_only(out: torch.Tensor, inputs: tuple[torch.Tensor, ...]) -> Callable[[], object]:
    """Runs just the backward of a saved forward (the graph is kept for the next repeat)."""
    grad = torch.randn_like(out)
    return lambda: torch.autograd.grad(out, inputs, grad, retain_graph=True)


def _pass_fns(
    pass_name: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, block: tuple
) -> Callable[[], object]:
    """The callable to time: SDPA when ``mask`` is None, else block-sparse attention."""

    def forward() -> torch.Tensor:
        if mask is None:
            return torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return kernels_core.block_sparse_attention(q, k, v, mask, block_size=block)

    if pass_name == "forward":
        return forward
    return _backward_only(forward(), (q, k, v))


def run(args: argparse.Namespace, matmul: float) -> BenchmarkReport:
    device, s, h = args.device, args.seq_len, args.heads
    block = tuple(args.block_size)
    report = BenchmarkReport(
        title=f"Block-sparse attention vs dense SDPA ({device.upper()})",
        description=(
            f"B=1, H={h}, Sq=Sk={s}, blocks {block[0]}x{block[1]}, random block masks with the same number of "
            "key blocks in every row (diagonal block always kept), not causal. Both sides run on the same tensors "
            f"in the same process; times are medians of {args.repeats} repeats after {args.warmup} warm-up. The "
            "backward rows time the backward alone (dq, dk, dv from a saved forward, grad of every input). "
            "Effective TFLOP/s counts 4·B·H·Sq·Sk·D·density for the forward and 2.5 times that for the backward "
            f"(the work of the enabled blocks). Same-run matmul reference: {matmul * 1e3:.0f} GFLOP/s "
            f"({'fp32 2048³ on CPU' if device == 'cpu' else 'bf16 8192³'})."
        ),
        columns=COLUMNS,
        machine=describe_machine(),
        command=f"python kernels-core/benchmarks/bench_attention.py --device {device}  (or: nox -s bench)",
    )
    configs = [
        (p, d, dt, dens)
        for p in args.passes
        for d in args.head_dims
        for dt in args.dtypes
        for dens in args.densities
    ]
    generator = torch.Generator().manual_seed(0)
    dense_cache: dict[tuple[str, int, str], tuple[tuple[torch.Tensor, ...], Timing]] = {}
    with _sdpa_backend(device) as backend:
        for pass_name, head_dim, dtype_name, density in progress(
            configs, desc="attention", total=len(configs)
        ):
            key = (pass_name, head_dim, dtype_name)
            if key not in dense_cache:
                qkv = tuple(
                    torch.randn(1, h, s, head_dim, generator=generator)
                    .to(device, DTYPES[dtype_name])
                    .requires_grad_(pass_name == "backward")
                    for _ in range(3)
                )
                dense_cache[key] = (qkv, _time(_pass_fns(pass_name, *qkv, None, block), args))
            (q, k, v), dense_time = dense_cache[key]
            mask = kernels_core.masks.random_block_mask(1, h, s, s, density, block, generator=generator).to(
                device
            )
            sparse_time = _time(_pass_fns(pass_name, q, k, v, mask, block), args)
            actual_density = kernels_core.masks.block_density(mask)
            flops = FLOPS_PER_ELEMENT[pass_name] * h * s * s * head_dim * actual_density
            tflops = flops / sparse_time.median_s / 1e12
            report.add_row(
                {
                    "pass": pass_name,
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


def run_predictor(args: argparse.Namespace, max_density: float = 0.1, gamma: float = 0.9) -> BenchmarkReport:
    """Mask prediction (scores, recall budgets, top-k lists) against the causal sparse attention it feeds.

    The budget is capped at ``max_density`` of the key blocks: the sparser the attention, the larger
    the predictor's share, so this is the demanding end.
    """
    device, s, h, d = args.device, args.predictor_seq_len, args.heads, max(args.head_dims)
    block = tuple(args.block_size)
    report = BenchmarkReport(
        title=f"Mask predictor vs the sparse attention it feeds ({device.upper()})",
        description=(
            f"B=1, H={h}, S={s}, D={d}, causal, blocks {block[0]}x{block[1]}. The predictor is "
            "`kernels_core.predict_block_indices(q, k, gamma, max_blocks)`: mean-pooled block scores, the "
            "blocks needed to reach recall gamma per (head, query block), top-k index lists. The attention is "
            "`block_sparse_attention` with those lists. Random inputs have flat attention, so the budget hits "
            f"its cap of {max_density:.0%} of the key blocks. Medians of {args.repeats} repeats (the attention: 1)."
        ),
        columns=PREDICTOR_COLUMNS,
        machine=describe_machine(),
        command=f"python kernels-core/benchmarks/bench_attention.py --device {device}  (or: nox -s bench)",
    )
    generator = torch.Generator().manual_seed(1)
    nkb = kernels_core.masks.num_blocks(s, block[1])
    max_blocks = max(1, round(max_density * nkb))
    for dtype_name in progress(args.dtypes, desc="mask predictor", total=len(args.dtypes)):
        q, k, v = (
            torch.randn(1, h, s, d, generator=generator).to(device, DTYPES[dtype_name]) for _ in range(3)
        )
        scores_time = _time(
            functools.partial(kernels_core.block_scores, q, k, block_size=block, causal=True), args
        )
        predict = functools.partial(
            kernels_core.predict_block_indices,
            q,
            k,
            gamma=gamma,
            block_size=block,
            causal=True,
            max_blocks=max_blocks,
        )
        predict_time = _time(predict, args)
        lists = predict()
        attention_time = time_callable(
            functools.partial(
                kernels_core.block_sparse_attention, q, k, v, lists, block_size=block, causal=True
            ),
            warmup=0,
            repeats=1,
            device=device,
        )
        report.add_row(
            {
                "dtype": dtype_name,
                "S": s,
                "gamma": gamma,
                "max density": max_density,
                "predicted density": round(lists.counts.float().mean().item() / nkb, 4),
                "scores ms": scores_time.median_s * 1e3,
                "predictor ms": predict_time.median_s * 1e3,
                "sparse attention ms": attention_time.median_s * 1e3,
                "predictor / attention": f"{predict_time.median_s / attention_time.median_s:.2%}",
            }
        )
    return report


def run_decode(args: argparse.Namespace, cache_len: int = 16384, keep: float = 0.25) -> BenchmarkReport:
    """One new token against a KV cache with Qwen2.5-VL-7B's attention shape, full and slimmed."""
    device, heads_q, heads_kv, d = args.device, 28, 4, 128
    report = BenchmarkReport(
        title=f"Decode attention vs SDPA ({device.upper()})",
        description=(
            f"B=1, Hq={heads_q}, Hkv={heads_kv}, D={d} (Qwen2.5-VL-7B), one new query against a {cache_len}-token "
            "cache. Baseline: torch SDPA with enable_gqa over the whole cache. `decode_attention` runs over the "
            f"whole cache, then with each key/value head keeping a different random {keep:.0%} of the positions "
            "(KV-cache slimming: `kv_indices`). GB/s counts the K and V bytes each call must read. Medians of "
            f"{args.repeats} repeats."
        ),
        columns=DECODE_COLUMNS,
        machine=describe_machine(),
        command=f"python kernels-core/benchmarks/bench_attention.py --device {device}  (or: nox -s bench)",
    )
    generator = torch.Generator().manual_seed(2)
    kept = int(keep * cache_len)
    for dtype_name in progress(args.dtypes, desc="decode", total=len(args.dtypes)):
        dtype = DTYPES[dtype_name]
        q = torch.randn(1, heads_q, 1, d, generator=generator).to(device, dtype)
        k, v = (
            torch.randn(1, heads_kv, cache_len, d, generator=generator).to(device, dtype) for _ in range(2)
        )
        positions = torch.stack(
            [torch.randperm(cache_len, generator=generator)[:kept] for _ in range(heads_kv)]
        )
        positions = positions.sort(-1).values.int().unsqueeze(0).to(device)
        sdpa = _time(
            functools.partial(torch.nn.functional.scaled_dot_product_attention, q, k, v, enable_gqa=True),
            args,
        )
        for label, kwargs, keys in (
            ("all", {}, cache_len),
            (f"{keep:.0%}", {"kv_indices": positions, "check_indices": False}, kept),
        ):
            ours = _time(functools.partial(kernels_core.decode_attention, q, k, v, **kwargs), args)
            read_bytes = 2 * heads_kv * keys * d * k.element_size()
            report.add_row(
                {
                    "dtype": dtype_name,
                    "cache": cache_len,
                    "kept per head": label,
                    "SDPA ms": sdpa.median_s * 1e3,
                    "decode ms": ours.median_s * 1e3,
                    "speed-up vs SDPA": sdpa.median_s / ours.median_s,
                    "GB/s": read_bytes / ours.median_s / 1e9,
                }
            )
    return report


def write_attention_page(out: Path) -> Path:
    """docs/benchmarks/attention.md: every attention report measured so far, on one page."""
    not_measured = (
        "Not measured yet: no GPU has run this benchmark. The CUDA kernels are compiled (sm_80, sm_90a) but "
        "their speed is unknown; `nox -s gpu` on a CUDA machine fills this section."
    )
    return compose_page(
        out,
        "attention",
        "kernels-core attention benchmarks",
        "Generated by `kernels-core/benchmarks/bench_attention.py` (`nox -s bench`; `nox -s gpu` on a CUDA "
        "machine). Each table compares against dense torch SDPA on the same tensors in the same run, and gives "
        "the kernel's effective throughput as a share of a same-run matmul.",
        [
            ("attention_cpu", "Not measured yet on a CPU."),
            ("mask_predictor_cpu", "Not measured yet on a CPU."),
            ("decode_cpu", "Not measured yet on a CPU."),
            ("attention_cuda", not_measured),
            ("mask_predictor_cuda", not_measured),
            ("decode_cuda", not_measured),
        ],
    )


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.compose_only:
        print(f"wrote {write_attention_page(args.out)}", file=sys.stderr)
        return 0
    matmul = _matmul_tflops(args.device, args.repeats)
    report = run(args, matmul)
    paths = list(report.write(args.out, f"attention_{args.device}"))
    print(report.to_markdown())
    if args.predictor_seq_len > 0:
        predictor = run_predictor(args)
        paths += predictor.write(args.out, f"mask_predictor_{args.device}")
        print(predictor.to_markdown())
    if args.decode:
        decode = run_decode(args)
        paths += decode.write(args.out, f"decode_{args.device}")
        print(decode.to_markdown())
    paths.append(write_attention_page(args.out))
    print("wrote " + ", ".join(str(p) for p in paths), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
