"""The ``omnisparse`` command: measure, run and fine-tune OmniSparse on Qwen-VL video models.

Usage::

omnisparse generate --model PATH --video FILE|DIR --prompt TEXT
omnisparse bench [--model tiny-vlm] [--seq-len 16384 --layers 2]
omnisparse finetune --model tiny-vlm --out DIR [--steps 300]
omnisparse train-base --out DIR
omnisparse demo
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from accel_shared.cli import (
    CLIError,
    DemoResult,
    add_command,
    add_common_args,
    emit,
    make_parser,
    resolve_device,
    run_cli,
    seed_everything,
)

PROG = "omnisparse"

_EPILOG = """\
examples:
  # answer a question about a video (a folder of frames, or a video file with PyAV installed)
  omnisparse generate --model ./Qwen2.5-VL-7B-Instruct --video ./clip.mp4 --prompt "What happens at the end?"
  # fidelity, accuracy and KV memory on the shipped tiny model; prefill speed at 7B shapes
  omnisparse bench --items 200 --seq-len 16384 --layers 2
  # fine-tune with OmniSparse in the loop (distillation to the dense model + answer loss)
  omnisparse finetune --model tiny-vlm --out ./runs/ft --steps 300
  torchrun --nproc_per_node 2 -m omnisparse finetune --model tiny-vlm --out ./runs/ft2 --steps 300
  omnisparse demo
"""


def _load_config(path: str | None, default: Any = None) -> Any:
    from omnisparse.config import OmniSparseConfig

    if path is None:
        return default if default is not None else OmniSparseConfig()
    if not Path(path).is_file():
        raise FileNotFoundError(f"--config {path} does not exist")
    return OmniSparseConfig.load(path)


def _default_config_for(model_name: str) -> Any:
    """The config a model folder ships (``omnisparse.json``, written by finetune), else the tiny models'
    settings for the shipped models, else None (the library defaults)."""
    from omnisparse.config import OmniSparseConfig
    from omnisparse.evaluation import TINY_MODEL_CONFIG
    from omnisparse.models import SHIPPED_MODELS, shipped_model_path

    folder = shipped_model_path(model_name) if model_name in SHIPPED_MODELS else Path(model_name)
    if (folder / "omnisparse.json").is_file():
        return OmniSparseConfig.load(folder / "omnisparse.json")
    return TINY_MODEL_CONFIG if model_name in SHIPPED_MODELS else None


# ---------------------------------------------------------------------------------------------
# generate
# ---------------------------------------------------------------------------------------------
def _generate(args: argparse.Namespace) -> int:
    import omnisparse
    from omnisparse.evaluation import cache_nbytes
    from omnisparse.inputs import video_inputs
    from omnisparse.models import load_model
    from omnisparse.slim_cache import SlimKVCache
    from omnisparse.video import load_frames

    if args.num_frames is not None and args.num_frames < 1:
        raise CLIError(f"--num-frames must be >= 1, got {args.num_frames}")
    if args.repeat_frames < 1 or args.max_new_tokens < 1:
        raise CLIError("--repeat-frames and --max-new-tokens must be >= 1")
    device = resolve_device(args.device)
    seed_everything(args.seed)
    frames = load_frames(args.video, num_frames=args.num_frames)
    model, tokenizer = load_model(args.model)
    model.to(device)
    inputs = video_inputs(
        frames,
        args.prompt,
        tokenizer,
        model.config,
        frame_pixels=tuple(args.frame_pixels),
        repeat_frames=args.repeat_frames,
    )
    inputs = {key: value.to(device) for key, value in inputs.items()}
    config = _load_config(args.config, _default_config_for(args.model))
    state = None
    cache: Any
    if args.dense:
        from transformers.cache_utils import DynamicCache

        cache = DynamicCache(config=model.config)
    else:
        state = omnisparse.apply(model, config)
        state.record = True
        cache = SlimKVCache(config=model.config)
    tic = time.perf_counter()
    try:
        with torch.no_grad():
            out = model.generate(
                **inputs,
                cache=cache,
                max_new_tokens=args.max_new_tokens,
                do_sample=False,
                return_dict_in_generate=True,
            )
    finally:
        if state is not None:
            omnisparse.remove(model)
    seconds = time.perf_counter() - tic
    new = out.sequences[0, inputs["input_ids"].shape[1] :]
    result = {
        "answer": tokenizer.decode(new, skip_special_tokens=True).strip(),
        "prompt_tokens": int(inputs["input_ids"].shape[1]),
        "visual_tokens": int((inputs["mm_token_type_ids"] != 0).sum()),
        "attention": "dense" if args.dense else "omnisparse",
        "kv_cache_mib": cache_nbytes(out.past_key_values) / 2**20,
        "seconds": seconds,
    }
    if state is not None and state.stats:
        result["prefill_density"] = sum(s.density for s in state.stats) / len(state.stats)
    emit(result, as_json=args.json)
    return 0


# ---------------------------------------------------------------------------------------------
# bench
# ---------------------------------------------------------------------------------------------
def _speed_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    from dataclasses import replace

    from accel_shared.bench.report import ratio
    from omnisparse.config import OmniSparseConfig
    from omnisparse.speed import SEVEN_B, bench_attention, bench_prefill, prefill_inputs, seven_b_model

    rows: list[dict[str, Any]] = []
    base = OmniSparseConfig(min_seq_len=0)
    configs = {f"budget cap {r:g}": replace(base, max_budget_ratio=r) for r in args.budget_ratios}
    dense, sparse = bench_attention(args.seq_len, configs, repeats=args.repeats)
    for name, (timing, density) in sparse.items():
        rows.append(
            {
                "measure": "attention (1 layer)",
                "setting": name,
                "tokens": args.seq_len,
                "density": density,
                "dense_s": dense.median_s,
                "omnisparse_s": timing.median_s,
                "speedup": ratio(dense, timing),
            }
        )
    if args.layers > 0:
        model = seven_b_model(args.layers)
        inputs = prefill_inputs(args.seq_len, SEVEN_B.hidden)
        for name, config in configs.items():
            dense_p, sparse_p, density = bench_prefill(
                model, inputs, config, repeats=max(1, args.repeats - 1)
            )
            rows.append(
                {
                    "measure": f"LM prefill ({args.layers} layers)",
                    "setting": name,
                    "tokens": args.seq_len,
                    "density": density,
                    "dense_s": dense_p.median_s,
                    "omnisparse_s": sparse_p.median_s,
                    "speedup": ratio(dense_p, sparse_p),
                }
            )
            if not args.all_prefill:
                break
    return rows


def _bench(args: argparse.Namespace) -> int:
    from omnisparse.evaluation import evaluate
    from omnisparse.longvideo_qa import make_videos
    from omnisparse.models import load_model

    if args.items < 0 or args.seq_len < 256 or args.repeats < 1:
        raise CLIError("need --items >= 0, --seq-len >= 256 and --repeats >= 1")
    torch.manual_seed(args.seed)
    results: dict[str, Any] = {}
    if args.items > 0:
        model, tokenizer = load_model(args.model)
        config = _load_config(args.config, _default_config_for(args.model))
        items = make_videos("test", args.items, num_frames=args.num_frames, seed=args.seed)
        report = evaluate(model, tokenizer, items, config, show_progress=not args.json)
        results["fidelity"] = report.summary()
        results["fidelity"]["model"] = str(args.model)
    if args.seq_len and not args.skip_speed:
        results["speed"] = _speed_rows(args)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    if args.json:
        print(json.dumps(results))
        return 0
    if "fidelity" in results:
        print("fidelity on long-video QA (dense vs OmniSparse, same model):")
        emit(results["fidelity"], as_json=False)
    for row in results.get("speed", []):
        print(
            f"{row['measure']:<24} {row['setting']:<18} S={row['tokens']} density {row['density']:.3f}: "
            f"dense {row['dense_s']:.2f} s, OmniSparse {row['omnisparse_s']:.2f} s, {row['speedup']:.2f}x"
        )
    return 0


# ---------------------------------------------------------------------------------------------
# finetune / train-base
# ---------------------------------------------------------------------------------------------
def _train_config(args: argparse.Namespace) -> Any:
    from omnisparse.training import TrainConfig

    return TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup=args.warmup,
        num_frames=args.num_frames,
        single_frame_steps=getattr(args, "single_frame_steps", 0),
        curriculum_steps=getattr(args, "curriculum_steps", 0),
        mixed_lengths=getattr(args, "mixed_lengths", False),
        shape_distractors=None if args.shape_distractors < 0 else args.shape_distractors,
        frame_size=args.frame_size,
        seed=args.seed,
        answer_weight=getattr(args, "answer_weight", 1.0),
        distill_weight=getattr(args, "distill_weight", 0.0),
        temperature=getattr(args, "temperature", 1.0),
        checkpoint_every=args.checkpoint_every,
    )


def _save_model(model: Any, tokenizer: Any, out: Path, extra: dict[str, Any]) -> None:
    folder = out / "model"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (out / "run.json").write_text(json.dumps(extra, indent=2) + "\n")


def _report_run(args: argparse.Namespace, steps: int, history: list[dict[str, float]]) -> None:
    """Print where the model went and the last logged losses."""
    last = {k: v for k, v in history[-1].items() if k != "step"}
    emit({"out": str(Path(args.out) / "model"), "steps": steps, **last}, as_json=args.json)


def _finetune(args: argparse.Namespace) -> int:
    import omnisparse
    from accel_shared.distributed import setup_distributed, teardown_distributed
    from omnisparse.models import load_model
    from omnisparse.training import train

    cfg = _train_config(args)
    config = _load_config(args.config, _default_config_for(args.model))
    ctx = setup_distributed(args.device)
    try:
        torch.manual_seed(args.seed)
        student, tokenizer = load_model(args.model)
        teacher = copy.deepcopy(student) if cfg.distill_weight > 0 else None
        from dataclasses import replace

        omnisparse.apply(student, replace(config, slim_decode=False))
        history = train(
            student,
            tokenizer,
            cfg,
            args.out,
            ctx=ctx,
            teacher=teacher,
            run_info={"omnisparse": config.to_dict(), "model": str(args.model)},
            show_progress=not args.json,
        )
        omnisparse.remove(student)
        if ctx.is_main:
            run = {"omnisparse": config.to_dict(), "base_model": str(args.model), "train": vars(cfg)}
            _save_model(student, tokenizer, Path(args.out), run)
            config.save(Path(args.out) / "model" / "omnisparse.json")
            _report_run(args, cfg.steps, history)
    finally:
        teardown_distributed(ctx)
    return 0


def _train_base(args: argparse.Namespace) -> int:
    from accel_shared.checkpoint import latest_checkpoint
    from accel_shared.distributed import setup_distributed, teardown_distributed
    from omnisparse.tiny_vlm import build_tiny_vlm, load_vlm
    from omnisparse.training import train
    from omnisparse.vision_pretraining import VisionPretrainConfig, pretrain_vision

    cfg = _train_config(args)
    ctx = setup_distributed(args.device)
    try:
        if args.init is not None:
            model, tokenizer = load_vlm(args.init)  # a later stage continues from an earlier one
        else:
            model, tokenizer = build_tiny_vlm(seed=args.seed)
        if args.vision_steps > 0 and latest_checkpoint(args.out) is None:
            # stage 1 (skipped on resume: the checkpoint holds the whole model); every rank runs the same
            # seeded steps, so the towers stay identical without communication
            vision = VisionPretrainConfig(steps=args.vision_steps, frame_size=args.frame_size, seed=args.seed)
            pretrain_vision(model, vision, show_progress=ctx.is_main and not args.json)
        history = train(
            model,
            tokenizer,
            cfg,
            args.out,
            ctx=ctx,
            run_info={"model": "tiny-vlm", "init": args.init, "vision_steps": args.vision_steps},
            show_progress=not args.json,
        )
        if ctx.is_main:
            _save_model(model, tokenizer, Path(args.out), {"train": vars(cfg)})
            _report_run(args, cfg.steps, history)
    finally:
        teardown_distributed(ctx)
    return 0


# ---------------------------------------------------------------------------------------------
# demo
# ---------------------------------------------------------------------------------------------
def _demo(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from accel_shared.bench.report import ratio
    from omnisparse.config import OmniSparseConfig
    from omnisparse.evaluation import evaluate
    from omnisparse.longvideo_qa import make_videos
    from omnisparse.models import load_model
    from omnisparse.speed import bench_attention

    torch.manual_seed(args.seed)
    model, tokenizer = load_model("tiny-vlm")
    report = evaluate(model, tokenizer, make_videos("test", args.items, seed=args.seed), show_progress=False)
    dense, sparse = bench_attention(
        args.seq_len, {"cap": replace(OmniSparseConfig(min_seq_len=0), max_budget_ratio=0.25)}, repeats=3
    )
    timing, density = sparse["cap"]
    result = DemoResult(
        method="omnisparse",
        baseline=f"dense SDPA, 7B attention shapes, S={args.seq_len}",
        accelerated=f"OmniSparse prefill attention, density {density:.2f}",
        baseline_time_s=dense.median_s,
        accelerated_time_s=timing.median_s,
        speed_ratio=ratio(dense, timing),
        quality_metric=f"answer agreement with dense on {report.items} long-video QA items",
        quality_value=report.answer_agreement,
        notes=(
            f"top-1 agreement {report.top1_agreement:.3f}, accuracy dense {report.dense_accuracy:.3f} / OmniSparse "
            f"{report.sparse_accuracy:.3f}, KV cache {report.kv_memory_ratio:.2f}x smaller"
        ),
    )
    emit(result, as_json=args.json)
    return 0


# ---------------------------------------------------------------------------------------------
# parser
# ---------------------------------------------------------------------------------------------
def _add_config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        default=None,
        help="OmniSparseConfig as JSON (default: the model folder's omnisparse.json if it has one, else the library "
        "defaults; for the shipped tiny models, 16-token blocks)",
    )


def _add_train_args(parser: argparse.ArgumentParser, *, steps: int, lr: float) -> None:
    parser.add_argument(
        "--out", required=True, help="run folder: checkpoints, history.json, the final model/"
    )
    parser.add_argument("--steps", type=int, default=steps, help=f"optimizer steps (default: {steps})")
    parser.add_argument("--batch-size", type=int, default=8, help="videos per step and process (default: 8)")
    parser.add_argument(
        "--lr", type=float, default=lr, help=f"peak learning rate, cosine decay (default: {lr:g})"
    )
    parser.add_argument("--warmup", type=int, default=100 if steps > 500 else 20, help="warm-up steps")
    parser.add_argument("--num-frames", type=int, default=32, help="frames per training video (default: 32)")
    parser.add_argument(
        "--frame-size", type=int, default=112, help="frame side in pixels, a multiple of 28 (default: 112)"
    )
    parser.add_argument(
        "--shape-distractors",
        type=int,
        default=0,
        help="distractor frames that show a shape; the others are blank (-1: all of them; default: 0)",
    )
    parser.add_argument(
        "--checkpoint-every", type=int, default=100, help="steps between checkpoints (default: 100)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(
        PROG,
        "OmniSparse for Qwen2-VL / Qwen2.5-VL: lazy/active query selection and a per-layer key budget set by the\n"
        "flattest head in prefill, and a per-head slimmed KV cache in decoding.",
        epilog=_EPILOG,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    gen = add_command(
        commands,
        "generate",
        help="answer a prompt about a video with OmniSparse",
        description=(
            "Load a Qwen2-VL / Qwen2.5-VL folder (or a shipped tiny model), read the video's frames and "
            "generate greedily."
        ),
    )
    gen.add_argument(
        "--model",
        default="tiny-vlm",
        help="a from_pretrained folder, or tiny-vlm / tiny-vlm-omnisparse (default: tiny-vlm)",
    )
    gen.add_argument(
        "--video",
        required=True,
        help="a folder of frames (sorted by name), an animated GIF, or a video file (needs PyAV)",
    )
    gen.add_argument("--prompt", required=True, help="the question or instruction")
    gen.add_argument(
        "--num-frames", type=int, default=None, help="sample this many frames evenly (default: all)"
    )
    gen.add_argument(
        "--repeat-frames",
        type=int,
        default=1,
        help="show each frame this many times (2 = one visual token per frame on Qwen-VL)",
    )
    gen.add_argument(
        "--frame-pixels",
        type=int,
        nargs=2,
        default=[112 * 112, 448 * 448],
        metavar=("MIN", "MAX"),
        help="pixel range per frame after resizing",
    )
    gen.add_argument("--max-new-tokens", type=int, default=64, help="(default: 64)")
    gen.add_argument("--dense", action="store_true", help="run the unmodified model instead (the baseline)")
    _add_config_arg(gen)
    add_common_args(gen, dtype=False)
    gen.set_defaults(func=_generate)

    bench = add_command(
        commands,
        "bench",
        help="fidelity, accuracy, KV memory and prefill speed against dense",
        description=(
            "Fidelity (logit cosine, top-1 and answer agreement), accuracy and KV-cache memory on the long-video "
            "QA benchmark, and prefill speed at Qwen2.5-VL-7B attention shapes with random weights."
        ),
    )
    bench.add_argument(
        "--model", default="tiny-vlm", help="model for the fidelity part (default: the shipped tiny-vlm)"
    )
    bench.add_argument(
        "--items", type=int, default=100, help="long-video QA test items (0 skips fidelity; default: 100)"
    )
    bench.add_argument("--num-frames", type=int, default=32, help="frames per video (default: 32)")
    bench.add_argument(
        "--seq-len", type=int, default=16384, help="tokens for the speed part (default: 16384)"
    )
    bench.add_argument(
        "--layers",
        type=int,
        default=2,
        help="language-model layers for the prefill timing (0 skips it; default: 2)",
    )
    bench.add_argument(
        "--budget-ratios",
        type=float,
        nargs="+",
        default=[0.25, 0.125],
        help="budget caps to time at (default: 0.25 0.125)",
    )
    bench.add_argument(
        "--all-prefill",
        action="store_true",
        help="time the full prefill at every budget cap, not only the first",
    )
    bench.add_argument("--repeats", type=int, default=3, help="timed repeats, median reported (default: 3)")
    bench.add_argument("--skip-speed", action="store_true", help="only the fidelity part")
    bench.add_argument("--out", default=None, help="also write results.json here")
    _add_config_arg(bench)
    add_common_args(bench, dtype=False, device=False)
    bench.set_defaults(func=_bench)

    ft = add_command(
        commands,
        "finetune",
        help="fine-tune with OmniSparse in the loop (runs under torchrun)",
        description=(
            "Fine-tune a model on long-video QA with OmniSparse's sparse attention in the forward and backward: "
            "KL distillation to the frozen dense model's logits and/or the answer loss. Checkpoints every "
            "--checkpoint-every steps; rerunning the same command resumes."
        ),
    )
    ft.add_argument(
        "--model", default="tiny-vlm", help="a from_pretrained folder or tiny-vlm (default: tiny-vlm)"
    )
    _add_train_args(ft, steps=300, lr=2e-4)
    ft.add_argument(
        "--distill-weight", type=float, default=1.0, help="weight of the KL to the dense model (default: 1.0)"
    )
    ft.add_argument(
        "--answer-weight", type=float, default=1.0, help="weight of the answer cross-entropy (default: 1.0)"
    )
    ft.add_argument("--temperature", type=float, default=1.0, help="distillation temperature (default: 1.0)")
    _add_config_arg(ft)
    add_common_args(ft, dtype=False)
    ft.set_defaults(func=_finetune)

    base = add_command(
        commands,
        "train-base",
        help="train the tiny dense benchmark model from scratch",
        description=(
            "Train the tiny Qwen2-VL of the long-video QA benchmark (dense attention, answer loss). The shipped "
            "tiny-vlm was made with the defaults."
        ),
    )
    _add_train_args(base, steps=2400, lr=2e-3)
    base.add_argument(
        "--mixed-lengths",
        action="store_true",
        help="each video draws its length uniformly between 1 and the curriculum's current length",
    )
    base.add_argument(
        "--init",
        default=None,
        help="start from this from_pretrained folder (an earlier stage's out/model) instead of a fresh model",
    )
    base.add_argument(
        "--vision-steps",
        type=int,
        default=600,
        help="stage 1: pretrain the vision tower on frame shape/colour classification for these steps (default: 600)",
    )
    base.add_argument(
        "--single-frame-steps",
        type=int,
        default=400,
        help="curriculum: 1-frame videos (plain VQA) first, for these steps (default: 400)",
    )
    base.add_argument(
        "--curriculum-steps",
        type=int,
        default=1200,
        help="then grow videos from 1 to --num-frames frames over these steps (default: 1200)",
    )
    add_common_args(base, dtype=False)
    base.set_defaults(func=_train_base)

    demo = add_command(
        commands,
        "demo",
        help="offline demo on the shipped tiny model",
        description=(
            "Dense vs OmniSparse on a few long-video QA items with the shipped tiny model, and prefill attention "
            "speed at 7B shapes."
        ),
    )
    demo.add_argument("--items", type=int, default=8, help="(default: 8)")
    demo.add_argument(
        "--seq-len", type=int, default=4096, help="tokens for the attention timing (default: 4096)"
    )
    add_common_args(demo, dtype=False, device=False)
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    return run_cli(lambda args: args.func(args), parser, argv)


if __name__ == "__main__":
    sys.exit(main())
