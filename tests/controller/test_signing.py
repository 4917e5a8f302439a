"""The controller's TUF repositories, verified by python-tuf's own client."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from edgefleet.controller.signing import TargetInfo, TufRepositories
from edgefleet.controller.signing._chain import pruning_done
from edgefleet.shared.errors import (
    ArtifactError,
    ConfigError,
    NotFoundError,
    ProtocolError,
    TrustError,
)
from tuf.api import exceptions
from tuf.api.metadata import Metadata
from tuf.ngclient import Updater
from tuf.ngclient.fetcher import FetcherInterface

START = datetime(2026, 1, 1, tzinfo=timezone.utc)


class FolderFetcher(FetcherInterface):
    """python-tuf's fetcher seam over a folder: file://-like URLs, no network."""

    def _fetch(self, url: str) -> Iterator[bytes]:
        path = Path(url.removeprefix("file://"))
        if not path.is_file():
            raise exceptions.DownloadHTTPError(f"not found: {url}", 404)
        return iter([path.read_bytes()])


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def repos(tmp_path: Path, clock: Clock) -> TufRepositories:
    return TufRepositories(tmp_path / "data", clock=clock)


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"not really onnx, but signed all the same")
    return path


def updater(metadata_dir: Path, cache: Path) -> Updater:
    cache.mkdir(parents=True, exist_ok=True)
    return Updater(
        str(cache),
        f"file://{metadata_dir}/",
        fetcher=FolderFetcher(),
        bootstrap=(metadata_dir / "1.root.json").read_bytes(),
    )


@pytest.fixture(autouse=True)
def _real_clock_is_after_start(clock: Clock) -> None:
    # ngclient checks expiry against the real clock: sign with today's date.
    clock.now = datetime.now(timezone.utc)


def test_image_repo_layout_and_keys_on_disk(repos: TufRepositories) -> None:
    meta = repos.image_metadata_dir
    assert sorted(p.name for p in meta.iterdir()) == [
        "1.models.json",
        "1.root.json",
        "1.snapshot.json",
        "1.targets.json",
        "timestamp.json",
    ]
    keys = sorted(p.name for p in (repos.data_dir / "keys").iterdir())
    assert "image-models.pem" in keys
    assert "director-timestamp.pub.json" in keys
    assert (repos.data_dir / "keys" / "image-root.pem").stat().st_mode & 0o077 == 0
    root = Metadata.from_file(str(meta / "1.root.json")).signed
    assert root.consistent_snapshot


def test_model_target_verifies_through_delegation(
    repos: TufRepositories, artifact: Path, tmp_path: Path
) -> None:
    info = repos.image.add_model_target(
        "yolo", "v1", 1, artifact, card_sha256="ab" * 32, min_agent_version="0.2.0"
    )
    assert info.target_path == "models/yolo/v1/model.onnx"
    assert info.length == artifact.stat().st_size

    client = updater(repos.image_metadata_dir, tmp_path / "cache")
    client.refresh()
    target = client.get_targetinfo("models/yolo/v1/model.onnx")
    assert target is not None
    assert target.hashes == {"sha256": info.sha256}
    assert target.custom == {
        "model": "yolo",
        "version": "v1",
        "release": 1,
        "format": "onnx",
        "fingerprint": None,
        "min_agent_version": "0.2.0",
        "card_sha256": "ab" * 32,
    }
    # the top-level targets role lists nothing itself: models are the delegate's
    top = json.loads((repos.image_metadata_dir / "1.targets.json").read_bytes())
    assert top["signed"]["targets"] == {}
    assert top["signed"]["delegations"]["roles"][0]["name"] == "models"


def test_versions_bump_models_snapshot_timestamp(repos: TufRepositories, artifact: Path) -> None:
    repos.image.add_model_target("yolo", "v1", 1, artifact)
    repos.image.add_model_target("yolo", "v2", 2, artifact)
    assert repos.image.version("models") == 3
    assert repos.image.version("snapshot") == 3
    assert repos.image.version("timestamp") == 3
    assert repos.image.version("targets") == 1
    # same version, same bytes: nothing re-signed
    repos.image.add_model_target("yolo", "v2", 2, artifact)
    assert repos.image.version("models") == 3


def test_repos_reload_from_disk(repos: TufRepositories, artifact: Path, clock: Clock) -> None:
    info = repos.image.add_model_target("yolo", "v1", 1, artifact)
    repos.assign("cam-1", [info])
    again = TufRepositories(repos.data_dir, clock=clock)
    assert again.image.target(info.target_path) == info
    assert again.director.director_version("cam-1") == 2
    assert again.director.assigned("cam-1") == [info]


@pytest.mark.parametrize("name", ["..", "a/b", "a\\b", "/abs", "x..y", ""])
def test_bad_target_names_refused(repos: TufRepositories, artifact: Path, name: str) -> None:
    with pytest.raises(ArtifactError):
        repos.image.add_model_target(name, "v1", 1, artifact)
    with pytest.raises(ArtifactError):
        repos.image.add_model_target("yolo", name, 1, artifact)


def test_release_must_grow_and_versions_are_immutable(
    repos: TufRepositories, artifact: Path, tmp_path: Path
) -> None:
    repos.image.add_model_target("yolo", "v2", 2, artifact)
    with pytest.raises(ArtifactError, match="release"):
        repos.image.add_model_target("yolo", "v3", 2, artifact)
    other = tmp_path / "other.onnx"
    other.write_bytes(b"different")
    with pytest.raises(ArtifactError, match="already signed"):
        repos.image.add_model_target("yolo", "v2", 2, other)
    repos.image.add_model_target("other-model", "v1", 1, artifact)  # per model


def test_tensorrt_plan_needs_fingerprint_and_a_signed_onnx(
    repos: TufRepositories, artifact: Path
) -> None:
    fp = {"compute_capability": "8.7", "tensorrt": "10.3", "precision": "fp16"}
    with pytest.raises(ArtifactError, match="has no signed ONNX"):
        repos.image.add_model_target("yolo", "v1", 1, artifact, format="tensorrt-plan",
                                     fingerprint=fp)  # fmt: skip
    repos.image.add_model_target("yolo", "v1", 1, artifact)
    with pytest.raises(ArtifactError, match="fingerprint"):
        repos.image.add_model_target("yolo", "v1", 1, artifact, format="tensorrt-plan")
    with pytest.raises(ArtifactError, match="fingerprint"):
        repos.image.add_model_target("yolo", "v1", 1, artifact, format="tensorrt-plan",
                                     fingerprint={**fp, "compute_capability": "sm87"})  # fmt: skip
    info = repos.image.add_model_target(
        "yolo", "v1", 1, artifact, format="tensorrt-plan", fingerprint=fp
    )
    assert info.target_path == "models/yolo/v1/plan-sm87-trt10.3-fp16.plan"
    assert info.release == 1  # a plan joins its version: no new release
    with pytest.raises(ArtifactError, match="no signed ONNX"):  # release 2 is not published
        repos.image.add_model_target("yolo", "v2", 2, artifact, format="tensorrt-plan",
                                     fingerprint=fp)  # fmt: skip


def test_director_chain_per_device(repos: TufRepositories, artifact: Path, tmp_path: Path) -> None:
    v1 = repos.image.add_model_target("yolo", "v1", 1, artifact)
    assert repos.director.ensure_device("cam-1") == 1
    assert repos.director.ensure_device("cam-2") == 1
    assert repos.assign("cam-1", [v1]) == 2
    assert repos.assign("cam-1", [v1]) == 2  # unchanged: not re-signed
    assert repos.director.director_version("cam-2") == 1

    client = updater(repos.director_metadata_dir("cam-1"), tmp_path / "c1")
    client.refresh()
    target = client.get_targetinfo(v1.target_path)
    assert target is not None
    assert target.length == v1.length
    assert target.hashes == {"sha256": v1.sha256}
    assert target.custom == {"model": "yolo", "version": "v1", "release": 1}

    other = updater(repos.director_metadata_dir("cam-2"), tmp_path / "c2")
    other.refresh()
    assert other.get_targetinfo(v1.target_path) is None

    # shared director keys: every device's root is the same document
    root1 = (repos.director_metadata_dir("cam-1") / "1.root.json").read_bytes()
    root2 = (repos.director_metadata_dir("cam-2") / "1.root.json").read_bytes()
    assert Metadata.from_bytes(root1).signed == Metadata.from_bytes(root2).signed


def test_assign_replaces_and_empties(repos: TufRepositories, artifact: Path) -> None:
    v1 = repos.image.add_model_target("yolo", "v1", 1, artifact)
    v2 = repos.image.add_model_target("yolo", "v2", 2, artifact)
    repos.assign("cam-1", [v1])
    assert repos.assign("cam-1", [v2]) == 3
    assert repos.director.assigned("cam-1") == [v2]
    assert repos.assign("cam-1", []) == 4
    assert repos.director.assigned("cam-1") == []


def test_assign_refuses_what_the_image_repo_did_not_sign(
    repos: TufRepositories, artifact: Path
) -> None:
    v1 = repos.image.add_model_target("yolo", "v1", 1, artifact)
    forged = TargetInfo(v1.target_path, v1.length, "00" * 32, "yolo", "v1", 1)
    with pytest.raises(TrustError):
        repos.assign("cam-1", [forged])
    with pytest.raises(NotFoundError):
        repos.assign("cam-1", [TargetInfo("models/x/v1/model.onnx", 1, "00", "x", "v1", 1)])


def test_device_ids_validated(repos: TufRepositories) -> None:
    with pytest.raises(ProtocolError):
        repos.director.ensure_device("../etc")
    with pytest.raises(NotFoundError):
        repos.director.director_version("never-seen")


def test_refresh_online_roles_near_expiry(
    repos: TufRepositories, artifact: Path, clock: Clock, tmp_path: Path
) -> None:
    repos.director.ensure_device("cam-1")
    start = clock.now
    repos.refresh_online_roles(start + timedelta(hours=6))  # 3/4 of a day left: nothing
    assert repos.image.version("timestamp") == 1

    clock.now = start + timedelta(hours=13)
    repos.refresh_online_roles(clock.now)  # timestamp past half of its day
    assert repos.image.version("timestamp") == 2
    assert repos.image.version("snapshot") == 1
    assert repos.director.refresh_online_roles(clock.now) == {}  # already fresh

    clock.now = start + timedelta(days=4)
    repos.refresh_online_roles(clock.now)  # snapshot past half of its week
    assert repos.image.version("snapshot") == 2
    assert repos.image.version("timestamp") == 3
    assert repos.image.version("models") == 1  # offline role: untouched
    ts = Metadata.from_file(str(repos.image_metadata_dir / "timestamp.json")).signed
    assert ts.expires == (clock.now + timedelta(days=1)).replace(microsecond=0)

    clock.now = start + timedelta(days=46)
    refreshed = repos.director.refresh_online_roles(clock.now)
    assert refreshed == {"cam-1": ["snapshot", "targets", "timestamp"]}
    assert repos.director.director_version("cam-1") == 2


def test_lost_keys_refused_at_start(repos: TufRepositories, clock: Clock) -> None:
    repos.director.ensure_device("cam-1")
    for key in (repos.data_dir / "keys").glob("image-snapshot.*"):
        key.unlink()
    with pytest.raises(ConfigError, match="snapshot"):
        TufRepositories(repos.data_dir, clock=clock)


def test_assign_many_signs_a_batch_that_clients_verify(
    repos: TufRepositories, artifact: Path, tmp_path: Path
) -> None:
    v1 = repos.image.add_model_target("yolo", "v1", 1, artifact)
    v2 = repos.image.add_model_target("yolo", "v2", 2, artifact)
    devices = [f"cam-{i}" for i in range(20)]
    repos.director.ensure_device("cam-0")  # one chain exists already, the rest are new
    clients = {}
    assert repos.assign_many({d: [v1] for d in devices}) == dict.fromkeys(devices, 2)
    for d in devices:
        clients[d] = updater(repos.director_metadata_dir(d), tmp_path / d)
        clients[d].refresh()
        assert clients[d].get_targetinfo(v1.target_path) is not None
    # A second assignment: versions grow, a client with the old chain cached moves on.
    assert repos.assign_many({d: [v2] for d in devices}) == dict.fromkeys(devices, 3)
    assert repos.assign_many({"cam-0": [v2]}) == {"cam-0": 3}  # unchanged: not re-signed
    for d in devices:
        fresh = updater(repos.director_metadata_dir(d), tmp_path / d)
        fresh.refresh()
        assert fresh.get_targetinfo(v2.target_path) is not None
        assert fresh.get_targetinfo(v1.target_path) is None


def test_old_director_versions_are_pruned_but_root_and_previous_stay(
    repos: TufRepositories, artifact: Path, tmp_path: Path
) -> None:
    v1 = repos.image.add_model_target("yolo", "v1", 1, artifact)
    v2 = repos.image.add_model_target("yolo", "v2", 2, artifact)
    folder = repos.director_metadata_dir("cam-1")
    repos.director.ensure_device("cam-1")
    client = updater(folder, tmp_path / "c")
    client.refresh()  # version 1 cached
    for i in range(6):
        repos.assign_many({"cam-1": [v1 if i % 2 else v2]})
    pruning_done(timeout=30)  # batches prune in the background
    names = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    # targets and snapshot: current (7) and previous (6) only; root never goes
    assert names == [
        "1.root.json", "6.snapshot.json", "6.targets.json", "7.snapshot.json",
        "7.targets.json", "timestamp.json",
    ]  # fmt: skip
    client = updater(folder, tmp_path / "c")  # same cache: it holds version 1
    client.refresh()  # a client far behind still updates: it only needs the newest chain
    assert client.get_targetinfo(v1.target_path) is not None
    # The single-device path prunes too.
    repos.assign("cam-1", [v2])
    pruning_done(timeout=30)
    assert not (folder / "6.targets.json").exists() and (folder / "7.targets.json").exists()


def test_a_failed_batch_leaves_the_chains_as_on_disk(
    repos: TufRepositories, artifact: Path, tmp_path: Path
) -> None:
    v1 = repos.image.add_model_target("yolo", "v1", 1, artifact)
    repos.assign("cam-1", [v1])
    with pytest.raises(ProtocolError):  # the second device id is refused mid-batch
        repos.assign_many({"cam-1": [], "bad/id": [v1]})
    assert repos.director.director_version("cam-1") == 2
    assert repos.director.assigned("cam-1") == [v1]
    client = updater(repos.director_metadata_dir("cam-1"), tmp_path / "c")
    client.refresh()
    assert client.get_targetinfo(v1.target_path) is not None


def test_ensure_devices_creates_chains_in_one_batch_that_clients_verify(
    repos: TufRepositories, artifact: Path, tmp_path: Path
) -> None:
    v1 = repos.image.add_model_target("yolo", "v1", 1, artifact)
    repos.director.ensure_device("cam-0")  # exists already: left as it is
    before = (repos.director_metadata_dir("cam-0") / "timestamp.json").read_bytes()
    devices = [f"cam-{i}" for i in range(30)]
    versions = repos.director.ensure_devices(devices)
    assert versions == dict.fromkeys(devices, 1)
    assert (repos.director_metadata_dir("cam-0") / "timestamp.json").read_bytes() == before
    for d in devices:
        client = updater(repos.director_metadata_dir(d), tmp_path / d)
        client.refresh()  # a python-tuf client verifies each new chain from its root
        assert client.get_targetinfo(v1.target_path) is None  # nothing assigned yet
    assert repos.assign_many({d: [v1] for d in devices[:3]}) == dict.fromkeys(devices[:3], 2)
