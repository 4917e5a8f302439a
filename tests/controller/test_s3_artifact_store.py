"""The S3 artifact store against a real S3-compatible HTTP endpoint (``moto_server`` in a
subprocess on a free port): pushes land in the bucket, a device is redirected (307) to a
presigned URL after the read check, and the agent's updater downloads and verifies the
bytes from the bucket itself."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import io
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from edgefleet.agent.fetcher import DeadlineFetcher, FetcherConfig
from edgefleet.agent.updater import ModelUpdater, UpdaterConfig
from edgefleet.controller import registry
from edgefleet.controller.artifact_store import S3Store, open_backend
from edgefleet.controller.artifacts import ArtifactStore
from edgefleet.controller.serve import build_services
from edgefleet.controller.services import Services
from edgefleet.controller.settings import Settings
from edgefleet.shared.errors import ArtifactError, ConfigError, TrustError
from sqlmodel import Session

from edgefleet.devbroker import free_port
from edgefleet.tiny_models import tiny_onnx
from tests.controller.conftest import bearer, enroll_device, serving
from tests.waiting import wait_for

boto3 = pytest.importorskip("boto3")
pytest.importorskip("moto.server")

BUCKET = "fleet-artifacts"
DEVICE = "cam-s3"


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A real S3-compatible HTTP server (moto), with the bucket made."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for("moto_server to listen", lambda: proc.poll() is None and _listening(port))
        url = f"http://127.0.0.1:{port}"
        _client(url).create_bucket(Bucket=BUCKET)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(autouse=True)
def _credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "edgefleet-test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "edgefleet-test-secret")


def _client(endpoint: str):  # type: ignore[no-untyped-def]
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="edgefleet-test",
                        aws_secret_access_key="edgefleet-test-secret")  # fmt: skip


def _use_bucket(services: Services, endpoint: str, prefix: str, presign: str) -> ArtifactStore:
    backend = open_backend(f"s3://{BUCKET}/{prefix}?endpoint={endpoint}{presign}",
                           services.settings.artifacts_dir)  # fmt: skip
    services.store = ArtifactStore(services.settings.artifacts_dir, None, backend)
    return services.store


def _bucket_bytes(endpoint: str, key: str) -> bytes:
    body: bytes = _client(endpoint).get_object(Bucket=BUCKET, Key=key)["Body"].read()
    return body


class Seen:
    def __init__(self) -> None:
        self.answers: list[tuple[str, int]] = []
        self.lock = threading.Lock()

    def __call__(self, url: str, status: int) -> None:
        with self.lock:
            self.answers.append((url, status))


def test_a_pushed_model_is_in_the_bucket_and_an_enrolled_device_downloads_it_from_there(
    secured: Services, s3_endpoint: str, tmp_path: Path
) -> None:
    store = _use_bucket(secured, s3_endpoint, "edge/prod", "&presign=300")
    pushed = tiny_onnx(tmp_path / "m.onnx").read_bytes()
    with serving(secured) as client:
        operator = bearer(secured, "operator")
        answer = client.post("/v1/models/m/versions", files={"file": ("m.onnx", pushed)},
                             data={"version": "v1"}, headers=operator)  # fmt: skip
        assert answer.status_code == 200, answer.text
        digest = answer.json()["sha256"]
        key = f"edge/prod/sha256/{digest[:2]}/{digest}"
        assert _bucket_bytes(s3_endpoint, key) == pushed
        secured.signing.assign(DEVICE, [secured.signing.target("models/m/v1/model.onnx")])
        # the controller's own copy is gone: only the bucket can send these bytes now
        store.path_for(digest).unlink()
        target_url = f"/tuf/image/targets/models/m/v1/{digest}.model.onnx"

        # the read check comes before the redirect: no credential, no URL of the bucket
        anonymous = client.get(target_url)
        assert anonymous.status_code == 401 and "location" not in anonymous.headers
        device = enroll_device(client, operator, DEVICE, tmp_path / "identity")
        redirect = client.get(target_url, headers=device)
        assert redirect.status_code == 307
        assert redirect.headers["location"].startswith(f"{s3_endpoint}/{BUCKET}/{key}?")

        seen = Seen()
        credential = device["Authorization"].removeprefix("Bearer ")
        fetcher = DeadlineFetcher(
            FetcherConfig(deadline_s=30, timeout_s=10, credential=credential), observer=seen
        )
        up = ModelUpdater(
            UpdaterConfig(str(client.base_url).rstrip("/"), DEVICE, tmp_path / "agent",
                          credential=credential),
            fetcher,
        )  # fmt: skip
        [target] = up.refresh({}, None)
        seen.answers.clear()
        got = up.download(target, tmp_path / "models")
        assert got.read_bytes() == pushed
        assert _statuses(seen) == [(f"{digest}.model.onnx", 307), (digest, 200)]
        assert seen.answers[-1][0].startswith(s3_endpoint)

        # a download that broke off resumes from the bucket: Range survives the redirect,
        # and the credential still goes with the Range request to the controller
        got.unlink()
        (tmp_path / "models" / f".{got.name}.part").write_bytes(pushed[: len(pushed) // 2])
        seen.answers.clear()
        assert up.download(target, tmp_path / "models").read_bytes() == pushed
        assert _statuses(seen) == [(f"{digest}.model.onnx", 307), (digest, 206)]


def _statuses(seen: Seen) -> list[tuple[str, int]]:
    return [(url.split("?")[0].rsplit("/", 1)[1], status) for url, status in seen.answers]


class _Recorder(http.server.BaseHTTPRequestHandler):
    """/go answers 307 to /there; everything else 200 "hello"; records each request."""

    seen: list[tuple[str, str | None, str | None]] = []

    def do_GET(self) -> None:
        self.seen.append((self.path, self.headers.get("Authorization"), self.headers.get("Range")))
        if self.path == "/go":
            self.send_response(307)
            self.send_header("Location", "/there")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", "5")
        self.end_headers()
        self.wfile.write(b"hello")

    def log_message(self, *args: object) -> None:
        pass


def test_the_fetcher_sends_its_credential_on_every_request_but_not_past_a_redirect(
    tmp_path: Path,
) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    _Recorder.seen = []
    try:
        fetcher = DeadlineFetcher(FetcherConfig(deadline_s=10, timeout_s=5, credential="efu_x"))
        assert b"".join(fetcher.fetch(f"{base}/go")) == b"hello"
        assert fetcher.fetch_conditional(f"{base}/poll", '"e1"', 100).body == b"hello"
        part = tmp_path / "part"
        part.write_bytes(b"he")
        fetcher.download_resumable(f"{base}/model", part, 5)
    finally:
        server.shutdown()
        server.server_close()
    assert _Recorder.seen == [
        ("/go", "Bearer efu_x", None),
        ("/there", None, None),  # a presigned URL: the store never sees the credential
        ("/poll", "Bearer efu_x", None),
        ("/model", "Bearer efu_x", "bytes=2-"),
    ]


def test_other_bytes_in_the_bucket_are_refused_by_the_device(
    services: Services, s3_endpoint: str, tmp_path: Path
) -> None:
    store = _use_bucket(services, s3_endpoint, "tampered", "&presign=60")
    with Session(services.engine) as s, tiny_onnx(tmp_path / "m.onnx").open("rb") as f:
        row = registry.push_version(s, store, services.signing, "m", f, version="v1")
    key = f"tampered/sha256/{row.sha256[:2]}/{row.sha256}"
    original = _bucket_bytes(s3_endpoint, key)
    _client(s3_endpoint).put_object(Bucket=BUCKET, Key=key, Body=b"x" * len(original))
    services.signing.assign(DEVICE, [services.signing.target("models/m/v1/model.onnx")])
    with serving(services) as client:
        up = ModelUpdater(UpdaterConfig(str(client.base_url).rstrip("/"), DEVICE,
                                        tmp_path / "agent"))  # fmt: skip
        [target] = up.refresh({}, None)
        with pytest.raises(TrustError):
            up.download(target, tmp_path / "models")
    assert not list((tmp_path / "models").iterdir())  # wrong bytes are not kept


def test_without_presigning_the_controller_sends_the_bytes_fetched_from_the_bucket(
    services: Services, s3_endpoint: str, tmp_path: Path
) -> None:
    store = _use_bucket(services, s3_endpoint, "", "")
    with Session(services.engine) as s, tiny_onnx(tmp_path / "m.onnx").open("rb") as f:
        row = registry.push_version(s, store, services.signing, "m", f, version="v1")
    store.path_for(row.sha256).unlink()  # another replica pushed it, or a new disk
    with serving(services) as client:
        answer = client.get(f"/tuf/image/targets/models/m/v1/{row.sha256}.model.onnx")
    assert answer.status_code == 200
    assert answer.content == (tmp_path / "m.onnx").read_bytes()
    assert store.verify(row.sha256)


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_both_backends_keep_the_same_contract(kind: str, s3_endpoint: str, tmp_path: Path) -> None:
    url = f"s3://{BUCKET}/contract?endpoint={s3_endpoint}" if kind == "s3" else None
    backend = open_backend(url, tmp_path / "artifacts")
    data = bytes(range(256)) * 5000  # over one read chunk
    digest = hashlib.sha256(data).hexdigest()
    assert not backend.exists(digest)
    backend.put(digest, io.BytesIO(data))
    assert backend.exists(digest)
    with contextlib.closing(backend.open(digest)) as f:
        assert f.read() == data
    assert backend.presigned_url(digest) is None  # no presign= asked for
    backend.delete(digest)
    assert not backend.exists(digest)
    backend.delete(digest)  # absent is not an error
    with pytest.raises(ArtifactError):
        backend.open(digest)


def test_serve_refuses_to_start_on_a_bucket_it_cannot_reach(
    s3_endpoint: str, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    missing = Settings(data, artifact_store=f"s3://no-such-bucket/p?endpoint={s3_endpoint}")
    with pytest.raises(ConfigError, match="s3://no-such-bucket") as caught:
        build_services(missing)
    assert "\n" not in str(caught.value)
    nobody = f"http://127.0.0.1:{free_port()}"
    dead = Settings(data, artifact_store=f"s3://{BUCKET}/p?endpoint={nobody}")
    with pytest.raises(ConfigError, match=f"s3://{BUCKET}: Could not connect"):
        build_services(dead)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("ftp://bucket/x", "expected s3://BUCKET/PREFIX"),
        ("s3://Bad_Bucket/x", "is not a bucket name"),
        ("s3://bucket/x?presign=soon", "presign must be"),
        ("s3://bucket/x?presign=0", "presign must be"),
        ("s3://bucket/x?endpont=http://h", "unknown option 'endpont'"),
    ],
)
def test_a_bad_store_url_is_a_one_line_config_error(url: str, says: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=says) as caught:
        open_backend(url, tmp_path)
    assert "\n" not in str(caught.value)


def test_the_url_names_bucket_prefix_endpoint_and_presigning(tmp_path: Path) -> None:
    backend = open_backend("s3://b-1/a/b/?endpoint=http://127.0.0.1:9&presign=90", tmp_path)
    assert isinstance(backend, S3Store)
    assert (backend.bucket, backend.prefix, backend.presign_s) == ("b-1", "a/b", 90)
    assert backend.key("ab" * 32) == f"a/b/sha256/ab/{'ab' * 32}"
