"""The validation gate: its pure decision, validation sets kept by digest, and, against a
real controller over HTTP, a push of a worse model refused with the reason (CLI exit 3),
its rollout refused, then allowed with an admin's override that the audit log records."""

from __future__ import annotations

import importlib.util
import io
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import httpx
import numpy as np
import pytest
from edgefleet.controller.datasets import DatasetStore, pack
from edgefleet.controller.map50 import average_precision, ranked_ap
from edgefleet.controller.models.audit import AuditEntry
from edgefleet.controller.models.devices import Device
from edgefleet.controller.models.registry import Model, ModelVersion
from edgefleet.controller.rollouts.pinning import newest
from edgefleet.controller.services import Services
from edgefleet.controller.validation_gate import (
    ClassRecords,
    Evaluation,
    GatePolicy,
    Production,
    judge,
    regression_interval,
)
from edgefleet.controller.validation_registry import production_version
from edgefleet.shared.errors import ArtifactError
from sqlmodel import Session, select

from edgefleet.tiny_models import tiny_onnx
from tests.controller.conftest import bearer

REPO = Path(__file__).resolve().parents[2]
V2 = REPO / "models" / "shapes" / "v2" / "model.onnx"
VAL_IMAGES = 60


def _load(path: Path) -> object:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def val_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shapes")
    _load(REPO / "models/make_dataset.py").generate(out, 0, VAL_IMAGES, seed=11)  # type: ignore[attr-defined]
    return out / "images" / "val"


@pytest.fixture(scope="module")
def blind(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """v2 that never detects triangles (class 2): the issue's "variant of v2"."""
    out = tmp_path_factory.mktemp("blind") / "model.onnx"
    return _load(REPO / "models/make_bad.py").make_blind(V2, out, 2)  # type: ignore[attr-defined,no-any-return]


# --- the decision, pure -----------------------------------------------------------------


def _eval(aps: dict[str, float], *, labelled: int = 100, ms: float = 10.0) -> Evaluation:
    return Evaluation(model_sha256="a" * 64, dataset_digest="d" * 64, images=labelled,
                      labelled=labelled, map50=float(np.mean(list(aps.values()))), ap50=aps,
                      instances=dict.fromkeys(aps, 30), latency_p50_ms=ms, latency_p90_ms=ms,
                      profile="test")  # fmt: skip


def test_judge_names_every_failed_check() -> None:
    policy = GatePolicy(dataset="val", min_map50=0.5, max_regression=0.05,
                        max_class_regression=0.2, latency_budget_ms=20)  # fmt: skip
    prod = Production("v2", _eval({"circle": 0.8, "triangle": 0.6}))
    same = judge(policy, _eval({"circle": 0.8, "triangle": 0.6}), prod)
    assert same.status == "accepted" and same.reasons == [] and same.production == "v2"
    worse = judge(policy, _eval({"circle": 0.8, "triangle": 0.0}, ms=30), prod)
    assert worse.status == "rejected"
    assert worse.reasons == [
        "mAP50 0.400 (minimum 0.500)",
        "mAP50 0.400 is 0.300 below production v2's 0.700 (allowed 0.050)",
        "class 'triangle' AP50 0.000 is 0.600 below production v2's 0.600 (allowed 0.200)",
        "median latency 30.0 ms on test (budget 20 ms)",
    ]
    first = judge(policy, _eval({"circle": 0.8, "triangle": 0.6}), None)
    assert first.status == "accepted" and first.production is None
    thin = judge(policy.model_copy(update={"min_images": 200}), _eval({"circle": 0.9}), None)
    assert thin.reasons == ["100 labelled validation images (the policy needs 200)"]


def test_class_with_few_objects_is_listed_not_judged() -> None:
    policy = GatePolicy(dataset="val", max_class_regression=0.1, min_class_instances=50)
    result = judge(policy, _eval({"star": 0.0}), Production("v1", _eval({"star": 0.9})))
    assert result.status == "accepted" and result.not_judged == ["star (30 objects < 50)"]


def test_weighted_ap_is_ap_with_repeated_predictions() -> None:
    hits, conf = [True, False, True, True, False], [0.9, 0.8, 0.7, 0.4, 0.3]
    ranked = np.array(hits, np.float64)
    assert ranked_ap(ranked, np.ones(5), 4.0) == pytest.approx(average_precision(hits, conf, 4))
    # Drawing the image of the first two predictions twice counts them twice.
    twice = average_precision([True, True, False, False, True, True, False],
                              [0.9, 0.9, 0.8, 0.8, 0.7, 0.4, 0.3], 5)  # fmt: skip
    assert ranked_ap(ranked, np.array([2.0, 2, 1, 1, 1]), 5.0) == pytest.approx(twice)


def _records(hit_rate: float, n: int, seed: int) -> Evaluation:
    rng = np.random.default_rng(seed)
    hits = list(rng.random(n) < hit_rate)
    rec = ClassRecords(image=list(range(n)), hit=hits, truth=[1] * n)
    ev = _eval({"thing": 0.5}, labelled=n)
    return ev.model_copy(update={"classes": {"thing": rec}})


def test_bootstrap_interval_is_paired_and_narrows_with_images() -> None:
    a = _records(0.7, 40, 1)
    assert regression_interval(a, a) == (0.0, 0.0)  # same predictions: no noise at all
    small = regression_interval(_records(0.8, 40, 2), _records(0.6, 40, 3))
    large = regression_interval(_records(0.8, 400, 2), _records(0.6, 400, 3))
    assert small is not None and large is not None
    assert large[1] - large[0] < small[1] - small[0]
    assert regression_interval(a, _records(0.7, 41, 1)) is None  # not the same images


# --- validation sets by digest ----------------------------------------------------------


def test_same_images_same_digest_and_bad_archives_refused(val_dir: Path, tmp_path: Path) -> None:
    store = DatasetStore(tmp_path / "ds")
    with pack(val_dir, tmp_path / "a.tar").open("rb") as f:
        first = store.add(f)
    with pack(val_dir, tmp_path / "b.tar").open("rb") as f:
        again = store.add(f)
    assert first == again and (first.images, first.labelled) == (VAL_IMAGES, VAL_IMAGES)
    tree = store.path(first.digest)
    assert (tree / "labels").is_dir() and sorted(p.name for p in (tmp_path / "ds").iterdir()) == [
        first.digest
    ]
    for name in ("../escape.jpg", "/abs.jpg", "other/x.jpg"):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            info = tarfile.TarInfo(name)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
        buf.seek(0)
        with pytest.raises(ArtifactError, match="refused member"):
            store.add(buf)
    assert not (tmp_path / "escape.jpg").exists()


# --- against a real controller ----------------------------------------------------------


def _cli(url: str, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EDGEFLEET_URL": url.rstrip("/")}
    if token:
        env["EDGEFLEET_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "edgefleet", *args], capture_output=True,
                          text=True, env=env, timeout=180, check=False)  # fmt: skip


def _devices_run(services: Services, version: str, n: int) -> None:
    """Device rows reporting ``shapes:version``, as the MQTT ingest writes them from each
    device's state (there is no broker here): production is the version most devices run."""
    with Session(services.engine) as s:
        for i in range(n):
            s.add(Device(device_id=f"cam-{i}", model="shapes", version=version, labels={}))
        s.commit()


def test_worse_push_refused_end_to_end(
    client: httpx.Client, services: Services, val_dir: Path, blind: Path
) -> None:
    url = str(client.base_url)
    added = _cli(url, "dataset", "add", "shapes-val", str(val_dir))
    assert added.returncode == 0, added.stderr
    assert f"dataset shapes-val: {VAL_IMAGES} images ({VAL_IMAGES} labelled)" in added.stdout
    policy = _cli(url, "model", "policy", "shapes", "--dataset", "shapes-val", "--min-map50",
                  "0.3", "--max-regression", "0.05", "--max-class-regression", "0.15")  # fmt: skip
    assert policy.returncode == 0, policy.stderr
    assert "min mAP50           0.300" in policy.stdout

    first = _cli(url, "model", "push", "shapes", str(V2), "--version", "v2")
    assert first.returncode == 0, first.stderr
    assert "validation gate: ACCEPTED on dataset shapes-val (no production version)" in first.stdout
    _devices_run(services, "v2", 2)

    worse = _cli(url, "model", "push", "shapes", str(blind), "--version", "v3")
    assert worse.returncode == 3, worse.stderr
    assert "validation gate: REJECTED on dataset shapes-val against production v2" in worse.stdout
    assert "REJECTED: class 'triangle' AP50 0.000 is" in worse.stdout
    assert "is stored as rejected" in worse.stderr and "Traceback" not in worse.stderr
    gate = client.get("/v1/models/shapes/versions/v3/gate").json()
    assert gate["status"] == "rejected" and gate["production"] == "v2"
    assert gate["candidate"]["ap50"]["triangle"] == 0.0
    assert gate["candidate"]["map50"] < gate["baseline"]["map50"]
    listed = _cli(url, "model", "list").stdout.splitlines()
    assert listed[0].split()[-1] == "GATE" and listed[-1].split()[-1] == "rejected"
    shown = _cli(url, "model", "show", "shapes:v3")
    assert (
        "validation policy of shapes" in shown.stdout
        and "REJECTED: class 'triangle'" in shown.stdout
    )

    refused = _cli(url, "rollout", "create", "shapes:v3")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.count("\n") == 1
    assert (
        "rejected by the validation gate (" in refused.stderr
        and "--override-gate" in refused.stderr
    )
    assert client.post("/v1/rollouts", json={"model": "shapes", "version": "v3"}).status_code == 409
    forced = _cli(url, "rollout", "create", "shapes:v3", "--override-gate")
    assert forced.returncode == 0, forced.stderr
    with Session(services.engine) as s:
        entry = s.exec(select(AuditEntry).where(AuditEntry.action == "gate-override")).one()
    assert entry.target == "shapes:v3" and "class 'triangle'" in entry.detail["reasons"][-1]


def test_override_and_policy_need_an_admin(
    secured: Services, serve: object, val_dir: Path, tmp_path: Path
) -> None:
    operator, admin = bearer(secured, "operator"), bearer(secured, "admin")
    with serve(secured) as client:  # type: ignore[operator]
        url = str(client.base_url)
        op_token = operator["Authorization"].split()[1]
        assert _cli(url, "dataset", "add", "val", str(val_dir), token=op_token).returncode == 0
        body = {"dataset": "val", "min_map50": 0.99}  # v2 scores about 0.6: rejected
        assert (
            client.put("/v1/models/shapes/policy", json=body, headers=operator).status_code == 403
        )
        put = client.put("/v1/models/shapes/policy", json=body, headers=admin)
        assert put.status_code == 200, put.text
        with V2.open("rb") as f:
            pushed = client.post("/v1/models/shapes/versions", files={"file": f}, headers=operator)
        assert pushed.json()["gate_status"] == "rejected", pushed.text
        assert pushed.json()["gate"]["reasons"][0].startswith("mAP50 0.")
        _devices_run(secured, "v0", 1)  # a device for the rollout to match
        spec = {"model": "shapes", "version": "v1"}
        assert client.post("/v1/rollouts", json=spec, headers=admin).status_code == 409
        params = {"override_gate": "true"}
        denied = client.post("/v1/rollouts", json=spec, params=params, headers=operator)
        assert denied.status_code == 403 and "admin" in denied.json()["detail"]
        allowed = client.post("/v1/rollouts", json=spec, params=params, headers=admin)
        assert allowed.status_code == 200, allowed.text
        audit = client.get("/v1/audit", headers=admin).json()["data"]
        assert [e["actor"] for e in audit if e["action"] == "gate-override"] == ["admin-1"]

        # The gate fails closed: a set gone from disk rejects the next push, with the reason.
        digest = client.get("/v1/datasets/val", headers=operator).json()["digest"]
        shutil.rmtree(secured.settings.data_dir / "datasets" / digest)
        with tiny_onnx(tmp_path / "tiny.onnx").open("rb") as f:
            lost = client.post("/v1/models/shapes/versions", files={"file": f}, headers=operator)
        assert lost.json()["gate_status"] == "rejected"
        assert lost.json()["gate"]["reasons"][0].startswith("evaluation failed: no stored")


def test_production_is_the_production_stage_else_what_most_devices_run(
    services: Services,
) -> None:
    with Session(services.engine) as s:
        s.add(Model(name="m"))
        for i, v in enumerate(["v1", "v2", "v3"], 1):
            s.add(ModelVersion(name="m", version=v, release=i, sha256=str(i) * 64, length=1,
                               target=f"models/m/{v}/model.onnx"))  # fmt: skip
        s.commit()
        assert production_version(s, "m") is None
        for i, v in enumerate(["v1", "v3", "v3", "v9"]):  # v9: not in the registry
            s.add(Device(device_id=f"d{i}", model="m", version=v, labels={}))
        s.commit()
        assert getattr(production_version(s, "m"), "version", None) == "v3"
        v2 = s.exec(select(ModelVersion).where(ModelVersion.version == "v2")).one()
        v2.stage = "production"
        s.add(v2)
        s.commit()
        assert getattr(production_version(s, "m"), "version", None) == "v2"


def test_channels_skip_and_pins_refuse_a_rejected_version(
    client: httpx.Client, services: Services
) -> None:
    with Session(services.engine) as s:
        s.add(Model(name="m"))
        s.add(ModelVersion(name="m", version="v1", release=1, sha256="1" * 64, length=1,
                           target="models/m/v1/model.onnx"))  # fmt: skip
        s.add(ModelVersion(name="m", version="v2", release=2, sha256="2" * 64, length=1,
                           target="models/m/v2/model.onnx", gate_status="rejected",
                           gate={"reasons": ["mAP50 0.100 (minimum 0.500)"]}))  # fmt: skip
        s.commit()
        assert newest(s, "m") == "v1"
    pin = client.post("/v1/pins", json={"selector": {}, "model": "m", "version": "v2"})
    assert pin.status_code == 409 and "mAP50 0.100 (minimum 0.500)" in pin.json()["detail"]
    channel = client.put("/v1/channels/stable", json={"model": "m", "version": "v2"})
    assert channel.status_code == 409
