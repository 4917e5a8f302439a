"""Smoke test of ``edgefleet bench gates``: the real gates over simulated fleets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_gates_separates_harmless_from_harmful_variants() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "edgefleet", "bench", "gates", "--seeds", "2", "--json"],
        capture_output=True, text=True, timeout=240, cwd=REPO,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    rows = {row["variant"]: row for row in doc["rows"]}
    assert set(rows) == {
        "identical", "tiny-noise", "light-cycle",
        "lower-confidence", "dropped-class", "3x-slower", "fewer-detections",
    }  # fmt: skip
    assert rows["identical"]["passed"] == 2 and rows["identical"]["false_alarm_rate"] == 0
    assert rows["dropped-class"]["failed_by"] == {"class_detection_rate_ratio": 2}
    assert rows["3x-slower"]["failed_by"] == {"p95_latency_ratio": 2}
    assert doc["false_positives"] == 0 and doc["false_negatives"] == 0


def test_bench_gates_rejects_bad_flags_in_one_line() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "edgefleet", "bench", "gates", "--soak-s", "1"],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "--soak-s" in r.stderr


def test_bench_gates_calibration_stays_under_alpha() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "edgefleet", "bench", "gates", "--calibrate", "--seeds", "10",
         "--soak-s", "200", "--alpha", "0.3", "--json"],
        capture_output=True, text=True, timeout=240, cwd=REPO,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["seeds"] == 10 and doc["false_alarm_rate"] <= 0.3
