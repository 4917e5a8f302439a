"""Smoke test of ``edgefleet bench drift``: real scene changes, real ORT inference on the
synthetic frames, the agent's windows, and the controller's alert watcher on SQLite."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bench_drift_alerts_changed_sites_only() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "edgefleet", "bench", "drift", "--seeds", "1", "--frames", "24",
         "--json"],
        capture_output=True, text=True, timeout=240, cwd=REPO,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    rows = {row["scene"]: row for row in doc["rows"]}
    assert set(rows) == {"unchanged", "darkened", "noisy", "blurred"}
    # The scene edits changed what the real model sees (noise wipes most detections out).
    assert rows["noisy"]["detections_per_frame"] < 0.5 * rows["unchanged"]["detections_per_frame"]
    assert rows["unchanged"]["alerted"] == 0 and rows["unchanged"]["false_alerts"] == 0
    for name in ("darkened", "noisy", "blurred"):
        assert rows[name]["alerted"] == 1, (name, rows[name])
        assert rows[name]["minutes_to_alert"][0] <= 8
    assert doc["false_alerts"] == 0 and doc["missed"] == 0


def test_bench_drift_rejects_bad_flags_in_one_line() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "edgefleet", "bench", "drift", "--devices", "0"],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "--devices" in r.stderr and len(r.stderr.strip().splitlines()) == 1
