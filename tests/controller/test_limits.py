"""Bounded requests over real HTTP: body limits per route (declared or streamed), and a rate
limit on the credential routes; the controller's state is untouched by refused requests."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
from edgefleet.controller.limits import (
    BURST,
    JSON_MAX,
    SAMPLE_MAX,
    TokenBuckets,
    body_limit,
    is_credential_route,
)
from edgefleet.controller.services import Services

from edgefleet.tiny_models import tiny_onnx

Serve = Callable[[Services], AbstractContextManager[httpx.Client]]


def test_limits_per_route() -> None:
    assert body_limit("POST", "/v1/models/shapes/versions", 4096) == 4096
    assert body_limit("POST", "/v1/models/shapes/versions/v2/plans", 4096) == 4096
    assert body_limit("POST", "/v1/samples", 4096) == SAMPLE_MAX
    assert body_limit("POST", "/v1/rollouts", 4096) == JSON_MAX
    assert body_limit("PUT", "/v1/models/shapes/versions/v2/card", 4096) == JSON_MAX
    assert is_credential_route("POST", "/v1/enroll")
    assert is_credential_route("POST", "/v1/tokens/ci/revoke")
    assert not is_credential_route("GET", "/v1/tokens")


def test_token_bucket_refills_at_its_rate() -> None:
    now = [0.0]
    buckets = TokenBuckets(rate=2.0, burst=3, clock=lambda: now[0])
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a") == 0.5  # empty: one token comes in half a second
    assert buckets.take("b") == 0.0  # another client has its own bucket
    now[0] += 0.5
    assert buckets.take("a") == 0.0


def test_a_declared_body_over_the_limit_is_413(client: httpx.Client) -> None:
    big = b"{" + b" " * (JSON_MAX + 10) + b"}"
    r = client.post("/v1/rollouts", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert "request body over" in r.json()["detail"]
    assert client.get("/v1/rollouts").status_code == 200  # still serving


def test_a_streamed_body_is_cut_at_the_limit(
    make_services: Callable[..., Services], serve: Serve, tmp_path: Path
) -> None:
    services = make_services()
    services.settings = dataclasses.replace(services.settings, max_upload_bytes=64 * 1024)
    sent = []

    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer
        # Well-formed multipart up to the file's bytes, so only the size can stop it.
        yield (b'--zz\r\nContent-Disposition: form-data; name="file"; filename="m.onnx"\r\n'
               b"Content-Type: application/octet-stream\r\n\r\n")  # fmt: skip
        for _ in range(64):
            sent.append(1)
            yield b"x" * 8192

    with serve(services) as client:
        r = client.post("/v1/models/shapes/versions", content=chunks(),
                        headers={"content-type": "multipart/form-data; boundary=zz"})  # fmt: skip
        assert r.status_code == 413, r.text
        assert client.get("/v1/models").json()["count"] == 0  # nothing registered
        small = tiny_onnx(tmp_path / "small.onnx")
        with small.open("rb") as f:  # a model under the limit still goes in
            ok = client.post("/v1/models/shapes/versions", files={"file": ("m.onnx", f)},
                             data={"version": "v1"})  # fmt: skip
        assert ok.status_code == 200, ok.text


def test_credential_routes_are_rate_limited(client: httpx.Client) -> None:
    codes = [client.post("/v1/enroll", json={"token": "x", "csr": "y"}).status_code
             for _ in range(BURST + 5)]  # fmt: skip
    assert 429 not in codes[:BURST]
    assert codes[-1] == 429
    r = client.post("/v1/enroll", json={"token": "x", "csr": "y"})
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert client.get("/healthz").status_code == 200  # other routes unaffected


def test_the_limit_comes_before_authentication(
    make_services: Callable[..., Services], serve: Serve
) -> None:
    # As shipped (tokens required): an unauthenticated oversized body is refused on its size,
    # before any token lookup, and a small one on its missing token.
    services = make_services()
    services.settings = dataclasses.replace(services.settings, auth=True)
    big = b"{" + b" " * (JSON_MAX + 10) + b"}"
    with serve(services) as client:
        r = client.post("/v1/rollouts", content=big, headers={"content-type": "application/json"})
        assert r.status_code == 413 and "request body over" in r.json()["detail"]
        assert client.post("/v1/rollouts", json={}).status_code == 401


def _first_answer_to_a_partial_upload(client: httpx.Client, path: str, token: str) -> bytes:
    """Headers that announce a 20 MiB multipart upload (under every upload limit), then only
    its first bytes: what the controller answers without the rest (b"" if it waits for it)."""
    host, port = client.base_url.host, client.base_url.port
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    head = (f"POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {20 * 1024 * 1024}\r\n"
            "Content-Type: multipart/form-data; boundary=zz\r\n\r\n--zz\r\n"
            'Content-Disposition: form-data; name="file"; filename="m.onnx"\r\n\r\n')  # fmt: skip
    with socket.create_connection((host, port)) as s:
        s.sendall(head.encode() + b"x" * 65536)
        s.settimeout(5)
        try:
            return s.recv(200)
        except TimeoutError:
            return b""


def test_an_upload_without_a_live_credential_is_refused_before_its_body(
    make_services: Callable[..., Services], serve: Serve, tmp_path: Path
) -> None:
    from edgefleet.controller.tokens import create_token
    from sqlmodel import Session

    services = make_services()
    services.settings = dataclasses.replace(services.settings, auth=True)
    with Session(services.engine) as session:
        operator = create_token(session, "ci", "operator", "t")[1]
    with serve(services) as client:
        for path, bogus in (("/v1/models/shapes/versions", b"401"), ("/v1/samples", b"403"),
                            ("/v1/devices/cam-1/plans", b"403")):  # fmt: skip
            for token, status in (("", b"401"), ("efu_not-a-credential", bogus)):
                answer = _first_answer_to_a_partial_upload(client, path, token)
                assert answer.startswith(b"HTTP/1.1 " + status), (path, token, answer)
        # A live token's upload is read (the server waits for the rest), and goes in.
        assert _first_answer_to_a_partial_upload(
            client, "/v1/models/shapes/versions", operator) == b""  # fmt: skip
        with tiny_onnx(tmp_path / "m.onnx").open("rb") as f:
            ok = client.post("/v1/models/shapes/versions", files={"file": ("m.onnx", f)},
                             data={"version": "v1"},
                             headers={"Authorization": f"Bearer {operator}"})  # fmt: skip
        assert ok.status_code == 200, ok.text
