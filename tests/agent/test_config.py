"""The agent config: defaults, validation, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from edgefleet.agent.config import load_config
from edgefleet.shared.errors import ConfigError

GOOD = {
    "device_id": "cam-1",
    "labels": {"site": "store-1"},
    "controller_url": "http://127.0.0.1:8080/",
    "mqtt_url": "mqtt://127.0.0.1:1884",
    "data_dir": "data",
    "source": {"kind": "folder", "path": "frames"},
}


def write(tmp_path: Path, cfg: object) -> Path:
    p = tmp_path / "agent.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def test_good_config_with_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD))
    assert cfg.device_id == "cam-1"
    assert cfg.labels == {"site": "store-1"}
    assert cfg.controller_url == "http://127.0.0.1:8080"
    assert (cfg.mqtt_host, cfg.mqtt_port) == ("127.0.0.1", 1884)
    assert cfg.data_dir == tmp_path / "data"  # relative to the config file
    assert Path(cfg.source.path) == tmp_path / "frames"
    assert (cfg.source.fps, cfg.source.loop) == (10.0, True)
    assert (cfg.poll_interval_s, cfg.telemetry_window_s) == (30.0, 60.0)
    assert (cfg.conf, cfg.iou, cfg.low_confidence) == (0.25, 0.7, 0.5)
    assert (cfg.health_check_frames, cfg.latency_budget_ms) == (5, 1000.0)


def test_absolute_paths_stay(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, {**GOOD, "data_dir": "/var/lib/edgefleet"}))
    assert cfg.data_dir == Path("/var/lib/edgefleet")


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"device_id": "bad id/with slash"}, "device_id"),
        ({"mqtt_url": "tcp://x:1"}, "mqtt_url"),
        ({"mqtt_url": "mqtt://host:notaport"}, "mqtt_url"),
        ({"controller_url": "ftp://x"}, "controller_url"),
        ({"source": {"kind": "webcam", "path": "x"}}, "source.kind"),
        ({"source": {"kind": "video", "path": "x", "fps": -1}}, "source.fps"),
        ({"poll_interval_s": 0}, "poll_interval_s"),
        ({"health_check_frames": 0}, "health_check_frames"),
        ({"surprise": 1}, "surprise"),
        # test-only knobs are hooks now (agent/hooks.py, tests/hooked_agent.py), not config
        ({"debug": {"phase_delay_s": 1}}, "debug"),
    ],
)
def test_bad_values_give_one_line_naming_the_field(
    tmp_path: Path, change: dict[str, object], needle: str
) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, {**GOOD, **change}))
    assert needle in str(e.value)
    assert "\n" not in str(e.value)


def test_missing_field(tmp_path: Path) -> None:
    cfg = dict(GOOD)
    del cfg["mqtt_url"]
    with pytest.raises(ConfigError, match="mqtt_url"):
        load_config(write(tmp_path, cfg))


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("device_id: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML") as e:
        load_config(bad)
    assert "\n" not in str(e.value)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)
