"""Key ceremonies (controller/signing/ceremony.py) against the real agent updater.

The controller serves its repositories over real HTTP (uvicorn in a thread); the agent's
ModelUpdater follows root rotations and refuses metadata signed with a rotated-out key.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import httpx
import pytest
from edgefleet.agent.updater import ModelUpdater, UpdaterConfig
from edgefleet.controller.services import Services
from edgefleet.controller.signing.ceremony import init_keys, rotate_key
from edgefleet.controller.signing.keys import load_signer
from edgefleet.shared.errors import ConfigError, TrustError
from tuf.api.metadata import Metadata

Serve = Callable[[Services], AbstractContextManager[httpx.Client]]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def offline(tmp_path: Path) -> Path:
    return tmp_path / "offline"


@contextmanager
def controller(
    make_services: Callable[..., Services], serve: Serve, agent_dir: Path
) -> Iterator[ModelUpdater]:
    services = make_services()
    services.signing.ensure_device("cam-1")
    with serve(services) as client:
        # The image repository is checked on every poll here: these tests are about what
        # its keys may sign, not about the idle agent's 10-minute image check.
        config = UpdaterConfig(str(client.base_url), "cam-1", agent_dir, image_check_s=0)
        updater = ModelUpdater(config)
        try:
            yield updater
        finally:
            updater.close()
    services.engine.dispose()


def _cached_root_version(agent_dir: Path) -> int:
    return int(
        json.loads((agent_dir / "tuf" / "image" / "root.json").read_text())["signed"]["version"]
    )


def _forge_timestamp(data: Path, pem: Path) -> None:
    """An attacker holding the old timestamp key signs a newer timestamp with it."""
    path = data / "tuf" / "image" / "metadata" / "timestamp.json"
    md = Metadata.from_file(str(path))
    md.signed.version += 1
    md.sign(load_signer(pem, pem.with_name(pem.stem + ".pub.json")), append=False)
    md.to_file(str(path))


def test_init_threshold_root_and_online_keys_only(data: Path, offline: Path) -> None:
    init_keys(data, offline, root_threshold=2, root_keys=3)
    root = json.loads((data / "tuf" / "image" / "metadata" / "1.root.json").read_text())
    assert root["signed"]["roles"]["root"]["threshold"] == 2
    assert len(root["signed"]["roles"]["root"]["keyids"]) == 3
    assert len(root["signatures"]) == 3
    online = sorted(p.name for p in (data / "keys").glob("*.pem"))
    assert online == sorted(
        [f"director-{r}.pem" for r in ("root", "targets", "snapshot", "timestamp")]
        + ["image-snapshot.pem", "image-timestamp.pem"]
    )
    assert (offline / "image-models.pem").exists() and (offline / "image-targets.pem").exists()
    with pytest.raises(ConfigError, match="holds a repository already"):
        init_keys(data, offline)


def test_rotation_followed_by_agent_old_key_refused(
    data: Path, offline: Path, tmp_path: Path, make_services: Callable[..., Services],
    serve: Serve, onnx_model: Path,
) -> None:  # fmt: skip
    init_keys(data, offline)
    agent = tmp_path / "agent"
    with controller(make_services, serve, agent) as updater:
        assert updater.refresh({}, None) == []
        # no models key on the controller: a plain push is refused in one line
        with onnx_model.open("rb") as f:
            answer = httpx.post(f"{updater._urls['image'].split('/tuf/')[0]}/v1/models/m/versions",
                                files={"file": ("m.onnx", f)})  # fmt: skip
        assert answer.status_code == 400
        assert "no key for the models role" in answer.json()["detail"]
    old_timestamp = tmp_path / "stolen" / "image-timestamp.pem"
    old_timestamp.parent.mkdir()
    for suffix in (".pem", ".pub.json"):
        shutil.copy(data / "keys" / f"image-timestamp{suffix}", old_timestamp.with_name(
            f"image-timestamp{suffix}"))  # fmt: skip

    rotate_key(data, "timestamp", offline)
    with controller(make_services, serve, agent) as updater:
        assert updater.refresh({}, None) == []
        assert _cached_root_version(agent) == 2
        _forge_timestamp(data, old_timestamp)
        with pytest.raises(TrustError, match="timestamp"):
            updater.refresh({}, None)

    rotate_key(data, "timestamp", offline)  # a fresh, valid timestamp under a new key
    old_roots = tmp_path / "old-roots"
    shutil.copytree(offline, old_roots)
    rotate_key(data, "root", offline)
    with controller(make_services, serve, agent) as updater:
        assert updater.refresh({}, None) == []
        assert _cached_root_version(agent) == 4
        # a root signed by the old root keys (their threshold) no longer counts
        md = Metadata.from_file(str(data / "tuf" / "image" / "metadata" / "4.root.json"))
        md.signed.version = 5
        md.signatures.clear()
        for i in (1, 2):
            pem = old_roots / f"image-root-{i}.pem"
            md.sign(load_signer(pem, pem.with_name(f"image-root-{i}.pub.json")), append=True)
        md.to_file(str(data / "tuf" / "image" / "metadata" / "5.root.json"))
        # With its timestamp unchanged an idle agent does not even fetch the next root
        # (docs/TRUST.md, idle polls); its next full refresh (here: after a restart)
        # fetches root 5 and refuses it.
        assert updater.refresh({}, None) == []
        fresh = ModelUpdater(updater.config)
        try:
            with pytest.raises(TrustError):
                fresh.refresh({}, None)
        finally:
            fresh.close()
        assert _cached_root_version(agent) == 4


def test_rotate_needs_root_threshold(data: Path, offline: Path) -> None:
    init_keys(data, offline, root_threshold=2, root_keys=3)
    for i in (2, 3):
        (offline / f"image-root-{i}.pem").unlink()
    with pytest.raises(TrustError, match="needs 2 of the current root keys; found 1"):
        rotate_key(data, "snapshot", offline)


def _director_root_version(agent_dir: Path) -> int:
    root = json.loads((agent_dir / "tuf" / "director" / "root.json").read_text())
    return int(root["signed"]["version"])


def test_director_rotation_followed_by_agent_old_key_refused(
    data: Path, offline: Path, tmp_path: Path, make_services: Callable[..., Services],
    serve: Serve,
) -> None:  # fmt: skip
    init_keys(data, offline)
    agent = tmp_path / "agent"
    with controller(make_services, serve, agent) as updater:
        assert updater.refresh({}, None) == []
    keys = data / "keys"
    stolen = tmp_path / "stolen"
    stolen.mkdir()
    for suffix in (".pem", ".pub.json"):
        shutil.copy(keys / f"director-timestamp{suffix}", stolen / f"director-timestamp{suffix}")
    old_targets = (keys / "director-targets.pub.json").read_text()

    for role in ("director-timestamp", "director-targets", "director-snapshot"):
        rotate_key(data, role, offline)
    assert (keys / "director-targets.pub.json").read_text() != old_targets
    with controller(make_services, serve, agent) as updater:
        assert updater.refresh({}, None) == []
        assert _director_root_version(agent) == 4
        # the holder of the rotated-out director timestamp key forges a newer timestamp
        md = Metadata.from_file(str(data / "tuf" / "director" / "cam-1" / "metadata"
                                    / "timestamp.json"))  # fmt: skip
        md.signed.version += 1
        md.sign(load_signer(stolen / "director-timestamp.pem",
                            stolen / "director-timestamp.pub.json"), append=False)  # fmt: skip
        md.to_file(str(data / "tuf" / "director" / "cam-1" / "metadata" / "timestamp.json"))
        with pytest.raises(TrustError, match="timestamp"):
            updater.refresh({}, None)

    rotate_key(data, "director-timestamp", offline)  # a valid timestamp again, new key
    rotate_key(data, "director-root", offline)
    with controller(make_services, serve, agent) as updater:
        assert updater.refresh({}, None) == []
        assert _director_root_version(agent) == 6
