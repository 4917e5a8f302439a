"""/tuf files over real HTTP, with the semantics the agent relies on: ETag + If-None-Match
-> 304, Range -> 206 (a download resumes), 416, If-Range, HEAD, and the download limit's
503 + Retry-After; plus the revocation cache that never waits on the database."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from edgefleet.controller.api.files import parse_range
from edgefleet.controller.db import make_engine
from edgefleet.controller.enrollment import RevokedDevices
from edgefleet.controller.models.devices import DeviceRevocation
from edgefleet.controller.settings import Settings
from sqlmodel import Session

from edgefleet.tiny_models import big_onnx
from tests.controller.fleet import (
    production_server,
    production_services,
    read_head,
    stalled_get,
    wait_until,
)


def _push(client: httpx.Client, model: Path) -> tuple[str, bytes]:
    with model.open("rb") as f:
        r = client.post("/v1/models/m/versions", files={"file": ("m.onnx", f)})
    assert r.status_code == 200, r.text
    sha = r.json()["sha256"]
    return f"/tuf/image/targets/models/m/v1/{sha}.model.onnx", model.read_bytes()


def test_etag_and_304(
    client: httpx.Client, onnx_model: Path, make_onnx: Callable[[Path, int], Path], tmp_path: Path
) -> None:
    target, data = _push(client, onnx_model)
    full = client.get(target)
    assert full.status_code == 200 and full.content == data
    assert full.headers["etag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    assert full.headers["accept-ranges"] == "bytes"
    again = client.get(target, headers={"If-None-Match": full.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == full.headers["etag"]
    assert client.get(target, headers={"If-None-Match": '"other"'}).status_code == 200

    meta = "/tuf/image/metadata/timestamp.json"
    first = client.get(meta)
    assert first.status_code == 200 and first.headers["cache-control"] == "no-cache"
    unchanged = client.get(meta, headers={"If-None-Match": first.headers["etag"]})
    assert unchanged.status_code == 304
    with make_onnx(tmp_path / "other.onnx", 8).open("rb") as f:  # a push re-signs timestamp
        assert client.post("/v1/models/n/versions", files={"file": ("m.onnx", f)}).is_success
    changed = client.get(meta, headers={"If-None-Match": first.headers["etag"]})
    assert changed.status_code == 200 and changed.headers["etag"] != first.headers["etag"]


def test_range_resumes_an_interrupted_download(client: httpx.Client, onnx_model: Path) -> None:
    target, data = _push(client, onnx_model)
    half = len(data) // 2
    got = b""
    with client.stream("GET", target) as r:  # interrupted: the client stops at half
        etag = r.headers["etag"]
        for chunk in r.iter_bytes(1024):
            got += chunk
            if len(got) >= half:
                break
    got = got[:half]
    rest = client.get(target, headers={"Range": f"bytes={half}-", "If-Range": etag})
    assert rest.status_code == 206, rest.text
    assert rest.headers["content-range"] == f"bytes {half}-{len(data) - 1}/{len(data)}"
    assert got + rest.content == data

    tail = client.get(target, headers={"Range": "bytes=-5"})
    assert tail.status_code == 206 and tail.content == data[-5:]
    bad = client.get(target, headers={"Range": f"bytes={len(data)}-"})
    assert bad.status_code == 416 and bad.headers["content-range"] == f"bytes */{len(data)}"
    stale = client.get(target, headers={"Range": "bytes=0-9", "If-Range": '"old"'})
    assert stale.status_code == 200 and stale.content == data  # changed file: all of it
    head = client.head(target)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(data))


def test_unregistered_files_stay_unserved(client: httpx.Client, onnx_model: Path) -> None:
    target, _ = _push(client, onnx_model)
    other = target.replace("/m/v1/", "/m/v2/")
    assert client.get(other).status_code == 404
    assert client.get("/tuf/image/metadata/..%2Fkeys.json").status_code == 404


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        ("bytes=0-9", 100, (0, 10)),
        ("bytes=90-", 100, (90, 100)),
        ("bytes=-10", 100, (90, 100)),
        ("bytes=-500", 100, (0, 100)),
        ("bytes=50-500", 100, (50, 100)),
        ("bytes=0-1,5-6", 100, None),  # several ranges: the whole file
        ("lines=0-1", 100, None),
        ("bytes=-", 100, None),
    ],
)
def test_parse_range(header: str, size: int, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, size) == expected


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=9-3"])
def test_parse_range_unsatisfiable(header: str) -> None:
    with pytest.raises(ValueError, match="not satisfiable"):
        parse_range(header, 100)


def test_download_limit_answers_503_with_retry_after(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", max_downloads=1, download_retry_after=7)
    services = production_services(settings)
    model = big_onnx(tmp_path / "m.onnx", 8 * 1024 * 1024)  # more than the socket buffers
    with (
        production_server(services) as (port, app),
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client,
    ):
        target, data = _push(client, model)
        slow = stalled_get(port, target)
        try:
            assert read_head(slow) == "HTTP/1.1 200 OK"
            busy = client.get(target)
            assert busy.status_code == 503 and busy.headers["retry-after"] == "7"
            meta = client.get("/tuf/image/metadata/timestamp.json")
            assert meta.status_code == 200  # metadata polls are not limited
        finally:
            slow.close()
        wait_until(lambda: app.state.files.active == 0, what="the download slot")
        assert client.get(target).content == data
    services.engine.dispose()


def test_a_client_that_stops_reading_is_dropped(tmp_path: Path) -> None:
    services = production_services(Settings(data_dir=tmp_path / "data"))
    model = big_onnx(tmp_path / "m.onnx", 8 * 1024 * 1024)
    with (
        production_server(services) as (port, app),
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client,
    ):
        target, _ = _push(client, model)
        app.state.files.stall_timeout = 0.5  # seconds (60 in service)
        slow = stalled_get(port, target)
        try:
            assert read_head(slow) == "HTTP/1.1 200 OK"
            # The client is still connected, reading nothing: its slot comes back anyway.
            wait_until(lambda: app.state.files.active == 0, 30, "the stalled download dropped")
        finally:
            slow.close()
    services.engine.dispose()


def test_revoked_lookup_never_waits_on_the_database(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}", pool_size=1)
    now = [0.0]
    revoked = RevokedDevices(engine, ttl=2.0, clock=lambda: now[0])
    revoked.load()
    with Session(engine) as s:
        s.add(DeviceRevocation(device_id="cam-9", actor="test"))
        s.commit()
    held = engine.connect()  # the pool's only connection: any database read would wait
    try:
        now[0] = 10.0  # stale: the lookup starts a background read and answers at once
        answered = threading.Event()

        def lookup() -> None:
            assert "cam-9" not in revoked  # the set it has, not the database
            answered.set()

        threading.Thread(target=lookup, daemon=True).start()
        assert answered.wait(timeout=10)
    finally:
        held.close()  # the background read gets the connection and swaps the set in
    wait_until(lambda: "cam-9" in revoked, what="the refreshed revocations")
    revoked.add("cam-10")
    assert "cam-10" in revoked
    engine.dispose()
