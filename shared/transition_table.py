"""A lifecycle's transition table as Markdown, for the docs (docs/ARCHITECTURE.md,
"Lifecycles"): the page is rendered from the tables the code runs, and tests compare."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from enum import Enum
from typing import TypeVar

S = TypeVar("S", bound=Enum)
V = TypeVar("V", bound=Enum)


def markdown(table: Mapping[tuple[S, V], S], states: Iterable[S], events: Iterable[V]) -> str:
    """``from | event | to``: one row per event and the state it leads to, in the events'
    order; the states it may start from in the states' order."""
    order = list(states)
    rows = ["| from | event | to |", "|---|---|---|"]
    for event in events:
        targets: dict[S, list[S]] = {}
        for (src, ev), dst in table.items():
            if ev == event:
                targets.setdefault(dst, []).append(src)
        for dst, srcs in targets.items():
            froms = ", ".join(str(s.value) for s in order if s in srcs)
            rows.append(f"| {froms} | `{event.value}` | {dst.value} |")
    return "\n".join(rows)


def step(
    table: Mapping[tuple[S, V], S],
    states: Iterable[S],
    current: S,
    event: V,
    refused: Callable[[str], Exception],
) -> S:
    """The state after ``event`` in ``current``; else ``refused(needs)`` is raised, where
    ``needs`` names the states the event may happen in (in the states' order), or "nothing"."""
    after = table.get((current, event))
    if after is None:
        needs = ", ".join(str(s.value) for s in states if (s, event) in table)
        raise refused(needs or "nothing")
    return after
