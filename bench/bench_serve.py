"""API latency of a controller while N artifact downloads stall, against the same calls idle.

    python bench/bench_serve.py [--downloads 200] [--calls 200] [--mb 10]
        [--database-url URL] [--json]

Builds the controller as ``edgefleet controller serve`` does (pool and threadpool sizes),
pushes one artifact of ``--mb`` MB, then times ``--calls`` API calls (devices, versions,
director metadata, a 304 poll, a sample upload, in turn; 16 client threads) twice: idle,
and while ``--downloads`` clients hold a download open and read nothing. Prints p50 / p99
/ max of each and their ratios; before the fix, the loaded run did not answer at all.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from edgefleet.tiny_models import big_onnx


@contextmanager
def _controller(data: Path, database_url: str | None, downloads: int) -> Iterator[int]:
    from edgefleet.controller.app import create_app
    from edgefleet.controller.artifacts import ArtifactStore
    from edgefleet.controller.db import make_engine
    from edgefleet.controller.serve import ShutdownDeadline, _server, bind
    from edgefleet.controller.services import NoLink, Services
    from edgefleet.controller.settings import Settings
    from edgefleet.controller.trust import TufSigning

    settings = Settings(data_dir=data, database_url=database_url, max_downloads=downloads + 1)
    data.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.db_url, settings.db_pool_size)
    services = Services(settings, engine, ArtifactStore(settings.artifacts_dir),
                        TufSigning.open(data), NoLink())  # fmt: skip
    services.signing.ensure_device("cam-1")
    sock = bind("127.0.0.1", 0)
    server = _server(create_app(services), settings, ShutdownDeadline(3600))
    server.config.access_log = False
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        engine.dispose()


def _calls(client: httpx.Client, etag: str) -> list[Callable[[int], httpx.Response]]:
    jpeg = bytes.fromhex("ffd8ffd9")

    def upload(i: int) -> httpx.Response:
        meta = {"uid": f"b-{i}-{time.monotonic_ns()}", "device_id": "cam-1", "strategy": "x",
                "reason": "bench", "captured_at": "2026-01-01T00:00:00+00:00", "width": 1,
                "height": 1, "detections": []}  # fmt: skip
        return client.post("/v1/samples", data={"meta": json.dumps(meta)},
                           files={"image": ("x.jpg", jpeg, "image/jpeg")},
                           headers={"X-Edgefleet-Device": "cam-1"})  # fmt: skip

    return [
        lambda _i: client.get("/v1/devices"),
        lambda _i: client.get("/v1/models/bench/versions"),
        lambda _i: client.get("/tuf/director/cam-1/metadata/timestamp.json"),
        lambda _i: client.get(
            "/tuf/image/metadata/timestamp.json", headers={"If-None-Match": etag}
        ),
        upload,
    ]


def _timed(client: httpx.Client, etag: str, n: int) -> dict[str, float]:
    calls = _calls(client, etag)

    def one(i: int) -> float:
        start = time.perf_counter()
        r = calls[i % len(calls)](i)
        if r.status_code not in {200, 201, 304}:
            raise SystemExit(f"bench: {r.request.url.path} answered {r.status_code}")
        return time.perf_counter() - start

    with ThreadPoolExecutor(max_workers=16) as pool:
        times = sorted(pool.map(one, range(n)))
    return {"p50_ms": 1000 * statistics.median(times),
            "p99_ms": 1000 * times[min(len(times) - 1, int(0.99 * len(times)))],
            "max_ms": 1000 * times[-1]}  # fmt: skip


def _stall(port: int, target: str, n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(120)
        s.connect(("127.0.0.1", port))
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
        socks.append(s)
    for s in socks:  # wait until each one is mid-transfer
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += s.recv(1024) or b"\r\n\r\n"
    return socks


@contextmanager
def _scratch_database(url: str | None) -> Iterator[str | None]:
    """A new database on the server of ``url`` (dropped afterwards), so a run never
    touches the data of the database named in the URL; SQLite (None) as it is."""
    if url is None:
        yield None
        return
    import uuid

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    base = make_url(url)
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    name = f"edgefleet_bench_{uuid.uuid4().hex[:12]}"
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def run(downloads: int, calls: int, mb: float, database_url: str | None) -> dict[str, Any]:
    with _scratch_database(database_url) as url:
        return _run(downloads, calls, mb, url)


def _run(downloads: int, calls: int, mb: float, database_url: str | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="edgefleet-bench-") as tmp:
        model = big_onnx(Path(tmp) / "m.onnx", int(mb * 1024 * 1024))
        with (
            _controller(Path(tmp) / "data", database_url, downloads) as port,
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client,
        ):
            with model.open("rb") as f:
                r = client.post("/v1/models/bench/versions", files={"file": ("m.onnx", f)})
            r.raise_for_status()
            target = f"/tuf/image/targets/models/bench/v1/{r.json()['sha256']}.model.onnx"
            etag = client.get("/tuf/image/metadata/timestamp.json").headers["etag"]
            _timed(client, etag, calls)  # warm up: imports, first connections, caches
            idle = _timed(client, etag, calls)
            socks = _stall(port, target, downloads)
            try:
                loaded = _timed(client, etag, calls)
            finally:
                for s in socks:
                    s.close()
    ratios = {k: loaded[k] / idle[k] for k in idle}
    return {"downloads": downloads, "calls": calls, "artifact_mb": mb,
            "database": "postgresql" if database_url else "sqlite",
            "idle": idle, "loaded": loaded, "ratio_loaded_vs_idle": ratios}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--downloads", type=int, default=200)
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--mb", type=float, default=10.0)
    p.add_argument("--database-url", default=None,
                   help="PostgreSQL URL; the run uses a new database on that server")  # fmt: skip
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    doc = run(a.downloads, a.calls, a.mb, a.database_url)
    if a.json:
        print(json.dumps(doc))
        return 0
    print(f"{a.calls} API calls, {doc['database']}; {a.downloads} stalled downloads of {a.mb} MB")
    for k in ("p50_ms", "p99_ms", "max_ms"):
        print(f"  {k:7} idle {doc['idle'][k]:8.1f}  loaded {doc['loaded'][k]:8.1f}  "
              f"ratio {doc['ratio_loaded_vs_idle'][k]:5.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
