"""``edgefleet sim`` refuses bad options in one line, before starting anything."""

from __future__ import annotations

import subprocess
import sys

import pytest
from edgefleet.shared.errors import ConfigError

from edgefleet.simproto import deal_labels, device_ids, parse_mqtt_url


def _sim(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgefleet", "sim", *args],
                          capture_output=True, text=True, timeout=60)  # fmt: skip


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--mode", "proto", "--mqtt", "mqtts://h:8883"], "mqtt://HOST:PORT"),
        (["--mode", "proto", "--procs", "0"], "--procs must be at least 1"),
        (["--mode", "proto", "--workers", "0"], "--workers must be at least 1"),
        (["--mode", "proto", "--devices", "0"], "--devices must be at least 1"),
        (["--procs", "2"], "--procs is for --mode proto"),
    ],
)
def test_bad_options_are_one_line(args: list[str], says: str) -> None:
    r = _sim(*args)
    assert r.returncode != 0
    assert says in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_ids_and_labels_are_the_same_in_every_process() -> None:
    # Two processes of 3 devices each deal what one process of 6 would.
    assert device_ids("s", 3, 3) == ["s-00003", "s-00004", "s-00005"]
    labels = {"site": ["a", "b"], "line": ["1", "2", "3"]}
    assert deal_labels(labels, 0, 3) + deal_labels(labels, 3, 3) == deal_labels(labels, 0, 6)
    assert deal_labels(labels, 4, 1) == [{"site": "a", "line": "2"}]
    assert parse_mqtt_url("mqtt://127.0.0.1:1884") == ("127.0.0.1", 1884)
    with pytest.raises(ConfigError):
        parse_mqtt_url("127.0.0.1:1884")
