"""Sample uploads tied to the device's identity: the upload credential from enrollment.

Real HTTP (uvicorn in a thread), the agent's own enroll code and sampler, real files.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import cv2
import httpx
import numpy as np
from edgefleet.agent.config import parse_config
from edgefleet.agent.controller_http import ControllerHttp
from edgefleet.agent.dataloop import controller_http
from edgefleet.agent.enroll import enroll, read_upload_token
from edgefleet.agent.sampler import Pending, Sampler
from edgefleet.agent.spool import DiskSpool
from edgefleet.controller.pki import DevicePki
from edgefleet.controller.services import Services
from edgefleet.controller.tokens import create_token
from edgefleet.shared.protocol import utcnow
from edgefleet.shared.sampling import SamplingConfig
from sqlmodel import Session

from edgefleet.runtime.backend import Detection

Serve = Callable[[Services], AbstractContextManager[httpx.Client]]
FRAME = np.full((48, 64, 3), 120, np.uint8)


def _bearer(services: Services, role: str) -> dict[str, str]:
    with Session(services.engine) as session:
        _, secret = create_token(session, f"{role}-1", role, "test")
    return {"Authorization": f"Bearer {secret}"}


def _enroll(client: httpx.Client, operator: dict[str, str], device: str, folder: Path) -> str:
    answer = client.post("/v1/enroll-tokens", json={"device_id": device}, headers=operator)
    assert answer.status_code == 200, answer.text
    ident = enroll(str(client.base_url), device, folder, str(answer.json()["token"]))
    assert ident.upload_token is not None
    assert ident.upload_token.stat().st_mode & 0o777 == 0o600
    token = read_upload_token(folder)
    assert token is not None and token.startswith("efu_")
    return token


def _sampler(device: str, url: str, folder: Path, token: str | None) -> Sampler:
    spool = DiskSpool(folder / "spool" / "samples", max_entries=10)
    sampler = Sampler(device, SamplingConfig(), spool, ControllerHttp(url, device),
                      upload_token=token)  # fmt: skip
    det = Detection(0, "circle", 0.2, (1.0, 1.0, 20.0, 20.0))
    item = Pending(FRAME, sampler.policy.choose([det], [], 0.0) or _fail(), 0.0, utcnow(),
                   "shapes", "v1", [det], [])  # fmt: skip
    assert sampler.capture(item) is not None
    return sampler


def _fail() -> object:
    raise AssertionError("the frame should be sampled")


def _post(client: httpx.Client, device: str, token: str | None, uid: str) -> int:
    jpeg = cv2.imencode(".jpg", FRAME)[1].tobytes()
    meta = {"uid": uid, "device_id": device, "strategy": "s", "reason": "r",
            "captured_at": utcnow().isoformat(), "width": 64, "height": 48}  # fmt: skip
    headers = {"X-Edgefleet-Device": device}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    r = client.post("/v1/samples", data={"meta": json.dumps(meta)},
                    files={"image": ("a.jpg", jpeg, "image/jpeg")}, headers=headers)  # fmt: skip
    return r.status_code


def test_uploads_need_the_devices_own_credential_with_auth(
    services: Services, serve: Serve, tmp_path: Path
) -> None:
    services.settings = dataclasses.replace(services.settings, auth=True)
    DevicePki(services.settings.data_dir / "pki").init(("localhost",))
    with serve(services) as client:
        url = str(client.base_url)
        operator, admin = _bearer(services, "operator"), _bearer(services, "admin")
        one = _enroll(client, operator, "cam-1", tmp_path / "cam-1")
        two = _enroll(client, operator, "cam-2", tmp_path / "cam-2")

        # the agent's sampler sends its credential from the identity folder: stored
        sampler = _sampler("cam-1", url, tmp_path / "cam-1", read_upload_token(tmp_path / "cam-1"))
        assert sampler.upload() == 1 and len(sampler.spool) == 0
        # without a credential, or with another device's: refused (and dropped by the agent)
        bare = _sampler("cam-1", url, tmp_path / "bare", None)
        assert bare.upload() == 0
        assert _post(client, "cam-1", None, "x1") == 401
        assert _post(client, "cam-1", two, "x2") == 403
        assert _post(client, "cam-1", "efu_forged", "x3") == 403
        assert _post(client, "cam-3", None, "x4") == 401  # unenrolled, but --auth is on
        assert _post(client, "cam-2", two, "x5") == 201
        # an API token is not an upload credential
        assert _post(client, "cam-1", operator["Authorization"].split()[1], "x6") == 403

        assert client.post("/v1/devices/cam-1/revoke", headers=admin).status_code == 200
        assert _post(client, "cam-1", one, "x7") == 403  # revoke voids the credential
        assert _post(client, "cam-2", two, "x8") == 201
        listed = client.get("/v1/samples", headers=operator).json()["data"]
        assert sorted(s["device_id"] for s in listed) == ["cam-1", "cam-2", "cam-2"]


def test_enrolled_device_needs_credential_even_without_auth(
    services: Services, serve: Serve, tmp_path: Path
) -> None:
    DevicePki(services.settings.data_dir / "pki").init(("localhost",))
    with serve(services) as client:
        token = _enroll(client, {}, "cam-1", tmp_path / "cam-1")
        assert _post(client, "cam-1", None, "a") == 401
        assert _post(client, "cam-1", token, "b") == 201
        assert _post(client, "cam-9", None, "c") == 201  # unenrolled, no --auth: as before


def test_https_controller_gets_the_devices_certificate(tmp_path: Path) -> None:
    raw = {"device_id": "cam-1", "controller_url": "https://ctl.example:8443",
           "mqtt_url": "mqtts://broker:8883", "data_dir": "data",
           "tls": {"ca": "id/ca.pem", "cert": "id/device.pem", "key": "id/device.key"},
           "source": {"kind": "folder", "path": "frames"}}  # fmt: skip
    config = parse_config(raw, base=tmp_path)
    http = controller_http(config)
    try:
        pool_kw = http._pool.connection_pool_kw
        assert pool_kw["ca_certs"] == str(tmp_path / "id" / "ca.pem")
        assert pool_kw["cert_file"] == str(tmp_path / "id" / "device.pem")
        assert pool_kw["key_file"] == str(tmp_path / "id" / "device.key")
    finally:
        http.close()
    plain = controller_http(parse_config({**raw, "controller_url": "http://ctl:8080"},
                                         base=tmp_path))  # fmt: skip
    assert "cert_file" not in plain._pool.connection_pool_kw
    plain.close()
