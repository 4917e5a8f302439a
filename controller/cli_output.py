"""The operator CLI's output: JSON, plain tables, and quiet ends on a closed pipe."""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any


def pipe_safe(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """``edgefleet device list | head`` ends quietly instead of with a BrokenPipeError."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        try:
            code = handler(args)
            sys.stdout.flush()
        except BrokenPipeError:
            # Python would complain again when flushing stdout at exit.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        return code

    return run


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True))


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    for row in [headers, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def hhmm(iso: str) -> str:
    """``2026-11-23T13:00:00Z`` -> ``13:00 UTC`` (another day: ``11-24 13:00 UTC``)."""
    at = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(timezone.utc)
    day = "" if at.date() == datetime.now(timezone.utc).date() else at.strftime("%m-%d ")
    return f"{day}{at:%H:%M} UTC"
