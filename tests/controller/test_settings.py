"""controller serve's settings: flag > EDGEFLEET_* > settings file > default, and one line
for a bad value whichever of them it came from."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from edgefleet.controller.settings import FLAGS, ServeConfig, Settings
from edgefleet.shared.errors import ConfigError

from edgefleet.cli import main, parse_args


@pytest.fixture(autouse=True)
def _no_edgefleet_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("EDGEFLEET_"):
            monkeypatch.delenv(name)


def _load(*flags: str) -> Settings:
    return Settings.from_flags(parse_args(["controller", "serve", *flags]))


def test_a_flag_beats_the_environment_beats_the_file_beats_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "controller.yaml"
    config.write_text(
        f"data: {tmp_path / 'data'}\nlisten: 127.0.0.1:9001\nmax_downloads: 5\napi_threads: 3\n"
    )
    monkeypatch.setenv("EDGEFLEET_CONFIG", str(config))
    monkeypatch.setenv("EDGEFLEET_LISTEN", "127.0.0.1:9002")
    monkeypatch.setenv("EDGEFLEET_MAX_DOWNLOADS", "6")
    settings = _load("--listen", "127.0.0.1:9003")
    assert settings.listen_port == 9003  # flag, over env and file
    assert settings.max_downloads == 6  # env, over file
    assert settings.api_threads == 3  # file, over the default
    assert settings.data_dir == (tmp_path / "data").resolve()
    assert settings.mqtt_keepalive == Settings.mqtt_keepalive  # nobody set it
    assert settings.auth  # tokens unless insecure_dev, from wherever

    monkeypatch.delenv("EDGEFLEET_CONFIG")
    other = tmp_path / "other.yaml"
    other.write_text(f"data: {tmp_path / 'd2'}\napi_threads: 4\ninsecure_dev: true\n")
    settings = _load("--config", str(other))  # --config names the file without the env
    assert (settings.api_threads, settings.max_downloads, settings.auth) == (4, 6, False)


def test_a_bad_value_is_one_line_naming_where_it_came_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EDGEFLEET_MAX_DOWNLOADS", "lots")
    assert main(["controller", "serve", "--data", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "bad EDGEFLEET_MAX_DOWNLOADS 'lots'" in err
    monkeypatch.delenv("EDGEFLEET_MAX_DOWNLOADS")

    config = tmp_path / "c.yaml"
    config.write_text("max_downloads: 0\n")
    with pytest.raises(ConfigError, match=rf"bad max_downloads in {config} 0: .*greater than"):
        _load("--data", str(tmp_path), "--config", str(config))
    config.write_text("max_download: 3\n")  # a typo is not silently ignored
    with pytest.raises(ConfigError, match="unknown setting 'max_download'"):
        _load("--data", str(tmp_path), "--config", str(config))
    with pytest.raises(ConfigError, match="bad --listen 'nowhere': expected HOST:PORT"):
        _load("--data", str(tmp_path), "--listen", "nowhere")
    with pytest.raises(ConfigError, match=r"bad --max-downloads 0: .*greater than"):
        _load("--data", str(tmp_path), "--max-downloads", "0")  # 0 is a value, not "unset"
    with pytest.raises(ConfigError, match="no data folder"):
        _load()
    with pytest.raises(ConfigError, match="cannot read the settings file"):
        _load("--data", str(tmp_path), "--config", str(tmp_path / "missing.yaml"))


def test_every_serve_flag_is_a_setting_and_every_setting_a_variable() -> None:
    given = set(parse_args(["controller", "serve"]))
    assert given - {"auth"} == set(FLAGS)  # --auth is a no-op kept for old scripts
    assert set(FLAGS) <= set(ServeConfig.model_fields)
    # each dataclass setting is reachable (listen and insecure_dev are folded into others)
    folded = {"data_dir": "data", "mqtt_url": "mqtt", "listen_host": "listen",
              "listen_port": "listen", "auth": "insecure_dev"}  # fmt: skip
    fields = {folded.get(name, name) for name in Settings.__dataclass_fields__}
    assert fields <= set(ServeConfig.model_fields)
