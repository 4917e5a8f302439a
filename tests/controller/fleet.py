"""Helpers of the fleet-load tests: the controller as ``serve`` builds it (pool and threadpool
sizes, shutdown grace) on a free port, a large ONNX artifact, and clients that stop reading."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from edgefleet.controller.app import create_app
from edgefleet.controller.artifacts import ArtifactStore
from edgefleet.controller.db import make_engine
from edgefleet.controller.serve import ShutdownDeadline, _server, bind
from edgefleet.controller.services import NoLink, Services
from edgefleet.controller.settings import Settings
from edgefleet.controller.trust import TufSigning
from fastapi import FastAPI

from edgefleet.devbroker import free_port


def production_services(settings: Settings) -> Services:
    """Services with the engine ``serve`` builds (pool sized to the threads)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.db_url, settings.db_pool_size)
    store = ArtifactStore(settings.artifacts_dir)
    return Services(settings, engine, store, TufSigning.open(settings.data_dir), NoLink())


@contextmanager
def production_server(services: Services) -> Iterator[tuple[int, FastAPI]]:
    """serve's uvicorn server (threadpool size, graceful timeout) in a thread: (port, app)."""
    sock = bind("127.0.0.1", free_port())
    app = create_app(services)
    server = _server(app, services.settings, ShutdownDeadline(3600))
    server.config.log_level = "warning"
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield sock.getsockname()[1], app
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def stalled_get(port: int, path: str, rcvbuf: int = 4096) -> socket.socket:
    """Send a GET from a socket with a tiny receive window; the caller reads (or not)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(60)  # seconds, a generous bound for a loaded 2-core machine
    s.connect(("127.0.0.1", port))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: edgefleet\r\n\r\n".encode())
    return s


def read_head(s: socket.socket) -> str:
    """Read until the end of the response headers; return the status line."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(1024)
        assert chunk, "the server closed the connection before its headers"
        buf += chunk
    return buf.split(b"\r\n", 1)[0].decode()


def wait_until(predicate: object, timeout: float = 60.0, what: str = "condition") -> None:
    """Poll a state (not a sleep): ``predicate()`` true within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
