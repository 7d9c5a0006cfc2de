"""The evaluation harness (with scripted methods), the plot, and the ``rstitch`` command line."""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from rstitch.arithmetic import make_problems, write_jsonl
from rstitch.cli import main
from rstitch.evaluation import METHODS, Method, MethodResult, build_methods, evaluate, plot_accuracy_latency
from rstitch.generator import StitchOutput

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# --- evaluate with scripted methods -----------------------------------------------------------------------

ROWS = [
    {"question": "Mia has 3 apples . How many apples does Mia have now ?", "answer": "7"},
    {"question": "Tom has 5 pens . How many pens does Tom have now ?", "answer": "8"},
    {"question": "Zoe has 9 cards . How many cards does Zoe have now ?", "answer": "7"},
]


def scripted_output(tokenizer: Any, text: str, sources: str, latency: float) -> StitchOutput:
    """A StitchOutput whose new tokens decode to ``text``; ``sources`` is a string of 's'/'l' per token
    (repeated or cut to the number of tokens)."""
    ids = tokenizer.encode(text)
    labels = [{"s": "slm", "l": "llm"}[c] for c in (sources * len(ids))[: len(ids)]]
    prompt = torch.tensor([[5, 6, 7]])
    return StitchOutput(
        sequences=torch.cat([prompt, torch.tensor([ids])], dim=1), sources=labels, latency_s=latency
    )


class Scripted:
    """A method's ``run``: returns the given outputs in order (the first one is the untimed warm-up)."""

    def __init__(self, outputs: list[StitchOutput]) -> None:
        self.outputs: Iterator[StitchOutput] = iter(outputs)
        self.prompts: list[torch.Tensor] = []

    def __call__(self, ids: torch.Tensor) -> StitchOutput:
        self.prompts.append(ids)
        return next(self.outputs)


def test_evaluate_summarises_exactly(tokenizer: Any) -> None:
    def out(answer: str, sources: str, latency: float) -> StitchOutput:
        return scripted_output(tokenizer, f" The answer is \\boxed{{{answer}}} .", sources, latency)

    warm = out("0", "s", 100.0)  # a wrong answer and a huge latency: the warm-up must not count
    llm = Scripted([warm, out("7", "l", 0.4), out("8", "l", 0.5), out("7", "l", 0.6)])
    slm = Scripted([warm, out("8", "s", 0.1), out("8", "s", 0.1), out("8", "s", 0.4)])
    mixed = [out("7", "ssl", 0.2), out("1", "sl", 0.25), scripted_output(tokenizer, " no idea", "l", 0.3)]
    stitched = Scripted([warm, *mixed])
    methods = [Method("slm", slm), Method("llm", llm), Method("r-stitch", stitched, 0.5)]
    results = evaluate(methods, tokenizer, ROWS, show_progress=False)

    assert [r.method for r in results] == ["slm", "llm", "r-stitch"]
    assert [r.label for r in results] == ["slm", "llm", "r-stitch τ=0.5"]
    by_name = {r.method: r for r in results}
    assert by_name["llm"].accuracy == 1.0 and by_name["llm"].correct == [True, True, True]
    assert by_name["slm"].accuracy == pytest.approx(1 / 3) and by_name["slm"].correct == [False, True, False]
    assert by_name["r-stitch"].correct == [True, False, False]
    assert by_name["r-stitch"].answers == ["7", "1", None]

    means = {"llm": 0.5, "slm": 0.2, "r-stitch": 0.25}
    medians = {"llm": 0.5, "slm": 0.1, "r-stitch": 0.25}
    for name, mean in means.items():
        assert by_name[name].mean_latency_s == pytest.approx(mean)
        assert by_name[name].median_latency_s == pytest.approx(medians[name])
        assert by_name[name].speedup == pytest.approx(0.5 / mean)

    tokens = [len(o.sources) for o in mixed]
    llm_tokens = sum(o.sources.count("llm") for o in mixed)
    assert by_name["r-stitch"].llm_share == pytest.approx(llm_tokens / sum(tokens))
    assert 0 < by_name["r-stitch"].llm_share < 1
    assert by_name["r-stitch"].mean_new_tokens == pytest.approx(statistics.fmean(tokens))
    assert by_name["llm"].llm_share == 1.0 and by_name["slm"].llm_share == 0.0
    assert by_name["llm"].mean_new_tokens == pytest.approx(
        len(tokenizer.encode(" The answer is \\boxed{7} ."))
    )

    # each method saw the warm-up prompt, then every problem's prompt (built with the default template)
    expected_prompts = [tokenizer(f"Question: {r['question']}\nAnswer:").input_ids for r in ROWS]
    assert [p[0].tolist() for p in llm.prompts] == [expected_prompts[0], *expected_prompts]


def test_evaluate_uses_the_prompt_template(tokenizer: Any) -> None:
    run = Scripted([scripted_output(tokenizer, " 7", "l", 0.1)] * 3)
    evaluate(
        [Method("llm", run)], tokenizer, ROWS[:2], prompt_template="Q: {question} A:", show_progress=False
    )
    assert tokenizer.decode(run.prompts[1][0]) == f"Q: {ROWS[0]['question']} A:"


def test_evaluate_needs_the_llm_reference_and_problems(tokenizer: Any) -> None:
    run = Scripted([scripted_output(tokenizer, " 7", "l", 0.1)] * 10)
    with pytest.raises(ValueError, match="'llm'"):
        evaluate([Method("slm", run)], tokenizer, ROWS, show_progress=False)
    with pytest.raises(ValueError, match="'llm'"):  # a stitched method named llm with a τ is no reference
        evaluate([Method("llm", run, 0.5)], tokenizer, ROWS, show_progress=False)
    with pytest.raises(ValueError, match="no problems"):
        evaluate([Method("llm", run)], tokenizer, [], show_progress=False)


def test_build_methods_rejects_unknown_names_and_r_stitch_plus_without_router(
    vocab_pair: tuple[Any, Any], tokenizer: Any
) -> None:
    slm, llm = vocab_pair
    with pytest.raises(ValueError, match="fastest"):
        build_methods(slm, llm, tokenizer, taus=[0.1], include=["llm", "fastest"])
    with pytest.raises(ValueError, match="router"):
        build_methods(slm, llm, tokenizer, taus=[0.1], include=["r-stitch+"])
    with pytest.raises(ValueError, match="router"):
        build_methods(slm, llm, tokenizer, taus=[0.1], include=["r-stitch+"], router=object())


def test_build_methods_names_and_taus(vocab_pair: tuple[Any, Any], tokenizer: Any) -> None:
    slm, llm = vocab_pair
    methods = build_methods(slm, llm, tokenizer, taus=[0.1, 0.3], include=["r-stitch", "per-token"])
    # the LLM alone is always there (the speed-up reference), each τ gets its stitched methods
    assert [(m.name, m.tau) for m in methods] == [
        ("llm", None),
        ("per-token", 0.1),
        ("r-stitch", 0.1),
        ("per-token", 0.3),
        ("r-stitch", 0.3),
    ]
    everything = build_methods(
        slm, llm, tokenizer, taus=[0.2], include=METHODS, router=object(), router_tau=0.05, max_new_tokens=4
    )
    assert [m.name for m in everything] == [
        "llm",
        "slm",
        "llm-generate",
        "speculative",
        "per-token",
        "r-stitch",
        "r-stitch+",
    ]
    assert everything[-1].tau == 0.05


def test_built_methods_run_on_tiny_models(vocab_pair: tuple[Any, Any], tokenizer: Any) -> None:
    slm, llm = vocab_pair
    methods = build_methods(
        slm,
        llm,
        tokenizer,
        taus=[0.0, 1.0],
        include=["slm", "llm", "llm-generate", "speculative", "r-stitch", "per-token"],
        max_new_tokens=6,
    )
    prompt = tokenizer("Question: Mia has 3 apples .\nAnswer:", return_tensors="pt").input_ids
    outputs = {(m.name, m.tau): m.run(prompt) for m in methods}
    llm_tokens = outputs[("llm", None)].new_tokens.tolist()
    for key, out in outputs.items():
        assert 1 <= len(out.sources) <= 6, key
        assert out.latency_s > 0, key
    # greedy everywhere: transformers' loop, speculative decoding and τ = 0 all give the LLM's output
    assert outputs[("llm-generate", None)].new_tokens.tolist() == llm_tokens
    assert outputs[("speculative", None)].new_tokens.tolist() == llm_tokens
    assert outputs[("r-stitch", 0.0)].new_tokens.tolist() == llm_tokens
    # τ = 1: never escalates, the SLM's greedy output
    assert outputs[("r-stitch", 1.0)].new_tokens.tolist() == outputs[("slm", None)].new_tokens.tolist()
    assert outputs[("r-stitch", 1.0)].llm_share == 0.0


# --- plot -------------------------------------------------------------------------------------------------


def result(method: str, tau: float | None, accuracy: float, latency: float) -> MethodResult:
    return MethodResult(method, tau, accuracy, latency, latency, 1.0, 0.5, 10.0)


def test_plot_accuracy_latency_writes_a_png(tmp_path: Path) -> None:
    results = [
        result("llm", None, 0.9, 0.02),
        result("slm", None, 0.4, 0.005),
        result("r-stitch", 0.1, 0.8, 0.01),
        result("r-stitch", 0.02, 0.85, 0.015),
        result("per-token", 0.1, 0.7, 0.012),
        result("r-stitch+", 0.005, 0.86, 0.011),
    ]
    path = plot_accuracy_latency(results, tmp_path / "plots" / "acc.png", title="3 problems")
    assert path == tmp_path / "plots" / "acc.png"
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 1000


# --- command line -----------------------------------------------------------------------------------------


def run_cli(capfd: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capfd.readouterr()
    return code, captured.out, captured.err


def error_line(err: str) -> str:
    """The one ``rstitch: error:`` line (transformers' progress bars may precede it on stderr)."""
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("rstitch: error:")]
    assert len(lines) == 1, err
    assert err.rstrip().endswith(lines[0]), err
    return lines[0]


@pytest.mark.parametrize(
    ("command", "options"),
    [
        (
            "generate",
            ["--slm", "--llm", "--prompt", "--question", "--tau", "--stream", "--show-sources", "--json"],
        ),
        (
            "eval",
            ["--slm", "--llm", "--data", "--problems", "--tau", "--methods", "--router", "--out", "--json"],
        ),
        ("train-lm", ["--preset", "--out", "--steps", "--batch-size", "--lr", "--ckpt-every", "--no-resume"]),
        ("train-router", ["--out", "--tau", "--lam", "--rollouts", "--steps", "--data"]),
    ],
)
def test_subcommand_help(capfd: pytest.CaptureFixture[str], command: str, options: list[str]) -> None:
    code, out, _ = run_cli(capfd, command, "--help")
    assert code == 0
    assert out.startswith(f"usage: rstitch {command}")
    missing = [o for o in options if o not in out]
    assert not missing


def test_top_level_help_lists_the_commands(capfd: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capfd, "--help")
    assert code == 0
    for command in ("generate", "eval", "train-lm", "train-router", "demo"):
        assert command in out


def test_a_missing_command_is_a_usage_error(capfd: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capfd)
    assert code == 2 and "usage:" in err


QUESTION = "Mia has 3 apples . Then she buys 4 more . How many apples does Mia have now ?"


def generate(capfd: pytest.CaptureFixture[str], pair: tuple[Path, Path], *extra: str) -> tuple[int, str, str]:
    slm, llm = pair
    return run_cli(
        capfd,
        "generate",
        "--slm",
        slm,
        "--llm",
        llm,
        "--question",
        QUESTION,
        "--max-new-tokens",
        "8",
        "--device",
        "cpu",
        *extra,
    )


def runs_of(sources: list[str], label: str) -> int:
    """How many maximal runs of ``label`` the source list has."""
    return sum(1 for i, s in enumerate(sources) if s == label and (i == 0 or sources[i - 1] != label))


def test_generate_json(capfd: pytest.CaptureFixture[str], saved_pair: tuple[Path, Path]) -> None:
    code, out, _ = generate(capfd, saved_pair, "--json", "--tau", "0.5", "--no-eos")
    assert code == 0
    lines = out.strip().splitlines()
    assert len(lines) == 1
    payload = json.loads(lines[0])
    assert payload["prompt"] == f"Question: {QUESTION}\nAnswer:"
    assert isinstance(payload["completion"], str)
    assert payload["new_tokens"] == len(payload["sources"]) == 8  # --no-eos: the full budget
    assert set(payload["sources"]) <= {"slm", "llm"}
    assert payload["llm_share"] == round(payload["sources"].count("llm") / 8, 4)


@pytest.mark.parametrize("tau", ["0", "0.5", "1"])
def test_generate_show_sources_brackets_the_llm_tokens(
    capfd: pytest.CaptureFixture[str], saved_pair: tuple[Path, Path], tau: str
) -> None:
    code, out, _ = generate(capfd, saved_pair, "--json", "--tau", tau, "--no-eos")
    assert code == 0
    payload = json.loads(out)
    code, out, err = generate(capfd, saved_pair, "--show-sources", "--tau", tau, "--no-eos")
    assert code == 0
    shown = out[:-1] if out.endswith("\n") else out
    assert shown.replace("[", "").replace("]", "") == payload["completion"]
    assert shown.count("[") == shown.count("]") == runs_of(payload["sources"], "llm")
    if tau == "1":
        assert payload["sources"] == ["slm"] * 8
    assert "llm_share=" in err and "new_tokens=8" in err


def test_generate_stream_prints_the_completion(
    capfd: pytest.CaptureFixture[str], saved_pair: tuple[Path, Path]
) -> None:
    code, out, _ = generate(capfd, saved_pair, "--json", "--tau", "0.5")
    assert code == 0
    completion = json.loads(out)["completion"]
    code, out, err = generate(capfd, saved_pair, "--stream", "--tau", "0.5")
    assert code == 0
    assert out == completion + "\n"
    assert "switches=" in err


def test_generate_with_a_raw_prompt_and_sampling(
    capfd: pytest.CaptureFixture[str], saved_pair: tuple[Path, Path]
) -> None:
    slm, llm = saved_pair
    argv = ["generate", "--slm", slm, "--llm", llm, "--prompt", "Solve: 3 + 4 =", "--max-new-tokens", "6"]
    argv += ["--sample", "--top-k", "5", "--seed", "3", "--device", "cpu", "--json"]
    code, out, _ = run_cli(capfd, *argv)
    assert code == 0
    first = json.loads(out)
    assert first["prompt"] == "Solve: 3 + 4 ="
    code, out, _ = run_cli(capfd, *argv)
    assert json.loads(out)["completion"] == first["completion"]  # the same seed, the same sample


def test_eval_writes_results_and_plot(
    capfd: pytest.CaptureFixture[str], saved_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    slm, llm = saved_pair
    out_dir = tmp_path / "eval"
    code, out, _ = run_cli(
        capfd,
        "eval",
        "--slm",
        slm,
        "--llm",
        llm,
        "--problems",
        "3",
        "--tau",
        "0.5",
        "--max-new-tokens",
        "12",
        "--methods",
        "slm",
        "llm",
        "r-stitch",
        "per-token",
        "--out",
        out_dir,
        "--json",
        "--device",
        "cpu",
    )
    assert code == 0
    lines = out.strip().splitlines()
    assert len(lines) == 1
    payload = json.loads(lines[0])
    assert payload["problems"] == 3
    assert [r["method"] for r in payload["results"]] == ["llm", "slm", "per-token τ=0.5", "r-stitch τ=0.5"]
    for row in payload["results"]:
        assert set(row) == {
            "method",
            "accuracy",
            "mean_latency_ms",
            "speedup_vs_llm",
            "llm_token_share",
            "mean_new_tokens",
        }
        assert (
            0 <= row["accuracy"] <= 100 and row["mean_latency_ms"] > 0 and 0 <= row["mean_new_tokens"] <= 12
        )
    llm_row = payload["results"][0]
    assert llm_row["speedup_vs_llm"] == 1.0 and llm_row["llm_token_share"] == 1.0
    assert payload["results"][1]["llm_token_share"] == 0.0
    saved = json.loads((out_dir / "results.json").read_text())
    assert saved["problems"] == 3 and saved["results"] == payload["results"] and "machine" in saved
    assert (out_dir / "accuracy_latency.png").read_bytes().startswith(PNG_SIGNATURE)


def test_eval_prints_a_table_without_json(
    capfd: pytest.CaptureFixture[str],
    saved_pair: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    slm, llm = saved_pair
    monkeypatch.chdir(tmp_path)  # the default --out is eval/rstitch under the working directory
    code, out, _ = run_cli(
        capfd,
        "eval",
        "--slm",
        slm,
        "--llm",
        llm,
        "--problems",
        "2",
        "--tau",
        "0.5",
        "--max-new-tokens",
        "6",
        "--methods",
        "llm",
        "r-stitch",
        "--device",
        "cpu",
    )
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0] == "2 problems"
    assert lines[1].startswith("| method | accuracy |")
    assert len(lines) == 3 + 2  # header, rule, one row per method
    assert (tmp_path / "eval" / "rstitch" / "accuracy_latency.png").read_bytes()[:4] == b"\x89PNG"


def test_eval_reads_a_jsonl_file(
    capfd: pytest.CaptureFixture[str], saved_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    slm, llm = saved_pair
    data = write_jsonl(make_problems(3, seed=11), tmp_path / "problems.jsonl")
    base = ["eval", "--slm", slm, "--llm", llm, "--data", data, "--tau", "0.5", "--max-new-tokens", "6"]
    base += ["--methods", "llm", "r-stitch", "--json", "--device", "cpu", "--out", tmp_path / "out"]
    code, out, _ = run_cli(capfd, *base)
    assert code == 0
    assert json.loads(out)["problems"] == 3
    code, out, _ = run_cli(capfd, *base, "--limit", "2")
    assert code == 0
    assert json.loads(out)["problems"] == 2


def test_train_lm_command(capfd: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out_dir = tmp_path / "slm"
    code, out, _ = run_cli(
        capfd, "train-lm", "--preset", "slm", "--out", out_dir, "--steps", "3", "--batch-size", "2", "--json"
    )
    assert code == 0
    payload = json.loads(out)
    assert payload == {"preset": "slm", "steps": 3, "model": str(out_dir / "model")}
    assert (out_dir / "model" / "config.json").is_file()
    assert (out_dir / "model" / "tokenizer.json").is_file()
    assert (out_dir / "checkpoints" / "latest").is_file()


# --- command-line errors: exit code 2 and one line naming the problem ------------------------------------


@pytest.fixture
def other_tokenizer_folder(tmp_path: Path, model_factory: Any) -> Path:
    """A model folder whose tokenizer has another vocabulary (300 entries instead of 512)."""
    from rstitch.tokenizer import build_tokenizer

    other = build_tokenizer(vocab_size=300)
    folder = tmp_path / "other-tokenizer"
    model_factory(hidden=32, layers=1, seed=2, vocab=len(other)).save_pretrained(folder)
    other.save_pretrained(folder)
    return folder


def test_eval_rejects_tau_outside_unit_interval(
    capfd: pytest.CaptureFixture[str], saved_pair: tuple[Path, Path]
) -> None:
    slm, llm = saved_pair
    code, out, err = run_cli(
        capfd, "eval", "--slm", slm, "--llm", llm, "--tau", "0.1", "1.5", "--device", "cpu"
    )
    assert code == 2 and out == ""
    line = error_line(err)
    assert "--tau" in line and "1.5" in line


def test_generate_rejects_tau_outside_unit_interval(
    capfd: pytest.CaptureFixture[str], saved_pair: tuple[Path, Path]
) -> None:
    code, out, err = generate(capfd, saved_pair, "--tau", "1.5")
    assert code == 2 and out == ""
    line = error_line(err)
    assert "1.5" in line
    assert "--tau" in line, f"the message should name the option: {line}"


@pytest.mark.parametrize("command", ["generate", "eval"])
def test_prompt_template_needs_the_question(
    capfd: pytest.CaptureFixture[str], saved_pair: tuple[Path, Path], command: str
) -> None:
    slm, llm = saved_pair
    extra = ["--question", "x"] if command == "generate" else []
    code, out, err = run_cli(
        capfd, command, "--slm", slm, "--llm", llm, *extra, "--prompt-template", "Q: {q}", "--device", "cpu"
    )
    assert code == 2 and out == ""
    line = error_line(err)
    assert "--prompt-template" in line and "{question}" in line


@pytest.mark.parametrize("given", [["--prompt", "a", "--question", "b"], []], ids=["both", "neither"])
def test_generate_needs_exactly_one_of_prompt_and_question(
    capfd: pytest.CaptureFixture[str], saved_pair: tuple[Path, Path], given: list[str]
) -> None:
    slm, llm = saved_pair
    code, out, err = run_cli(capfd, "generate", "--slm", slm, "--llm", llm, *given, "--device", "cpu")
    assert code == 2 and out == ""
    line = error_line(err)
    assert "--prompt" in line and "--question" in line


def test_a_missing_model_folder_is_named(
    capfd: pytest.CaptureFixture[str], saved_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-model"
    code, out, err = run_cli(
        capfd, "generate", "--slm", missing, "--llm", saved_pair[1], "--question", "x", "--device", "cpu"
    )
    assert code == 2 and out == ""
    line = error_line(err)
    assert str(missing) in line
    assert "--slm" in line, f"the message should name the option: {line}"


def test_a_bad_jsonl_line_is_reported(
    capfd: pytest.CaptureFixture[str], saved_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    slm, llm = saved_pair
    data = tmp_path / "broken.jsonl"
    data.write_text('{"question": "q", "answer": "1"}\n{"question": "q", "answer":\n')
    code, out, err = run_cli(
        capfd,
        "eval",
        "--slm",
        slm,
        "--llm",
        llm,
        "--data",
        data,
        "--methods",
        "llm",
        "--device",
        "cpu",
        "--json",
    )
    assert code == 2 and out == ""
    line = error_line(err)
    assert f"{data}:2" in line and "JSON" in line


def test_models_with_different_tokenizers_are_refused(
    capfd: pytest.CaptureFixture[str], saved_pair: tuple[Path, Path], other_tokenizer_folder: Path
) -> None:
    code, out, err = run_cli(
        capfd,
        "generate",
        "--slm",
        saved_pair[0],
        "--llm",
        other_tokenizer_folder,
        "--question",
        "x",
        "--device",
        "cpu",
    )
    assert code == 2 and out == ""
    assert "share a tokenizer" in error_line(err)


def test_demo_runs_offline_on_the_shipped_pair(capfd: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--problems", "2", "--json", "--device", "cpu"]) == 0
    result = json.loads(capfd.readouterr().out.strip().splitlines()[-1])
    assert result["method"] == "rstitch"
    assert result["baseline_time_s"] > 0 and result["accelerated_time_s"] > 0
    assert result["speed_ratio"] == pytest.approx(result["baseline_time_s"] / result["accelerated_time_s"])
    assert 0.0 <= result["quality_value"] <= 1.0


def test_shipped_pair_shares_its_tokenizer_and_the_llm_is_the_deeper_model() -> None:
    from rstitch.models import load_pair

    pair = load_pair()
    assert len(pair.tokenizer) == pair.slm.config.vocab_size == pair.llm.config.vocab_size
    assert pair.llm.config.num_hidden_layers > pair.slm.config.num_hidden_layers
    ids = pair.tokenizer("Question: Tom has 40 pens .", return_tensors="pt").input_ids
    assert pair.tokenizer.decode(ids[0]) == "Question: Tom has 40 pens ."


def test_eval_checks_router_tau_and_counts(
    capfd: pytest.CaptureFixture[str], saved_pair: tuple[Path, Path]
) -> None:
    slm, llm = saved_pair
    code, _, err = run_cli(capfd, "eval", "--slm", slm, "--llm", llm, "--router-tau", "2")
    assert code == 2 and "--router-tau" in err
    code, _, err = run_cli(capfd, "eval", "--slm", slm, "--llm", llm, "--problems", "0")
    assert code == 2 and "--problems" in err


def test_speculative_is_skipped_when_the_vocabularies_differ(
    vocab_pair: tuple[Any, Any], tokenizer: Any
) -> None:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    slm, _ = vocab_pair
    padded = Qwen2ForCausalLM(
        Qwen2Config(
            vocab_size=len(tokenizer) + 64,  # a padded embedding table, as Qwen2.5-7B has
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=64,
        )
    ).eval()
    with pytest.warns(UserWarning, match="speculative decoding skipped: vocabulary sizes differ"):
        methods = build_methods(
            slm, padded, tokenizer, taus=[0.5], include=["llm", "speculative", "r-stitch"]
        )
    assert [m.name for m in methods] == ["llm", "r-stitch"]
