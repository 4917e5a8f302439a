"""User-facing errors are one line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgefleet", *args], capture_output=True, text=True, timeout=60
    )


def _one_line_error(out: subprocess.CompletedProcess[str], needle: str) -> None:
    assert out.returncode == 1, out
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("edgefleet: error: ")
    assert needle in lines[0]


def test_agent_with_missing_config(tmp_path: Path) -> None:
    _one_line_error(run("agent", "run", "--config", str(tmp_path / "nope.yaml")), "nope.yaml")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("device_id: [unclosed", "agent.yaml"),
        ("device_id: 'bad/id'\ncontroller_url: http://x\nmqtt_url: mqtt://x:1\n"
         "data_dir: /tmp/x\nsource: {kind: folder, path: /tmp}\n", "device"),
        ("device_id: ok\ncontroller_url: http://x\nmqtt_url: http://x:1\n"
         "data_dir: /tmp/x\nsource: {kind: folder, path: /tmp}\n", "mqtt"),
    ],
    ids=["yaml", "device-id", "mqtt-url"],
)  # fmt: skip
def test_agent_with_bad_config(tmp_path: Path, text: str, needle: str) -> None:
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(text)
    _one_line_error(run("agent", "run", "--config", str(cfg)), needle)


def test_unknown_model_in_rollout_against_unreachable_controller() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "edgefleet", "rollout", "create", "nope:v1"],
        capture_output=True, text=True, timeout=60,
        env={"EDGEFLEET_URL": "http://127.0.0.1:9", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    _one_line_error(out, "cannot reach the controller")
