"""One harness for R-Stitch and its baselines: accuracy, latency, speed-up and LLM share on a problem set.

Every method decodes every problem greedily; the methods take turns problem by problem (not one method
after the other), so slow drifts of the machine affect them alike. Each method first decodes one
problem untimed (warm-up). Latency is the wall clock of one call, prompt prefill included.
"""

from __future__ import annotations

import functools
import statistics
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from accel_shared.cli import progress
from rstitch.answers import answers_match, extract_answer, reference_answer
from rstitch.arithmetic import PROMPT_TEMPLATE
from rstitch.baselines import decode_alone, transformers_generate
from rstitch.generator import RouterPolicy, StitchedGenerator, StitchOutput, default_eos_ids

__all__ = ["METHODS", "Method", "MethodResult", "build_methods", "evaluate", "plot_accuracy_latency"]

METHODS = ("slm", "llm", "llm-generate", "speculative", "per-token", "r-stitch", "r-stitch+")


@dataclass
class Method:
    """A decoding method: ``run(prompt_ids [1, P]) -> StitchOutput``."""

    name: str
    run: Callable[[torch.Tensor], StitchOutput]
    tau: float | None = None


@dataclass
class MethodResult:
    """A method's results on the problem set (``speedup``: LLM-alone mean latency / this mean latency)."""

    method: str
    tau: float | None
    accuracy: float
    mean_latency_s: float
    median_latency_s: float
    speedup: float
    llm_share: float
    mean_new_tokens: float
    correct: list[bool] = field(default_factory=list, repr=False)
    answers: list[str | None] = field(default_factory=list, repr=False)

    @property
    def label(self) -> str:
        return self.method if self.tau is None else f"{self.method} τ={self.tau:g}"


def _can_speculate(slm: Any, llm: Any) -> bool:
    """transformers' assisted generation needs equal vocabulary sizes and one device; skip it otherwise."""
    if slm.config.vocab_size != llm.config.vocab_size:
        reason = f"vocabulary sizes differ ({slm.config.vocab_size} vs {llm.config.vocab_size})"
    elif next(slm.parameters()).device != next(llm.parameters()).device:
        reason = "the models are on different devices"
    else:
        return True
    warnings.warn(
        f"speculative decoding skipped: {reason}; transformers' assisted generation needs both", stacklevel=3
    )
    return False


def build_methods(
    slm: Any,
    llm: Any,
    tokenizer: Any,
    *,
    taus: Sequence[float],
    include: Sequence[str] = METHODS,
    router: RouterPolicy | None = None,
    router_tau: float | None = None,
    uncertainty: str = "entropy",
    max_new_tokens: int = 256,
) -> list[Method]:
    """The methods of ``include`` (``"per-token"`` and ``"r-stitch"`` once per τ; ``"r-stitch+"`` needs
    ``router`` and ``router_tau``). The LLM alone is always included: it is the speed-up's reference."""
    unknown = [m for m in include if m not in METHODS]
    if unknown:
        raise ValueError(f"build_methods: unknown methods {unknown}; known: {list(METHODS)}")
    if "r-stitch+" in include and (router is None or router_tau is None):
        raise ValueError("build_methods: r-stitch+ needs a router and router_tau")
    eos = default_eos_ids(tokenizer, llm)
    alone = functools.partial(
        decode_alone, max_new_tokens=max_new_tokens, eos_token_id=eos, vocab_size=len(tokenizer)
    )
    methods = [Method("llm", lambda ids: alone(llm, ids, label="llm"))]
    if "slm" in include:
        methods.append(
            Method(
                "slm",
                lambda ids: alone(slm, ids, label="slm"),
            )
        )
    if "llm-generate" in include:
        methods.append(
            Method(
                "llm-generate",
                lambda ids: transformers_generate(llm, ids, max_new_tokens=max_new_tokens, eos_token_id=eos),
            )
        )
    if "speculative" in include and _can_speculate(slm, llm):
        methods.append(
            Method(
                "speculative",
                lambda ids: transformers_generate(
                    llm, ids, assistant_model=slm, max_new_tokens=max_new_tokens, eos_token_id=eos
                ),
            )
        )

    def stitched(tau: float, **kwargs: Any) -> Callable[[torch.Tensor], StitchOutput]:
        generator = StitchedGenerator(slm, llm, tokenizer, tau=tau, uncertainty=uncertainty, **kwargs)
        return lambda ids: generator.generate(ids, max_new_tokens=max_new_tokens)

    for tau in taus:
        if "per-token" in include:
            methods.append(Method("per-token", stitched(tau, switch_back="always"), tau))
        if "r-stitch" in include:
            methods.append(Method("r-stitch", stitched(tau), tau))
    if "r-stitch+" in include and router is not None and router_tau is not None:
        methods.append(Method("r-stitch+", stitched(router_tau, router=router), router_tau))
    return methods


def evaluate(
    methods: Sequence[Method],
    tokenizer: Any,
    rows: Sequence[dict[str, str]],
    *,
    prompt_template: str = PROMPT_TEMPLATE,
    show_progress: bool = True,
) -> list[MethodResult]:
    """Run every method on every row (``question`` / ``answer``) and summarise; LLM alone must be present."""
    if not rows:
        raise ValueError("evaluate: no problems")
    if not any(m.name == "llm" and m.tau is None for m in methods):
        raise ValueError("evaluate: the methods must include 'llm' (the speed-up reference)")
    prompts = [
        tokenizer(prompt_template.format(question=r["question"]), return_tensors="pt").input_ids for r in rows
    ]
    for method in methods:
        method.run(prompts[0])  # warm-up, untimed
    outputs: dict[int, list[StitchOutput]] = {i: [] for i in range(len(methods))}
    for prompt in progress(prompts, desc="evaluate", total=len(prompts), enabled=show_progress):
        for i, method in enumerate(methods):
            outputs[i].append(method.run(prompt))
    results = []
    for i, method in enumerate(methods):
        texts = [tokenizer.decode(o.new_tokens, skip_special_tokens=True) for o in outputs[i]]
        answers = [extract_answer(t) for t in texts]
        correct = [
            answers_match(a, reference_answer(r["answer"])) for a, r in zip(answers, rows, strict=True)
        ]
        latencies = [o.latency_s for o in outputs[i]]
        tokens = sum(len(o.sources) for o in outputs[i])
        results.append(
            MethodResult(
                method=method.name,
                tau=method.tau,
                accuracy=sum(correct) / len(correct),
                mean_latency_s=statistics.fmean(latencies),
                median_latency_s=statistics.median(latencies),
                speedup=float("nan"),
                llm_share=sum(o.sources.count("llm") for o in outputs[i]) / max(1, tokens),
                mean_new_tokens=tokens / len(outputs[i]),
                correct=correct,
                answers=answers,
            )
        )
    reference = next(r for r in results if r.method == "llm" and r.tau is None).mean_latency_s
    for r in results:
        r.speedup = reference / r.mean_latency_s
    return results


def plot_accuracy_latency(results: Sequence[MethodResult], path: str | Path, *, title: str = "") -> Path:
    """Accuracy against mean latency: every method on the left, a zoom on the stitched methods on the
    right (R-Stitch and per-token routing as τ curves, R-Stitch+ and speculative decoding as points)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), dpi=120)
    curves = {"r-stitch": ("o-", "C0"), "per-token": ("s--", "C1")}
    points = [r for r in results if r.method not in curves]
    zoomed = [r for r in results if r.method in curves or r.method in ("r-stitch+", "speculative")]
    for ax, zoom in zip(axes, (False, True), strict=True):
        for name, (style, color) in curves.items():
            curve = sorted((r for r in results if r.method == name), key=lambda r: r.mean_latency_s)
            if not curve:
                continue
            x = [r.mean_latency_s * 1e3 for r in curve]
            ax.plot(
                x,
                [r.accuracy * 100 for r in curve],
                style,
                color=color,
                label=name,
                mfc="none" if name == "per-token" else color,
            )
            if zoom and name == "r-stitch":
                for r in curve:
                    ax.annotate(
                        f"τ={r.tau:g}",
                        (r.mean_latency_s * 1e3, r.accuracy * 100),
                        fontsize=7,
                        xytext=(5, 4),
                        textcoords="offset points",
                    )
        for i, r in enumerate(points):
            if zoom and r not in zoomed:
                continue
            marker = "D" if r.method == "r-stitch+" else "^"
            ax.plot(
                r.mean_latency_s * 1e3,
                r.accuracy * 100,
                marker,
                color=f"C{i + 2}",
                label=r.label,
                markersize=8,
            )
        if zoom and zoomed:
            xs = [r.mean_latency_s * 1e3 for r in zoomed]
            ys = [r.accuracy * 100 for r in zoomed]
            ax.set_xlim(min(xs) * 0.9, max(xs) * 1.1)
            ax.set_ylim(min(ys) - 1.5, min(100.0, max(ys)) + 1.0)
            ax.set_title("zoom: stitched methods", fontsize=10)
        elif title:
            ax.set_title(title, fontsize=10)
        ax.set_xlabel("mean latency per problem (ms)")
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
