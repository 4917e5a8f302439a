"""Smoke runs of the fleet-size benchmarks: they run end to end and report what they claim."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True,
                          timeout=300, cwd=REPO)  # fmt: skip


def test_bench_rollout_sizes_reports_cold_and_warm_rollouts() -> None:
    r = _run("-m", "edgefleet", "bench", "rollout", "--sizes", "20", "--procs", "1",
             "--timeout", "180", "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(r.stdout)
    (res,) = doc["results"]
    assert res["devices"] == 20 and res["sim_artifact_downloads"] == 2  # v1 and v2, once each
    for which in ("cold", "warm"):
        x = res[which]
        assert 0 < x["committed_median_s"] <= x["committed_p95_s"] <= x["committed_max_s"]
        assert x["committed_max_s"] <= x["rollout_succeeded_s"]
        assert x["controller_cpu_s"] > 0 and x["controller_peak_rss_mb"] > 0
        # each device at least refreshed its director (timestamp, snapshot, targets)
        assert x["requests_served"] >= 3 * 20


def test_bench_rollout_sizes_refuses_bad_input() -> None:
    r = _run("-m", "edgefleet", "bench", "rollout", "--sizes", "0")
    assert r.returncode != 0 and "at least 1" in r.stderr and "Traceback" not in r.stderr


def test_bench_signing_reports_per_device_cost() -> None:
    r = _run("bench/bench_signing.py", "--devices", "20", "--batch", "8")
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(r.stdout)
    assert doc["devices"] == 20
    for key in ("single_first", "single_again", "batch_first", "batch_again"):
        assert doc[f"{key}_ms_per_device"] > 0
    # root, current and previous targets/snapshot, timestamp: 6 files, not 8 or 10
    assert doc["director_files_per_device"] == 6
