"""bench/bench_serve.py runs end to end and reports what it claims (a smoke run, tiny sizes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_serve_reports_latency_ratios() -> None:
    r = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bench_serve.py"),
         "--downloads", "5", "--calls", "10", "--mb", "1", "--json"],
        capture_output=True, text=True, timeout=240, cwd=REPO, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads(r.stdout.strip().splitlines()[-1])
    assert doc["downloads"] == 5 and doc["database"] == "sqlite"
    for run in ("idle", "loaded"):
        assert 0 < doc[run]["p50_ms"] <= doc[run]["p99_ms"] <= doc[run]["max_ms"]
    assert all(v > 0 for v in doc["ratio_loaded_vs_idle"].values())
