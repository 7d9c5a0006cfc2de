"""FPSAttention on the tiny Wan: video fidelity of each variant, and the attention speed on the CPU.

Fidelity: the shipped ``tiny-wan`` generates each (prompt, seed) video with full-precision
attention (the reference) and with each variant; PSNR and SSIM of the variant's video against the
reference, averaged over the videos. Variants:

- FP8 only (dense window), tile-sparse only (full precision), both;
- the step-aware schedule (``TINY_SCHEDULE``) training-free, and a fixed schedule (one phase at
  every step) whose window gives the closest average density;
- the step-aware schedule after quantization-aware training, against the same ``tiny-wan``
  references: ``tiny-wan-qat-full`` (every weight fine-tuned, as in the paper) and ``tiny-wan-qat``
  (one low-rank adapter per sparse phase, base weights kept; the default of ``fpsattention train``).

Speed: :func:`fpsattention.speed.compare_methods` at a 10,240-token latent (25% window density).
Results: ``<out>/fpsattention_cpu.{json,md}``.

    python packages/fpsattention/benchmarks/bench_fpsattention.py
    python packages/fpsattention/benchmarks/bench_fpsattention.py --seeds 1 --skip-speed --out /tmp/b   # quick
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import itertools
import sys
from pathlib import Path

import torch

from accel_shared.bench import BenchmarkReport, describe_machine
from accel_shared.cli import progress
from fpsattention.evaluation import EVAL_PROMPTS, compare, fps_videos, reference_videos
from fpsattention.models import get_pipeline
from fpsattention.pipeline import TINY_SCHEDULE
from fpsattention.processor import apply, remove
from fpsattention.schedule import FPSSchedule, Phase
from fpsattention.speed import SpeedConfig, compare_methods
from fpsattention.training import step_errors, teacher_trajectories

COLUMNS = ["variant", "model", "average density", "PSNR dB", "SSIM", "min PSNR dB"]
SPEED_COLUMNS = ["method", "density", "ms", "speed-up vs SDPA", "rel. L2 error", "cosine"]


def closest_fixed_window(
    schedule: FPSSchedule, grid: tuple[int, int, int], num_steps: int
) -> tuple[int, int, int]:
    """The window whose density is closest to the schedule's average (ties: the most balanced)."""
    target = schedule.average_density(grid, num_steps)
    windows = itertools.product(*(range(1, n + 1) for n in grid))
    return min(
        windows,
        key=lambda w: (abs(Phase(window=w).density(grid) - target), max(w) - min(w)),
    )


def fidelity_report(seeds: tuple[int, ...], num_steps: int) -> BenchmarkReport:
    pipe = get_pipeline("tiny-wan")
    grid = (5, 4, 4)  # the tiny pipeline's 5 x 16 x 16 latent in 1 x 4 x 4 tiles
    step_aware = TINY_SCHEDULE
    fixed_window = closest_fixed_window(step_aware, grid, num_steps)
    tile = step_aware.tile
    fp8_only = Phase(fp8=True)
    sparse_only = Phase(fp8=False, window=step_aware.early.window)
    fixed = Phase(fp8=True, quant_group=8, window=fixed_window)
    variants = [
        ("FP8 only, per-tile scales", FPSSchedule.fixed(fp8_only, tile), "tiny-wan"),
        ("tile-sparse only, early window", FPSSchedule.fixed(sparse_only, tile), "tiny-wan"),
        ("FP8 + tile-sparse, fixed", FPSSchedule.fixed(fixed, tile), "tiny-wan"),
        ("FP8 + tile-sparse, step-aware, training-free", step_aware, "tiny-wan"),
        ("FP8 + tile-sparse, step-aware, after QAT of all weights", step_aware, "tiny-wan-qat-full"),
        ("FP8 + tile-sparse, step-aware, after QAT with phase adapters", step_aware, "tiny-wan-qat"),
    ]  # fmt: skip
    variants_after_qat = [(name, model) for name, _, model in variants if model != "tiny-wan"]
    references = reference_videos(pipe, EVAL_PROMPTS, seeds, num_steps=num_steps)
    report = BenchmarkReport(
        title="FPSAttention on the tiny Wan: video fidelity against full-precision attention (CPU)",
        description=(
            f"Shipped tiny-wan (2 blocks, 4 heads of 16), {len(EVAL_PROMPTS)} prompts x {len(seeds)} seeds, "
            f"{num_steps} denoising steps, 64x64 x 9 frames (a 5x16x16 latent, 1,280 tokens; tiles 1x4x4, grid "
            f"5x4x4). Reference: the same model, prompt and seed with full-precision attention. Step-aware "
            f"schedule: early {step_aware.early.window} window with per-tile scales, middle dense with 4-token "
            f"scales, late {step_aware.late.window} with 8-token scales, split at alpha1={step_aware.alpha1}, "
            f"alpha2={step_aware.alpha2}. The fixed schedule runs window {fixed_window} with 8-token scales at "
            "every step, the window whose density is closest to the step-aware average. QAT with the step-aware "
            "schedule: tiny-wan-qat-full (fpsattention train --full-weights: every weight, one set for all "
            "phases) and tiny-wan-qat (fpsattention train: a rank-16 adapter for each sparse phase, switched "
            "with the phase; the base weights, and so the dense middle phase, are tiny-wan's)."
        ),
        columns=COLUMNS,
        machine=describe_machine(),
        command="python packages/fpsattention/benchmarks/bench_fpsattention.py  (or: nox -s bench)",
    )
    for name, schedule, model_name in progress(variants, desc="variants", total=len(variants)):
        transformer = None if model_name == "tiny-wan" else get_pipeline(model_name).transformer
        videos = fps_videos(pipe, schedule, EVAL_PROMPTS, seeds, num_steps=num_steps, transformer=transformer)
        result = compare(videos, references)
        report.add_row(
            {
                "variant": name,
                "model": model_name,
                "average density": round(schedule.average_density(grid, num_steps), 3),
                "PSNR dB": result.psnr,
                "SSIM": result.ssim,
                "min PSNR dB": min(result.psnrs),
            }
        )
    psnr = {r["variant"]: r["PSNR dB"] for r in report.rows}
    training_free = psnr["FP8 + tile-sparse, step-aware, training-free"]
    aware = training_free - psnr["FP8 + tile-sparse, fixed"]
    for name, model_name in variants_after_qat:
        report.notes.append(
            f"{name} ({model_name}) over training-free: {psnr[name] - training_free:+.2f} dB."
        )
    report.notes.append(
        f"Step-aware over fixed at about equal average density, training-free: {aware:+.2f} dB."
    )
    return report


def steps_report(seeds: tuple[int, ...], num_steps: int) -> BenchmarkReport:
    """Where the video error comes from: each denoising step's velocity error, and the dense-phase drift."""
    pipe = get_pipeline("tiny-wan")
    teacher = pipe.transformer
    data = teacher_trajectories(pipe, list(EVAL_PROMPTS), list(seeds), num_steps=num_steps)
    references = reference_videos(pipe, EVAL_PROMPTS, seeds, num_steps=num_steps)
    dense = Phase(fp8=True, quant_group=4)
    all_dense = dataclasses.replace(TINY_SCHEDULE, early=dense, late=dense)
    columns = ["model", *(f"step {s}" for s in range(num_steps)), "every phase dense: PSNR dB"]
    report = BenchmarkReport(
        title="FPSAttention on the tiny Wan: per-step velocity error with the step-aware schedule (CPU)",
        description=(
            "Relative MSE of the guided velocity u + 3 (c - u) of the FPSAttention model against tiny-wan's "
            f"full-precision one, on tiny-wan's own trajectories of the {len(data.states)} evaluation videos, per "
            "denoising step (steps 2-5: the dense middle phase). Last column: PSNR of the videos when every phase "
            "runs dense FP8 (4-token scales), i.e. how far the weights themselves moved from tiny-wan (with phase "
            "adapters, the early and late adapters still run in their steps; the middle phase is tiny-wan's own)."
        ),
        columns=columns,
        machine=describe_machine(),
        command="python packages/fpsattention/benchmarks/bench_fpsattention.py  (or: nox -s bench)",
    )
    for name in ("tiny-wan", "tiny-wan-qat-full", "tiny-wan-qat"):
        model = copy.deepcopy(teacher) if name == "tiny-wan" else get_pipeline(name).transformer
        state = apply(model, TINY_SCHEDULE)
        errors = step_errors(model, teacher, state, data, guidance_scale=3.0, count=len(data.states))
        remove(model)
        drift = compare(
            fps_videos(pipe, all_dense, EVAL_PROMPTS, seeds, num_steps=num_steps, transformer=model),
            references,
        )
        report.add_row(
            {"model": name, **{f"step {s}": e for s, e in enumerate(errors)}, columns[-1]: drift.psnr}
        )
    return report


def speed_report(repeats: int) -> BenchmarkReport:
    config = SpeedConfig(repeats=repeats)
    rows = compare_methods(config, torch.device("cpu"))
    report = BenchmarkReport(
        title="FPSAttention attention call vs dense SDPA (CPU)",
        description=(
            f"{config.describe()}, B=1. Each method is one fpsattention.fps_attention call on the same tensors "
            "(tile reorder and restore included; FP8 rows include quantizing Q, K, V); errors against float32 "
            f"attention under the same mask; medians of {repeats} repeats."
        ),
        columns=SPEED_COLUMNS,
        machine=describe_machine(),
        command="python packages/fpsattention/benchmarks/bench_fpsattention.py  (or: nox -s bench)",
    )
    for r in rows:
        report.add_row(
            {
                "method": r["method"],
                "density": round(r["density"], 3),
                "ms": r["ms"],
                "speed-up vs SDPA": r["speedup"],
                "rel. L2 error": r["rel_l2"],
                "cosine": r["cosine"],
            }
        )
    report.notes.append(
        "FP8 brings no speed on this CPU (no FP8 arithmetic: codes are decoded and computed in float32); its rows "
        "report the FP8 error."
    )
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--device", choices=["cpu", "cuda"], default="cpu", help="only cpu: the tiny model is CPU-sized"
    )
    parser.add_argument("--seeds", type=int, default=2, help="seeds per prompt (default 2)")
    parser.add_argument("--steps", type=int, default=8, help="denoising steps (default 8)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks"))
    args = parser.parse_args(argv)
    if args.device == "cuda":
        print(
            "bench_fpsattention: the GPU numbers come from kernels-core/benchmarks/bench_fp8.py --device cuda"
        )
        return 0
    torch.manual_seed(0)
    fidelity = fidelity_report(tuple(range(args.seeds)), args.steps)
    print(fidelity.to_markdown())
    paths = list(fidelity.write(args.out, "fpsattention_cpu"))
    steps = steps_report(tuple(range(args.seeds)), args.steps)
    print(steps.to_markdown())
    paths += steps.write(args.out, "fpsattention_steps_cpu")
    if not args.skip_speed:
        speed = speed_report(args.repeats)
        print(speed.to_markdown())
        paths += speed.write(args.out, "fpsattention_speed_cpu")
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
