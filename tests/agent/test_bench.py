"""The benchmark entry points run end to end and report what they claim to measure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
V2 = REPO / "models" / "shapes" / "v2" / "model.onnx"
V1 = REPO / "models" / "shapes" / "v1" / "model.onnx"
SAMPLES = REPO / "models" / "samples"


def edgefleet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgefleet", *args],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=REPO,
    )


def test_bench_infer_json_reports_ratios():
    r = edgefleet(
        "bench", "infer", "--model", str(V2), "--source", str(SAMPLES),
        "--frames", "10", "--no-ultralytics", "--json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["frames"] == 10
    assert set(doc["stats"]) == {"agent", "bare"}
    assert doc["ratio_agent_vs_bare"] > 0
    assert doc["ratio_agent_vs_ultralytics"] is None


@pytest.mark.slow
def test_bench_swap_loses_no_frame_with_a_saturating_source():
    r = edgefleet(
        "bench", "swap", "--models", str(V1), "--models", str(V2), "--source", str(SAMPLES),
        "--swaps", "3", "--gap-s", "0.3", "--settle-s", "0.1", "--json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["swaps"] == 3
    assert doc["frames"] > 0
    assert doc["frames_produced"] == doc["frames"]  # every frame read came out of the loop
    assert doc["frames_dropped"] == 0
    assert doc["frame_errors"] == 0
    assert doc["frames_during_control"] > 0  # control windows with no swap were measured
    assert doc["p99_control_ms"] > 0


def test_bench_errors_are_one_line():
    r = edgefleet("bench", "infer", "--model", "missing.onnx", "--source", str(SAMPLES))
    assert r.returncode == 1
    assert r.stderr.strip() == "edgefleet: error: model file not found: missing.onnx"
    assert "Traceback" not in r.stderr


@pytest.mark.broker
@pytest.mark.slow
def test_bench_rollout_converges_on_the_hint_not_the_poll():
    """A real broker, controller and two simulated agents: both end on v2, and long before
    their 10-minute poll would have told them (the MQTT hint did)."""
    r = edgefleet("bench", "rollout", "--devices", "2", "--poll-s", "600", "--timeout", "120",
                  "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(r.stdout)
    assert doc["devices"] == 2 and doc["device_errors"] == {}
    assert doc["one_device_s"] > 0 and 0 < doc["fleet_max_s"] < 120
    assert doc["fleet_max_over_poll_interval"] < 0.2


def test_bench_idle_counts_requests_and_controller_cpu():
    r = edgefleet(
        "bench", "idle", "--devices", "3", "--speedup", "60", "--duration", "2",
        "--threads", "2", "--json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    before, after = doc["before"], doc["after"]
    assert before["polls"] > 0 and after["polls"] > 0
    # the old agent: a full TUF refresh per poll probes both repositories' next root
    assert before["by_kind_per_device_poll"]["root"] == 2
    assert before["not_found_per_device_poll"] >= 2
    assert after["not_found_per_device_poll"] == 0
    assert "root" not in after["by_kind_per_device_poll"]
    assert after["by_kind_per_device_poll"]["timestamp"] >= 1
    assert doc["ratio_requests_before_vs_after"] > 1
    assert after["controller_cpu_ms_per_request"] >= 0
    assert after["projected_core_share_at_30s"] > 0
