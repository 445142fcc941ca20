"""Tables and targets as every benchmark reports them: printed for the
terminal, rendered to Markdown for bench/RESULTS.md."""
from __future__ import annotations

import argparse
import math
import statistics
from dataclasses import dataclass, field
from typing import Optional, Sequence


@dataclass
class Table:
    title: str
    headers: Sequence[str]
    rows: list[Sequence[object]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *row: object) -> None:
        self.rows.append(row)

    def markdown(self) -> str:
        cells = [[_cell(value) for value in row] for row in self.rows]
        lines = [f"**{self.title}**", "",
                 "| " + " | ".join(self.headers) + " |",
                 "|" + "|".join(" --- " for _ in self.headers) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in cells]
        lines += [""] + [f"- {note}" for note in self.notes]
        return "\n".join(lines).rstrip() + "\n"

    def text(self) -> str:
        cells = [list(self.headers)] + [[_cell(value) for value in row] for row in self.rows]
        widths = [max(len(row[i]) for row in cells) for i in range(len(self.headers))]
        out = [f"== {self.title} =="]
        for row in cells:
            out.append("  ".join(value.rjust(width) if column else value.ljust(width)
                                 for column, (value, width) in enumerate(zip(row, widths))))
        out += [f"   * {note}" for note in self.notes]
        return "\n".join(out)


@dataclass
class Target:
    """A goal from the performance issue, checked against a measured figure."""

    name: str
    measured: str
    goal: str
    met: bool
    profile: Optional[str] = None  # top of a profile when the goal is missed

    def markdown(self) -> str:
        return f"| {self.name} | {self.measured} | {self.goal} | {'met' if self.met else '**not met**'} |"


@dataclass
class Section:
    """What one benchmark script hands to bench/run.py."""

    name: str
    tables: list[Table] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def print(self) -> None:
        for table in self.tables:
            print(table.text(), flush=True)
            print(flush=True)
        for target in self.targets:
            print(f"target {target.name}: {target.measured} (goal {target.goal}) -> "
                  f"{'met' if target.met else 'NOT MET'}", flush=True)
            if target.profile:
                print(f"profile of the server for '{target.name}':\n{target.profile}", flush=True)
        for note in self.notes:
            print(f"note: {note}", flush=True)


def _cell(value: object) -> str:
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile; 0.0 for no values (a table cell, not an error)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0


def mode_parser(module: str, doc: str | None, full_help: str) -> argparse.ArgumentParser:
    """The command line every benchmark shares: quick by default, ``--full``
    for every size (``full_help`` says what that means for this one)."""
    parser = argparse.ArgumentParser(prog=f"python -m bench.{module}", description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help=full_help)
    parser.add_argument("--quick", action="store_true", help="the default")
    return parser

