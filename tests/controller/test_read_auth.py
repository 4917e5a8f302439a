"""Reads are authorised too (issue 11 item 2), over real HTTP with auth on as shipped:
viewers read the fleet but not camera frames, /tuf/image only to enrolled devices and
operators (a revoked device is refused), ``--public-mirror`` opens the image repository
alone. Devices enroll the real way (one-time token, the agent's own enroll code)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from edgefleet.controller.services import Services
from edgefleet.controller.settings import Settings
from edgefleet.shared.protocol import utcnow
from tuf.api.exceptions import DownloadHTTPError

from tests.controller.conftest import bearer, enroll_device, serving

FRAME = np.full((48, 64, 3), 120, np.uint8)
READS = ("/v1/devices", "/v1/rollouts", "/v1/models", "/v1/samples", "/v1/drift",
         "/v1/alerts", "/v1/plans", "/v1/sampling", "/v1/stats", "/v1/audit",
         "/metrics")  # fmt: skip
TIMESTAMP = "/tuf/image/metadata/timestamp.json"


def _push(client: httpx.Client, onnx: Path, operator: dict[str, str]) -> str:
    """Push det:v1; the image repository's target path of its ONNX."""
    with onnx.open("rb") as f:
        r = client.post("/v1/models/det/versions", files={"file": ("m.onnx", f)},
                        headers=operator)  # fmt: skip
    assert r.status_code == 200, r.text
    return f"/tuf/image/targets/models/det/v1/{r.json()['sha256']}.model.onnx"


def _upload(client: httpx.Client, device: str, own: dict[str, str]) -> int:
    meta = {"uid": "u1", "device_id": device, "strategy": "s", "reason": "r",
            "captured_at": utcnow().isoformat(), "width": 64, "height": 48}  # fmt: skip
    jpeg = cv2.imencode(".jpg", FRAME)[1].tobytes()
    r = client.post("/v1/samples", data={"meta": json.dumps(meta)},
                    files={"image": ("a.jpg", jpeg, "image/jpeg")},
                    headers={"X-Edgefleet-Device": device, **own})  # fmt: skip
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def test_reads_need_a_viewer_and_frames_an_operator(secured: Services, tmp_path: Path) -> None:
    with serving(secured) as client:
        viewer, operator = bearer(secured, "viewer"), bearer(secured, "operator")
        cam = enroll_device(client, operator, "cam-1", tmp_path / "cam-1")
        sample = _upload(client, "cam-1", cam)
        for path in (*READS, f"/v1/samples/{sample}", f"/v1/samples/{sample}/image"):
            r = client.get(path)
            assert r.status_code == 401, (path, r.status_code)
            assert r.headers["www-authenticate"] == "Bearer"
        for path in (*READS, f"/v1/samples/{sample}"):
            assert client.get(path, headers=viewer).status_code == 200, path
        listed = client.get("/v1/samples", headers=viewer).json()["data"]
        assert [s["device_id"] for s in listed] == ["cam-1"]
        # camera frames: not to a viewer, nor to a device (not even its own), to an operator
        frame = client.get(f"/v1/samples/{sample}/image", headers=viewer)
        assert frame.status_code == 403 and "viewer" in frame.json()["detail"]
        assert client.get(f"/v1/samples/{sample}/image", headers=cam).status_code == 403
        frame = client.get(f"/v1/samples/{sample}/image", headers=operator)
        assert frame.status_code == 200 and frame.content[:2] == b"\xff\xd8"  # a JPEG
        # a device credential is no operator token: the fleet is not its to read
        assert client.get("/v1/devices", headers=cam).status_code == 403
        # open without a token: liveness and the dashboard's static files (no data in them)
        assert client.get("/healthz").status_code == 200
        assert client.get("/ui/").status_code == 200


def test_agent_reads_take_the_devices_own_credential(secured: Services, tmp_path: Path) -> None:
    with serving(secured) as client:
        operator = bearer(secured, "operator")
        one = enroll_device(client, operator, "cam-1", tmp_path / "cam-1")
        enroll_device(client, operator, "cam-2", tmp_path / "cam-2")
        assert client.get("/v1/devices/cam-1/sampling").status_code == 401
        assert client.get("/v1/devices/cam-1/sampling", headers=one).status_code == 200
        other = client.get("/v1/devices/cam-2/sampling", headers=one)
        assert other.status_code == 403 and "own" in other.json()["detail"]
        # a card read reaches the route (404: no such version), not refused at the door
        card = "/v1/models/det/versions/v1/card"
        assert client.get(card).status_code == 401
        assert client.get(card, headers=one).status_code == 404
        forged = {"Authorization": "Bearer efu_forged"}
        assert client.get("/v1/devices/cam-1/sampling", headers=forged).status_code == 401


def test_tuf_only_to_enrolled_devices_and_operators_and_revocation_cuts_it(
    secured: Services, tmp_path: Path, onnx_model: Path
) -> None:
    with serving(secured) as client:
        viewer, operator = bearer(secured, "viewer"), bearer(secured, "operator")
        admin = bearer(secured, "admin")
        target = _push(client, onnx_model, operator)
        one = enroll_device(client, operator, "cam-1", tmp_path / "cam-1")
        two = enroll_device(client, operator, "cam-2", tmp_path / "cam-2")
        director = "/tuf/director/cam-1/metadata/timestamp.json"
        for path in (TIMESTAMP, target, director):
            assert client.get(path).status_code == 401, path
            assert client.get(path, headers=viewer).status_code == 403, path
            assert client.get(path, headers=operator).status_code == 200, path
            assert client.get(path, headers=one).status_code == 200, path
        assert client.get(TIMESTAMP, headers=two).status_code == 200
        assert client.head(target, headers=two).status_code == 200
        assert client.get(director, headers=two).status_code == 403  # not its own
        forged = client.get(TIMESTAMP, headers={"Authorization": "Bearer efu_forged"})
        assert forged.status_code == 401

        assert client.post("/v1/devices/cam-1/revoke", headers=admin).status_code == 200
        for path in (TIMESTAMP, target, director):
            refused = client.get(path, headers=one)  # the cached credential too
            assert refused.status_code == 403 and "revoked" in refused.json()["detail"], path
        assert client.get(target, headers=two).status_code == 200  # its neighbour is not


def test_public_mirror_serves_the_image_repository_alone(
    secured: Services, tmp_path: Path, onnx_model: Path
) -> None:
    flags = {
        "listen": "127.0.0.1:8600",
        "mqtt": "mqtt://127.0.0.1:1883",
        "data": str(tmp_path / "d"),
        "database_url": None,
        "public_mirror": True,
    }
    parsed = Settings.from_flags(flags)
    assert parsed.public_mirror and parsed.auth  # a mirror, not an open controller
    secured.settings = dataclasses.replace(secured.settings, public_mirror=True)
    with serving(secured) as client:
        target = _push(client, onnx_model, bearer(secured, "operator"))
        assert client.get(TIMESTAMP).status_code == 200
        assert client.get(target).status_code == 200
        enroll_device(client, bearer(secured, "operator", "op-2"), "cam-1", tmp_path / "cam-1")
        assert client.get("/tuf/director/cam-1/metadata/timestamp.json").status_code == 401
        assert client.get("/v1/devices").status_code == 401


def test_proto_sim_fetches_tuf_with_the_operator_token(
    secured: Services, tmp_path: Path, onnx_model: Path
) -> None:
    from edgefleet.simproto import PooledFetcher, SharedImage

    with serving(secured) as client:
        operator = bearer(secured, "operator")
        _push(client, onnx_model, operator)
        url, token = str(client.base_url).rstrip("/"), operator["Authorization"].split()[1]
        image = SharedImage(url, tmp_path / "with", PooledFetcher(2, token=token))
        assert image.targetinfo("models/det/v1/model.onnx") is not None
        bare = SharedImage(url, tmp_path / "bare", PooledFetcher(2))
        with pytest.raises(DownloadHTTPError, match="HTTP 401"):
            bare.targetinfo("models/det/v1/model.onnx")


def test_sim_enrolls_a_fleet_past_the_enrollment_rate_limit(
    secured: Services, tmp_path: Path
) -> None:
    from edgefleet.sim import enroll_fleet

    ids = [f"sim-{i:04d}" for i in range(12)]  # 24 requests: past the burst of 20
    with serving(secured) as client:
        operator = bearer(secured, "operator")
        url, token = str(client.base_url), operator["Authorization"].split()[1]
        assert enroll_fleet(url, tmp_path, ids, token) == 12
        assert enroll_fleet(url, tmp_path, ids, token) == 0  # already enrolled: kept
        last = (tmp_path / ids[-1] / "identity" / "upload-token").read_text().strip()
        answer = client.get(TIMESTAMP, headers={"Authorization": f"Bearer {last}"})
        assert answer.status_code == 200
