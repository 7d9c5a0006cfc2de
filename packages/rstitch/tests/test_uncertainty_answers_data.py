"""Uncertainty measures, answer extraction, the synthetic arithmetic problems and the tokenizer."""

from __future__ import annotations

import json
import math
import random
import re
from pathlib import Path
from typing import Any

import pytest
import torch

from rstitch.answers import answers_match, extract_answer
from rstitch.arithmetic import (
    MAX_VALUE,
    Problem,
    iter_problems,
    make_problem,
    make_problems,
    read_jsonl,
    write_jsonl,
)
from rstitch.uncertainty import UNCERTAINTY_MEASURES, uncertainty

EQUATION = re.compile(r"(\d+) ([+\-*]) (\d+) = (\d+)")
OPERATIONS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}

# --- uncertainty -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("vocab", [2, 5, 64, 427, 1000])
def test_uniform_logits_are_maximally_uncertain(vocab: int) -> None:
    logits = torch.full((vocab,), 3.0)
    assert uncertainty(logits, "entropy") == pytest.approx(1.0, abs=1e-12)
    assert uncertainty(logits, "max_prob") == pytest.approx(1.0 - 1.0 / vocab, abs=1e-12)


@pytest.mark.parametrize("vocab", [2, 5, 64, 1000])
@pytest.mark.parametrize("measure", UNCERTAINTY_MEASURES)
def test_uncertainty_is_at_most_one(vocab: int, measure: str) -> None:
    # The module promises values in [0, 1] and τ = 1 is meant to never escalate (u > τ is never true);
    # float64 rounding puts the normalised entropy of a uniform distribution at 1 + 4e-16 for some V.
    assert 0.0 <= uncertainty(torch.zeros(vocab), measure) <= 1.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_one_hot_logits_are_certain(dtype: torch.dtype) -> None:
    logits = torch.zeros(64, dtype=dtype)
    logits[7] = 60.0
    assert uncertainty(logits, "entropy") == pytest.approx(0.0, abs=1e-12)
    assert uncertainty(logits, "max_prob") == pytest.approx(0.0, abs=1e-12)


def test_minus_infinity_logits_do_not_give_nan() -> None:
    logits = torch.tensor([0.0, 0.0, float("-inf"), float("-inf")])
    assert uncertainty(logits, "entropy") == pytest.approx(math.log(2) / math.log(4))
    assert uncertainty(logits, "max_prob") == pytest.approx(0.5)


def test_uncertainty_grows_as_the_distribution_flattens() -> None:
    base = torch.randn(50, generator=torch.Generator().manual_seed(0))
    for measure in UNCERTAINTY_MEASURES:
        values = [uncertainty(base * scale, measure) for scale in (20.0, 5.0, 1.0, 0.2)]
        assert values == sorted(values) and values[0] < values[-1]


@pytest.mark.parametrize("shape", [(1,), (2, 5), ()])
def test_uncertainty_rejects_bad_shapes(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="shape"):
        uncertainty(torch.zeros(shape))


def test_uncertainty_rejects_unknown_measures() -> None:
    with pytest.raises(ValueError, match="measure"):
        uncertainty(torch.zeros(5), "variance")


# --- answers ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so \\boxed{\\frac{1}{2}} is it", "\\frac{1}{2}"),
        ("first \\boxed{3}, then \\boxed{ 4 }", "4"),
        ("we have 3 apples and then 5 more, so 8 .", "8"),
        ("the total is 1,000 coins", "1,000"),
        ("a price of -2.5 dollars", "-2.5"),
        ("no numbers here", None),
        ("cut off \\boxed{12", "12"),
    ],
)
def test_extract_answer(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    ("predicted", "reference", "match"),
    [
        ("1,000", "1000", True),
        ("1000.0", "1000", True),
        ("$42$", "42", True),
        ("42", "43", False),
        ("\\frac{1}{2}", "\\frac{1}{2}", True),
        ("\\frac { 1 } { 2 }", "\\frac{1}{2}", True),
        ("\\frac{1}{3}", "\\frac{1}{2}", False),
        ("x", "42", False),
        (None, "42", False),
    ],
)
def test_answers_match(predicted: str | None, reference: str, match: bool) -> None:
    assert answers_match(predicted, reference) is match


# --- arithmetic problems ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def problems() -> list[Problem]:
    return make_problems(300, seed=7)


def test_problems_are_deterministic_per_seed(problems: list[Problem]) -> None:
    assert make_problems(300, seed=7) == problems
    assert make_problems(300, seed=8) != problems
    stream = iter_problems(7)
    assert [next(stream) for _ in range(10)] == problems[:10]


def test_worked_solutions_are_correct(problems: list[Problem]) -> None:
    for problem in problems:
        equations = EQUATION.findall(problem.solution)
        assert 2 <= len(equations) <= 4
        value = int(re.search(r"starts with (\d+)", problem.solution).group(1))  # type: ignore[union-attr]
        for a, op, b, c in equations:
            assert int(a) == value  # each step starts from the previous result
            assert OPERATIONS[op](int(a), int(b)) == int(c)
            assert all(0 <= int(x) <= MAX_VALUE for x in (a, b, c))
            value = int(c)
        assert value == problem.answer
        assert extract_answer(problem.solution) == str(problem.answer)
        assert answers_match(extract_answer(problem.solution), str(problem.answer))
        assert all(0 <= int(x) <= MAX_VALUE for x in re.findall(r"\d+", problem.question))


def test_problem_prompt_and_solution_shape(problems: list[Problem]) -> None:
    for problem in problems[:20]:
        assert problem.prompt().startswith("Question: ") and problem.prompt().endswith("\nAnswer:")
        assert problem.question in problem.prompt()
        assert problem.solution.startswith(" ") and problem.solution.endswith(
            f"\\boxed{{{problem.answer}}} ."
        )


def test_step_counts_follow_the_arguments() -> None:
    for problem in make_problems(50, seed=1, min_steps=1, max_steps=1):
        assert len(EQUATION.findall(problem.solution)) == 1
    with pytest.raises(ValueError, match="min_steps"):
        make_problem(random.Random(0), min_steps=3, max_steps=2)


def test_jsonl_round_trip(tmp_path: Path, problems: list[Problem]) -> None:
    path = write_jsonl(problems[:25], tmp_path / "sub" / "problems.jsonl")
    rows = read_jsonl(path)
    assert [(r["question"], r["answer"], r["solution"]) for r in rows] == [
        (p.question, str(p.answer), p.solution) for p in problems[:25]
    ]
    assert len(read_jsonl(path, limit=4)) == 4


def test_read_jsonl_skips_blank_lines_and_stringifies(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps({"question": "q", "answer": 3, "id": 1}) + "\n\n")
    assert read_jsonl(path) == [{"question": "q", "answer": "3", "id": 1}]


@pytest.mark.parametrize(
    ("second_line", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"question": "q"}', "needs the fields"),
        ("[1, 2]", "needs the fields"),
    ],
)
def test_read_jsonl_names_the_bad_line(tmp_path: Path, second_line: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"question": "q", "answer": "1"}) + "\n" + second_line + "\n")
    with pytest.raises(ValueError, match=rf"bad\.jsonl:2 .*{message}"):
        read_jsonl(path)


def test_read_jsonl_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_jsonl(tmp_path / "missing.jsonl")


# --- tokenizer -------------------------------------------------------------------------------------------


def test_tokenizer_round_trips_problems(tokenizer: Any) -> None:
    for problem in make_problems(100, seed=3):
        text = problem.prompt() + problem.solution
        assert tokenizer.decode(tokenizer.encode(text)) == text


def test_every_digit_is_its_own_token(tokenizer: Any) -> None:
    for problem in make_problems(100, seed=3):
        for token in tokenizer.tokenize(problem.prompt() + problem.solution):
            assert sum(ch.isdigit() for ch in token) <= 1, token


def test_tokenizer_special_tokens_and_determinism(tokenizer: Any) -> None:
    from rstitch.tokenizer import BOS, EOS, PAD, build_tokenizer

    assert tokenizer.convert_tokens_to_ids([PAD, BOS, EOS]) == [0, 1, 2]
    assert tokenizer.eos_token == EOS and tokenizer.pad_token == PAD
    assert build_tokenizer().get_vocab() == tokenizer.get_vocab()
    assert len(tokenizer) <= 512
    text = "Question: Mia has 23 apples ."
    assert tokenizer.encode(text) == tokenizer(text)["input_ids"]  # no special tokens are added


def test_load_tokenizer_round_trip(tmp_path: Path, tokenizer: Any) -> None:
    from rstitch.tokenizer import load_tokenizer

    with pytest.raises(FileNotFoundError, match="no tokenizer files"):
        load_tokenizer(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert loaded.get_vocab() == tokenizer.get_vocab()
    text = make_problems(1, seed=0)[0].solution
    assert loaded.encode(text) == tokenizer.encode(text) and loaded.decode(loaded.encode(text)) == text


def test_max_prob_stays_positive_for_near_one_hot_logits() -> None:
    # a top-2 gap of 40: 1 - exp(log p) rounds to 0 in float64, expm1 does not
    logits = torch.tensor([40.0, 0.0, 0.0])
    assert uncertainty(logits, "max_prob") > 0.0


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("Natalia sold 48 clips in April ... 48+24 = 72\n#### 72", "72"),
        ("so the total is $\\boxed{\\frac{3}{4}}$.", "\\frac{3}{4}"),
        ("  42 ", "42"),
    ],
)
def test_reference_answer_reads_gsm8k_and_boxed_solutions(field: str, expected: str) -> None:
    from rstitch.answers import reference_answer

    assert reference_answer(field) == expected
