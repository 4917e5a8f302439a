"""Enrollment and revocation over real HTTP, with the agent's own enroll code."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from edgefleet.agent.enroll import enroll
from edgefleet.agent.updater import ModelUpdater, UpdaterConfig
from edgefleet.controller.pki import DevicePki
from edgefleet.controller.services import Services
from edgefleet.shared.errors import TrustError

from tests.controller.conftest import bearer, serving


@pytest.fixture
def system(secured: Services) -> Iterator[tuple[httpx.Client, Services]]:
    with serving(secured) as client:
        yield client, secured


def _token(client: httpx.Client, headers: dict[str, str], device: str) -> str:
    answer = client.post("/v1/enroll-tokens", json={"device_id": device}, headers=headers)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["token"])


def test_enroll_pins_roots_and_revoke_refuses_device(
    system: tuple[httpx.Client, Services], tmp_path: Path
) -> None:
    client, services = system
    url = str(client.base_url)
    viewer, operator = bearer(services, "viewer"), bearer(services, "operator")
    assert client.post("/v1/enroll-tokens", json={"device_id": "cam-1"}).status_code == 401
    refused = client.post("/v1/enroll-tokens", json={"device_id": "cam-1"}, headers=viewer)
    assert refused.status_code == 403
    token = _token(client, operator, "cam-1")

    agent = tmp_path / "agent"
    ident = enroll(url, "cam-1", agent, token)
    assert ident.key.stat().st_mode & 0o777 == 0o600
    cert = x509.load_pem_x509_certificate(ident.cert.read_bytes())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "cam-1"
    image_root = json.loads((agent / "trust" / "image-root.json").read_text())
    assert image_root["signed"]["_type"] == "root"
    with pytest.raises(TrustError, match="unknown, used or expired"):
        enroll(url, "cam-1", tmp_path / "again", token)

    # pinned roots: no trust on first use, and the director chain exists for the device
    updater = ModelUpdater(UpdaterConfig(url, "cam-1", agent))
    try:
        assert updater.refresh({}, None) == []
    finally:
        updater.close()

    # a token for cam-2 cannot make a certificate for anyone else
    with pytest.raises(TrustError, match="names another device"):
        enroll(url, "cam-3", tmp_path / "rogue", _token(client, operator, "cam-2"))

    assert client.post("/v1/devices/cam-1/revoke", headers=operator).status_code == 403
    revoked = client.post("/v1/devices/cam-1/revoke", headers=bearer(services, "admin"))
    assert revoked.status_code == 200, revoked.text
    assert str(cert.serial_number) in revoked.json()["serials"]
    crl = x509.load_pem_x509_crl(
        DevicePki(services.settings.data_dir / "pki").crl_path.read_bytes()
    )
    assert crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None
    assert ident.upload_token is not None
    own = {"Authorization": f"Bearer {ident.upload_token.read_text()}"}  # what cam-1 sends
    served = client.get("/tuf/director/cam-1/metadata/timestamp.json", headers=own)
    assert served.status_code == 403 and "revoked" in served.json()["detail"]
    served = client.get("/tuf/director/cam-2/metadata/timestamp.json", headers=operator)
    assert served.status_code == 200
    heard: list[str] = []
    handle = services.revoked.filter(lambda topic, _payload: heard.append(topic))
    handle("edgefleet/v1/devices/cam-1/state", b"{}")
    handle("edgefleet/v1/devices/cam-2/state", b"{}")
    assert heard == ["edgefleet/v1/devices/cam-2/state"]
    again = client.post("/v1/enroll-tokens", json={"device_id": "cam-1"}, headers=operator)
    assert again.status_code == 400 and "revoked" in again.json()["detail"]
    audit = client.get("/v1/audit", headers=viewer).json()["data"]
    assert ("admin-1", "revoke", "device:cam-1") in {
        (a["actor"], a["action"], a["target"]) for a in audit
    }


@pytest.mark.parametrize("device", ["edgefleet-controller", "EdgeFleet-Broker", "edgefleet-r2"])
def test_service_identities_cannot_be_enrolled(
    system: tuple[httpx.Client, Services], device: str
) -> None:
    # A device certificate named like the controller would get its broker rights.
    client, services = system
    answer = client.post("/v1/enroll-tokens", json={"device_id": device},
                         headers=bearer(services, "admin"))  # fmt: skip
    assert answer.status_code == 400
    assert "reserved" in answer.json()["detail"]


def test_service_identities_cannot_sign_a_csr_or_be_issued(tmp_path: Path) -> None:
    from edgefleet.controller.pki import make_csr, new_key

    pki = DevicePki(tmp_path / "pki")
    pki.init()
    csr = make_csr(new_key(), "edgefleet-controller")
    from cryptography.hazmat.primitives import serialization

    with pytest.raises(TrustError, match="reserved"):
        pki.sign_csr(csr.public_bytes(serialization.Encoding.PEM), "edgefleet-controller")
