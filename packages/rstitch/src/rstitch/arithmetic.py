"""Synthetic multi-step arithmetic word problems with worked steps: the offline reasoning benchmark.

A problem starts from a count and applies 2–4 operations (buy, give away, multiply); every value stays
in ``[0, MAX_VALUE]``. The worked solution restates each step in words and writes out the arithmetic,
then ends with ``\\boxed{answer}``, the shape of a chain-of-thought trace: most tokens are template
words and copied numbers (easy), a few are computed digits (hard). That mix is what R-Stitch exploits,
and it is our choice; the paper's traces come from real reasoning models.

    >>> problem = make_problem(random.Random(0))
    >>> problem.prompt()        # 'Question: Mia has 23 apples . ... ?\\nAnswer:'
    >>> problem.solution        # ' Mia starts with 23 apples . ... The answer is \\boxed{32} .'
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = [
    "MAX_VALUE",
    "Problem",
    "make_problem",
    "make_problems",
    "read_jsonl",
    "vocabulary_text",
    "write_jsonl",
]

MAX_VALUE = 99
PROMPT_TEMPLATE = "Question: {question}\nAnswer:"

_NAMES = {
    "Mia": "she",
    "Ana": "she",
    "Lea": "she",
    "Zoe": "she",
    "Sam": "he",
    "Tom": "he",
    "Leo": "he",
    "Max": "he",
}
_ITEMS = ["apples", "books", "coins", "shells", "stamps", "marbles", "cards", "pens"]


@dataclass(frozen=True)
class Problem:
    """One word problem: the question, the worked solution (a leading space, no prompt) and the answer."""

    question: str
    solution: str
    answer: int

    def prompt(self, template: str = PROMPT_TEMPLATE) -> str:
        return template.format(question=self.question)

    def as_row(self) -> dict[str, str]:
        """``{"question", "answer"}`` with the answer as text: the row format evaluation reads."""
        return {"question": self.question, "answer": str(self.answer)}


def _operation(rng: random.Random, value: int, pronoun: str) -> tuple[str, str, str, int]:
    """(question sentence, solution clause, equation, new value) for one step from ``value``."""
    kinds = []
    if value < MAX_VALUE:
        kinds.append("add")
    if value > 0:
        kinds.append("sub")
    if 1 <= value <= MAX_VALUE // 2:
        kinds.append("mul")
    kind = rng.choice(kinds)
    if kind == "add":
        n = rng.randint(1, min(MAX_VALUE - value, 60))
        verb = rng.choice(["buys", "finds", "gets"])
        return (
            f"Then {pronoun} {verb} {n} more .",
            f"after {pronoun} {verb} {n} more",
            f"{value} + {n}",
            value + n,
        )
    if kind == "mul":
        k = rng.randint(2, min(3, MAX_VALUE // value))
        return (
            f"Then {pronoun} gets {k} times as many .",
            f"after {pronoun} gets {k} times as many",
            f"{value} * {k}",
            value * k,
        )
    n = rng.randint(1, value)
    verb = rng.choice(["gives away", "loses", "sells"])
    return f"Then {pronoun} {verb} {n} .", f"after {pronoun} {verb} {n}", f"{value} - {n}", value - n


def make_problem(rng: random.Random, *, min_steps: int = 2, max_steps: int = 4) -> Problem:
    """A problem with ``min_steps``–``max_steps`` operations drawn from ``rng``."""
    if not 1 <= min_steps <= max_steps:
        raise ValueError(f"make_problem: expected 1 <= min_steps <= max_steps, got {min_steps}, {max_steps}")
    name = rng.choice(list(_NAMES))
    pronoun = _NAMES[name]
    item = rng.choice(_ITEMS)
    value = rng.randint(2, MAX_VALUE)
    question = [f"{name} has {value} {item} ."]
    solution = [f"{name} starts with {value} {item} ."]
    for _ in range(rng.randint(min_steps, max_steps)):
        sentence, clause, equation, new = _operation(rng, value, pronoun)
        question.append(sentence)
        solution.append(f"{clause.capitalize()} , {pronoun} has {equation} = {new} {item} .")
        value = new
    question.append(f"How many {item} does {name} have now ?")
    solution.append(f"The answer is \\boxed{{{value}}} .")
    return Problem(" ".join(question), " " + " ".join(solution), value)


def make_problems(count: int, *, seed: int, min_steps: int = 2, max_steps: int = 4) -> list[Problem]:
    """``count`` problems from ``seed`` (the same seed always gives the same list)."""
    rng = random.Random(seed)
    return [make_problem(rng, min_steps=min_steps, max_steps=max_steps) for _ in range(count)]


def iter_problems(seed: int, *, min_steps: int = 2, max_steps: int = 4) -> Iterator[Problem]:
    """An endless stream of problems (training data)."""
    rng = random.Random(seed)
    while True:
        yield make_problem(rng, min_steps=min_steps, max_steps=max_steps)


def vocabulary_text() -> list[str]:
    """Texts that contain every word and symbol the generator can produce (to train the tokenizer)."""
    texts = [PROMPT_TEMPLATE.format(question="")]
    words = [*_NAMES, *_NAMES.values(), *_ITEMS, "0 1 2 3 4 5 6 7 8 9 + - * = . , ? { } \\boxed"]
    texts.extend(words)
    texts.extend(p.prompt() + p.solution for p in make_problems(2000, seed=12345))
    return texts


def write_jsonl(problems: list[Problem], path: str | Path) -> Path:
    """One ``{"question", "answer", "solution"}`` object per line: the format ``rstitch eval --data`` reads."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for p in problems:
            f.write(json.dumps(asdict(p)) + "\n")
    return path


def read_jsonl(path: str | Path, *, limit: int | None = None) -> list[dict[str, str]]:
    """Rows of a JSONL file with at least ``question`` and ``answer`` fields (MATH/GSM8K-style sets).

    Answers are kept as strings; ``solution`` and other fields are passed through."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"read_jsonl: no such file {path}")
    rows = []
    with open(path) as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"read_jsonl: {path}:{line_no} is not valid JSON ({e.msg})") from None
            if not isinstance(row, dict) or "question" not in row or "answer" not in row:
                raise ValueError(f"read_jsonl: {path}:{line_no} needs the fields 'question' and 'answer'")
            rows.append({**row, "question": str(row["question"]), "answer": str(row["answer"])})
            if limit is not None and len(rows) >= limit:
                break
    return rows
