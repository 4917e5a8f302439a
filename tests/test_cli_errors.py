"""User-facing errors are one line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import os
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


GOOD_AGENT = """\
device_id: dev-1
controller_url: http://127.0.0.1:9
mqtt_url: mqtt://127.0.0.1:9
source: {{kind: folder, path: {source}}}
data_dir: {data_dir}
"""


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"\xff\xfe\x00\x01 not text", "not UTF-8"),
        (b"a: [1, 2\n", "not valid YAML"),
        (b"[" * 20000, "not valid YAML"),
    ],
    ids=["binary", "unclosed", "nested"],
)
def test_config_and_spec_files_that_are_not_yaml(
    tmp_path: Path, content: bytes, needle: str
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(content)
    _one_line_error(run("agent", "run", "--config", str(bad)), needle)
    # The operator CLI reads its rollout spec the same way, before any request is made.
    spec = run("rollout", "create", "m:v1", "--file", str(bad))
    _one_line_error(spec, needle)


def test_a_folder_given_as_a_config(tmp_path: Path) -> None:
    _one_line_error(run("agent", "run", "--config", str(tmp_path)), "is a folder")


@pytest.mark.parametrize("where", ["a-file", "/proc/edgefleet-data"], ids=["file", "proc"])
def test_a_data_dir_that_cannot_hold_data(tmp_path: Path, repo_root: Path, where: str) -> None:
    (tmp_path / "a-file").write_text("x")
    data_dir = tmp_path / where if not where.startswith("/") else Path(where)
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(GOOD_AGENT.format(source=repo_root / "models" / "samples", data_dir=data_dir))
    _one_line_error(run("agent", "run", "--config", str(cfg)), "data_dir")


@pytest.mark.parametrize(
    ("field", "value"),
    [("telemetry_window_s", "1e300"), ("poll_interval_s", "1e12"), ("source_fps", "1e9")],
)
def test_absurd_numbers_are_refused_at_load(
    tmp_path: Path, repo_root: Path, field: str, value: str
) -> None:
    text = GOOD_AGENT.format(source=repo_root / "models" / "samples", data_dir=tmp_path / "d")
    if field == "source_fps":
        text = text.replace("path: ", f"fps: {value}, path: ")
        field = "fps"
    else:
        text += f"{field}: {value}\n"
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(text)
    _one_line_error(run("agent", "run", "--config", str(cfg)), field)


@pytest.mark.parametrize(
    ("name", "version", "needle"),
    [
        ("bad/name", None, "invalid model name 'bad/name'"),
        ("shapes", "../x", "invalid version '../x'"),
        ("shapes", "", "invalid version ''"),
        ("a" * 65, None, "max 64"),
    ],
    ids=["name", "version-dots", "version-empty", "name-long"],
)
def test_push_checks_names_before_uploading(
    repo_root: Path, name: str, version: str | None, needle: str
) -> None:
    """A bad name or version is refused here; the controller never sees a connection."""
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(0.5)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        model = str(repo_root / "models" / "shapes" / "v2" / "model.onnx")
        extra = [] if version is None else ["--version", version]
        out = subprocess.run(
            [sys.executable, "-m", "edgefleet", "model", "push", name, model, *extra],
            capture_output=True, text=True, timeout=60,
            env={**os.environ, "EDGEFLEET_URL": url},
        )  # fmt: skip
        _one_line_error(out, needle)
        with pytest.raises(TimeoutError):
            listener.accept()  # nobody connected: nothing was uploaded


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("model: m\nversion: v1\nstages: [1000000000000000000000000000000]\n", "stages"),
        ('model: m\nversion: v1\nstages: "' + ",".join(["1"] * 5000) + '"\n', "stages"),
        ("model: m\nversion: ''\n", "invalid version"),
    ],
    ids=["count-1e30", "5000-stages", "empty-version"],
)
def test_rollout_specs_past_the_limits(tmp_path: Path, spec: str, needle: str) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(spec)
    out = run("rollout", "create", "--file", str(path))
    _one_line_error(out, needle)
