"""Summaries of repeated measurements, and the one table the run prints."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field


def percentile(samples: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (no interpolation: it is a sample that happened)."""
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    rank = min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[rank]


@dataclass
class Figure:
    """One figure measured over several runs: shown as median (min-max)."""

    label: str
    unit: str
    runs: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.runs.append(value)

    @property
    def median(self) -> float:
        return statistics.median(self.runs) if self.runs else float("nan")

    def cells(self) -> tuple[str, str, str]:
        if not self.runs:
            return ("-", "-", "-")
        return (_fmt(min(self.runs)), _fmt(self.median), _fmt(max(self.runs)))


def _fmt(value: float) -> str:
    if value != value:  # NaN
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(sections: list[tuple[str, list[Figure]]]) -> str:
    """A markdown table: one row per figure, sections as bold rows."""
    lines = ["| figure | unit | min | median | max | runs |", "|---|---|---:|---:|---:|---:|"]
    for title, figures in sections:
        if not figures:
            continue
        lines.append(f"| **{title}** | | | | | |")
        for figure in figures:
            low, mid, high = figure.cells()
            lines.append(f"| {figure.label} | {figure.unit} | {low} | {mid} | {high} | {len(figure.runs)} |")
    return "\n".join(lines)
