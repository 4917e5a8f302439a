"""``edgefleet rollout status ID --watch``: a Rich live view until the rollout ends."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from edgefleet.cli.output import hhmm, print_json
from edgefleet.controller.rollouts.lifecycle import SETTLED

FINAL = {s.value for s in SETTLED}  # the rollout will not move without a person
_STYLE = {"PASS": "green", "FAIL": "bold red", "NODATA": "yellow", "WARN": "magenta"}
_OUTCOME = {"successful": "green", "failed": "bold red", "inconclusive": "yellow",
            "promoted": "cyan", "pending": "dim"}  # fmt: skip


def render(r: dict[str, Any]) -> Group:
    head = Text.assemble(
        (f"rollout {r['id']} ", "bold"), f"{r['model']}:{r['version']}  ",
        (r["state"], "bold red" if r["state"] in ("failed", "rolled_back") else "bold"),
        f"  {r['done']}/{r['total']} done, {r['failed']} failed, {r.get('matching', 0)} matching",
    )  # fmt: skip
    parts: list[Any] = [head]
    if r.get("reason"):
        parts.append(Text(r["reason"], style="italic"))
    stages = Table(show_header=True, header_style="bold", expand=False)
    for col in ("stage", "devices", "progress", "outcome", "gates"):
        stages.add_column(col)
    by_stage: dict[int, list[dict[str, Any]]] = {}
    for d in r["devices"]:
        by_stage.setdefault(d.get("stage", 0), []).append(d)
    for st in r.get("stages", []):
        mine = [d for i, ds in by_stage.items() if i <= st["index"] for d in ds]
        done = sum(d["done"] for d in mine)
        bar = ProgressBar(total=max(st["devices"], 1), completed=done, width=20)
        gates = Text()
        for g in st["gates"]:
            value = "-" if g["value"] is None else f"{g['value']:.3g}"
            gates.append(f"{g['metric']}={value} ({g['samples']}) ", _STYLE.get(g["verdict"], ""))
        outcome = Text(st["outcome"], _OUTCOME.get(st["outcome"], ""))
        stages.add_row(f"{st['number']} ({st['stage']})", str(st["devices"]), bar, outcome,
                       gates)  # fmt: skip
    parts.append(stages)
    if r.get("waiting_for_window"):  # as the plain `rollout status` says it
        parts.append(Text(f"waiting for window (opens {hhmm(r['waiting_for_window'])})",
                          "yellow"))  # fmt: skip
    for d in r["devices"]:
        if d.get("refused"):
            parts.append(Text(f"{d['device_id']} refused its assignment: {d['refused']}", "red"))
    for d in r.get("skipped", []):
        parts.append(Text(f"{d['device_id']} skipped: {d['reason']}", "dim"))
    return Group(*parts)


def watch(fetch: Callable[[], dict[str, Any]], interval: float, as_json: bool) -> int:
    """Refresh every ``interval`` seconds until the rollout reaches a final state."""
    console = Console()
    r = fetch()
    with Live(render(r), console=console, refresh_per_second=4, transient=False) as live:
        while r["state"] not in FINAL:
            time.sleep(interval)
            r = fetch()
            live.update(render(r))
    if not console.is_terminal:
        console.line()  # Live leaves a piped view without its last newline
    if as_json:
        print_json(r)
    return 0 if r["state"] in ("succeeded", "nothing_to_do") else 1
