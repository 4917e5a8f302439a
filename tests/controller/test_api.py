"""The REST surface over real HTTP, a real SQLite file, real TUF repositories."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from edgefleet.controller.models.devices import Device
from edgefleet.controller.services import NoLink, Services
from edgefleet.shared.protocol import Phase


def _push(
    client: httpx.Client, name: str, path: Path, version: str | None = None
) -> httpx.Response:
    data = {"version": version} if version else {}
    with path.open("rb") as f:
        return client.post(f"/v1/models/{name}/versions", files={"file": (path.name, f)}, data=data)


def _add_device(services: Services, device_id: str, **labels: str) -> None:
    from sqlmodel import Session

    with Session(services.engine) as s:
        s.add(Device(device_id=device_id, labels=labels, online=True))
        s.commit()


def test_healthz_and_openapi(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"ok": True}
    paths = client.get("/openapi.json").json()["paths"]
    assert "/v1/models/{name}/versions" in paths
    assert "/v1/rollouts" in paths


def test_push_registers_signs_and_lists(client: httpx.Client, onnx_model: Path) -> None:
    r = _push(client, "shapes", onnx_model)
    assert r.status_code == 200, r.text
    v = r.json()
    digest = hashlib.sha256(onnx_model.read_bytes()).hexdigest()
    assert (v["name"], v["version"], v["release"]) == ("shapes", "v1", 1)
    assert (v["sha256"], v["length"]) == (digest, onnx_model.stat().st_size)
    assert v["target"] == "models/shapes/v1/model.onnx"
    assert v["format"] == "onnx"

    listed = client.get("/v1/models").json()
    assert listed["count"] == 1
    assert listed["data"][0]["latest_version"] == "v1"
    versions = client.get("/v1/models/shapes/versions").json()
    assert versions["count"] == 1 and versions["data"][0]["sha256"] == digest


def test_release_grows_and_labels_are_free(
    client: httpx.Client, tmp_path: Path, make_onnx: Callable[[Path, int], Path]
) -> None:
    assert _push(client, "m", make_onnx(tmp_path / "a.onnx", 8)).json()["release"] == 1
    second = _push(client, "m", make_onnx(tmp_path / "b.onnx", 16), version="2024.06-rc1")
    assert (second.json()["version"], second.json()["release"]) == ("2024.06-rc1", 2)
    third = _push(client, "m", make_onnx(tmp_path / "c.onnx", 24)).json()
    assert (third["version"], third["release"]) == ("v3", 3)


def test_duplicate_version_is_409(client: httpx.Client, onnx_model: Path) -> None:
    assert _push(client, "shapes", onnx_model, "v1").status_code == 200
    r = _push(client, "shapes", onnx_model, "v1")
    assert r.status_code == 409
    assert r.json() == {"detail": "model 'shapes' already has version 'v1'"}


def test_corrupt_onnx_is_400_one_line(client: httpx.Client, tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage, not a protobuf" * 50)
    r = _push(client, "shapes", bad)
    assert r.status_code == 400
    detail = r.json()["detail"]
    assert detail.startswith("not a valid ONNX model: ")
    assert "\n" not in detail and str(tmp_path) not in detail
    assert client.get("/v1/models").json()["count"] == 0


def test_bad_names_are_400(client: httpx.Client, onnx_model: Path) -> None:
    assert _push(client, "shapes", onnx_model, version="../x").status_code == 400
    assert _push(client, "-x", onnx_model).status_code == 400
    r = client.post("/v1/models/shapes/versions", data={"version": "v1"})
    assert r.status_code == 400 and isinstance(r.json()["detail"], str)


def test_unknown_things_are_404(client: httpx.Client) -> None:
    assert client.get("/v1/models/nope/versions").status_code == 404
    assert client.get("/v1/devices/nope").status_code == 404
    assert client.get("/v1/rollouts/42").status_code == 404
    r = client.post("/v1/rollouts", json={"model": "nope", "version": "v1", "selector": {}})
    assert r.status_code == 404
    assert r.json() == {"detail": "unknown model 'nope'"}


def test_rollout_assigns_matching_devices_and_hints(
    client: httpx.Client, services: Services, onnx_model: Path
) -> None:
    v = _push(client, "shapes", onnx_model).json()
    _add_device(services, "cam-1", site="a")
    _add_device(services, "cam-2", site="a", line="2")
    _add_device(services, "cam-3", site="b")
    assert (
        client.post(
            "/v1/rollouts", json={"model": "shapes", "version": "v9", "selector": {}}
        ).status_code
        == 404
    )

    r = client.post(
        "/v1/rollouts", json={"model": "shapes", "version": "v1", "selector": {"site": "a"}}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["state"] == "running"
    assert [d["device_id"] for d in body["devices"]] == ["cam-1", "cam-2"]
    assert (body["total"], body["done"], body["failed"]) == (2, 0, 0)
    link = services.link
    assert isinstance(link, NoLink)
    assert sorted(d for d, _ in link.sent) == ["cam-1", "cam-2"]

    dev = client.get("/v1/devices/cam-1").json()
    assert (dev["desired_model"], dev["desired_version"]) == ("shapes", "v1")
    assert client.get("/v1/devices/cam-3").json()["desired_model"] is None

    # The director metadata of cam-1 lists exactly the signed target.
    version = dict(link.sent)["cam-1"]
    meta = client.get(f"/tuf/director/cam-1/metadata/{version}.targets.json")
    assert meta.status_code == 200
    targets = meta.json()["signed"]["targets"]
    assert targets == {
        v["target"]: {
            "length": v["length"],
            "hashes": {"sha256": v["sha256"]},
            "custom": {"model": "shapes", "version": "v1", "release": 1},
        }
    }
    assert client.get("/tuf/director/cam-3/metadata/2.targets.json").status_code == 404


def test_rollout_state_follows_device_reports_in_the_scheduler_round(
    client: httpx.Client, services: Services, onnx_model: Path
) -> None:
    """A one-stage rollout succeeds when the scheduler sees every device committed; a GET
    only shows the record, and a later revert does not reopen a succeeded rollout."""
    from edgefleet.controller.rollouts.context import Deps
    from edgefleet.controller.rollouts.scheduler import Scheduler
    from sqlmodel import Session

    _push(client, "shapes", onnx_model)
    _add_device(services, "cam-1")
    _add_device(services, "cam-2")
    rid = client.post("/v1/rollouts", json={"model": "shapes", "version": "v1"}).json()["id"]
    sched = Scheduler(services.engine, Deps(services.signing, services.link,
                                            services.store.path_for), holder="t")  # fmt: skip

    def report(device_id: str, phase: Phase, version: str | None) -> None:
        with Session(services.engine) as s:
            d = s.get(Device, device_id)
            assert d is not None
            d.model, d.version, d.phase = ("shapes" if version else None), version, phase.value
            s.add(d)
            s.commit()

    report("cam-1", Phase.COMMITTED, "v1")
    sched.round()
    body = client.get(f"/v1/rollouts/{rid}").json()
    assert (body["state"], body["done"]) == ("running", 1)
    report("cam-2", Phase.COMMITTED, "v1")
    assert client.get(f"/v1/rollouts/{rid}").json()["state"] == "running"  # a read decides nothing
    sched.round()
    assert client.get(f"/v1/rollouts/{rid}").json()["state"] == "succeeded"
    report("cam-2", Phase.REVERTED, None)
    sched.round()
    body = client.get("/v1/rollouts").json()
    assert body["count"] == 1 and body["data"][0]["state"] == "succeeded"
    assert body["data"][0]["done"] == 1  # the devices' progress is still shown as it is


def test_tuf_image_metadata_and_target_bytes(client: httpx.Client, onnx_model: Path) -> None:
    v = _push(client, "shapes", onnx_model).json()
    root = client.get("/tuf/image/metadata/1.root.json")
    assert root.status_code == 200 and root.json()["signed"]["_type"] == "root"
    ts = client.get("/tuf/image/metadata/timestamp.json").json()
    snapshot_v = ts["signed"]["meta"]["snapshot.json"]["version"]
    snap = client.get(f"/tuf/image/metadata/{snapshot_v}.snapshot.json").json()
    models_v = snap["signed"]["meta"]["models.json"]["version"]
    models = client.get(f"/tuf/image/metadata/{models_v}.models.json").json()
    entry = models["signed"]["targets"][v["target"]]
    assert entry["hashes"]["sha256"] == v["sha256"]

    url = f"/tuf/image/targets/models/shapes/v1/{v['sha256']}.model.onnx"
    got = client.get(url)
    assert got.status_code == 200
    assert hashlib.sha256(got.content).hexdigest() == v["sha256"]
    assert got.content == onnx_model.read_bytes()

    wrong = "0" * 64
    assert client.get(f"/tuf/image/targets/models/shapes/v1/{wrong}.model.onnx").status_code == 404
    assert (
        client.get(f"/tuf/image/targets/models/shapes/v2/{v['sha256']}.model.onnx").status_code
        == 404
    )


def test_tuf_paths_do_not_traverse(client: httpx.Client, services: Services) -> None:
    secret = services.settings.data_dir / "keys"
    assert secret.is_dir()
    for path in (
        "/tuf/image/metadata/..%2F..%2F..%2Fkeys%2Fimage-root.pem",
        "/tuf/image/metadata/.hidden.json",
        "/tuf/image/metadata/%2E%2E",
        "/tuf/director/..%2F..%2Fkeys/metadata/1.root.json",
        "/tuf/image/targets/models/shapes/v1/..%2F..%2Fkeys.model.onnx",
    ):
        r = client.get(path)
        assert r.status_code == 404, path
        assert b"PRIVATE KEY" not in r.content


def test_devices_list_and_telemetry_empty(client: httpx.Client, services: Services) -> None:
    _add_device(services, "cam-1", site="a")
    listed = client.get("/v1/devices").json()
    assert listed["count"] == 1
    d = listed["data"][0]
    assert set(d) >= {"device_id", "online", "model", "version", "phase", "error", "labels",
                      "last_seen", "desired_model", "desired_version"}  # fmt: skip
    assert client.get("/v1/devices/cam-1/telemetry").json() == {"data": [], "count": 0}
    assert json.loads(client.get("/v1/stats").text)["mqtt"]["connected"] is False


@pytest.mark.parametrize(
    "bad",
    [{"stages": [10**30]}, {"stages": ",".join(["1"] * 5000)}, {"version": ""},
     {"priority": 10**30}],
    ids=["count-1e30", "5000-stages", "empty-version", "priority-1e30"],
)  # fmt: skip
def test_rollout_specs_past_the_limits_are_400_one_line(
    client: httpx.Client, onnx_model: Path, bad: dict[str, object]
) -> None:
    assert _push(client, "shapes", onnx_model, "v1").status_code == 200
    r = client.post("/v1/rollouts", json={"model": "shapes", "version": "v1", **bad})
    assert r.status_code == 400, r.text
    assert "\n" not in r.json()["detail"], r.text
    assert client.get("/v1/rollouts").json()["count"] == 0


def test_rollout_that_matches_no_device_is_refused_at_creation(
    client: httpx.Client, services: Services, onnx_model: Path
) -> None:
    assert _push(client, "shapes", onnx_model, "v1").status_code == 200
    body = {"model": "shapes", "version": "v1", "selector": {"site": "a"}}
    r = client.post("/v1/rollouts", json=body)
    assert r.status_code == 400 and "no device is registered yet" in r.json()["detail"], r.text
    _add_device(services, "cam-b", site="b")
    r = client.post("/v1/rollouts", json=body)
    assert r.status_code == 400, r.text
    assert "selector site=a matches none of the 1 registered devices" in r.json()["detail"]
    assert client.get("/v1/rollouts").json()["count"] == 0
    _add_device(services, "cam-a", site="a")
    r = client.post("/v1/rollouts", json=body)
    assert r.status_code == 200 and r.json()["matching"] == 1, r.text
