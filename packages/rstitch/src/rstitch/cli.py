"""``rstitch``: generate, evaluate and train with R-Stitch token stitching between a small and a large LM."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from accel_shared.cli import (
    CLIError,
    DemoResult,
    add_command,
    add_common_args,
    emit,
    make_parser,
    resolve_device,
    resolve_dtype,
    run_cli,
    seed_everything,
)
from rstitch.arithmetic import PROMPT_TEMPLATE

EVAL_SEED, ROUTER_SEED = 1000, 2000  # synthetic problem streams: LMs train on seed 0


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("models (default: the pair shipped with rstitch)")
    group.add_argument("--slm", type=Path, help="small model: a save_pretrained folder or a cached model id")
    group.add_argument("--llm", type=Path, help="large model, sharing the SLM's tokenizer")


def _add_stitch_args(parser: argparse.ArgumentParser, *, many_taus: bool) -> None:
    group = parser.add_argument_group("stitching")
    if many_taus:
        group.add_argument(
            "--tau",
            type=float,
            nargs="+",
            default=[0.01, 0.02, 0.05, 0.1],
            help="thresholds τ to compare (default: 0.01 0.02 0.05 0.1)",
        )
    else:
        group.add_argument(
            "--tau", type=float, default=0.02, help="uncertainty threshold τ in [0, 1] (default: 0.02)"
        )
    group.add_argument(
        "--uncertainty",
        choices=["entropy", "max_prob"],
        default="entropy",
        help="normalised entropy or 1 − max probability (default: entropy)",
    )
    group.add_argument("--router", type=Path, help="R-Stitch+: a router.pt from `rstitch train-router`")
    group.add_argument("--max-new-tokens", type=int, default=256, help="(default: 256)")
    group.add_argument(
        "--prompt-template",
        default=PROMPT_TEMPLATE,
        help="how a question becomes a prompt; must contain {question} (default: %(default)r)",
    )


def _load(args: argparse.Namespace) -> Any:
    from rstitch.models import load_pair

    seed_everything(args.seed)
    return load_pair(args.slm, args.llm, device=resolve_device(args.device), dtype=resolve_dtype(args.dtype))


def _load_router(path: Path | None) -> Any:
    if path is None:
        return None
    from rstitch.router import Router

    return Router.load(path)


def _check_template(template: str) -> None:
    if "{question}" not in template:
        raise CLIError(f"--prompt-template must contain {{question}}, got {template!r}")


class _SourceStreamer:
    """Prints each generated token as it arrives (the first ``put``, the prompt, is skipped)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer, self.first = tokenizer, True

    def put(self, ids: Any) -> None:
        if self.first:  # the prompt
            self.first = False
            return
        print(self.tokenizer.decode(ids.tolist(), skip_special_tokens=True), end="", flush=True)

    def end(self) -> None:
        print(flush=True)


def _render(tokenizer: Any, out: Any, *, mark: bool) -> str:
    if not mark:
        return str(tokenizer.decode(out.new_tokens, skip_special_tokens=True))
    pieces: list[str] = []
    current: str | None = None
    run: list[int] = []
    for token, source in zip(out.new_tokens.tolist(), out.sources, strict=True):
        if source != current and run:
            text = tokenizer.decode(run, skip_special_tokens=True)
            pieces.append(f"[{text}]" if current == "llm" else text)
            run = []
        current = source
        run.append(token)
    if run:
        text = tokenizer.decode(run, skip_special_tokens=True)
        pieces.append(f"[{text}]" if current == "llm" else text)
    return "".join(pieces)


def _generate(args: argparse.Namespace) -> int:
    import torch

    from rstitch.generator import StitchedGenerator

    if not 0 <= args.tau <= 1:
        raise CLIError(f"--tau must be in [0, 1], got {args.tau}")
    if args.stream and args.show_sources:
        raise CLIError(
            "--show-sources marks the LLM's tokens after generation; it cannot be combined with --stream"
        )
    if (args.prompt is None) == (args.question is None):
        raise CLIError(
            "give exactly one of --prompt (raw text) and --question (wrapped by --prompt-template)"
        )
    _check_template(args.prompt_template)
    pair = _load(args)
    text = args.prompt if args.prompt is not None else args.prompt_template.format(question=args.question)
    ids = pair.tokenizer(text, return_tensors="pt").input_ids
    generator = StitchedGenerator(
        pair.slm,
        pair.llm,
        pair.tokenizer,
        tau=args.tau,
        uncertainty=args.uncertainty,
        router=_load_router(args.router),
    )
    streaming = args.stream and not args.json
    out = generator.generate(
        ids,
        max_new_tokens=args.max_new_tokens,
        eos_token_id=None if args.no_eos else pair.tokenizer.eos_token_id,
        do_sample=args.sample,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        generator=torch.Generator().manual_seed(args.seed),
        stop_strings=args.stop or None,
        streamer=_SourceStreamer(pair.tokenizer) if streaming else None,
    )
    summary = {
        "new_tokens": len(out.sources),
        "llm_share": round(out.llm_share, 4),
        "switches": out.switches,
        "latency_s": round(out.latency_s, 4),
    }
    if args.json:
        completion = pair.tokenizer.decode(out.new_tokens, skip_special_tokens=True)
        print(json.dumps({"prompt": text, "completion": completion, "sources": out.sources, **summary}))
        return 0
    if not streaming:
        print(_render(pair.tokenizer, out, mark=args.show_sources))
    print(" ".join(f"{k}={v}" for k, v in summary.items()), file=sys.stderr)
    return 0


def _problems(args: argparse.Namespace, *, seed: int) -> list[dict[str, str]]:
    from rstitch.arithmetic import make_problems, read_jsonl

    for name in ("limit", "problems"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise CLIError(f"--{name} must be >= 1, got {value}")
    if args.data is not None:
        rows = read_jsonl(args.data, limit=args.limit)
        if not rows:
            raise CLIError(f"--data {args.data}: no problems in the file")
        return rows
    count = args.limit if args.limit is not None else args.problems
    return [p.as_row() for p in make_problems(count, seed=seed)]


def _eval(args: argparse.Namespace) -> int:
    from accel_shared.bench import describe_machine
    from rstitch.evaluation import build_methods, evaluate, plot_accuracy_latency

    _check_template(args.prompt_template)
    for tau in args.tau:
        if not 0 <= tau <= 1:
            raise CLIError(f"--tau: every τ must be in [0, 1], got {tau}")
    if not 0 <= args.router_tau <= 1:
        raise CLIError(f"--router-tau must be in [0, 1], got {args.router_tau}")
    include = list(args.methods)
    router = _load_router(args.router)
    if router is not None and "r-stitch+" not in include:
        include.append("r-stitch+")
    if "r-stitch+" in include and router is None:
        include.remove("r-stitch+")
    pair = _load(args)
    rows = _problems(args, seed=args.data_seed)
    methods = build_methods(
        pair.slm,
        pair.llm,
        pair.tokenizer,
        taus=args.tau,
        include=include,
        router=router,
        router_tau=args.router_tau,
        uncertainty=args.uncertainty,
        max_new_tokens=args.max_new_tokens,
    )
    results = evaluate(
        methods, pair.tokenizer, rows, prompt_template=args.prompt_template, show_progress=not args.json
    )
    table = [
        {
            "method": r.label,
            "accuracy": round(100 * r.accuracy, 2),
            "mean_latency_ms": round(1e3 * r.mean_latency_s, 2),
            "speedup_vs_llm": round(r.speedup, 3),
            "llm_token_share": round(r.llm_share, 4),
            "mean_new_tokens": round(r.mean_new_tokens, 1),
        }
        for r in results
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    payload = {"problems": len(rows), "machine": describe_machine(), "results": table}
    (args.out / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
    plot_accuracy_latency(results, args.out / "accuracy_latency.png", title=f"{len(rows)} problems")
    if args.json:
        print(json.dumps({"problems": len(rows), "results": table}))
        return 0
    columns = list(table[0])
    print(f"{len(rows)} problems")
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join("---" for _ in columns) + "|")
    for row in table:
        print("| " + " | ".join(str(row[c]) for c in columns) + " |")
    print(f"wrote {args.out / 'results.json'} and {args.out / 'accuracy_latency.png'}", file=sys.stderr)
    return 0


def _train_lm(args: argparse.Namespace) -> int:
    from rstitch.lm_training import TrainLMConfig, train_lm
    from rstitch.tokenizer import build_tokenizer

    config = TrainLMConfig(
        preset=args.preset,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        ckpt_every=args.ckpt_every,
        out_dir=args.out,
        show_progress=not args.json,
    )
    model_dir = train_lm(config, build_tokenizer(), resume=not args.no_resume)
    emit({"preset": args.preset, "steps": args.steps, "model": str(model_dir)}, as_json=args.json)
    return 0


def _train_router(args: argparse.Namespace) -> int:
    from rstitch.cost_model import CostModel
    from rstitch.router import RouterTrainConfig, train_router

    _check_template(args.prompt_template)
    pair = _load(args)
    config = RouterTrainConfig(
        tau=args.tau,
        lam=args.lam,
        rollouts=args.rollouts,
        steps=args.steps,
        lr=args.lr,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
        out_dir=args.out,
        show_progress=not args.json,
    )
    cost_path = args.out / "cost_model.json"
    if cost_path.is_file():  # a resumed run keeps the cost model it started with
        cost_model = CostModel.load(cost_path)
    else:
        cost_model = CostModel.fit({"slm": pair.slm, "llm": pair.llm}, vocab_size=len(pair.tokenizer))
        cost_model.save(cost_path)
    rows = _problems(args, seed=ROUTER_SEED)
    _, log = train_router(
        pair.slm, pair.llm, pair.tokenizer, rows, cost_model, config, prompt_template=args.prompt_template
    )
    last = log[-min(len(log), 20) :]
    emit(
        {
            "router": str(args.out / "router.pt"),
            "cost_model": str(cost_path),
            "last_20_reward": sum(r["reward"] for r in last) / len(last),
            "last_20_accuracy": sum(r["accuracy"] for r in last) / len(last),
            "last_20_relative_cost": sum(r["relative_cost"] for r in last) / len(last),
        },
        as_json=args.json,
    )
    return 0


def _demo(args: argparse.Namespace) -> int:
    from rstitch.evaluation import build_methods, evaluate

    args.slm = args.llm = None
    pair = _load(args)
    rows = _problems(argparse.Namespace(data=None, limit=None, problems=args.problems), seed=EVAL_SEED)
    methods = build_methods(
        pair.slm, pair.llm, pair.tokenizer, taus=[args.tau], include=["llm", "r-stitch"], max_new_tokens=256
    )
    llm, stitched = evaluate(methods, pair.tokenizer, rows, show_progress=not args.json)
    emit(
        DemoResult(
            method="rstitch",
            baseline=f"LLM alone ({pair.llm.config.num_hidden_layers} layers), {len(rows)} arithmetic problems",
            accelerated=f"R-Stitch τ={args.tau} with the {pair.slm.config.num_hidden_layers}-layer SLM",
            baseline_time_s=llm.mean_latency_s,
            accelerated_time_s=stitched.mean_latency_s,
            speed_ratio=stitched.speedup,
            quality_metric="accuracy (LLM alone → R-Stitch)",
            quality_value=stitched.accuracy,
            notes=f"LLM accuracy {llm.accuracy:.3f}; {100 * stitched.llm_share:.1f}% of tokens from the LLM",
        ),
        as_json=args.json,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(
        "rstitch",
        "R-Stitch: decode with a small LM and hand uncertain tokens to a large LM (entropy-guided token\n"
        "stitching with partial prefill, two KV caches, and an optional learned router).",
        epilog="examples:\n"
        "  rstitch demo\n"
        "  rstitch generate --show-sources \\\n"
        "      --question 'Mia has 23 apples . Then she buys 17 more . How many apples does Mia have now ?'\n"
        "  rstitch eval --problems 200 --tau 0.01 0.02 0.05 --out runs/eval\n"
        "  rstitch eval --slm PATH --llm PATH --data gsm8k.jsonl --prompt-template '{question}\\nAnswer:'",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    gen = add_command(
        commands,
        "generate",
        help="generate from one prompt with R-Stitch",
        description="Generate with R-Stitch from one prompt and report which model produced the tokens.",
        epilog="examples:\n"
        "  rstitch generate --show-sources \\\n"
        "      --question 'Tom has 40 pens . Then he sells 12 . How many pens does Tom have now ?'\n"
        "  rstitch generate --slm PATH --llm PATH --prompt 'Solve: 12*7=' --sample --top-p 0.9 --stream",
    )
    _add_model_args(gen)
    gen.add_argument("--prompt", help="raw prompt text")
    gen.add_argument("--question", help="a question, wrapped by --prompt-template")
    _add_stitch_args(gen, many_taus=False)
    sampling = gen.add_argument_group("sampling and stopping")
    sampling.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    sampling.add_argument("--temperature", type=float, default=1.0, help="(default: 1.0)")
    sampling.add_argument("--top-k", type=int, default=0, help="0: off (default)")
    sampling.add_argument(
        "--top-p", type=float, default=1.0, help="nucleus sampling mass (default: 1.0, off)"
    )
    sampling.add_argument(
        "--stop", action="append", metavar="TEXT", help="stop once the output contains TEXT (repeatable)"
    )
    sampling.add_argument("--no-eos", action="store_true", help="do not stop at the EOS token")
    output = gen.add_argument_group("output")
    output.add_argument("--stream", action="store_true", help="print tokens as they are generated")
    output.add_argument("--show-sources", action="store_true", help="show the LLM's tokens in [brackets]")
    add_common_args(gen)
    gen.set_defaults(func=_generate)

    ev = add_command(
        commands,
        "eval",
        help="accuracy and latency of R-Stitch and the baselines",
        description="Accuracy, mean latency, speed-up against the LLM alone and the LLM's share of tokens for\n"
        "SLM alone, LLM alone, transformers generate, speculative decoding, per-token routing and R-Stitch\n"
        "(per τ), and R-Stitch+ with --router. Problems: the synthetic arithmetic set, or --data FILE.jsonl\n"
        "with 'question' and 'answer' per line (the answer is read from \\boxed{} or the last number).",
        epilog="examples:\n  rstitch eval --problems 200 --out runs/eval\n"
        "  rstitch eval --router runs/router/router.pt --router-tau 0.005 --tau 0.02\n"
        "  rstitch eval --slm PATH --llm PATH --data math500.jsonl --limit 100 --max-new-tokens 4096",
    )
    _add_model_args(ev)
    data = ev.add_argument_group("problems")
    data.add_argument(
        "--data", type=Path, help="a JSONL file with 'question' and 'answer' (default: synthetic problems)"
    )
    data.add_argument("--problems", type=int, default=200, help="number of synthetic problems (default: 200)")
    data.add_argument(
        "--data-seed",
        type=int,
        default=EVAL_SEED,
        help=f"seed of the synthetic problems (default: {EVAL_SEED})",
    )
    data.add_argument("--limit", type=int, help="use only the first N problems")
    _add_stitch_args(ev, many_taus=True)
    ev.add_argument("--router-tau", type=float, default=0.005, help="τ of R-Stitch+ (default: 0.005)")
    from rstitch.evaluation import METHODS

    ev.add_argument(
        "--methods",
        nargs="+",
        choices=list(METHODS),
        default=[m for m in METHODS if m != "r-stitch+"],
        help="methods to run (default: all; r-stitch+ when --router is given)",
    )
    ev.add_argument(
        "--out",
        type=Path,
        default=Path("eval/rstitch"),
        help="results.json and accuracy_latency.png (default: eval/rstitch)",
    )
    add_common_args(ev)
    ev.set_defaults(func=_eval)

    tl = add_command(
        commands,
        "train-lm",
        help="train the benchmark's SLM or LLM on synthetic arithmetic",
        description="Train one of the two Qwen2 models of the offline benchmark (checkpoints and resume in --out).",
        epilog="examples:\n  rstitch train-lm --preset slm --out runs/slm\n"
        "  rstitch train-lm --preset llm --out runs/llm",
    )
    tl.add_argument("--preset", choices=["slm", "llm"], required=True)
    tl.add_argument(
        "--out", type=Path, required=True, help="run folder (checkpoints/, train_log.jsonl, model/)"
    )
    tl.add_argument("--steps", type=int, default=2000, help="(default: 2000)")
    tl.add_argument("--batch-size", type=int, default=32, help="(default: 32)")
    tl.add_argument("--lr", type=float, default=2e-3, help="(default: 2e-3)")
    tl.add_argument("--ckpt-every", type=int, default=250, help="(default: 250)")
    tl.add_argument("--no-resume", action="store_true", help="start over even if --out has checkpoints")
    add_common_args(tl, device=False, dtype=False)
    tl.set_defaults(func=_train_lm)

    tr = add_command(
        commands,
        "train-router",
        help="train the R-Stitch+ router by policy gradient",
        description="Fit a latency cost model to the two models, then train the router with REINFORCE on\n"
        "reward = correct − λ · latency / LLM-only latency (checkpoints and resume in --out).",
        epilog="example:\n  rstitch train-router --out runs/router --tau 0.005 --lam 0.5 --steps 100",
    )
    _add_model_args(tr)
    tr.add_argument(
        "--out", type=Path, required=True, help="run folder (router.pt, cost_model.json, checkpoints/)"
    )
    tr.add_argument(
        "--tau", type=float, default=0.005, help="consult the router above this uncertainty (default: 0.005)"
    )
    tr.add_argument("--lam", type=float, default=0.5, help="latency weight λ (default: 0.5)")
    tr.add_argument("--rollouts", type=int, default=4, help="sampled decodings per problem (default: 4)")
    tr.add_argument("--steps", type=int, default=300, help="problems to train on (default: 300)")
    tr.add_argument("--lr", type=float, default=3e-3, help="(default: 3e-3)")
    tr.add_argument("--max-new-tokens", type=int, default=160, help="(default: 160)")
    tr.add_argument("--prompt-template", default=PROMPT_TEMPLATE, help="must contain {question}")
    tr.add_argument(
        "--data", type=Path, help="a JSONL file with 'question' and 'answer' (default: synthetic)"
    )
    tr.add_argument("--problems", type=int, default=300, help="synthetic training problems (default: 300)")
    tr.add_argument("--limit", type=int, help="use only the first N problems")
    add_common_args(tr)
    tr.set_defaults(func=_train_router)

    demo = add_command(
        commands,
        "demo",
        help="LLM alone vs R-Stitch on the shipped pair (offline, seconds)",
        description="Decode synthetic arithmetic problems with the shipped LLM alone and with R-Stitch; report\n"
        "the speed-up and both accuracies.",
    )
    demo.add_argument("--problems", type=int, default=20, help="(default: 20)")
    demo.add_argument("--tau", type=float, default=0.02, help="(default: 0.02)")
    add_common_args(demo)
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    return run_cli(lambda args: args.func(args), parser, argv)


if __name__ == "__main__":
    sys.exit(main())
