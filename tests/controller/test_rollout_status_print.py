"""``rollout status`` shows how far background signing of the current stage got, and the
live view (``--watch``) says what the plain one says of windows and skipped devices."""

from __future__ import annotations

import io
from typing import Any

import pytest

from edgefleet.cli.rollouts import print_rollout


def _rollout(total: int, state: str = "running") -> dict[str, Any]:
    return {
        "id": 1, "model": "shapes", "version": "v1", "selector": {}, "reason": None,
        "state": state, "done": 0, "total": total, "failed": 0, "matching": 1000, "stage": 0,
        "stage_number": 1,
        "stages": [{"index": 0, "number": 1, "stage": "100%", "devices": 1000, "outcome": "pending",
                    "gates": []}],
        "devices": [],
    }  # fmt: skip


def test_signing_progress_of_the_current_stage(capsys: pytest.CaptureFixture[str]) -> None:
    print_rollout(_rollout(250))
    assert "> stage 1 (100%, 1000 device(s)): pending, signed 250/1000" in capsys.readouterr().out


def test_no_progress_once_signed_or_not_running(capsys: pytest.CaptureFixture[str]) -> None:
    print_rollout(_rollout(1000))
    print_rollout(_rollout(250, state="paused"))
    assert "signed" not in capsys.readouterr().out


def test_the_live_view_says_what_holds_devices() -> None:
    from rich.console import Console

    from edgefleet.cli.rollout_watch import render

    r = _rollout(0) | {
        "waiting_for_window": "2026-11-23T02:00:00Z",
        "skipped": [{"device_id": "cam-3", "reason": "pin 2 holds it to shapes:v1"}],
    }
    console = Console(width=120, record=True, file=io.StringIO())
    console.print(render(r))
    shown = console.export_text()
    assert "waiting for window (opens 11-23 02:00 UTC)" in shown, shown
    assert "cam-3 skipped: pin 2 holds it to shapes:v1" in shown, shown
