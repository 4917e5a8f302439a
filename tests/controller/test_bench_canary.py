"""Smoke test of ``edgefleet bench canary``: real ONNX variants, real ORT inference on the
synthetic frames, the agent's windows and the scheduler's gates and plan."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bench_canary_stops_harmful_variants_and_passes_harmless_ones() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "edgefleet", "bench", "canary", "--seeds", "1", "--frames", "32",
         "--devices", "3", "--soak-s", "90", "--json"],
        capture_output=True, text=True, timeout=240, cwd=REPO,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    rows = {row["variant"]: row for row in doc["rows"]}
    assert set(rows) == {
        "identical", "tiny-noise",
        "lower-confidence", "dropped-class", "fewer-detections", "3x-slower",
    }  # fmt: skip
    # The graph edits did what they say, measured by real inference.
    assert rows["identical"]["detections_ratio"] == 1.0
    assert rows["identical"]["confidence_ratio"] == pytest.approx(1.0, abs=1e-6)
    assert rows["lower-confidence"]["confidence_ratio"] < 0.9
    assert rows["fewer-detections"]["detections_ratio"] < 0.8
    assert rows["3x-slower"]["latency_ratio"] > 1.8
    # The verdicts: harmless ones pass every stage, harmful ones fail, by the right gate.
    # One seed of a short soak on a loaded machine can end a harmless stage inconclusive
    # (latency measured by real runs); it never fails it. The full bench decides all.
    assert rows["identical"]["verdicts"] in (["successful"], ["inconclusive"])
    assert rows["tiny-noise"]["verdicts"] in (["successful"], ["inconclusive"])
    for name in ("lower-confidence", "dropped-class", "fewer-detections", "3x-slower"):
        assert rows[name]["verdicts"] == ["failed"], (name, rows[name]["reasons"])
    assert "class_detection_rate_ratio" in rows["dropped-class"]["reasons"][0]
    assert "p95_latency_ratio" in rows["3x-slower"]["reasons"][0]
    assert doc["false_positives"] == 0 and doc["false_negatives"] == 0
    assert doc["max_soaks_to_decision"] <= 3 or "inconclusive" in str(rows)


def test_bench_canary_rejects_bad_flags_in_one_line() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "edgefleet", "bench", "canary", "--stages", "1,x"],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "--stages" in r.stderr and len(r.stderr.strip().splitlines()) == 1
