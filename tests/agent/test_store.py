"""The durable "current" pointer: survives a restart, never names a broken artifact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from edgefleet.agent.store import DeviceStore, ModelPointer
from edgefleet.shared.errors import ArtifactError
from edgefleet.shared.hashing import sha256_bytes

from edgefleet.runtime.engine_cache import read_info


def install(store: DeviceStore, version: str, release: int) -> ModelPointer:
    data = f"model bytes {version}".encode()
    sha = sha256_bytes(data)
    download = store.data_dir / "incoming" / "x.onnx"
    download.parent.mkdir(parents=True, exist_ok=True)
    download.write_bytes(data)
    name = store.adopt(download, sha)
    pointer = ModelPointer(
        "shapes", version, release, sha, name, f"models/shapes/{version}/model.onnx"
    )
    store.commit(pointer)
    return pointer


def test_empty_data_dir_has_no_model(tmp_path: Path) -> None:
    state = DeviceStore(tmp_path).load()
    assert state.current is None and state.previous is None and state.installed == {}


def test_commit_survives_a_restart(tmp_path: Path) -> None:
    store = DeviceStore(tmp_path)
    store.load()
    v1 = install(store, "v1", 1)
    v2 = install(store, "v2", 2)

    state = DeviceStore(tmp_path).load()

    assert state.current == v2 and state.previous == v1
    assert state.installed == {"shapes": 2}
    assert (tmp_path / "models" / f"{v2.sha256}.onnx").exists()
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".state.json.*"))


def test_commit_keeps_only_current_and_previous_artifacts(tmp_path: Path) -> None:
    store = DeviceStore(tmp_path)
    store.load()
    v1 = install(store, "v1", 1)
    install(store, "v2", 2)
    install(store, "v3", 3)
    assert not store.artifact_path(v1).exists()
    assert len(list(store.models_dir.glob("*.onnx"))) == 2


def test_corrupt_current_artifact_falls_back_to_previous(tmp_path: Path) -> None:
    store = DeviceStore(tmp_path)
    store.load()
    v1 = install(store, "v1", 1)
    v2 = install(store, "v2", 2)
    store.artifact_path(v2).write_bytes(b"flipped bits")

    state = DeviceStore(tmp_path).load()

    assert state.current == v1 and state.previous is None
    assert state.installed == {"shapes": 2}  # the release counter never goes back


def test_missing_artifacts_fall_back_to_none(tmp_path: Path) -> None:
    store = DeviceStore(tmp_path)
    store.load()
    v1 = install(store, "v1", 1)
    v2 = install(store, "v2", 2)
    store.artifact_path(v1).unlink()
    store.artifact_path(v2).unlink()
    state = DeviceStore(tmp_path).load()
    assert state.current is None and state.previous is None


def test_unreadable_state_file_means_no_model(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text("{not json")
    assert DeviceStore(tmp_path).load().current is None
    (tmp_path / "state.json").write_text(json.dumps({"schema": 99, "current": None}))
    assert DeviceStore(tmp_path).load().current is None


def test_fall_back_is_durable(tmp_path: Path) -> None:
    store = DeviceStore(tmp_path)
    store.load()
    v1 = install(store, "v1", 1)
    install(store, "v2", 2)
    assert store.fall_back() == v1
    assert DeviceStore(tmp_path).load().current == v1


def test_adopt_refuses_bytes_that_do_not_match(tmp_path: Path) -> None:
    store = DeviceStore(tmp_path)
    store.load()
    f = tmp_path / "dl.onnx"
    f.write_bytes(b"abc")
    with pytest.raises(ArtifactError):
        store.adopt(f, "0" * 64)


INFO = {"imgsz": [160, 160], "names": {"0": "circle", "1": "square"}, "stride": 32,
        "end2end": True, "task": "detect"}  # fmt: skip


def test_a_plan_is_stored_with_the_model_info_its_target_carries(tmp_path: Path) -> None:
    store = DeviceStore(tmp_path)
    store.load()
    data = b"serialized engine"
    sha = sha256_bytes(data)
    download = tmp_path / "incoming.plan"
    download.write_bytes(data)
    name = store.adopt(download, sha, plan_info=INFO)
    assert name == f"{sha}.plan"
    info = read_info(store.models_dir / name)  # what the TensorRT backend reads at load
    assert (info.imgsz, info.names, info.end2end) == ((160, 160), {0: "circle", 1: "square"}, True)
    store.commit(ModelPointer("shapes", "v2", 2, sha, name, "models/shapes/v2/plan-x.plan"))
    install(store, "v3", 3)
    install(store, "v4", 4)  # the plan leaves the cache, its model info with it
    assert not list(store.models_dir.glob("*.plan")) and not list(store.models_dir.glob("*.json"))


def test_a_plan_with_unusable_model_info_is_refused(tmp_path: Path) -> None:
    store = DeviceStore(tmp_path)
    store.load()
    download = tmp_path / "incoming.plan"
    download.write_bytes(b"engine")
    for bad in ({"names": {}}, {**INFO, "imgsz": [0, 160]}, {**INFO, "task": "segment"}, []):
        with pytest.raises(ArtifactError, match="model info"):
            store.adopt(download, sha256_bytes(b"engine"), plan_info=bad)  # type: ignore[arg-type]
    assert not list(store.models_dir.glob("*"))
