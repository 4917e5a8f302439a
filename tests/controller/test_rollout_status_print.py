"""``rollout status`` shows how far background signing of the current stage got."""

from __future__ import annotations

from typing import Any

import pytest
from edgefleet.controller.operator_cmds import _print_rollout


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
    _print_rollout(_rollout(250))
    assert "> stage 1 (100%, 1000 device(s)): pending, signed 250/1000" in capsys.readouterr().out


def test_no_progress_once_signed_or_not_running(capsys: pytest.CaptureFixture[str]) -> None:
    _print_rollout(_rollout(1000))
    _print_rollout(_rollout(250, state="paused"))
    assert "signed" not in capsys.readouterr().out
