"""The updater's plain-HTTP savings against a real HTTP server: resume, busy, idle polls.

``HttpServer`` is the standard library's ThreadingHTTPServer serving the controller's
/tuf/ layout from real signed repositories, with the HTTP semantics the controller offers
(RFC 9110): ``Range`` -> 206, ``ETag`` + ``If-None-Match`` -> 304, and 503 +
``Retry-After`` while busy. Each of those can be switched off to play an older server.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import format_datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from edgefleet.agent.fetcher import (
    DeadlineFetcher,
    FetcherConfig,
    busy_wait_s,
    parse_retry_after,
)
from edgefleet.agent.updater import ModelUpdater, UpdaterConfig
from edgefleet.controller.signing import TargetInfo, TufRepositories
from edgefleet.shared.errors import TransportError, TrustError
from edgefleet.shared.protocol import utcnow

from tests.agent.tuf_paths import LocalServer, artifact_url_path, metadata_file

DEVICE = "cam-1"
MODEL = bytes(range(256)) * 400  # 100 KiB


@dataclass(frozen=True)
class Seen:
    path: str
    status: int
    range: str | None


class HttpServer(LocalServer):
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.artifacts: dict[str, bytes] = {}
        self.ranges = True  # honour Range
        self.etags = True  # send ETag, answer If-None-Match with 304
        self.busy = 0  # the next this many requests get 503 + Retry-After: 0
        self.cut_after: dict[str, int] = {}  # path -> bytes sent before hanging up, once
        self.seen: list[Seen] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                outer.answer(self)

            def log_message(self, format: str, *args: object) -> None:
                pass

        super().__init__(Handler)

    def answer(self, h: BaseHTTPRequestHandler) -> None:
        asked = h.headers.get("Range")
        if self.busy > 0:
            self.busy -= 1
            self._reply(h, Seen(h.path, 503, asked), b"", {"Retry-After": "0"})
            return
        body = self.artifacts.get(h.path) or metadata_file(self.data_dir, h.path)
        if body is None:
            self._reply(h, Seen(h.path, 404, asked), b"", {})
            return
        etag = f'"{hashlib.sha256(body).hexdigest()[:16]}"'
        headers = {"ETag": etag} if self.etags else {}
        if self.etags and h.headers.get("If-None-Match") == etag:
            self._reply(h, Seen(h.path, 304, asked), b"", headers, length=False)
            return
        start = int(asked[len("bytes=") : -1]) if asked and self.ranges else 0
        if start:
            headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
        status = 206 if start else 200
        cut = self.cut_after.pop(h.path, None)
        self._reply(h, Seen(h.path, status, asked), body[start:], headers, cut=cut)

    def _reply(
        self,
        h: BaseHTTPRequestHandler,
        seen: Seen,
        body: bytes,
        headers: dict[str, str],
        *,
        length: bool = True,
        cut: int | None = None,
    ) -> None:
        self.seen.append(seen)
        h.send_response(HTTPStatus(seen.status))
        for k, v in headers.items():
            h.send_header(k, v)
        if length:
            h.send_header("Content-Length", str(len(body)))
        if cut is not None:
            h.send_header("Connection", "close")
        h.end_headers()
        h.wfile.write(body if cut is None else body[:cut])
        h.wfile.flush()
        if cut is not None:
            h.close_connection = True

    def serve(self, info: TargetInfo, body: bytes) -> str:
        path = artifact_url_path(info.target_path, info.sha256)
        self.artifacts[path] = body
        return path

    def __enter__(self) -> HttpServer:
        super().__enter__()
        return self


@pytest.fixture
def repos(tmp_path: Path) -> TufRepositories:
    return TufRepositories(tmp_path / "controller")


@pytest.fixture
def server(repos: TufRepositories) -> Iterator[HttpServer]:
    with HttpServer(repos.data_dir) as s:
        yield s


class Clock:
    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now


def make_updater(
    url: str, agent_dir: Path, clock: Clock | None = None, **fetcher: object
) -> ModelUpdater:
    config = UpdaterConfig(url, DEVICE, agent_dir, download_deadline_s=10, socket_timeout_s=5)
    waits: list[float] = []
    f = DeadlineFetcher(
        FetcherConfig(deadline_s=10, timeout_s=5, **fetcher),  # type: ignore[arg-type]
        sleep=waits.append,
        rng=random.Random(7),
    )
    up = ModelUpdater(config, f, clock=clock or utcnow)
    up.waits = waits  # type: ignore[attr-defined]
    return up


def publish(repos: TufRepositories, server: HttpServer, tmp_path: Path, version: str) -> str:
    artifact = tmp_path / f"{version}.onnx"
    artifact.write_bytes(MODEL + version.encode())
    info = repos.image.add_model_target("yolo", version, int(version[1:]), artifact)
    repos.assign(DEVICE, [info])
    return server.serve(info, artifact.read_bytes())


# -- resume ---------------------------------------------------------------------------


def test_interrupted_download_resumes_with_range(
    repos: TufRepositories, server: HttpServer, tmp_path: Path
) -> None:
    path = publish(repos, server, tmp_path, "v1")
    up = make_updater(server.url, tmp_path / "agent")
    [target] = up.refresh({}, None)
    models = tmp_path / "models"
    server.cut_after[path] = 40_000
    with pytest.raises(TransportError):
        up.download(target, models)
    part = models / f".{target.sha256}.onnx.part"
    assert part.read_bytes() == MODEL[:40_000]  # kept, fsync'd, a prefix

    got = up.download(target, models)

    assert got.read_bytes() == MODEL + b"v1"
    asked = [s for s in server.seen if s.path == path]
    assert [(s.status, s.range) for s in asked] == [(200, None), (206, "bytes=40000-")]
    assert not part.exists()


def test_a_rate_limited_download_takes_the_time_of_its_rate(
    repos: TufRepositories, server: HttpServer, tmp_path: Path
) -> None:
    """download_rate_bps (test-only: the agent hook of that name) holds a download to that rate."""
    publish(repos, server, tmp_path, "v1")
    rate = 400_000.0  # bytes per second: 100 KiB in about 0.26 s
    config = UpdaterConfig(server.url, DEVICE, tmp_path / "agent", download_rate_bps=rate)
    fetcher = DeadlineFetcher(FetcherConfig(rate_bps=rate, chunk_size=8192))
    up = ModelUpdater(config, fetcher)
    [target] = up.refresh({}, None)
    started = time.monotonic()
    assert up.download(target, tmp_path / "models").read_bytes() == MODEL + b"v1"
    took = time.monotonic() - started
    assert took >= 0.8 * (len(MODEL) - 8192) / rate, took  # no wait after the last chunk


def test_server_ignoring_range_restarts_from_zero(
    repos: TufRepositories, server: HttpServer, tmp_path: Path
) -> None:
    path = publish(repos, server, tmp_path, "v1")
    server.ranges = False
    up = make_updater(server.url, tmp_path / "agent")
    [target] = up.refresh({}, None)
    server.cut_after[path] = 30_000
    with pytest.raises(TransportError):
        up.download(target, tmp_path / "models")
    assert up.download(target, tmp_path / "models").read_bytes() == MODEL + b"v1"
    assert [s.status for s in server.seen if s.path == path] == [200, 200]


def test_resumed_bytes_that_fail_verification_are_deleted(
    repos: TufRepositories, server: HttpServer, tmp_path: Path
) -> None:
    publish(repos, server, tmp_path, "v1")
    up = make_updater(server.url, tmp_path / "agent")
    [target] = up.refresh({}, None)
    models = tmp_path / "models"
    models.mkdir()
    part = models / f".{target.sha256}.onnx.part"
    part.write_bytes(b"\xff" * 1000)  # a prefix that is not the signed file's
    with pytest.raises(TrustError):
        up.download(target, models)
    assert list(models.iterdir()) == []
    assert up.download(target, models).read_bytes() == MODEL + b"v1"


# -- a busy controller ----------------------------------------------------------------


def test_busy_controller_is_retried_after_its_retry_after(
    repos: TufRepositories, server: HttpServer, tmp_path: Path
) -> None:
    publish(repos, server, tmp_path, "v1")
    up = make_updater(server.url, tmp_path / "agent")
    [target] = up.refresh({}, None)
    server.busy = 3
    assert up.download(target, tmp_path / "models").read_bytes() == MODEL + b"v1"
    waits = up.waits  # type: ignore[attr-defined]
    assert len(waits) == 3
    # full jitter under 1, 2, 4 s (Retry-After: 0 adds nothing)
    assert all(0 <= w <= bound for w, bound in zip(waits, (1, 2, 4), strict=True))


def test_busy_for_too_long_is_a_transport_error(
    repos: TufRepositories, server: HttpServer, tmp_path: Path
) -> None:
    publish(repos, server, tmp_path, "v1")
    up = make_updater(server.url, tmp_path / "agent", busy_budget_s=20.0)
    [target] = up.refresh({}, None)
    server.busy = 1000
    with pytest.raises(TransportError, match="busy"):
        up.download(target, tmp_path / "models")
    waits = up.waits  # type: ignore[attr-defined]
    assert 0 < sum(waits) <= 20.0
    assert not (tmp_path / "models" / f"{target.sha256}.onnx").exists()


def test_busy_wait_has_retry_after_as_floor_and_a_capped_jitter() -> None:
    config = FetcherConfig(backoff_base_s=1.0, backoff_cap_s=8.0, retry_after_max_s=100.0)
    rng = random.Random(1)
    draws = [busy_wait_s(10, None, config, rng) for _ in range(200)]
    assert min(draws) >= 0 and max(draws) <= 8.0 and max(draws) > 4.0  # spread, capped
    with_floor = [busy_wait_s(0, 5.0, config, rng) for _ in range(200)]
    assert all(5.0 <= w <= 6.0 for w in with_floor)
    assert busy_wait_s(0, 1e9, config, rng) <= 101.0  # an absurd Retry-After is bounded


def test_retry_after_is_seconds_or_a_date() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0).astimezone()
    assert parse_retry_after("7", now.timestamp()) == 7.0
    later = format_datetime(now + timedelta(seconds=90), usegmt=False)
    assert parse_retry_after(later, now.timestamp()) == pytest.approx(90, abs=1)
    assert parse_retry_after("soon", now.timestamp()) is None
    assert parse_retry_after(None, now.timestamp()) is None


# -- idle polls -----------------------------------------------------------------------


def test_idle_polls_cost_one_conditional_get_and_no_404(
    repos: TufRepositories, server: HttpServer, tmp_path: Path
) -> None:
    publish(repos, server, tmp_path, "v1")
    clock = Clock()
    up = make_updater(server.url, tmp_path / "agent", clock)
    [first] = up.refresh({}, None)
    server.seen.clear()

    for _ in range(5):
        clock.now += timedelta(seconds=30)
        assert up.refresh({}, None) == [first]

    assert up.full_refreshes == 1
    director = f"/tuf/director/{DEVICE}/metadata/timestamp.json"
    # the first look learns the ETag; the image repository is not due yet
    assert [(s.path, s.status) for s in server.seen] == [(director, 200)] + [(director, 304)] * 4
    server.seen.clear()
    clock.now += timedelta(seconds=UpdaterConfig("http://x", DEVICE, tmp_path).image_check_s)
    up.refresh({}, None)
    up.refresh({}, None)
    image = "/tuf/image/metadata/timestamp.json"
    assert [(s.path, s.status) for s in server.seen] == [
        (director, 304),
        (image, 200),
        (director, 304),
    ]
    assert up.full_refreshes == 1


def test_a_refused_assignment_checks_the_image_repository_on_every_poll(
    repos: TufRepositories, server: HttpServer, tmp_path: Path
) -> None:
    artifact = tmp_path / "v1.onnx"
    artifact.write_bytes(MODEL)
    digest = hashlib.sha256(MODEL).hexdigest()
    early = TargetInfo("models/yolo/v1/model.onnx", len(MODEL), digest, "yolo", "v1", 1)
    repos.director.assign(DEVICE, [early])  # the director is ahead of the image repository
    up = make_updater(server.url, tmp_path / "agent")
    with pytest.raises(TrustError, match="not signed in the image repository"):
        up.refresh({}, None)
    with pytest.raises(TrustError):
        up.refresh({}, None)
    assert up.full_refreshes == 1
    repos.image.add_model_target("yolo", "v1", 1, artifact)
    assert [t.version for t in up.refresh({}, None)] == ["v1"]  # no director change needed
    assert up.full_refreshes == 2


def test_idle_polls_without_etags_compare_the_timestamp_bytes(
    repos: TufRepositories, server: HttpServer, tmp_path: Path
) -> None:
    server.etags = False  # an older controller: 200 every time, but no 404 and no refresh
    publish(repos, server, tmp_path, "v1")
    up = make_updater(server.url, tmp_path / "agent")
    up.refresh({}, None)
    server.seen.clear()
    for _ in range(3):
        up.refresh({}, None)
    assert up.full_refreshes == 1
    assert [s.status for s in server.seen] == [200] * 3
    assert all(s.path.endswith("/timestamp.json") for s in server.seen)


def test_a_new_assignment_is_seen_on_the_next_poll(
    repos: TufRepositories, server: HttpServer, tmp_path: Path
) -> None:
    publish(repos, server, tmp_path, "v1")
    up = make_updater(server.url, tmp_path / "agent")
    up.refresh({}, None)
    up.refresh({}, None)
    publish(repos, server, tmp_path, "v2")
    assert [t.version for t in up.refresh({"yolo": 1}, None)] == ["v2"]
    assert up.full_refreshes == 2
    up.refresh({"yolo": 1}, None)
    assert up.full_refreshes == 2


def test_inputs_of_the_decision_are_judged_again_on_a_reused_verification(
    repos: TufRepositories, server: HttpServer, tmp_path: Path
) -> None:
    publish(repos, server, tmp_path, "v1")
    up = make_updater(server.url, tmp_path / "agent")
    up.refresh({}, None)
    with pytest.raises(TrustError, match="lower than installed release 5"):
        up.refresh({"yolo": 5}, None)
    assert up.full_refreshes == 1


def test_metadata_near_expiry_is_refreshed_fully(
    repos: TufRepositories, server: HttpServer, tmp_path: Path
) -> None:
    publish(repos, server, tmp_path, "v1")
    clock = Clock()
    up = make_updater(server.url, tmp_path / "agent", clock)
    up.refresh({}, None)
    clock.now += timedelta(hours=22)  # timestamps live a day; the margin is an hour
    up.refresh({}, None)
    assert up.full_refreshes == 1
    clock.now += timedelta(hours=1, minutes=30)  # within the margin: ask ngclient again
    up.refresh({}, None)
    assert up.full_refreshes == 2


def test_an_error_on_the_timestamp_falls_back_to_the_full_refresh(
    repos: TufRepositories, server: HttpServer, tmp_path: Path
) -> None:
    publish(repos, server, tmp_path, "v1")
    up = make_updater(server.url, tmp_path / "agent")
    up.refresh({}, None)
    stamp = repos.director_metadata_dir(DEVICE) / "timestamp.json"
    stamp.rename(stamp.with_suffix(".gone"))
    with pytest.raises(TransportError, match="404"):
        up.refresh({}, None)
    assert up.full_refreshes == 2
