"""Smoke run of ``edgefleet bench faults``: real kills, a real full disk, a real table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgefleet", "bench", "faults", *argv],
                          capture_output=True, text=True, timeout=400, cwd=REPO)  # fmt: skip


def test_bench_faults_kills_an_agent_and_fills_its_disk() -> None:
    r = _run("--scenarios", "agent-kill:SWAPPED,disk-full", "--json")
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    doc = json.loads(r.stdout)
    assert (doc["passed"], doc["total"]) == (2, 2)
    kill, full = doc["scenarios"]
    assert kill["scenario"] == "agent-kill:SWAPPED" and kill["ok"]
    assert "killed rc -9" in kill["got"] and "store clean" in kill["got"]
    assert full["scenario"] == "disk-full" and full["ok"]
    assert "no room" in full["got"] and "then on f2" in full["got"]


def test_bench_faults_refuses_an_unknown_scenario_in_one_line() -> None:
    r = _run("--scenarios", "meteor-strike")
    assert r.returncode != 0 and "unknown scenario 'meteor-strike'" in r.stderr
    assert "Traceback" not in r.stderr
