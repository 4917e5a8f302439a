"""SIGTERM stops ``edgefleet controller serve`` within SHUTDOWN_LIMIT seconds in any state:
clients that stopped reading mid-download, and a database that does not answer writes
(another process holds SQLite's write lock, so uploads wait on it)."""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from edgefleet.shared.protocol import utcnow

from edgefleet.devbroker import free_port
from edgefleet.tiny_models import big_onnx
from tests.controller.fleet import read_head, stalled_get, wait_until

SHUTDOWN_LIMIT = 10.0  # seconds from SIGTERM to the process gone (the bound)
SLOW_CLIENTS = 50


@contextmanager
def controller(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    port = free_port()
    log = tmp_path / "controller.log"
    argv = [
        sys.executable,
        "-m",
        "edgefleet",
        "controller",
        "serve",
        "--data",
        str(tmp_path / "data"),
        "--listen",
        f"127.0.0.1:{port}",
        "--mqtt",
        f"mqtt://127.0.0.1:{free_port()}",  # no broker: the REST side is what is tested
        "--insecure-dev",  # loopback, no API tokens, as the other e2e tests run it
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: _healthy(port) or proc.poll() is not None, what="controller start")
        assert proc.poll() is None, log.read_text()[-2000:]
        yield proc, port, log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _stall_downloads(client: httpx.Client, port: int, model: Path) -> list[socket.socket]:
    with model.open("rb") as f:
        r = client.post("/v1/models/big/versions", files={"file": ("m.onnx", f)})
    assert r.status_code == 200, r.text
    target = f"/tuf/image/targets/models/big/v1/{r.json()['sha256']}.model.onnx"
    socks = [stalled_get(port, target) for _ in range(SLOW_CLIENTS)]
    assert {read_head(s) for s in socks} == {"HTTP/1.1 200 OK"}  # all mid-transfer now
    return socks


def _upload_request(i: int) -> bytes:
    meta = {"uid": f"u-{i}", "device_id": "cam-1", "strategy": "uncertain", "reason": "t",
            "captured_at": utcnow().isoformat(), "width": 1, "height": 1,
            "detections": []}  # fmt: skip
    body = (
        b'--b\r\nContent-Disposition: form-data; name="meta"\r\n\r\n'
        + json.dumps(meta).encode()
        + b'\r\n--b\r\nContent-Disposition: form-data; name="image"; filename="x.jpg"\r\n'
        b"Content-Type: image/jpeg\r\n\r\n\xff\xd8\xff\xd9\r\n--b--\r\n"
    )
    head = (f"POST /v1/samples HTTP/1.1\r\nHost: t\r\nX-Edgefleet-Device: cam-1\r\n"
            "Content-Type: multipart/form-data; boundary=b\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")  # fmt: skip
    return head.encode() + body


def _sigterm_and_time(proc: subprocess.Popen[bytes], log: Path) -> tuple[float, int]:
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=SHUTDOWN_LIMIT * 3)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"ignored SIGTERM:\n{log.read_text()[-2000:]}") from None
    return time.monotonic() - start, code


def test_sigterm_with_stalled_downloads_exits_cleanly(tmp_path: Path) -> None:
    model = big_onnx(tmp_path / "big.onnx", 10 * 1024 * 1024)
    with (
        controller(tmp_path) as (proc, port, log),
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client,
    ):
        socks = _stall_downloads(client, port, model)
        elapsed, code = _sigterm_and_time(proc, log)
        for s in socks:
            s.close()
    assert elapsed < SHUTDOWN_LIMIT, f"took {elapsed:.1f} s"
    assert code == 0, log.read_text()[-2000:]  # the grace period cut the downloads
    assert "Traceback" not in log.read_text()


def test_sigterm_with_a_stuck_database_exits_in_time(tmp_path: Path) -> None:
    model = big_onnx(tmp_path / "big.onnx", 10 * 1024 * 1024)
    with (
        controller(tmp_path) as (proc, port, log),
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client,
    ):
        socks = _stall_downloads(client, port, model)
        lock = sqlite3.connect(tmp_path / "data" / "edgefleet.db", timeout=30,
                               isolation_level=None)  # fmt: skip
        lock.execute("BEGIN EXCLUSIVE")  # every write of the controller now waits 30 s
        uploads = [_post(port, _upload_request(i)) for i in range(8)]  # they wait on it
        elapsed, code = _sigterm_and_time(proc, log)
        lock.rollback()
        lock.close()
        for s in [*socks, *uploads]:
            s.close()
    assert elapsed < SHUTDOWN_LIMIT, f"took {elapsed:.1f} s:\n{log.read_text()[-2000:]}"
    # The writes were still waiting on the lock: the deadline, not the grace, ended it.
    assert code == 1 and "exiting now" in log.read_text(), log.read_text()[-2000:]


def _post(port: int, raw: bytes) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    s.sendall(raw)
    return s
