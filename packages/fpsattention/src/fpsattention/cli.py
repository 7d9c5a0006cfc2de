"""The ``fpsattention`` command: FP8 + 3D tile-sparse attention for Wan video diffusion.

Usage::

fpsattention bench [--video T H W --tile TT TH TW --window WT WH WW --heads H --head-dim D]
fpsattention generate [--model tiny-wan|PATH] [--prompt TEXT] [--schedule FILE] --out DIR
fpsattention train [--model tiny-wan] [--schedule FILE] --out DIR [--steps N]   (QAT, torchrun-able)
    [--full-weights | --adapter-rank R]
fpsattention train-base --out DIR [--steps N]                                   (the tiny Wan itself)
fpsattention demo [--json]
"""

from __future__ import annotations

import argparse
import json
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
    resolve_dtype,
    run_cli,
    seed_everything,
)

PROG = "fpsattention"

_EPILOG = """\
examples:
  fpsattention bench                                   # CPU: 8x32x40 latent, tile 4x8x8, window 1x2x5
  fpsattention bench --device cuda --video 20 48 80 --window 3 3 5 --heads 12 --head-dim 128 --dtype bfloat16
  fpsattention generate --prompt "a red circle moving right" --out ./videos
  fpsattention generate --model ./Wan2.1-T2V-1.3B-Diffusers --prompt "a cat surfing" --steps 50 \\
      --height 480 --width 832 --frames 81 --device cuda --dtype bfloat16 --out ./videos
  fpsattention train --out ./runs/qat --steps 300      # QAT (phase adapters) of the shipped tiny Wan, resumable
  fpsattention generate --model ./runs/qat/final --out ./videos                # with the trained adapters
  fpsattention train --out ./runs/qat-full --full-weights --steps 500 --batch-size 4   # all weights (paper)
  torchrun --nproc-per-node 2 -m fpsattention train --out ./runs/qat --device cpu
  fpsattention demo
"""


def _schedule(args: argparse.Namespace, tiny: bool) -> Any:
    from fpsattention.pipeline import TINY_SCHEDULE
    from fpsattention.schedule import FPSSchedule

    if getattr(args, "schedule", None):
        return FPSSchedule.load(args.schedule)
    return TINY_SCHEDULE if tiny else FPSSchedule()


def _is_tiny(model: str) -> bool:
    from fpsattention.models import SHIPPED

    return model in SHIPPED or model == "random" or (Path(model) / "transformer").is_dir()


# ---------------------------------------------------------------------------------------------
# bench
# ---------------------------------------------------------------------------------------------
def _bench(args: argparse.Namespace) -> int:
    from fpsattention.speed import SpeedConfig, compare_methods

    device = resolve_device(args.device)
    config = SpeedConfig(
        video=tuple(args.video), tile=tuple(args.tile), window=tuple(args.window), heads=args.heads,
        head_dim=args.head_dim, dtype=resolve_dtype(args.dtype), repeats=args.repeats,
    )  # fmt: skip
    seed_everything(args.seed)
    rows = compare_methods(config, device, show_progress=not args.json)
    if args.json:
        print(json.dumps({"config": config.describe(), "device": str(device), "rows": rows}))
        return 0
    print(f"{config.describe()} on {device}")
    print(f"{'method':<20} {'density':>8} {'ms':>10} {'vs SDPA':>8} {'rel. L2':>9} {'cosine':>8}")
    for r in rows:
        print(
            f"{r['method']:<20} {r['density']:>8.3f} {r['ms']:>10.2f} {r['speedup']:>7.2f}x "
            f"{r['rel_l2']:>9.4f} {r['cosine']:>8.5f}"
        )
    if device.type == "cpu":
        print("FP8 has no arithmetic on this CPU: its rows show the FP8 error, not a speed-up.")
    return 0


# ---------------------------------------------------------------------------------------------
# generate
# ---------------------------------------------------------------------------------------------
def _save_gif(frames: torch.Tensor, path: Path) -> None:
    from PIL import Image

    images = [
        Image.fromarray((f.permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy())
        for f in frames.cpu().float()
    ]
    images[0].save(path, save_all=True, append_images=images[1:], duration=125, loop=0)


def _generate(args: argparse.Namespace) -> int:
    from fpsattention.evaluation import compare, fps_videos, reference_videos
    from fpsattention.models import get_pipeline
    from fpsattention.pipeline import VideoSize

    device = resolve_device(args.device)
    pipe = get_pipeline(args.model, dtype=resolve_dtype(args.dtype), device=device)
    schedule = _schedule(args, _is_tiny(args.model))
    size = VideoSize(args.height, args.width, args.frames)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    prompts, seeds = (args.prompt,), (args.seed,)
    tic = time.perf_counter()
    reference = reference_videos(pipe, prompts, seeds, num_steps=args.steps, size=size)
    dense_s = time.perf_counter() - tic
    tic = time.perf_counter()
    video = fps_videos(pipe, schedule, prompts, seeds, num_steps=args.steps, size=size)
    fps_s = time.perf_counter() - tic
    fidelity = compare(video, reference)
    _save_gif(reference[0], out / "dense.gif")
    _save_gif(video[0], out / "fpsattention.gif")
    torch.save({"dense": reference[0], "fpsattention": video[0]}, out / "frames.pt")
    result = {
        "prompt": args.prompt,
        "model": args.model,
        "dense_s": dense_s,
        "fpsattention_s": fps_s,
        "psnr_db": fidelity.psnr,
        "ssim": fidelity.ssim,
        "videos": [str(out / "dense.gif"), str(out / "fpsattention.gif")],
    }
    emit(result, as_json=args.json)
    return 0


# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------
def _train_config(args: argparse.Namespace, **defaults: Any) -> Any:
    from fpsattention.training import TrainConfig

    values = {
        "steps": args.steps, "lr": args.lr, "batch_size": args.batch_size, "num_steps": args.denoise_steps,
        "seed": args.seed, "checkpoint_every": args.checkpoint_every, "videos_per_prompt": args.videos_per_prompt,
    }  # fmt: skip
    return TrainConfig(**{**defaults, **{k: v for k, v in values.items() if v is not None}})


def _train_base(args: argparse.Namespace) -> int:
    from accel_shared.distributed import setup_distributed, teardown_distributed
    from fpsattention.models import get_pipeline, save_components
    from fpsattention.training import (
        TrainConfig,
        encode_dataset,
        render_dataset,
        set_latent_statistics,
        train_base,
        train_vae,
    )

    ctx = setup_distributed(args.device)
    out = Path(args.out)
    try:
        cfg = _train_config(args)
        pipe = get_pipeline("random", device="cpu")
        videos, prompts = render_dataset(cfg)
        result: dict[str, Any] = {}
        if args.vae_steps > 0:
            vae_cfg = TrainConfig(
                steps=args.vae_steps,
                lr=2e-3,
                batch_size=4,
                seed=cfg.seed,
                checkpoint_every=cfg.checkpoint_every,
            )
            result["vae_final_mse"] = train_vae(pipe.vae, videos, vae_cfg, out / "vae-run", ctx=ctx)[-1][
                "mse"
            ]
        pipe.vae.to(ctx.device).eval()
        set_latent_statistics(pipe.vae, videos)
        data = encode_dataset(pipe.vae, pipe.transformer.config.text_dim, videos, prompts)
        history = train_base(pipe.transformer, data, cfg, out / "transformer-run", ctx=ctx)
        if ctx.is_main:
            save_components(pipe.to("cpu"), out / "final")
            result.update(steps=cfg.steps, final_loss=history[-1]["loss"], model=str(out / "final"))
            emit(result, as_json=args.json)
    finally:
        teardown_distributed(ctx)
    return 0


def _train(args: argparse.Namespace) -> int:
    import copy

    from accel_shared.distributed import setup_distributed, teardown_distributed
    from fpsattention.adapters import AdapterConfig, get_adapters, remove_adapters, save_adapters
    from fpsattention.data import all_clips
    from fpsattention.evaluation import EVAL_PROMPTS, compare, fps_videos, reference_videos
    from fpsattention.models import get_pipeline, save_components
    from fpsattention.training import teacher_trajectories, train_qat

    if not _is_tiny(args.model):
        raise CLIError(
            "train: the built-in data are the tiny model's synthetic videos; for a real Wan checkpoint, call "
            "fpsattention.training.train_qat with your own encoded latents"
        )
    ctx = setup_distributed(args.device)
    try:
        lr = 2e-4 if args.full_weights else 1e-3
        cfg = _train_config(args, steps=300, lr=lr, relative_loss=not args.plain_loss)
        pipe = get_pipeline(args.model, device="cpu")
        if get_adapters(pipe.transformer) is not None:
            raise CLIError(
                f"train: --model {args.model} carries phase adapters; train from its base model (e.g. tiny-wan)"
            )
        schedule = _schedule(args, tiny=True)
        adapters = None
        if not args.full_weights:
            adapters = AdapterConfig.for_sparse_phases(
                schedule, rank=args.adapter_rank, alpha=args.adapter_rank
            )
        # The full-precision pipeline's own trajectories, for every prompt, from seeds that the
        # evaluation (seeds 0, 1, ...) does not use.
        prompts = [clip.prompt for clip in all_clips()]
        seeds = [1000 + i for i in range(cfg.videos_per_prompt)]
        data = teacher_trajectories(pipe, prompts, seeds, num_steps=cfg.num_steps)
        student = copy.deepcopy(pipe.transformer)
        history = train_qat(student, schedule, data, cfg, args.out, ctx=ctx, adapters=adapters)
        if not ctx.is_main:
            return 0
        from fpsattention.processor import remove

        remove(student)
        student.to("cpu")
        result: dict[str, Any] = {"steps": cfg.steps, "final_loss": history[-1]["loss"]}
        if args.eval_prompts > 0:
            eval_prompts, eval_seeds = EVAL_PROMPTS[: args.eval_prompts], (0,)
            reference = reference_videos(pipe, eval_prompts, eval_seeds, num_steps=cfg.num_steps)
            before = compare(
                fps_videos(pipe, schedule, eval_prompts, eval_seeds, num_steps=cfg.num_steps), reference
            )
            after = compare(
                fps_videos(
                    pipe, schedule, eval_prompts, eval_seeds, num_steps=cfg.num_steps, transformer=student
                ),
                reference,
            )
            result.update(psnr_training_free=before.psnr, psnr_qat=after.psnr, ssim_training_free=before.ssim,
                          ssim_qat=after.ssim)  # fmt: skip
        final = copy.copy(pipe)
        final.transformer = student
        if adapters is not None:  # the base model and its adapters: the folder loads with --model
            save_adapters(student, Path(args.out) / "final" / "adapters")
            remove_adapters(student)
            result["adapters"] = str(Path(args.out) / "final" / "adapters")
        save_components(final, Path(args.out) / "final")
        schedule.save(Path(args.out) / "schedule.json")
        result["model"] = str(Path(args.out) / "final")
        emit(result, as_json=args.json)
    finally:
        teardown_distributed(ctx)
    return 0


# ---------------------------------------------------------------------------------------------
# demo
# ---------------------------------------------------------------------------------------------
def _demo(args: argparse.Namespace) -> int:
    from fpsattention.evaluation import compare, fps_videos, reference_videos
    from fpsattention.models import get_pipeline
    from fpsattention.pipeline import TINY_SCHEDULE
    from fpsattention.speed import SpeedConfig, compare_methods

    seed_everything(args.seed)
    pipe = get_pipeline("tiny-wan", device="cpu")
    prompts, seeds = ("a red circle moving right", "a blue square moving down"), (0,)
    reference = reference_videos(pipe, prompts, seeds, num_steps=args.steps)
    fidelity = compare(fps_videos(pipe, TINY_SCHEDULE, prompts, seeds, num_steps=args.steps), reference)
    speed = compare_methods(
        SpeedConfig(video=(4, 32, 32), tile=(4, 8, 8), window=(1, 2, 2), heads=4, head_dim=64, repeats=3),
        torch.device("cpu"),
        show_progress=False,
    )
    rows = {r["method"]: r for r in speed}
    sparse = rows["tile-sparse"]
    result = DemoResult(
        method="fpsattention",
        baseline="dense SDPA (4x32x32 latent, 4096 tokens)",
        accelerated=f"tile-sparse attention, window density {sparse['density']:.2f}",
        baseline_time_s=rows["dense SDPA"]["ms"] / 1e3,
        accelerated_time_s=sparse["ms"] / 1e3,
        speed_ratio=sparse["speedup"],
        quality_metric="PSNR dB of tiny-wan videos, FP8 + step-aware tiles vs full precision",
        quality_value=fidelity.psnr,
        notes=f"FP8 rel. L2 error {rows['FP8 + tile-sparse']['rel_l2']:.3f} (no FP8 speed on a CPU); "
        f"SSIM {fidelity.ssim:.3f} over {len(reference)} videos",
    )
    emit(result, as_json=args.json)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(
        PROG,
        "FPSAttention: FP8 quantization and 3D tile sparsity, scheduled over the denoising steps, for Wan video "
        "diffusion (diffusers WanTransformer3DModel). Runs offline on a shipped tiny Wan by default.",
        epilog=_EPILOG,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    bench = add_command(
        commands, "bench", help="attention speed and error: SDPA vs FP8 vs tile-sparse vs both",
        description="Time one self-attention over a T x H x W latent four ways on the same tensors (median of "
        "repeats) and report speed-ups over dense SDPA and errors against float32 attention under the same mask.",
    )  # fmt: skip
    bench.add_argument("--video", type=int, nargs=3, default=[8, 32, 40], metavar=("T", "H", "W"))
    bench.add_argument("--tile", type=int, nargs=3, default=[4, 8, 8], metavar=("TT", "TH", "TW"))
    bench.add_argument(
        "--window", type=int, nargs=3, default=[1, 2, 5], metavar=("WT", "WH", "WW"),
        help="key tiles per axis around each query tile (default 1 2 5: 25%% of the tile pairs)",
    )  # fmt: skip
    bench.add_argument("--heads", type=int, default=4)
    bench.add_argument("--head-dim", type=int, default=64)
    bench.add_argument("--repeats", type=int, default=5)
    add_common_args(bench)
    bench.set_defaults(func=_bench, dtype="bfloat16")

    generate = add_command(
        commands, "generate", help="a video with and without FPSAttention; PSNR/SSIM between them",
        description="Generate one video with the full-precision pipeline and one with FPSAttention (same prompt and "
        "seed), save both as GIFs and report PSNR/SSIM of the FPSAttention video against the other.",
    )  # fmt: skip
    generate.add_argument(
        "--model",
        default="tiny-wan",
        help="tiny-wan, tiny-wan-qat (phase adapters), tiny-wan-qat-full, random, a folder saved by train, or a "
        "diffusers Wan folder",
    )
    generate.add_argument("--prompt", default="a red circle moving right")
    generate.add_argument("--schedule", help="FPSSchedule JSON (default: the tiny schedule for tiny models)")
    generate.add_argument("--steps", type=int, default=8, help="denoising steps (default 8)")
    generate.add_argument("--height", type=int, default=64)
    generate.add_argument("--width", type=int, default=64)
    generate.add_argument("--frames", type=int, default=9)
    generate.add_argument("--out", required=True, help="folder for dense.gif, fpsattention.gif and frames.pt")
    add_common_args(generate)
    generate.set_defaults(func=_generate)

    for name, func, text in (
        ("train", _train, "quantization- and sparsity-aware fine-tuning toward the full-precision model"),
        ("train-base", _train_base, "train the tiny Wan itself (flow matching on the synthetic videos)"),
    ):
        sub = add_command(
            commands, name, help=text,
            description=text + ". Checkpoints go to OUT/checkpoints and a rerun resumes; torchrun runs it on "
            "several processes (gloo on CPU, nccl on GPUs).",
        )  # fmt: skip
        sub.add_argument("--out", required=True, help="run folder (checkpoints, history.json, final/)")
        sub.add_argument("--steps", type=int, help="optimizer steps (train: 300, train-base: 1500)")
        sub.add_argument(
            "--lr", type=float, help="learning rate (train: 1e-3, with --full-weights 2e-4; train-base: 1e-3)"
        )
        sub.add_argument("--batch-size", type=int, help="latents per step and process (default 8)")
        sub.add_argument(
            "--denoise-steps", type=int, help="denoising steps the schedule is laid over (default 8)"
        )
        sub.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (default 100)")
        sub.add_argument(
            "--videos-per-prompt", type=int, help="training videos rendered per prompt (default 8)"
        )
        if name == "train-base":
            sub.add_argument(
                "--vae-steps",
                type=int,
                default=400,
                help="VAE steps before the transformer (0: keep the VAE)",
            )
        if name == "train":
            sub.add_argument(
                "--model", default="tiny-wan", help="tiny-wan (default), random or a saved folder"
            )
            sub.add_argument("--schedule", help="FPSSchedule JSON (default: the tiny schedule)")
            sub.add_argument(
                "--full-weights", action="store_true",
                help="fine-tune every weight for all phases at once, as the paper does (default: train one "
                "low-rank adapter per sparse phase and keep the weights)",
            )  # fmt: skip
            sub.add_argument(
                "--adapter-rank", type=int, default=16, help="LoRA rank of the phase adapters (default 16)"
            )
            sub.add_argument(
                "--plain-loss", action="store_true",
                help="weight every denoising step alike (default: by 1 / its training-free error)",
            )  # fmt: skip
            sub.add_argument(
                "--eval-prompts", type=int, default=4, help="prompts for the before/after PSNR (0: skip)"
            )
        add_common_args(sub, dtype=False)
        sub.set_defaults(func=func, device="cpu")

    demo = add_command(
        commands, "demo", help="offline: tile-sparse speed and FP8 + step-aware fidelity on the tiny Wan",
        description="Runs offline in about a minute: the tile-sparse attention speed-up over SDPA on a 4096-token "
        "latent, and PSNR of tiny-wan videos with FPSAttention against the full-precision videos.",
    )  # fmt: skip
    demo.add_argument("--steps", type=int, default=8)
    add_common_args(demo, device=False, dtype=False)
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    return run_cli(lambda args: args.func(args), parser, argv)


if __name__ == "__main__":
    raise SystemExit(main())
