"""ModelUpdater against a real HTTP server serving real signed repositories.

The server is the standard library's ThreadingHTTPServer on 127.0.0.1, laid out like the
controller's /tuf/ tree; the metadata comes from edgefleet's own signing code.
"""

from __future__ import annotations

import fcntl
import json
import socket
import threading
import time
from collections.abc import Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from edgefleet.agent.fetcher import DeadlineFetcher, FetcherConfig
from edgefleet.agent.updater import ModelUpdater, UpdaterConfig, _AliasGuard
from edgefleet.controller.signing import TargetInfo, TufRepositories
from edgefleet.shared.errors import TransportError, TrustError
from securesystemslib.signer import CryptoSigner
from tuf.api import exceptions
from tuf.api.metadata import DelegatedRole, Delegations, Metadata, Targets
from tuf.api.serialization.json import JSONSerializer
from tuf.ngclient.fetcher import FetcherInterface

from tests.agent.tuf_paths import LocalServer, artifact_url_path, metadata_file

DEVICE = "cam-1"
MODEL_BYTES = b"\x08\x07onnx-ish model bytes " * 1000


class TufServer(LocalServer):
    """Serves DATA/tuf/ the way the controller does; artifacts by hash-prefixed name."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.artifacts: dict[str, bytes] = {}  # URL path -> body
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                body = server.lookup(self.path)
                if body is None:
                    self.send_error(HTTPStatus.NOT_FOUND)
                    return
                self.send_response(HTTPStatus.OK)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        super().__init__(Handler)

    def lookup(self, path: str) -> bytes | None:
        if path in self.artifacts:
            return self.artifacts[path]
        return metadata_file(self.data_dir, path)

    def serve_artifact(self, info: TargetInfo, body: bytes) -> None:
        self.artifacts[artifact_url_path(info.target_path, info.sha256)] = body

    def __enter__(self) -> TufServer:
        super().__enter__()
        return self


@pytest.fixture
def repos(tmp_path: Path) -> TufRepositories:
    return TufRepositories(tmp_path / "controller")


@pytest.fixture
def server(repos: TufRepositories) -> Iterator[TufServer]:
    with TufServer(repos.data_dir) as s:
        yield s


@pytest.fixture
def agent_dir(tmp_path: Path) -> Path:
    return tmp_path / "agent"


def make_updater(url: str, agent_dir: Path) -> ModelUpdater:
    config = UpdaterConfig(
        controller_url=url,
        device_id=DEVICE,
        data_dir=agent_dir,
        download_deadline_s=10.0,
        socket_timeout_s=2.0,
    )
    return ModelUpdater(config)


def publish(
    repos: TufRepositories, server: TufServer, tmp_path: Path, version: str, release: int
) -> TargetInfo:
    artifact = tmp_path / f"{version}.onnx"
    artifact.write_bytes(MODEL_BYTES + version.encode())
    info = repos.image.add_model_target("yolo", version, release, artifact)
    server.serve_artifact(info, artifact.read_bytes())
    return info


def test_happy_path_downloads_and_verifies(
    repos: TufRepositories, server: TufServer, tmp_path: Path, agent_dir: Path
) -> None:
    info = publish(repos, server, tmp_path, "v1", 1)
    repos.assign(DEVICE, [info])
    updater = make_updater(server.url, agent_dir)

    targets = updater.refresh({}, None)

    assert [(t.target_path, t.model, t.version, t.release) for t in targets] == [
        (info.target_path, "yolo", "v1", 1)
    ]
    target = targets[0]
    assert (target.length, target.sha256, target.format) == (info.length, info.sha256, "onnx")
    path = updater.download(target, agent_dir / "models")
    assert path == agent_dir / "models" / f"{info.sha256}.onnx"
    assert path.read_bytes() == MODEL_BYTES + b"v1"
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
    # already there and intact: no second download
    before = len(server.requests)
    assert updater.download(target, agent_dir / "models") == path
    assert len(server.requests) == before


def test_nothing_assigned_is_an_empty_list(
    repos: TufRepositories, server: TufServer, agent_dir: Path
) -> None:
    repos.director.ensure_device(DEVICE)
    assert make_updater(server.url, agent_dir).refresh({}, None) == []


def test_tampered_artifact_refused_without_partial_file(
    repos: TufRepositories, server: TufServer, tmp_path: Path, agent_dir: Path
) -> None:
    info = publish(repos, server, tmp_path, "v1", 1)
    repos.assign(DEVICE, [info])
    updater = make_updater(server.url, agent_dir)
    [target] = updater.refresh({}, None)

    evil = bytearray(MODEL_BYTES + b"v1")
    evil[100] ^= 0xFF  # same length, one flipped byte
    server.serve_artifact(info, bytes(evil))
    with pytest.raises(TrustError):
        updater.download(target, agent_dir / "models")
    server.serve_artifact(info, MODEL_BYTES + b"v1" + b"trailing")  # longer than signed
    with pytest.raises(TrustError, match="more bytes than signed"):
        updater.download(target, agent_dir / "models")
    assert list((agent_dir / "models").iterdir()) == []


def test_director_and_image_disagreeing_on_hash_refused(
    repos: TufRepositories, server: TufServer, tmp_path: Path, agent_dir: Path
) -> None:
    info = publish(repos, server, tmp_path, "v1", 1)
    forged = TargetInfo(info.target_path, info.length, "00" * 32, "yolo", "v1", 1)
    repos.director.assign(DEVICE, [forged])  # the director alone, bypassing the facade check
    with pytest.raises(TrustError, match="sha256 differs") as caught:
        make_updater(server.url, agent_dir).refresh({}, None)
    assert caught.value.model == "yolo"
    assert caught.value.device_id == DEVICE


def test_director_target_unknown_to_image_repo_refused(
    repos: TufRepositories, server: TufServer, agent_dir: Path
) -> None:
    ghost = TargetInfo("models/yolo/v9/model.onnx", 10, "00" * 32, "yolo", "v9", 9)
    repos.director.assign(DEVICE, [ghost])
    with pytest.raises(TrustError, match="not signed in the image repository"):
        make_updater(server.url, agent_dir).refresh({}, None)


def test_lower_release_refused(
    repos: TufRepositories, server: TufServer, tmp_path: Path, agent_dir: Path
) -> None:
    old = publish(repos, server, tmp_path, "v1", 1)
    publish(repos, server, tmp_path, "v2", 2)
    repos.assign(DEVICE, [old])
    updater = make_updater(server.url, agent_dir)
    with pytest.raises(TrustError, match="lower than installed release 2"):
        updater.refresh({"yolo": 2}, None)
    assert [t.version for t in updater.refresh({"yolo": 1}, None)] == ["v1"]


def test_unreachable_controller_is_a_transport_error(tmp_path: Path, agent_dir: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # nothing listens there now
    with pytest.raises(TransportError):
        make_updater(f"http://127.0.0.1:{port}", agent_dir).refresh({}, None)
    assert not (agent_dir / "trust" / "director-root.json").exists()


def test_server_gone_after_pinning_is_a_transport_error(
    repos: TufRepositories, tmp_path: Path, agent_dir: Path
) -> None:
    repos.director.ensure_device(DEVICE)
    with TufServer(repos.data_dir) as server:
        make_updater(server.url, agent_dir).refresh({}, None)
        url = server.url
    with pytest.raises(TransportError):
        make_updater(url, agent_dir).refresh({}, None)


def test_tofu_root_pinned_on_first_run_and_reused(
    repos: TufRepositories, server: TufServer, tmp_path: Path, agent_dir: Path
) -> None:
    info = publish(repos, server, tmp_path, "v1", 1)
    repos.assign(DEVICE, [info])
    trust = agent_dir / "trust"
    make_updater(server.url, agent_dir).refresh({}, None)
    image_root = repos.image_metadata_dir / "1.root.json"
    assert (trust / "image-root.json").read_bytes() == image_root.read_bytes()
    director_root = repos.director_metadata_dir(DEVICE) / "1.root.json"
    assert (trust / "director-root.json").read_bytes() == director_root.read_bytes()
    assert (agent_dir / "tuf" / "image" / "timestamp.json").exists()  # cache apart

    # A new controller with new keys at the same address: the pins refuse it.
    server.requests.clear()
    impostor = TufRepositories(tmp_path / "impostor")
    server.data_dir = impostor.data_dir
    impostor.director.ensure_device(DEVICE)
    with pytest.raises(TrustError):
        make_updater(server.url, agent_dir).refresh({}, None)
    assert not any(p.endswith("/1.root.json") for p in server.requests)
    assert (trust / "image-root.json").read_bytes() == image_root.read_bytes()


def test_tofu_refuses_a_root_that_is_not_self_signed(
    repos: TufRepositories, server: TufServer, agent_dir: Path
) -> None:
    repos.director.ensure_device(DEVICE)
    root = repos.director_metadata_dir(DEVICE) / "1.root.json"
    root.write_bytes(root.read_bytes().replace(b'"sig": "', b'"sig": "00', 1))
    with pytest.raises(TrustError, match="first-use root"):
        make_updater(server.url, agent_dir).refresh({}, None)
    assert not (agent_dir / "trust" / "director-root.json").exists()


class TrickleHandler(BaseHTTPRequestHandler):
    """Sends 10 bytes, one every 0.1 s: never stalls, yet never finishes on time."""

    def do_GET(self) -> None:
        if self.path != "/slow":
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Length", "10")
        self.end_headers()
        for _ in range(10):
            self.wfile.write(b"x")
            self.wfile.flush()
            time.sleep(0.1)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def trickle() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), TrickleHandler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def test_fetcher_deadline_bounds_a_trickling_download(trickle: str) -> None:
    # The server takes at least 0.9 s for its 10 bytes, so a 0.35 s deadline always trips;
    # the per-read timeouts are generous so that a loaded machine cannot trip them instead.
    fetcher = DeadlineFetcher(FetcherConfig(deadline_s=0.35, timeout_s=10.0, chunk_size=1))
    with pytest.raises(exceptions.SlowRetrievalError):
        fetcher.download_bytes(f"{trickle}/slow", 100)
    with pytest.raises(exceptions.DownloadHTTPError) as caught:
        fetcher.download_bytes(f"{trickle}/missing", 100)
    assert caught.value.status_code == 404
    patient = DeadlineFetcher(FetcherConfig(deadline_s=60.0, timeout_s=10.0, chunk_size=1))
    assert patient.download_bytes(f"{trickle}/slow", 100) == b"x" * 10


def test_one_updater_at_a_time(repos: TufRepositories, server: TufServer, agent_dir: Path) -> None:
    repos.director.ensure_device(DEVICE)
    lock = agent_dir / "tuf" / ".lock"
    lock.parent.mkdir(parents=True)
    config = UpdaterConfig(server.url, DEVICE, agent_dir, lock_timeout_s=0.2)
    with lock.open("a") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        with pytest.raises(TransportError, match="another updater"):
            ModelUpdater(config).refresh({}, None)
    assert ModelUpdater(config).refresh({}, None) == []


def test_a_pinned_root_listing_one_key_twice_is_refused(
    repos: TufRepositories, server: TufServer, agent_dir: Path
) -> None:
    """The key-alias check runs on the pinned root before ngclient is handed it."""
    repos.director.ensure_device(DEVICE)
    make_updater(server.url, agent_dir).refresh({}, None)
    pinned = agent_dir / "trust" / "director-root.json"
    doc = json.loads(pinned.read_bytes())
    signed = doc["signed"]
    keyid = signed["roles"]["timestamp"]["keyids"][0]
    signed["keys"]["ab" * 32] = signed["keys"][keyid]
    signed["roles"]["timestamp"]["keyids"].append("ab" * 32)
    pinned.write_text(json.dumps(doc))
    with pytest.raises(TrustError, match="role timestamp lists the same public key more than"):
        make_updater(server.url, agent_dir).refresh({}, None)


class BytesFetcher(FetcherInterface):
    """Answers every URL with the same bytes and records what was asked."""

    def __init__(self, body: bytes) -> None:
        self.body, self.urls = body, list[str]()

    def _fetch(self, url: str) -> Iterator[bytes]:
        self.urls.append(url)
        return iter([self.body[:10], self.body[10:]])


def _targets_delegating(twice: bool) -> bytes:
    key = CryptoSigner.generate_ed25519().public_key
    keys = {key.keyid: key}
    if twice:
        keys["ab" * 32] = type(key).from_dict("ab" * 32, dict(key.to_dict()))
    role = DelegatedRole("models", list(keys), len(keys), False, paths=["*"])
    targets = Targets(delegations=Delegations(keys, {"models": role}))
    return Metadata(targets).to_bytes(JSONSerializer())


def test_a_delegation_listing_one_key_twice_is_refused_on_arrival() -> None:
    meta = "http://c/tuf/image/metadata/"
    aliased = _targets_delegating(twice=True)
    guard = _AliasGuard(BytesFetcher(aliased), meta, 1_000_000)
    for name in ("targets.json", "3.targets.json", "models.json"):
        with pytest.raises(exceptions.UnsignedMetadataError, match="role models lists the same"):
            guard.download_bytes(meta + name, 1_000_000)
    # Target files and other repositories' URLs pass unread; so does a sound delegation.
    assert guard.download_bytes("http://c/tuf/image/targets/x.json", 1_000_000) == aliased
    sound = _targets_delegating(twice=False)
    assert (
        _AliasGuard(BytesFetcher(sound), meta, 1_000_000).download_bytes(
            meta + "targets.json", 1_000_000
        )
        == sound
    )
    with pytest.raises(exceptions.DownloadLengthMismatchError):
        _AliasGuard(BytesFetcher(sound), meta, 100).download_bytes(meta + "models.json", 10**6)
