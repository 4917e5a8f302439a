"""Prebuilt TensorRT plans: signed beside their version, given to the devices they fit.

Real database, real TUF signing, the real REST app over HTTP and the real ingest; the
plan bytes are opaque to the controller (it cannot load a plan without the GPU it was built
for), so any bytes of a plausible size stand in for one.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from edgefleet.controller.ingest import Ingest
from edgefleet.controller.plans import MAX_PENDING_PER_SOURCE
from edgefleet.controller.registry import push_version
from edgefleet.controller.rollouts.context import Deps
from edgefleet.controller.rollouts.scheduler import Scheduler
from edgefleet.controller.services import Services
from edgefleet.shared.protocol import DeviceState, Fingerprint, Phase
from edgefleet.shared.topics import Channel, device_topic
from sqlmodel import Session
from tuf.api.metadata import Metadata

ROOT = Path(__file__).resolve().parents[2]
V1, V2 = ROOT / "models/shapes/v1/model.onnx", ROOT / "models/shapes/v2/model.onnx"

ORIN = Fingerprint(arch="aarch64", platform="jetson", jetpack="6.0", tensorrt="8.6.2",
                   compute_capability="8.7", profile="jetson-orin-nano-8gb-jp6")  # fmt: skip
T4 = Fingerprint(arch="x86_64", platform="cuda", tensorrt="10.3.0", compute_capability="7.5",
                 profile="x86-t4-trt10")  # fmt: skip
CPU = Fingerprint(arch="x86_64", platform="cpu", profile="cpu-x86_64")
ORIN_PLAN = {"compute_capability": "8.7", "tensorrt": "8.6.2", "precision": "fp16"}


@pytest.fixture
def fleet(services: Services) -> Callable[[str, Fingerprint], None]:
    ingest = Ingest(services.engine, services.signing, services.link, services.stats)

    def add(device_id: str, fingerprint: Fingerprint) -> None:
        state = DeviceState(device_id=device_id, model="shapes", version="v1",
                            phase=Phase.COMMITTED, fingerprint=fingerprint)  # fmt: skip
        ingest.handle(device_topic(device_id, Channel.STATE), state.to_bytes())

    with Session(services.engine) as s:
        for version, path in (("v1", V1), ("v2", V2)):
            with path.open("rb") as f:
                push_version(s, services.store, services.signing, "shapes", f, version=version)
    return add


def _plan_bytes(tmp_path: Path, name: str = "orin.plan", size: int = 8192) -> Path:
    path = tmp_path / name
    path.write_bytes(os.urandom(size))
    return path


def _push(
    client: httpx.Client, plan: Path, target: str = "shapes/v2", **fields: str
) -> httpx.Response:
    with plan.open("rb") as f:
        return client.post(f"/v1/models/{target.replace('/', '/versions/')}/plans",
                           data={**ORIN_PLAN, **fields}, files={"file": ("p", f)},
                           headers={"X-Edgefleet-Actor": "alice"})  # fmt: skip


def _assigned(services: Services, device_id: str) -> list[str]:
    return [t.target_path for t in services.signing.repos.director.assigned(device_id)]  # type: ignore[attr-defined]


def test_a_pushed_plan_is_signed_with_its_fingerprint_and_model_info(
    services: Services, serve: Callable, fleet: Callable, tmp_path: Path
) -> None:  # type: ignore[type-arg]
    with serve(services) as client:
        r = _push(client, _plan_bytes(tmp_path))
        assert r.status_code == 200, r.text
        plan = r.json()
        assert plan["state"] == "signed" and plan["source"] == "publisher"
        assert plan["target"] == "models/shapes/v2/plan-sm87-trt8.6.2-fp16.plan"
    signing = services.signing
    folder = signing.metadata_folder(signing.image_repo())
    assert folder is not None  # the folder store: these tests' default
    newest = max(folder.glob("*.models.json"), key=lambda p: int(p.name.split(".")[0]))
    models = Metadata.from_file(str(newest))
    target = models.signed.targets[plan["target"]]  # type: ignore[attr-defined]
    custom = target.custom
    v2 = services.signing.target("models/shapes/v2/model.onnx")
    assert (custom["format"], custom["version"], custom["release"]) == ("tensorrt-plan", "v2", 2)
    assert custom["fingerprint"] == {**ORIN_PLAN, "onnx_sha256": v2.sha256}
    # The device runs the plan without the ONNX: input size and class names travel signed.
    assert custom["model_info"]["imgsz"] == [160, 160]
    assert custom["model_info"]["names"]["0"] == "circle"
    assert target.hashes["sha256"] == plan["sha256"]


def test_each_device_gets_the_plan_that_fits_it_else_the_onnx(
    services: Services, serve: Callable, fleet: Callable, tmp_path: Path
) -> None:  # type: ignore[type-arg]
    fleet("orin-1", ORIN)
    fleet("orin-old-trt", ORIN.model_copy(update={"tensorrt": "8.5.2"}))
    fleet("t4-1", T4)
    fleet("cpu-1", CPU)
    with serve(services) as client:
        assert _push(client, _plan_bytes(tmp_path)).status_code == 200
        r = client.post("/v1/rollouts", json={"model": "shapes", "version": "v2",
                                               "stages": ["100%"]})  # fmt: skip
        assert r.status_code == 200, r.text
    assert _assigned(services, "orin-1") == ["models/shapes/v2/plan-sm87-trt8.6.2-fp16.plan"]
    for other in ("orin-old-trt", "t4-1", "cpu-1"):
        assert _assigned(services, other) == ["models/shapes/v2/model.onnx"], other


def test_a_plan_a_device_shares_waits_for_an_operator(
    services: Services, serve: Callable, fleet: Callable, tmp_path: Path
) -> None:  # type: ignore[type-arg]
    fleet("orin-1", ORIN)
    fleet("orin-2", ORIN)
    v2 = services.signing.target("models/shapes/v2/model.onnx")
    built = _plan_bytes(tmp_path, "built.plan")
    with serve(services) as client:
        with built.open("rb") as f:
            r = client.post("/v1/devices/orin-1/plans", files={"file": ("p", f)},
                            data={**ORIN_PLAN, "model": "shapes", "version": "v2",
                                  "onnx_sha256": v2.sha256})  # fmt: skip
        assert r.status_code == 200, r.text
        shared = r.json()
        assert (shared["state"], shared["source"], shared["target"]) == (
            "pending", "device:orin-1", None)  # fmt: skip
        # Not signed yet: a device alone cannot make the others run its plan.
        client.post("/v1/rollouts", json={"model": "shapes", "version": "v2",
                                          "stages": ["1", "100%"], "soak_s": 3600})  # fmt: skip
        first = "orin-1" if _assigned(services, "orin-1") else "orin-2"
        assert _assigned(services, first) == ["models/shapes/v2/model.onnx"]
        r = client.post(f"/v1/plans/{shared['id']}/approve", headers={"X-Edgefleet-Actor": "bob"})
        assert r.status_code == 200, r.text
        assert r.json()["state"] == "signed"
        listed = client.get("/v1/plans", params={"model": "shapes", "version": "v2"}).json()
        assert [p["id"] for p in listed["data"]] == [shared["id"]]
        # The other Orin, assigned now, gets the shared plan instead of building its own.
        rid = client.get("/v1/rollouts").json()["data"][0]["id"]
        assert client.post(f"/v1/rollouts/{rid}/promote").status_code == 200
        Scheduler(services.engine, Deps(services.signing, services.link,
                                        services.store.path_for), holder="t").round()  # fmt: skip
        other = "orin-2" if first == "orin-1" else "orin-1"
        assert _assigned(services, other) == ["models/shapes/v2/plan-sm87-trt8.6.2-fp16.plan"]
        assert _assigned(services, first) == ["models/shapes/v2/model.onnx"]  # unchanged
        audit = [(a["actor"], a["action"]) for a in client.get("/v1/audit").json()["data"]]
    assert ("device:orin-1", "plan-share") in audit and ("bob", "plan-approve") in audit


def test_bad_plans_get_one_line_errors_and_change_nothing(
    services: Services, serve: Callable, fleet: Callable, tmp_path: Path
) -> None:  # type: ignore[type-arg]
    plan = _plan_bytes(tmp_path)
    with serve(services) as client:
        cases = [
            (_push(client, plan, "shapes/v9"), 404, "has no version 'v9'"),
            (_push(client, plan, compute_capability="sm87"), 400, "is not like 8.7"),
            (_push(client, plan, precision="fp64"), 400, "precision 'fp64'"),
            (_push(client, _plan_bytes(tmp_path, "tiny", 100)), 400, "too small"),
        ]
        for r, status, text in cases:
            assert r.status_code == status, r.text
            assert text in r.json()["detail"] and "\n" not in r.json()["detail"]
        assert _push(client, plan).status_code == 200
        again = _push(client, _plan_bytes(tmp_path, "other.plan"))
        assert again.status_code == 409 and "already has a signed plan" in again.json()["detail"]
        with plan.open("rb") as f:
            wrong = client.post("/v1/devices/orin-1/plans", files={"file": ("p", f)},
                                data={**ORIN_PLAN, "model": "shapes", "version": "v2",
                                      "onnx_sha256": "0" * 64})  # fmt: skip
        assert wrong.status_code == 400 and "built from ONNX 000000000000" in wrong.text
        assert client.get("/v1/plans").json()["count"] == 1
        # One device cannot fill the controller's disk with plans nobody approved.
        v2 = services.signing.target("models/shapes/v2/model.onnx")
        answers = []
        for i in range(MAX_PENDING_PER_SOURCE + 1):
            with _plan_bytes(tmp_path, f"flood{i}").open("rb") as f:
                answers.append(client.post(
                    "/v1/devices/orin-1/plans", files={"file": ("p", f)},
                    data={**ORIN_PLAN, "onnx_sha256": v2.sha256}))  # fmt: skip
        assert [a.status_code for a in answers] == [200] * MAX_PENDING_PER_SOURCE + [400]
        assert "8 plans waiting for approval" in answers[-1].json()["detail"]


def test_the_agent_offers_a_plan_it_built_over_real_http(
    services: Services,
    serve: Callable,
    fleet: Callable,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:  # type: ignore[type-arg]
    from edgefleet.agent.controller_http import ControllerHttp
    from edgefleet.agent.plan_share import PlanSharer
    from edgefleet.shared.hashing import sha256_file

    from edgefleet.runtime.engine_cache import EngineKey

    built = _plan_bytes(tmp_path, "built.plan")
    key = EngineKey(sha256_file(V2), "8.6.2", "8.7", "fp16")
    with serve(services) as client:
        sharer = PlanSharer(ControllerHttp(str(client.base_url), "orin-1"))
        plan_id = sharer.upload(built, key)  # model and version found from the ONNX digest
        assert plan_id is not None
        row = client.get("/v1/plans").json()["data"][0]
        assert (row["id"], row["version"], row["state"], row["source"]) == (
            plan_id, "v2", "pending", "device:orin-1")  # fmt: skip
        unknown = EngineKey("0" * 64, "8.6.2", "8.7", "fp16")
        assert sharer.upload(built, unknown) is None
        assert "no published version has the ONNX 000000000000" in caplog.text
        url = str(client.base_url)
    # The controller gone: one warning, no exception (sharing is never needed to serve).
    assert PlanSharer(ControllerHttp(url, "orin-1", timeout_s=1)).upload(built, key) is None
    assert "cannot share plan built.plan" in caplog.text


def test_a_rollback_gives_a_jetson_its_old_plan_again_under_the_new_release(
    services: Services, serve: Callable, fleet: Callable, tmp_path: Path
) -> None:  # type: ignore[type-arg]
    fleet("orin-1", ORIN)
    fleet("cpu-1", CPU)
    with serve(services) as client:
        assert _push(client, _plan_bytes(tmp_path), "shapes/v1").status_code == 200
        rid = client.post("/v1/rollouts", json={"model": "shapes", "version": "v2",
                                                "stages": ["100%"]}).json()["id"]  # fmt: skip
        r = client.post(f"/v1/rollouts/{rid}/rollback", headers={"X-Edgefleet-Actor": "bob"})
        assert r.status_code == 200, r.text
        assert r.json()["rollback_version"] == "shapes:v1-rb3"
        carried = client.get("/v1/plans", params={"version": "v1-rb3"}).json()["data"]
    assert [p["state"] for p in carried] == ["signed"]
    assert _assigned(services, "orin-1") == ["models/shapes/v1-rb3/plan-sm87-trt8.6.2-fp16.plan"]
    assert _assigned(services, "cpu-1") == ["models/shapes/v1-rb3/model.onnx"]
