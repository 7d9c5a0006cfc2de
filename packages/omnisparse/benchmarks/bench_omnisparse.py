"""OmniSparse against dense attention: fidelity, accuracy and KV memory on the shipped tiny models, and
prefill speed at Qwen2.5-VL-7B attention shapes, all in one run on one machine.

- Fidelity: the long-video QA test set (32 frames = 512 visual tokens per video), the shipped dense
  model ``tiny-vlm`` and the OmniSparse-fine-tuned ``tiny-vlm-omnisparse``; each compared with its own
  dense attention (see ``omnisparse.evaluation``).
- Speed: one layer's attention, and the 2-layer language model's prefill, at S tokens with random
  weights (``omnisparse.speed``); medians of repeats, dense SDPA in the same process.

Writes ``<out>/omnisparse_<device>.{json,md}``.

    python packages/omnisparse/benchmarks/bench_omnisparse.py             # or: nox -s bench
    python packages/omnisparse/benchmarks/bench_omnisparse.py --items 20 --seq-len 4096 --layers 1   # quick look
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from accel_shared.bench import BenchmarkReport, describe_machine
from accel_shared.bench.report import ratio
from omnisparse.config import OmniSparseConfig
from omnisparse.evaluation import TINY_MODEL_CONFIG, evaluate
from omnisparse.longvideo_qa import make_videos
from omnisparse.models import load_model, shipped_model_path
from omnisparse.speed import SEVEN_B, bench_attention, bench_prefill, prefill_inputs, seven_b_model

COLUMNS = ["measure", "setting", "dense", "OmniSparse", "ratio / agreement"]


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default="cpu",
        help="cuda: attention speed only, bf16 (what scripts/gpu_check.sh runs)",
    )
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks"))
    parser.add_argument("--items", type=int, default=200, help="long-video QA test items (default: 200)")
    parser.add_argument("--seq-len", type=int, default=16384)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--budget-ratios", type=float, nargs="+", default=[0.25, 0.125])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-finetune", action="store_true", help="skip the before/after fine-tuning rows")
    return parser.parse_args(argv)


def _fidelity(
    report: BenchmarkReport,
    model: Any,
    tokenizer: Any,
    config: OmniSparseConfig,
    tag: str,
    items: int,
    **kw: Any,
) -> dict[str, float]:
    result = evaluate(model, tokenizer, make_videos("test", items), config, **kw)
    s = result.summary()
    report.add_row(
        measure="accuracy",
        setting=tag,
        dense=f"{100 * s['dense_accuracy']:.1f}%",
        OmniSparse=f"{100 * s['sparse_accuracy']:.1f}%",
        **{"ratio / agreement": f"{100 * s['answer_agreement']:.1f}% same answers"},
    )
    report.add_row(
        measure="logits (text after the video)",
        setting=tag,
        dense="",
        OmniSparse=f"cosine {s['logit_cosine']:.4f}",
        **{
            "ratio / agreement": f"top-1 agreement {100 * s['answer_top1_agreement']:.1f}% at the answer positions, "
            f"{100 * s['top1_agreement']:.1f}% over all text after the video"
        },
    )
    report.add_row(
        measure="prefill selection",
        setting=tag,
        dense="density 1",
        OmniSparse=f"density {s['prefill_density']:.3f}, active query share {s['active_query_share']:.3f}",
        **{"ratio / agreement": ""},
    )
    report.add_row(
        measure="KV cache after decoding",
        setting=tag,
        dense=f"{s['dense_kv_bytes'] / 1024:.0f} KiB",
        OmniSparse=f"{s['slim_kv_bytes'] / 1024:.0f} KiB",
        **{"ratio / agreement": f"{s['kv_memory_ratio']:.2f}x smaller"},
    )
    return s


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    on_gpu = args.device == "cuda"
    if on_gpu and not torch.cuda.is_available():
        print("bench_omnisparse: --device cuda but no CUDA device is visible", file=sys.stderr)
        return 1
    torch.manual_seed(0)
    command = "python packages/omnisparse/benchmarks/bench_omnisparse.py" + "".join(
        f" {a}"
        for a in (argv if argv is not None else sys.argv[1:])
        if not a.startswith("--out") and "benchmarks" not in a
    )
    report = BenchmarkReport(
        title=f"omnisparse: OmniSparse against dense attention ({'CUDA, attention only' if on_gpu else 'CPU'})",
        description=(
            "Fidelity, accuracy and decode KV memory on the long-video QA benchmark (32 easy-vqa frames, "
            "512 visual tokens per video; the shipped tiny Qwen2-VL models, OmniSparse with 16-token blocks), "
            f"and prefill speed at Qwen2.5-VL-7B language-model shapes (hidden {SEVEN_B.hidden}, {SEVEN_B.heads} "
            f"query / {SEVEN_B.kv_heads} key-value heads, head dim {SEVEN_B.head_dim}, MLP {SEVEN_B.intermediate}) "
            f"with random weights, {'bf16' if on_gpu else 'fp32'}, batch 1, S = {args.seq_len} tokens of which "
            "128 are text. Random weights make every head flat, so the budget share sits at the cap named in "
            "each row and no query block is "
            f"lazy; the density column says what was computed. Times are medians of {args.repeats} repeats "
            "(prefill: one fewer), dense SDPA timed in the same process."
        ),
        columns=COLUMNS,
        machine=describe_machine(),
        command=command,
    )
    if not on_gpu:  # the GPU run times the kernels only
        base, tokenizer = load_model("tiny-vlm")
        _fidelity(
            report, base, tokenizer, TINY_MODEL_CONFIG, f"tiny-vlm, defaults, {args.items} videos", args.items
        )
        # KV slimming alone: prefill stays dense (no call reaches min_seq_len), decoding uses the slim cache
        slim_only = replace(TINY_MODEL_CONFIG, min_seq_len=1 << 30)
        s = evaluate(base, tokenizer, make_videos("test", args.items), slim_only).summary()
        report.add_row(
            measure="KV slimming alone (dense prefill)",
            setting=f"tiny-vlm, defaults, {args.items} videos",
            dense=f"{s['dense_kv_bytes'] / 1024:.0f} KiB, accuracy {100 * s['dense_accuracy']:.1f}%",
            OmniSparse=f"{s['slim_kv_bytes'] / 1024:.0f} KiB, accuracy {100 * s['sparse_accuracy']:.1f}%",
            **{
                "ratio / agreement": f"{s['kv_memory_ratio']:.2f}x smaller, "
                f"{100 * s['answer_agreement']:.1f}% same answers"
            },
        )
        if not args.no_finetune:
            tuned, _ = load_model("tiny-vlm-omnisparse")
            aggressive = OmniSparseConfig.load(shipped_model_path("tiny-vlm-omnisparse") / "omnisparse.json")
            tag = f"{{}}, fine-tuning config, {args.items} videos"
            before = _fidelity(
                report, base, tokenizer, aggressive, tag.format("tiny-vlm (before)"), args.items
            )
            after = _fidelity(
                report,
                tuned,
                tokenizer,
                aggressive,
                tag.format("tiny-vlm-omnisparse (after), vs tiny-vlm dense"),
                args.items,
                reference=base,
            )
            gap_before = before["dense_accuracy"] - before["sparse_accuracy"]
            gap_after = after["dense_accuracy"] - after["sparse_accuracy"]
            report.notes.append(
                f"Fine-tuning config: {aggressive.to_dict()}. Accuracy gap to the dense tiny-vlm: "
                f"{100 * gap_before:+.1f} points before fine-tuning, {100 * gap_after:+.1f} after; top-1 agreement "
                f"{100 * before['top1_agreement']:.1f}% -> {100 * after['top1_agreement']:.1f}%."
            )
    base = OmniSparseConfig(min_seq_len=0)
    configs = {f"budget cap {r:g}": replace(base, max_budget_ratio=r) for r in args.budget_ratios}
    dtype = torch.bfloat16 if on_gpu else torch.float32
    dense, sparse = bench_attention(
        args.seq_len, configs, repeats=args.repeats, device=args.device, dtype=dtype
    )
    for name, (timing, density) in sparse.items():
        report.add_row(
            measure=f"prefill attention, 1 layer, S={args.seq_len}",
            setting=f"{name} (density {density:.3f})",
            dense=f"{dense.median_s:.2f} s",
            OmniSparse=f"{timing.median_s:.2f} s",
            **{"ratio / agreement": f"{ratio(dense, timing):.2f}x faster"},
        )
    if args.layers > 0 and not on_gpu:
        model = seven_b_model(args.layers)
        inputs = prefill_inputs(args.seq_len, SEVEN_B.hidden)
        name, config = next(iter(configs.items()))
        dense_p, sparse_p, density = bench_prefill(model, inputs, config, repeats=max(1, args.repeats - 1))
        report.add_row(
            measure=f"LM prefill, {args.layers} layers, S={args.seq_len}",
            setting=f"{name} (density {density:.3f})",
            dense=f"{dense_p.median_s:.1f} s",
            OmniSparse=f"{sparse_p.median_s:.1f} s",
            **{"ratio / agreement": f"{ratio(dense_p, sparse_p):.2f}x faster"},
        )
        share = dense.median_s * args.layers / dense_p.median_s
        report.notes.append(
            f"Attention is {100 * share:.0f}% of the dense prefill here (the rest is the MLP and projections), "
            f"so even infinitely fast attention would give at most {1 / (1 - min(share, 0.999)):.2f}x end to end."
        )
    if on_gpu:
        report.notes.append(
            f"bf16 on {torch.cuda.get_device_name(0)}; dense = torch SDPA (flash backend where available)."
        )
    else:
        report.notes.append(
            "FP32 on the CPU; the GPU table comes from scripts/gpu_check.sh (omnisparse_cuda.md)."
        )
    json_path, md_path = report.write(args.out, f"omnisparse_{args.device}")
    print(report.to_markdown())
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
