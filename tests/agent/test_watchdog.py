"""sd_notify over a real unix datagram socket, from the library and from a real agent."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from edgefleet.agent.watchdog import DEFAULT_PING_S, SystemdNotifier, ping_interval_s

from edgefleet.devbroker import free_port

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    path = str(tmp_path / "notify.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(30)
    yield path, s
    s.close()


def test_ready_watchdog_stopping_arrive_as_datagrams(notify_socket):
    path, server = notify_socket
    n = SystemdNotifier.from_env({"NOTIFY_SOCKET": path})
    assert n.ready()
    assert server.recv(4096) == b"READY=1\nSTATUS=serving"
    assert n.watchdog()
    assert server.recv(4096) == b"WATCHDOG=1"
    assert n.stopping()
    assert server.recv(4096) == b"STOPPING=1"


def test_abstract_namespace_socket():
    name = f"edgefleet-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind("\0" + name)
        server.settimeout(10)
        assert SystemdNotifier(f"@{name}").watchdog()
        assert server.recv(64) == b"WATCHDOG=1"


def test_without_systemd_every_call_is_a_no_op(tmp_path: Path):
    assert not SystemdNotifier.from_env({}).ready()
    gone = SystemdNotifier(str(tmp_path / "nobody-listens.sock"))
    assert not gone.watchdog()  # logged, never raised


def test_ping_interval_is_half_the_watchdog_period():
    assert ping_interval_s({"WATCHDOG_USEC": "1000000"}, pid=7) == 0.5
    assert ping_interval_s({"WATCHDOG_USEC": "30000000"}, pid=7) == DEFAULT_PING_S
    assert ping_interval_s({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "8"}, pid=7) == 1.0
    assert ping_interval_s({}, pid=7) == DEFAULT_PING_S
    assert ping_interval_s({"WATCHDOG_USEC": "junk"}, pid=7) == DEFAULT_PING_S


@pytest.mark.slow
def test_agent_process_notifies_ready_then_pings(notify_socket, tmp_path: Path):
    """A real agent (no controller or broker reachable: it still serves and says so)."""
    path, server = notify_socket
    cfg = {
        "device_id": "wd-1",
        "controller_url": f"http://127.0.0.1:{free_port()}",
        "mqtt_url": f"mqtt://127.0.0.1:{free_port()}",
        "data_dir": str(tmp_path / "data"),
        "source": {"kind": "folder", "path": str(REPO / "models" / "samples")},
    }
    config = tmp_path / "agent.yaml"
    config.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "NOTIFY_SOCKET": path, "WATCHDOG_USEC": "600000"}
    env.pop("WATCHDOG_PID", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgefleet", "agent", "run", "--config", str(config)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        got = [server.recv(4096)]
        while got.count(b"WATCHDOG=1") < 3:
            got.append(server.recv(4096))
        assert got[0].startswith(b"READY=1")
        start = time.monotonic()
        proc.terminate()
        while b"STOPPING=1" not in got:
            got.append(server.recv(4096))
        assert proc.wait(timeout=30) == 0
        assert time.monotonic() - start < 30
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stderr is not None
        err = proc.stderr.read().decode(errors="replace")
        proc.stderr.close()
    assert "Traceback" not in err
