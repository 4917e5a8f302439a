"""An attacker against the agent's updater: each test is one attack, over real HTTP.

The repositories come from edgefleet's own signing code; the attacks re-sign or replace
files on the server's disk the way a compromised mirror, a stolen online key or a
replaying network would. ``AttackServer`` serves the controller's /tuf/ tree and lets a
test override a path's body, drop its Content-Length or drip it byte by byte.
"""

from __future__ import annotations

import json
import queue
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from edgefleet.agent.mqtt_link import Hint, MqttLink
from edgefleet.agent.updater import ModelUpdater, UpdaterConfig
from edgefleet.controller.signing import TargetInfo, TufRepositories
from edgefleet.shared.errors import TransportError, TrustError
from edgefleet.shared.protocol import Fingerprint
from edgefleet.shared.topics import Channel, device_topic
from paho.mqtt.enums import CallbackAPIVersion
from securesystemslib.signer import CryptoSigner, Signer
from tuf.api.metadata import Metadata, Root, Snapshot, TargetFile, Targets, Timestamp
from tuf.api.serialization.json import JSONSerializer

from edgefleet.devbroker import DevBroker
from tests.agent.tuf_paths import LocalServer, artifact_url_path, metadata_file

DEVICE = "cam-1"
BODY = b"\x08\x07 signed model bytes " * 500


class AttackServer(LocalServer):
    """Serves DATA/tuf/ like the controller; ``override``, ``no_length``, ``drip`` attack."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.override: dict[str, bytes] = {}  # URL path -> body
        self.no_length: set[str] = set()  # URL paths sent without Content-Length
        self.drip: dict[str, float] = {}  # URL path -> seconds between bytes
        self.requests: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # no keep-alive: the body ends when we close

            def do_GET(self) -> None:
                outer.requests.append(self.path)
                body = outer.lookup(self.path)
                if body is None:
                    self.send_error(HTTPStatus.NOT_FOUND)
                    return
                self.send_response(HTTPStatus.OK)
                if self.path not in outer.no_length:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                delay = outer.drip.get(self.path)
                if delay is None:
                    self.wfile.write(body)
                    return
                for i in range(len(body)):
                    self.wfile.write(body[i : i + 1])
                    self.wfile.flush()
                    time.sleep(delay)

            def log_message(self, format: str, *args: object) -> None:
                pass

        super().__init__(Handler)

    def lookup(self, path: str) -> bytes | None:
        if path in self.override:
            return self.override[path]
        return metadata_file(self.data_dir, path)

    def artifact_path(self, info: TargetInfo) -> str:
        return artifact_url_path(info.target_path, info.sha256)

    def __enter__(self) -> AttackServer:
        super().__enter__()
        return self


# -- repository surgery ---------------------------------------------------------------


def newest(folder: Path, role: str) -> Metadata[Any]:
    if role == "timestamp":
        return Metadata.from_file(str(folder / "timestamp.json"))
    version = max(int(p.name.split(".")[0]) for p in folder.glob(f"*.{role}.json"))
    return Metadata.from_file(str(folder / f"{version}.{role}.json"))


def put(folder: Path, md: Metadata[Any], *signers: Signer, bump: bool = True) -> int:
    """Sign ``md`` with exactly ``signers`` and serve it under its consistent name."""
    if bump:
        md.signed.version += 1
    md.signatures.clear()
    for signer in signers:
        md.sign(signer, append=True)
    role = md.signed.type
    name = "timestamp.json" if role == "timestamp" else f"{md.signed.version}.{role}.json"
    (folder / name).write_bytes(md.to_bytes(JSONSerializer()))
    return int(md.signed.version)


class Director:
    """The director chain of DEVICE with the controller's online keys in hand."""

    def __init__(self, repos: TufRepositories) -> None:
        self.folder = repos.director_metadata_dir(DEVICE)
        self.keys = {r: repos.keys.signer(f"director-{r}") for r in ("root", "targets")}
        self.keys |= {r: repos.keys.signer(f"director-{r}") for r in ("snapshot", "timestamp")}

    def publish(
        self, targets: Metadata[Targets] | None = None, *, targets_signer: Signer | None = None
    ) -> None:
        """New targets (or the same, re-signed), then snapshot and timestamp naming them."""
        targets = targets or newest(self.folder, "targets")
        put(self.folder, targets, targets_signer or self.keys["targets"])
        snapshot: Metadata[Snapshot] = newest(self.folder, "snapshot")
        snapshot.signed.meta["targets.json"].version = targets.signed.version
        put(self.folder, snapshot, self.keys["snapshot"])
        self.timestamp(snapshot.signed.version)

    def timestamp(self, snapshot_version: int, *signers: Signer) -> None:
        ts: Metadata[Timestamp] = newest(self.folder, "timestamp")
        ts.signed.snapshot_meta.version = snapshot_version
        put(self.folder, ts, *(signers or (self.keys["timestamp"],)))


@pytest.fixture
def repos(tmp_path: Path) -> TufRepositories:
    return TufRepositories(tmp_path / "controller")


@pytest.fixture
def server(repos: TufRepositories) -> Iterator[AttackServer]:
    with AttackServer(repos.data_dir) as s:
        yield s


@pytest.fixture
def director(repos: TufRepositories) -> Director:
    repos.director.ensure_device(DEVICE)
    return Director(repos)


def updater(server: AttackServer, tmp_path: Path, **kw: Any) -> ModelUpdater:
    config = UpdaterConfig(
        server.url, DEVICE, tmp_path / "agent", socket_timeout_s=2.0, download_deadline_s=5.0
    )
    return ModelUpdater(config.__class__(**{**config.__dict__, **kw}))


def publish(
    repos: TufRepositories,
    server: AttackServer,
    tmp_path: Path,
    version: str,
    release: int,
    body: bytes = BODY,
    **extra: Any,
) -> TargetInfo:
    artifact = tmp_path / f"{version}.bin"
    artifact.write_bytes(body)
    info = repos.image.add_model_target("yolo", version, release, artifact, **extra)
    server.override[server.artifact_path(info)] = body
    return info


# -- bytes ----------------------------------------------------------------------------


def test_artifact_stream_longer_than_signed_is_refused(
    repos: TufRepositories, server: AttackServer, tmp_path: Path
) -> None:
    info = publish(repos, server, tmp_path, "v1", 1)
    repos.assign(DEVICE, [info])
    up = updater(server, tmp_path)
    [target] = up.refresh({}, None)
    path = server.artifact_path(info)
    server.override[path] = BODY + b"\x00" * 100_000  # endless-looking stream, no length
    server.no_length.add(path)
    with pytest.raises(TrustError, match="more bytes than signed"):
        up.download(target, tmp_path / "models")
    assert not any((tmp_path / "models").iterdir())


def test_metadata_stream_longer_than_its_limit_is_refused(
    repos: TufRepositories, server: AttackServer, director: Director, tmp_path: Path
) -> None:
    updater(server, tmp_path).refresh({}, None)
    path = f"/tuf/director/{DEVICE}/metadata/timestamp.json"
    server.override[path] = b"{" + b" " * 200_000  # ngclient allows 16 KB for timestamp
    server.no_length.add(path)
    with pytest.raises(TrustError, match="more bytes than signed"):
        updater(server, tmp_path).refresh({}, None)


def test_server_dripping_bytes_past_the_deadline(
    repos: TufRepositories, server: AttackServer, tmp_path: Path
) -> None:
    info = publish(repos, server, tmp_path, "v1", 1, body=b"x" * 200)
    repos.assign(DEVICE, [info])
    up = updater(server, tmp_path, download_deadline_s=0.5, socket_timeout_s=1.0)
    [target] = up.refresh({}, None)
    server.drip[server.artifact_path(info)] = 0.02  # never a gap long enough to stall
    started = time.monotonic()
    with pytest.raises(TransportError, match="longer than"):
        up.download(target, tmp_path / "models")
    assert time.monotonic() - started < 2.5
    # Only the hidden partial file is left, kept to resume from; never the model itself.
    left = [p.name for p in (tmp_path / "models").iterdir()]
    assert left == [f".{info.sha256}.onnx.part"]
    del server.drip[server.artifact_path(info)]
    assert up.download(target, tmp_path / "models").read_bytes() == b"x" * 200


# -- signatures -----------------------------------------------------------------------


def test_metadata_signed_by_the_wrong_key_is_refused(
    server: AttackServer, director: Director, tmp_path: Path
) -> None:
    updater(server, tmp_path).refresh({}, None)
    director.publish(targets_signer=CryptoSigner.generate_ed25519())
    with pytest.raises(TrustError, match="signed by 0/1 keys"):
        updater(server, tmp_path).refresh({}, None)


def _root_with_timestamp_threshold_2(director: Director, second_key: Any) -> None:
    root: Metadata[Root] = newest(director.folder, "root")
    root.signed.add_key(second_key, "timestamp")
    root.signed.roles["timestamp"].threshold = 2
    put(director.folder, root, director.keys["root"])


def test_timestamp_below_threshold_is_refused(
    server: AttackServer, director: Director, tmp_path: Path
) -> None:
    updater(server, tmp_path).refresh({}, None)
    second = CryptoSigner.generate_ed25519()
    _root_with_timestamp_threshold_2(director, second.public_key)
    director.timestamp(newest(director.folder, "snapshot").signed.version)  # one key of two
    with pytest.raises(TrustError, match="signed by 1/2 keys"):
        updater(server, tmp_path).refresh({}, None)
    # Both keys meet the threshold: the refusal above was the threshold, nothing else.
    director.timestamp(newest(director.folder, "snapshot").signed.version,
                       director.keys["timestamp"], second)  # fmt: skip
    assert updater(server, tmp_path).refresh({}, None) == []


def test_one_key_counted_twice_is_refused(
    server: AttackServer, director: Director, tmp_path: Path
) -> None:
    """The timestamp key listed again under a made-up key id, threshold 2, one signer."""
    updater(server, tmp_path).refresh({}, None)
    ts_key = director.keys["timestamp"].public_key
    alias = type(ts_key).from_dict("ab" * 32, dict(ts_key.to_dict()))
    _root_with_timestamp_threshold_2(director, alias)
    ts: Metadata[Timestamp] = newest(director.folder, "timestamp")
    ts.signed.version += 1
    ts.signatures.clear()
    sig = ts.sign(director.keys["timestamp"])
    doc = json.loads(ts.to_bytes(JSONSerializer()))
    doc["signatures"].append({"keyid": "ab" * 32, "sig": sig.signature})
    (director.folder / "timestamp.json").write_text(json.dumps(doc))
    with pytest.raises(TrustError, match="same public key more than once"):
        updater(server, tmp_path).refresh({}, None)


# -- freshness and consistency ----------------------------------------------------------


def test_replayed_older_timestamp_is_refused(
    server: AttackServer, director: Director, tmp_path: Path
) -> None:
    old = (director.folder / "timestamp.json").read_bytes()
    director.publish()
    updater(server, tmp_path).refresh({}, None)
    server.override[f"/tuf/director/{DEVICE}/metadata/timestamp.json"] = old
    with pytest.raises(TrustError, match="version"):
        updater(server, tmp_path).refresh({}, None)


def test_replayed_older_snapshot_is_refused(
    server: AttackServer, director: Director, tmp_path: Path
) -> None:
    director.publish()
    updater(server, tmp_path).refresh({}, None)
    # A stolen timestamp key points back at snapshot 1.
    director.timestamp(1)
    with pytest.raises(TrustError, match="version"):
        updater(server, tmp_path).refresh({}, None)


def test_replayed_older_targets_is_refused(
    server: AttackServer, director: Director, tmp_path: Path
) -> None:
    director.publish()
    updater(server, tmp_path).refresh({}, None)
    # Stolen snapshot + timestamp keys name director targets 1 again.
    snapshot: Metadata[Snapshot] = newest(director.folder, "snapshot")
    snapshot.signed.meta["targets.json"].version = 1
    put(director.folder, snapshot, director.keys["snapshot"])
    director.timestamp(snapshot.signed.version)
    with pytest.raises(TrustError, match="version"):
        updater(server, tmp_path).refresh({}, None)


def test_snapshot_and_targets_out_of_step_is_refused(
    server: AttackServer, director: Director, tmp_path: Path
) -> None:
    updater(server, tmp_path).refresh({}, None)
    # Snapshot names targets 5; the file served as 5.targets.json is version 1.
    first = (director.folder / "1.targets.json").read_bytes()
    (director.folder / "5.targets.json").write_bytes(first)
    snapshot: Metadata[Snapshot] = newest(director.folder, "snapshot")
    snapshot.signed.meta["targets.json"].version = 5
    put(director.folder, snapshot, director.keys["snapshot"])
    director.timestamp(snapshot.signed.version)
    with pytest.raises(TrustError, match="Expected targets v5, got v1"):
        updater(server, tmp_path).refresh({}, None)


def test_expired_timestamp_is_stale_metadata_and_nothing_installs(
    server: AttackServer, director: Director, tmp_path: Path
) -> None:
    updater(server, tmp_path).refresh({}, None)
    ts: Metadata[Timestamp] = newest(director.folder, "timestamp")
    ts.signed.expires = datetime.now(timezone.utc) - timedelta(minutes=1)
    put(director.folder, ts, director.keys["timestamp"])
    with pytest.raises(TrustError, match="stale metadata"):
        updater(server, tmp_path).refresh({}, None)


def test_truncated_cached_root_is_recovered_from_the_bootstrap_root(
    repos: TufRepositories, server: AttackServer, tmp_path: Path
) -> None:
    info = publish(repos, server, tmp_path, "v1", 1)
    repos.assign(DEVICE, [info])
    updater(server, tmp_path).refresh({}, None)
    cache = tmp_path / "agent" / "tuf"
    for root in (cache / "image" / "root.json", cache / "director" / "root.json"):
        data = root.read_bytes()
        root.unlink()  # a symlink into root_history/ in ngclient 7: cut the real file too
        root.write_bytes(data[: len(data) // 2])
        for old in (root.parent / "root_history").glob("*.root.json"):
            old.write_bytes(old.read_bytes()[:10])
    assert [t.version for t in updater(server, tmp_path).refresh({}, None)] == ["v1"]


# -- what the two repositories say -----------------------------------------------------


def test_director_and_image_disagree_on_length(
    repos: TufRepositories, server: AttackServer, tmp_path: Path
) -> None:
    info = publish(repos, server, tmp_path, "v1", 1)
    forged = TargetInfo(info.target_path, info.length + 1, info.sha256, "yolo", "v1", 1)
    repos.director.assign(DEVICE, [forged])  # a stolen director key, bypassing the facade
    with pytest.raises(TrustError, match="length differs"):
        updater(server, tmp_path).refresh({}, None)


def test_lower_release_refused_and_deliberate_downgrade_is_a_new_release(
    repos: TufRepositories, server: AttackServer, tmp_path: Path
) -> None:
    v1 = publish(repos, server, tmp_path, "v1", 1, body=BODY + b"1")
    publish(repos, server, tmp_path, "v2", 2, body=BODY + b"2")
    repos.assign(DEVICE, [v1])
    with pytest.raises(TrustError, match="lower than installed release 2"):
        updater(server, tmp_path).refresh({"yolo": 2}, None)
    back = publish(repos, server, tmp_path, "v1-again", 3, body=BODY + b"1")
    repos.assign(DEVICE, [back])
    [target] = updater(server, tmp_path).refresh({"yolo": 2}, None)
    assert (target.release, target.sha256) == (3, v1.sha256)


def test_tensorrt_plan_for_another_gpu_is_refused(
    repos: TufRepositories, server: AttackServer, tmp_path: Path
) -> None:
    plan = {"compute_capability": "8.7", "tensorrt": "10.3", "precision": "fp16"}
    publish(repos, server, tmp_path, "v1", 1)  # a plan joins a published ONNX version
    info = publish(repos, server, tmp_path, "v1", 1, format="tensorrt-plan", fingerprint=plan)
    repos.assign(DEVICE, [info])
    xavier = Fingerprint(arch="aarch64", platform="jetson", tensorrt="10.3.0.30",
                         compute_capability="7.2")  # fmt: skip
    with pytest.raises(TrustError, match=r"compute capability 8\.7"):
        updater(server, tmp_path).refresh({}, xavier)


@pytest.mark.parametrize(
    "path",
    [
        "models/yolo/../../../etc/passwd",
        "/etc/passwd",
        "models/yolo/v1/model.\u202exnno",  # right-to-left override
        "models/yo\u200blo/v1/model.onnx",  # zero-width space
        "models/yolo/v1/mode\u0301l.onnx",  # not NFC
    ],
)
def test_hostile_target_names_are_refused(
    repos: TufRepositories, server: AttackServer, director: Director, tmp_path: Path, path: str
) -> None:
    """A stolen publisher key signs a hostile name into both repositories; no install."""
    body = BODY
    artifact = tmp_path / "a.bin"
    artifact.write_bytes(body)
    info = publish(repos, server, tmp_path, "v1", 1)
    custom = {"model": "yolo", "version": "v1", "release": 2, "format": "onnx"}
    chain = repos.image._chain  # the publisher's role, signed with its (stolen) key
    chain.update_targets(
        "models",
        datetime.now(timezone.utc),
        lambda t: t.targets.__setitem__(
            path, TargetFile(info.length, {"sha256": info.sha256}, path, {"custom": custom})
        ),
    )
    targets: Metadata[Targets] = newest(director.folder, "targets")
    targets.signed.targets = {
        path: TargetFile(info.length, {"sha256": info.sha256}, path, {"custom": custom})
    }
    director.publish(targets)
    with pytest.raises(TrustError, match="refused"):
        updater(server, tmp_path).refresh({}, None)
    assert not (tmp_path / "agent" / "models").exists()


# -- MQTT carries no trust --------------------------------------------------------------


@pytest.mark.broker
def test_forged_desired_with_url_and_hash_installs_nothing(
    broker: DevBroker, repos: TufRepositories, server: AttackServer, tmp_path: Path
) -> None:
    repos.director.ensure_device(DEVICE)
    hints: queue.Queue[Hint] = queue.Queue(maxsize=8)
    link = MqttLink(DEVICE, "127.0.0.1", broker.port, hints, keepalive=5)
    link.start()
    try:
        assert link.wait_subscribed(5.0)
        forged = {
            "schema": 1,
            "director_version": 99,
            "url": f"{server.url}/evil.onnx",
            "sha256": "00" * 32,
            "targets": [{"path": "models/evil/v1/model.onnx", "length": 3}],
        }
        attacker = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="attacker")
        attacker.connect("127.0.0.1", broker.port)
        attacker.loop_start()
        topic = str(device_topic(DEVICE, Channel.DESIRED))
        attacker.publish(topic, json.dumps(forged).encode(), qos=1).wait_for_publish(5.0)
        attacker.disconnect()
        attacker.loop_stop()
        hint = _next(hints, lambda h: h.source == "desired" or link.malformed > 0)
        # At most "look again": the hint has no room for a URL or a hash.
        assert hint is None or set(hint.__dict__) == {"source", "director_version"}
    finally:
        link.stop()
    assert updater(server, tmp_path).refresh({}, None) == []
    assert not any("evil" in p for p in server.requests)


def _next(hints: queue.Queue[Hint], done: Any) -> Hint | None:
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        try:
            h = hints.get(timeout=0.1)
        except queue.Empty:
            continue
        if done(h):
            return h
    return None
