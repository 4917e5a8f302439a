"""Samples on the controller: the YOLO export (``edgefleet samples export``) and the fleet
drift report per model version, label and device (``GET /v1/drift``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
import yaml
from edgefleet.controller.samples import class_names, yolo_lines
from edgefleet.controller.services import Services
from edgefleet.shared.protocol import utcnow

from tests.controller.conftest import serving
from tests.controller.dataloop import BASE, DARK, Feeder, version_with_card


def upload(
    client: httpx.Client, device: str, uid: str, dets: list[dict[str, object]], *,
    version: str = "v1", captured_at: str | None = None,
) -> None:  # fmt: skip
    jpeg = cv2.imencode(".jpg", np.full((100, 200, 3), 90, np.uint8))[1].tobytes()
    meta = {"uid": uid, "device_id": device, "model": "shapes", "version": version,
            "strategy": "uncertain", "reason": "1 score(s) in [0.1, 0.4)",
            "captured_at": captured_at or utcnow().isoformat(), "width": 200, "height": 100,
            "detections": dets}  # fmt: skip
    r = client.post("/v1/samples", data={"meta": json.dumps(meta)},
                    files={"image": ("x.jpg", jpeg, "image/jpeg")},
                    headers={"X-Edgefleet-Device": device})  # fmt: skip
    assert r.status_code == 201, r.text


def box(k: int, name: str, xyxy: list[float]) -> dict[str, object]:
    return {"class_id": k, "class_name": name, "confidence": 0.3, "box_xyxy": xyxy}


def test_yolo_lines_and_names() -> None:
    assert yolo_lines([box(2, "triangle", [50, 25, 150, 75])], 200, 100) == [
        "2 0.500000 0.500000 0.500000 0.500000"
    ]
    assert yolo_lines([box(0, "c", [5, 5, 5, 9])], 200, 100) == []  # empty box
    names = class_names([{"detections": [box(2, "triangle", [0, 0, 1, 1])]}])
    assert names == {0: "class0", 1: "class1", 2: "triangle"}


def test_export_as_a_user_runs_it(services: Services, tmp_path: Path) -> None:
    with serving(services) as client:
        for i in range(5):
            upload(client, "cam-1", f"u{i}", [box(0, "circle", [10, 10, 60, 50]),
                                              box(3, "star", [100, 20, 180, 90])])  # fmt: skip
        env = {**os.environ, "EDGEFLEET_URL": str(client.base_url).rstrip("/")}

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            argv = [sys.executable, "-m", "edgefleet", *args]
            return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)

        listed = cli("samples", "list")
        assert listed.returncode == 0 and listed.stdout.count("cam-1") == 5
        out = tmp_path / "dataset"
        done = cli("samples", "export", "--format", "yolo", "--out", str(out))
        assert done.returncode == 0, done.stderr
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data["path"] == str(out.resolve())
    assert data["names"] == {0: "circle", 1: "class1", 2: "class2", 3: "star"}
    train = sorted((out / data["train"]).glob("*.jpg"))
    val = sorted((out / data["val"]).glob("*.jpg"))
    assert len(train) == 4 and len(val) == 1
    label = out / "labels" / "train" / f"{train[0].stem}.txt"
    assert label.read_text().splitlines() == [
        "0 0.175000 0.300000 0.250000 0.400000", "3 0.700000 0.550000 0.400000 0.700000",
    ]  # fmt: skip
    assert cv2.imread(str(train[0])).shape == (100, 200, 3)


def test_drift_per_version_site_and_device(services: Services) -> None:
    version_with_card(services)
    feed = Feeder(services)
    feed.device("cam-1", {"site": "north"})
    feed.device("cam-2", {"site": "north"})
    feed.device("cam-3", {"site": "south"})
    t0 = utcnow() - timedelta(minutes=5)
    for minute in range(3):
        at = t0 + timedelta(minutes=minute)
        feed.window("cam-1", BASE, at=at)
        feed.window("cam-2", BASE, at=at)
        feed.window("cam-3", DARK if minute else BASE, at=at)  # south goes dark
    with serving(services) as client:
        by_site = client.get("/v1/drift", params={"group_by": "site", "bucket_s": 60}).json()
        north = [d for d in by_site["data"] if d["group"] == "north"]
        south = [d for d in by_site["data"] if d["group"] == "south"]
        # Same shape, twice the counts: the smoothed PSI's half count per bin weighs a
        # little more on the smaller side (7e-5 here), never more than rounding-level.
        assert len(north) == 3 and all(d["psi"] == pytest.approx(0, abs=1e-3) for d in north)
        assert [d["windows"] for d in north] == [2, 2, 2]
        assert south[0]["psi"] == pytest.approx(0, abs=1e-9) and south[-1]["psi"] > 1.0
        assert south[-1]["wasserstein"] > 0.1 and south[-1]["js"] > 0.3
        whole = client.get("/v1/drift", params={"group_by": "model_version", "bucket_s": 0})
        (one,) = whole.json()["data"]
        assert one["group"] == "shapes:v1" and one["windows"] == 9 and one["baseline"]
        assert 0 < one["psi"] < south[-1]["psi"]  # diluted by the healthy stores
        per_device = client.get("/v1/drift", params={"group_by": "device", "bucket_s": 0})
        assert [d["group"] for d in per_device.json()["data"]] == ["cam-1", "cam-2", "cam-3"]


def test_export_filters_by_version_time_and_scope_and_leaves_rejected_out(
    services: Services, tmp_path: Path
) -> None:
    """``samples export`` as a user runs it, against a real controller: a canary of v3 was
    aborted, so its frames stay out unless ``--include-rejected``."""
    from edgefleet.controller import registry
    from edgefleet.controller.models.devices import Device
    from sqlmodel import Session

    from edgefleet.tiny_models import tiny_onnx

    with Session(services.engine) as s:
        s.add(Device(device_id="cam-n", labels={"site": "north", "store": "12"}))
        s.add(Device(device_id="cam-s", labels={"site": "south", "store": "40"}))
        s.commit()
        for v in ("v2", "v3"):
            with tiny_onnx(tmp_path / f"{v}.onnx").open("rb") as f:
                registry.push_version(s, services.store, services.signing, "shapes", f, version=v)
    now = utcnow()
    with serving(services) as client:
        seen = [
            ("cam-n", "a", "v2", now - timedelta(hours=5)),
            ("cam-n", "b", "v2", now - timedelta(minutes=20)),
            ("cam-s", "c", "v2", now - timedelta(minutes=10)),
            ("cam-s", "d", "v3", now - timedelta(minutes=5)),
        ]
        for device, uid, version, at in seen:
            upload(client, device, uid, [box(0, "circle", [10, 10, 60, 50])], version=version,
                   captured_at=at.isoformat())  # fmt: skip
        env = {**os.environ, "EDGEFLEET_URL": str(client.base_url).rstrip("/")}

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            argv = [sys.executable, "-m", "edgefleet", *args]
            return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)

        def exported(*flags: str) -> set[str]:
            out = tmp_path / f"x{len(list(tmp_path.iterdir()))}"
            r = cli("samples", "export", "--out", str(out), *flags)
            assert r.returncode == 0, r.stderr
            metas = [json.loads(p.read_text()) for p in (out / "meta").glob("*.json")]
            return {f"{m['device_id']}/{m['version']}/{m['captured_at'][11:16]}" for m in metas}

        def uids(*flags: str) -> set[str]:
            r = cli("samples", "list", "--json", *flags)
            assert r.returncode == 0, r.stderr
            return {s["uid"] for s in json.loads(r.stdout)}

        # Before any rollout nothing is rejected; the filters as asked.
        assert uids() == {"a", "b", "c", "d"}
        assert uids("--version", "v2") == uids("--version", "shapes:v2") == {"a", "b", "c"}
        assert uids("--site", "north") == uids("--label", "store=12") == {"a", "b"}
        assert uids("--device", "cam-s", "--label", "site=south") == {"c", "d"}
        assert uids("--since", "1h") == {"b", "c", "d"}
        assert uids("--since", "1h", "--until", (now - timedelta(minutes=8)).isoformat()) == {
            "b", "c",
        }  # fmt: skip
        assert len(exported("--site", "south")) == 2

        # A canary of v3 stopped by the operator: its samples are a rejected canary's.
        r = cli("rollout", "create", "shapes:v3", "--selector", "site=south")
        assert r.returncode == 0, r.stderr
        rollout_id = client.get("/v1/rollouts").json()["data"][-1]["id"]
        r = cli("rollout", "abort", str(rollout_id))
        assert r.returncode == 0, r.stderr
        assert len(exported()) == 3  # d left out
        assert len(exported("--site", "south")) == 1
        assert len(exported("--include-rejected")) == 4
        assert uids() == {"a", "b", "c", "d"}  # listing shows everything
        only = client.get("/v1/samples", params={"rejected": "only"}).json()["data"]
        assert [s["uid"] for s in only] == ["d"]

        # Bad input: one line, no traceback.
        for flags in (["--since", "yesterday"], ["--label", "site"], ["--version", ":v2"]):
            r = cli("samples", "export", "--out", str(tmp_path / "bad"), *flags)
            assert r.returncode != 0 and "Traceback" not in r.stderr
            assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        r = client.get("/v1/samples", params={"label": "nokey"})
        assert r.status_code == 400
