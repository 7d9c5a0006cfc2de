"""Final-answer extraction and comparison for math-style outputs (MATH, GSM8K and our arithmetic set).

The answer is the content of the last ``\\boxed{...}`` (nested braces allowed); without one, the last
number in the text. Numbers compare numerically (``1,000`` = ``1000`` = ``1000.0``), anything else as a
string without spaces and ``$``.
"""

from __future__ import annotations

import re

__all__ = ["answers_match", "extract_answer", "reference_answer"]

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def _last_boxed(text: str) -> str | None:
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 1, start + len("\\boxed{")
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j].strip()
    return None  # unclosed: the generation was cut off


def extract_answer(text: str) -> str | None:
    """The final answer in ``text``: the last ``\\boxed{}``, else the last number, else None."""
    boxed = _last_boxed(text)
    if boxed is not None:
        return boxed
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else None


def reference_answer(answer: str) -> str:
    """The final answer of a dataset's ``answer`` field: the text after GSM8K's ``####`` marker, else
    the last ``\\boxed{}`` when the field is a worked solution, else the field itself."""
    if "####" in answer:
        return answer.rsplit("####", 1)[1].strip()
    boxed = _last_boxed(answer)
    return boxed if boxed is not None else answer.strip()


def _as_number(text: str) -> float | None:
    cleaned = text.replace(",", "").replace("$", "").strip()
    try:
        return float(cleaned)
    except ValueError:
        return None


def answers_match(predicted: str | None, reference: str) -> bool:
    """Whether ``predicted`` (from :func:`extract_answer`) equals ``reference``."""
    if predicted is None:
        return False
    a, b = _as_number(predicted), _as_number(reference)
    if a is not None and b is not None:
        return abs(a - b) <= 1e-6 * max(1.0, abs(b))
    return predicted.replace(" ", "").replace("$", "") == reference.replace(" ", "").replace("$", "")
