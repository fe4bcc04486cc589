"""Terminal output: one console, progress bars, summary tables. Only ever shows IDs, never names."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from mammofuse.problems import EXCLUDED, WARNING, Problems

T = TypeVar("T")
console = Console(highlight=False, soft_wrap=True)
MAX_PROBLEM_LINES = 15


def counted(n: int, noun: str) -> str:
    """'1 breast', '3 breasts': a count with its noun (regular plurals only)."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def progress(description: str):
    """A progress wrapper `(iterable, total) -> iterable` for long loops (silent when not a terminal)."""

    def wrap(items: Iterable[T], total: int) -> Iterator[T]:
        if not console.is_terminal or os.environ.get("MAMMOFUSE_NO_PROGRESS"):
            yield from items
            return
        columns = (
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task(description, total=total)
            for item in items:
                yield item
                bar.advance(task)

    return wrap


def problems_table(counts: Counter[str], title: str, heading: str = "left out: reason") -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column(heading)
    table.add_column("count", justify="right")
    for reason, n in counts.most_common():
        table.add_row(reason, str(n))
    return table


def show_problems(problems: Problems, title: str, where: str) -> None:
    """A stage's problems, breasts left out apart from breasts kept with a warning: the count per reason,
    then the first lines in full (all of them in `where`)."""
    for severity, heading in ((EXCLUDED, "left out: reason"), (WARNING, "kept, with a warning")):
        items = problems.of(severity)
        if items:
            label = title if severity == EXCLUDED else "warning" if len(items) == 1 else "warnings"
            console.print(problems_table(problems.counts(severity), f"{len(items)} {label}", heading))
            show_problem_lines([p.reason for p in items], where)


def show_problem_lines(reasons: list[str], where: str) -> None:
    for line in reasons[:MAX_PROBLEM_LINES]:
        console.print(f"  [yellow]![/] {escape(line)}")
    if len(reasons) > MAX_PROBLEM_LINES:
        console.print(f"  ... and {len(reasons) - MAX_PROBLEM_LINES} more: all in {where}")
