"""Benchmark reports: one table, written as JSON (for tools) and markdown (for people).

A report records what was measured, on which machine, and the command that reproduces it.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from accel_shared.bench.machine import machine_summary
from accel_shared.bench.timing import Timing

__all__ = ["BenchmarkReport", "ratio"]


def ratio(baseline: Timing, candidate: Timing) -> float:
    """Speed-up of ``candidate`` over ``baseline``: ``baseline.median_s / candidate.median_s``.

    Greater than 1 means the candidate is faster.
    """
    if candidate.median_s <= 0:
        raise ValueError(f"ratio: candidate median must be > 0 s, got {candidate.median_s}")
    return baseline.median_s / candidate.median_s


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:.4g}"
    if value is None:
        return ""
    return str(value).replace("|", "\\|").replace("\n", " ")


@dataclass
class BenchmarkReport:
    """A benchmark table with its context.

    Attributes:
        title: page title.
        description: what is measured and how (a paragraph of markdown).
        columns: column names, in table order.
        rows: one dict per row, keyed by column name.
        machine: :func:`accel_shared.bench.describe_machine` output.
        command: the shell command that reproduces the report.
        notes: bullet points shown under the table.
    """

    title: str
    description: str
    columns: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=dict)
    command: str = ""
    notes: list[str] = field(default_factory=list)

    def add_row(self, row: dict[str, Any] | None = None, **values: Any) -> None:
        """Append a row (a dict and/or keyword values); every key must be one of ``columns``."""
        merged = {**(row or {}), **values}
        unknown = [k for k in merged if k not in self.columns]
        if unknown:
            raise ValueError(f"add_row: unknown columns {unknown}; the report's columns are {self.columns}")
        self.rows.append(merged)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        """The report as indented JSON (non-JSON values such as dtypes become strings)."""
        return json.dumps(self.to_dict(), indent=2, default=str)

    def to_markdown(self) -> str:
        """A markdown page: title, description, machine, command, table, notes."""
        lines = [f"# {self.title}", "", self.description.strip(), ""]
        lines += [f"Machine: {machine_summary(self.machine) if self.machine else 'not recorded'}", ""]
        lines += ["Reproduce:", "", "```bash", self.command or "(not recorded)", "```", ""]
        lines.append("| " + " | ".join(self.columns) + " |")
        lines.append("|" + "|".join("---" for _ in self.columns) + "|")
        for row in self.rows:
            lines.append("| " + " | ".join(_cell(row.get(c)) for c in self.columns) + " |")
        if self.notes:
            lines += ["", "Notes:", ""]
            lines += [f"- {note}" for note in self.notes]
        return "\n".join(lines) + "\n"

    def write(self, directory: str | Path, stem: str) -> tuple[Path, Path]:
        """Write ``<directory>/<stem>.json`` and ``<directory>/<stem>.md``; returns both paths."""
        if not stem or "/" in stem or "\\" in stem:
            raise ValueError(f"write: stem must be a plain file name without extension, got {stem!r}")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        json_path, md_path = directory / f"{stem}.json", directory / f"{stem}.md"
        json_path.write_text(self.to_json() + "\n")
        md_path.write_text(self.to_markdown())
        return json_path, md_path


def compose_page(
    directory: str | Path, stem: str, title: str, intro: str, parts: list[tuple[str, str]]
) -> Path:
    """Write ``<directory>/<stem>.md`` from the reports already written there.

    Each part is ``(report_stem, text_if_missing)``: the page includes ``<report_stem>.md`` with its
    headings moved one level down, or the given text when that report does not exist yet (for
    example a GPU table on a machine without a GPU). Returns the page's path.
    """
    directory = Path(directory)
    lines = [f"# {title}", "", intro.strip(), ""]
    for report_stem, missing in parts:
        path = directory / f"{report_stem}.md"
        if path.exists():
            body = path.read_text().strip().splitlines()
            lines += [f"#{line}" if line.startswith("#") else line for line in body]
        else:
            lines += [f"## {report_stem}", "", missing.strip()]
        lines.append("")
    page = directory / f"{stem}.md"
    directory.mkdir(parents=True, exist_ok=True)
    page.write_text("\n".join(lines))
    return page
