"""``edgefleet bench ingest`` runs end to end and reports what it claims to measure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.broker


def test_bench_ingest_smoke() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "edgefleet", "bench", "ingest", "--windows", "300",
         "--devices", "10", "--register", "5", "--json"],
        capture_output=True, text=True, timeout=240, cwd=REPO,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["plain"]["received"] == 300 and doc["plain"]["lost"] == 0
    assert doc["controller"]["stored"] == 300 and doc["controller"]["lost"] == 0
    assert doc["controller"]["cpu_s"] > 0 and doc["ratio_stored_vs_plain"] > 0
    assert doc["register"]["devices"] == 5 and doc["register"]["rows_s"] is not None
    assert doc["register"]["signed"] == 5


def test_bench_ingest_refuses_bad_counts_in_one_line() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "edgefleet", "bench", "ingest", "--windows", "0"],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    assert r.returncode == 1
    assert r.stderr.strip() == "edgefleet: error: --windows must be at least 1"
