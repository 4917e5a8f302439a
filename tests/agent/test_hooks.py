"""Test-only behaviour comes from hooks installed from outside (agent/hooks.py), never from
the shipped config: the launcher tests use (tests/hooked_agent.py) and what a device does
with a config that still says ``debug:``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml
from edgefleet.agent import hooks
from edgefleet.agent.config import load_config
from edgefleet.agent.daemon import device_class
from edgefleet.agent.fingerprint import detect_fingerprint
from edgefleet.shared.protocol import Phase

from tests.hooked_agent import TestHooks, argv

CONFIG = {
    "device_id": "cam-1",
    "controller_url": "http://127.0.0.1:9",
    "mqtt_url": "mqtt://127.0.0.1:9",
    "data_dir": "data",
    "source": {"kind": "folder", "path": "."},
}


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


def test_a_config_with_debug_knobs_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump({**CONFIG, "debug": {"sigkill_in_phase": "WARMING"}}))
    out = _run([sys.executable, "-m", "edgefleet", "agent", "run", "--config", str(path)])
    assert out.returncode == 1, out
    assert out.stderr.startswith("edgefleet: error: ") and "debug" in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_the_launcher_refuses_bad_hooks_in_one_line() -> None:
    for bad in ('{"sigkil_in_phase": "WARMING"}', "[1]", "{not json", '{"sigkill_in_phase": "X"}'):
        out = _run([*argv({}, "--version")[:2], bad, "--version"])
        assert out.returncode == 2, (bad, out)
        assert out.stderr.startswith("hooked_agent: error: bad hooks"), out.stderr
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_the_launcher_runs_edgefleet_with_the_hooks(tmp_path: Path) -> None:
    """The edgefleet command line behind the hooks is the real one (its errors included)."""
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump({**CONFIG, "source": {"kind": "folder", "path": "missing"}}))
    out = _run(argv({"phase_delay_s": 1}, "agent", "run", "--config", str(path)))
    assert out.returncode == 1 and "does not exist" in out.stderr, out


def test_a_fingerprint_hook_changes_what_the_agent_says_it_is(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path))
    orin = {"platform": "jetson", "jetpack": "6.0", "compute_capability": "8.7"}
    fingerprint, _ = device_class(config, TestHooks.parse({"fingerprint": orin}))
    assert (fingerprint.platform, fingerprint.jetpack) == ("jetson", "6.0")
    assert fingerprint.arch == detect_fingerprint().arch  # the rest is what was detected
    plain, _ = device_class(config, hooks.NoHooks())
    assert plain.platform == detect_fingerprint().platform


def test_installed_hooks_are_process_wide_until_taken_away() -> None:
    mine = TestHooks.parse({"download_rate_bps": 1000, "sigkill_in_phase": "SWAPPED"})
    try:
        hooks.install(mine)
        assert hooks.installed() is mine and hooks.installed().download_rate_bps() == 1000
        assert mine.sigkill_in_phase is Phase.SWAPPED
    finally:
        hooks.install(None)
    assert isinstance(hooks.installed(), hooks.NoHooks)
    assert hooks.installed().download_rate_bps() is None


def _write(tmp_path: Path) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    return path
