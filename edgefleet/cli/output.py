"""The CLI's one output helper: the shared ``--json`` flag, JSON, Rich tables that stay
plain text in a pipe, times, and progress bars on a terminal's stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TransferSpeedColumn,
)
from rich.table import Table

JSON_HELP = "print JSON instead of text"
# The one declaration of --json: every command that offers it takes this type.
JsonFlag = Annotated[bool, typer.Option("--json", help=JSON_HELP)]

LINE_WIDTH = 100_000  # characters: a table row is never wrapped or cut (a terminal wraps it)


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True))


def _console(file: Any) -> Console:
    return Console(file=file, width=LINE_WIDTH, markup=False, emoji=False, highlight=False)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Columns two spaces apart, a bold header on a terminal; lines without trailing blanks,
    so ``split()`` and ``grep`` read them."""
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for header in headers:
        table.add_column(header, no_wrap=True)
    for row in rows:
        table.add_row(*row)
    console = _console(sys.stdout)
    with console.capture() as captured:
        console.print(table)
    for line in captured.get().splitlines():
        print(line.rstrip())


Row = dict[str, Any]


@dataclass(frozen=True)
class Column:
    header: str
    cell: Callable[[Row], str]


def show_list(items: list[Row], columns: Sequence[Column], as_json: bool) -> None:
    """A list answer: the items as JSON, or one table row per item."""
    if as_json:
        print_json(items)
        return
    print_table([c.header for c in columns], [[c.cell(i) for c in columns] for i in items])


def labels(mapping: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(mapping.items())) or "-"


def or_dash(value: object) -> str:
    return "-" if value is None or value == "" else str(value)


def hhmm(iso: str) -> str:
    """``2026-11-23T13:00:00Z`` -> ``13:00 UTC`` (another day: ``11-24 13:00 UTC``)."""
    at = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(timezone.utc)
    day = "" if at.date() == datetime.now(timezone.utc).date() else at.strftime("%m-%d ")
    return f"{day}{at:%H:%M} UTC"


def say(text: str) -> None:
    """A note for the person, on stderr, so stdout stays the answer."""
    print(text, file=sys.stderr)


class ByteProgress:
    """Bytes of one transfer: a Rich bar on a terminal's stderr, else one line at the end."""

    def __init__(self, label: str, total: int, progress: Progress | None) -> None:
        self.label, self.total, self.done = label, total, 0
        self._progress = progress
        self._task = progress.add_task(label, total=total) if progress else None

    def advance(self, count: int) -> None:
        self.done += count
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=self.done)


@contextmanager
def byte_progress(verb: str, label: str, total: int) -> Iterator[ByteProgress]:
    if not sys.stderr.isatty():
        bar = ByteProgress(label, total, None)
        yield bar
        say(f"{verb} {label}: {bar.done} bytes")
        return
    columns = (
        TextColumn(f"{verb} {{task.description}}"), BarColumn(), TaskProgressColumn(),
        DownloadColumn(), TransferSpeedColumn(),
    )  # fmt: skip
    with Progress(*columns, console=Console(stderr=True)) as progress:
        yield ByteProgress(label, total, progress)


@contextmanager
def count_progress(verb: str, total: int) -> Iterator[Callable[[], None]]:
    """A bar of ``total`` steps on a terminal's stderr; yields the step function."""
    if not sys.stderr.isatty():
        yield lambda: None
        return
    with Progress(console=Console(stderr=True)) as progress:
        task = progress.add_task(verb, total=total)
        yield lambda: progress.advance(task)
