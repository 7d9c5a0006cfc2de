"""R-Stitch against its baselines on the offline arithmetic benchmark, one run, same problems.

The shipped SLM/LLM pair (or --slm/--llm) decodes held-out synthetic problems greedily with: the SLM
alone, the LLM alone (our decode loop, the speed-up reference), the LLM through transformers'
``generate``, speculative decoding (transformers assisted generation, SLM drafts), per-token routing
(the LLM produces one token then the SLM resumes) and R-Stitch at each τ, plus R-Stitch+ when a router
is given (default: the shipped one). Methods take turns problem by problem; latency is per problem,
prompt included. Also records each model's decode and prefill cost (the fitted cost model).

Writes ``<out>/rstitch_<device>.{json,md}`` and the plot ``<images>/accuracy_latency_<device>.png``.

    python packages/rstitch/benchmarks/bench_rstitch.py            # or: nox -s bench
    python packages/rstitch/benchmarks/bench_rstitch.py --problems 40 --tau 0.02   # a quick look
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from accel_shared.bench import BenchmarkReport, describe_machine
from rstitch.cli import EVAL_SEED
from rstitch.cost_model import CostModel
from rstitch.evaluation import METHODS, build_methods, evaluate, plot_accuracy_latency
from rstitch.models import CHECKPOINTS, load_pair
from rstitch.router import Router

ROOT = Path(__file__).resolve().parents[3]
COLUMNS = [
    "method",
    "accuracy (%)",
    "mean latency (ms)",
    "speed-up vs LLM",
    "LLM token share (%)",
    "tokens / problem",
]


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--slm", type=Path, help="default: the shipped SLM")
    parser.add_argument("--llm", type=Path, help="default: the shipped LLM")
    parser.add_argument("--router", type=Path, help="default: the shipped router.pt, if present")
    parser.add_argument("--router-tau", type=float, default=0.005)
    parser.add_argument(
        "--problems", type=int, default=200, help="held-out synthetic problems (default: 200)"
    )
    parser.add_argument("--tau", type=float, nargs="+", default=[0.005, 0.01, 0.02, 0.05, 0.1])
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks")
    parser.add_argument("--images", type=Path, default=ROOT / "docs" / "images" / "rstitch")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench_rstitch: --device cuda but CUDA is not available", file=sys.stderr)
        return 2
    from rstitch.arithmetic import make_problems

    pair = load_pair(args.slm, args.llm, device=args.device)
    router_path = args.router or (CHECKPOINTS / "router.pt")
    router = Router.load(router_path) if router_path.is_file() else None
    rows = [p.as_row() for p in make_problems(args.problems, seed=EVAL_SEED)]
    include = [m for m in METHODS if m != "r-stitch+" or router is not None]
    methods = build_methods(
        pair.slm,
        pair.llm,
        pair.tokenizer,
        taus=args.tau,
        include=include,
        router=router,
        router_tau=args.router_tau,
        max_new_tokens=args.max_new_tokens,
    )
    results = evaluate(methods, pair.tokenizer, rows)
    costs = CostModel.fit({"slm": pair.slm, "llm": pair.llm}, vocab_size=len(pair.tokenizer))

    def params(model: torch.nn.Module) -> str:
        return f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M"

    slm_cfg, llm_cfg = pair.slm.config, pair.llm.config
    report = BenchmarkReport(
        title=f"R-Stitch on the arithmetic benchmark ({args.device})",
        description=(
            f"{len(rows)} held-out synthetic multi-step arithmetic problems (seed {EVAL_SEED}), greedy decoding, "
            f"batch 1, up to {args.max_new_tokens} new tokens. SLM: Qwen2 {slm_cfg.num_hidden_layers} layers, hidden "
            f"{slm_cfg.hidden_size} ({params(pair.slm)} parameters); LLM: Qwen2 {llm_cfg.num_hidden_layers} layers, "
            f"hidden {llm_cfg.hidden_size} ({params(pair.llm)}). Latency: mean wall clock per problem, prompt "
            "included; speed-up = LLM-alone mean latency / the method's. All methods in one run, taking turns "
            "problem by problem."
        ),
        columns=COLUMNS,
        machine=describe_machine(),
        command="python packages/rstitch/benchmarks/bench_rstitch.py " + " ".join(sys.argv[1:]),
    )
    for r in results:
        report.add_row(
            {
                "method": r.label,
                "accuracy (%)": round(100 * r.accuracy, 1),
                "mean latency (ms)": round(1e3 * r.mean_latency_s, 1),
                "speed-up vs LLM": round(r.speedup, 2),
                "LLM token share (%)": round(100 * r.llm_share, 1),
                "tokens / problem": round(r.mean_new_tokens, 1),
            }
        )
    for name, cost in costs.costs.items():
        report.notes.append(
            f"{name} forward cost (fitted): {1e3 * cost(1, 100):.2f} ms per decode step at 100 cached tokens, "
            f"{1e3 * cost(16, 100):.2f} ms for a 16-token partial prefill"
        )
    llm = next(r for r in results if r.method == "llm")
    matched = [r for r in results if r.method == "r-stitch" and r.accuracy >= llm.accuracy - 0.01]
    if matched:
        best = max(matched, key=lambda r: r.speedup)
        report.notes.append(
            f"fastest R-Stitch within 1 point of the LLM's accuracy: {best.label}, {100 * best.accuracy:.1f}% vs "
            f"{100 * llm.accuracy:.1f}%, {best.speedup:.2f}x faster"
        )
    else:
        report.notes.append("no R-Stitch τ reached the LLM's accuracy minus 1 point")
    json_path, md_path = report.write(args.out, f"rstitch_{args.device}")
    plot = plot_accuracy_latency(
        results,
        args.images / f"accuracy_latency_{args.device}.png",
        title=f"{len(rows)} problems, {args.device}",
    )
    print(report.to_markdown())
    print(f"wrote {json_path}, {md_path} and {plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
