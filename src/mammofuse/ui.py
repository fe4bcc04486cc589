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

from mammofuse.problems import Problems

T = TypeVar("T")
console = Console(highlight=False, soft_wrap=True)
MAX_PROBLEM_LINES = 15


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


def problems_table(counts: Counter[str], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("left out: reason")
    table.add_column("count", justify="right")
    for reason, n in counts.most_common():
        table.add_row(reason, str(n))
    return table


def show_problems(problems: Problems, title: str, where: str) -> None:
    """A stage's problems: the count per reason, then the first lines in full (all of them in `where`)."""
    console.print(problems_table(problems.counts(), f"{len(problems.items)} {title}"))
    show_problem_lines([p.reason for p in problems.items], where)


def show_problem_lines(reasons: list[str], where: str) -> None:
    for line in reasons[:MAX_PROBLEM_LINES]:
        console.print(f"  [yellow]![/] {escape(line)}")
    if len(reasons) > MAX_PROBLEM_LINES:
        console.print(f"  ... and {len(reasons) - MAX_PROBLEM_LINES} more: all in {where}")
