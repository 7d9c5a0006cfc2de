"""``kernels-core`` / ``python -m kernels_core``: build report and demo."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import torch

_EPILOG = """examples:
  kernels-core info                 what is compiled in and what runs here
  kernels-core info --json
  kernels-core demo --seq-len 2048  block-sparse vs dense attention on random inputs
"""

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kernels-core",
        description="kernels-core: compiled CPU/CUDA kernels behind torch custom ops.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = commands.add_parser(
        "info", help="version, compilers, CUDA architectures, CPU ISA, GPUs, ops per device"
    )
    info.add_argument("--json", action="store_true", help="print one JSON object")

    demo = commands.add_parser("demo", help="block-sparse attention vs dense SDPA on random inputs")
    demo.add_argument("--seq-len", type=int, default=4096, help="sequence length (default 4096)")
    demo.add_argument("--heads", type=int, default=8, help="attention heads (default 8)")
    demo.add_argument("--head-dim", type=int, default=64, help="head dimension (default 64)")
    demo.add_argument(
        "--density", type=float, default=0.25, help="fraction of key blocks per row (default 0.25)"
    )
    demo.add_argument(
        "--dtype", choices=sorted(_DTYPES), default="float32", help="input dtype (default float32)"
    )
    demo.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    demo.add_argument("--repeats", type=int, default=5, help="timed repeats, median reported (default 5)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def _demo(args: argparse.Namespace) -> dict:
    from kernels_core.demo import run_demo

    if args.seq_len < 1 or args.heads < 1 or args.head_dim < 1 or args.repeats < 1:
        raise ValueError("--seq-len, --heads, --head-dim and --repeats must be positive")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device}: CUDA is not available on this machine")
    return run_demo(
        seqlen=args.seq_len,
        heads=args.heads,
        head_dim=args.head_dim,
        density=args.density,
        dtype=_DTYPES[args.dtype],
        device=args.device,
        repeats=args.repeats,
        seed=args.seed,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "info":
            from kernels_core.system_info import format_info, info

            data = info()
            print(json.dumps(data) if args.json else format_info(data))
            return 0 if data["compiled"] else 1
        result = _demo(args)
        if args.json:
            print(json.dumps(result))
        else:
            width = max(map(len, result))
            for key, value in result.items():
                print(
                    f"{key:<{width}}  {value:.4g}" if isinstance(value, float) else f"{key:<{width}}  {value}"
                )
        return 0
    except (ValueError, TypeError, RuntimeError) as exc:
        if args.debug:
            raise
        print(f"kernels-core: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
