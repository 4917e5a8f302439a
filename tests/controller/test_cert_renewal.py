"""Device certificate renewal over real HTTP (POST /v1/devices/{id}/certificate), with the
agent's own renewal code, and the renewed device back on a real mTLS Mosquitto."""

from __future__ import annotations

import base64
import queue
import socket
import ssl
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from edgefleet.agent.cert_renewal import CertRenewer, IdentityFiles, renew
from edgefleet.agent.controller_http import ControllerHttp
from edgefleet.agent.enroll import enroll, make_csr
from edgefleet.agent.mqtt_link import Hint, MqttLink
from edgefleet.agent.tls import TlsSettings
from edgefleet.controller.pki import DevicePki, cert_pem, issue, key_pem, new_key
from edgefleet.controller.services import Services
from edgefleet.shared.errors import TrustError
from edgefleet.shared.renewal import renewal_message
from sqlmodel import Session

from edgefleet.devbroker import BrokerTls, DevBroker
from tests.controller.conftest import bearer, serving
from tests.waiting import wait_for


@pytest.fixture
def system(secured: Services) -> Iterator[tuple[httpx.Client, Services]]:
    with serving(secured) as client:
        yield client, secured


def _identity(folder: Path, pki: DevicePki, device: str, lifetime: timedelta,
              age: timedelta) -> IdentityFiles:  # fmt: skip
    """A device pair issued ``age`` ago for ``lifetime`` (as enrollment would have)."""
    folder.mkdir(parents=True)
    ca, ca_key = pki._ca()
    key = new_key()
    start = datetime.now(timezone.utc) - age
    cert = issue(ca, ca_key, key.public_key(), device, not_before=start, lifetime=lifetime)
    files = IdentityFiles(folder / "device.pem", folder / "device.key", folder / "ca.pem")
    files.key.write_bytes(key_pem(key))
    files.key.chmod(0o600)
    files.cert.write_bytes(cert_pem(cert))
    files.ca.write_bytes(pki.ca_path.read_bytes())
    return files


def _handshake_refused(port: int, cert: Path, key: Path, ca: Path) -> bool:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
    ctx.load_cert_chain(str(cert), str(key))
    with socket.create_connection(("localhost", port), timeout=10) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.recv(1)  # TLS 1.2 (the broker's config): the refusal is an alert
        except (ssl.SSLError, ConnectionResetError):
            return True
        return False


@pytest.mark.broker
def test_a_device_near_expiry_renews_and_reconnects_with_the_new_certificate(
    system: tuple[httpx.Client, Services], tmp_path: Path
) -> None:
    client, services = system
    pki = DevicePki(services.settings.data_dir / "pki")
    f = pki.folder
    broker = DevBroker(tmp_path / "mosquitto",
                       tls=BrokerTls(f / "device-ca.pem", f / "broker.pem", f / "broker.key",
                                     pki.crl_path)).start()  # fmt: skip
    # 36 s lifetime, 11 s left: due (less than a third), and soon expired for real.
    files = _identity(tmp_path / "agent", pki, "cam-1", timedelta(seconds=36),
                      timedelta(seconds=25))  # fmt: skip
    old = x509.load_pem_x509_certificate(files.cert.read_bytes())
    (tmp_path / "old.pem").write_bytes(files.cert.read_bytes())
    (tmp_path / "old.key").write_bytes(files.key.read_bytes())
    hints: queue.Queue[Hint] = queue.Queue(maxsize=64)
    link = MqttLink("cam-1", "localhost", broker.port, hints, reconnect_delay=(1, 1),
                    tls=TlsSettings(files.ca, files.cert, files.key))  # fmt: skip
    connects: list[int] = []
    link.on_settings = lambda: connects.append(1)  # called on every connect
    http = ControllerHttp(str(client.base_url), "cam-1")
    try:
        link.start()
        wait_for("the first connection, old certificate", lambda: connects)
        renewer = CertRenewer(http, "cam-1", files, link.reload_identity)
        assert renewer.check() is True
        wait_for("the reconnection after the renewal", lambda: len(connects) >= 2)
        new = x509.load_pem_x509_certificate(files.cert.read_bytes())
        assert new.serial_number != old.serial_number
        assert new.not_valid_after_utc - datetime.now(timezone.utc) > timedelta(days=300)
        assert files.key.read_bytes() != (tmp_path / "old.key").read_bytes()  # a new key
        assert renewer.check() is False  # not due any more

        # Once the old certificate has expired the broker refuses it; the agent, which
        # reconnects after a broker restart, must be presenting the new one.
        expired = old.not_valid_after_utc + timedelta(seconds=1)
        wait_for("the old certificate to expire",
                 lambda: datetime.now(timezone.utc) > expired, timeout=30)  # fmt: skip
        broker.restart()
        assert _handshake_refused(broker.port, tmp_path / "old.pem", tmp_path / "old.key",
                                  files.ca)  # fmt: skip
        wait_for("the reconnection after the broker restart", lambda: len(connects) >= 3)
    finally:
        link.stop()
        http.close()
        broker.stop()
    audit = client.get("/v1/audit", headers=bearer(services, "viewer")).json()["data"]
    assert ("device:cam-1", "renew-cert", "device:cam-1") in {
        (a["actor"], a["action"], a["target"]) for a in audit
    }


def _signed(files: IdentityFiles, device: str, signer: ec.EllipticCurvePrivateKey,
            signed_at: datetime) -> dict[str, str]:  # fmt: skip
    csr = make_csr(ec.generate_private_key(ec.SECP256R1()), device)
    at = signed_at.isoformat()
    sig = signer.sign(renewal_message(device, at, csr), ec.ECDSA(hashes.SHA256()))
    return {"cert": files.cert.read_text(), "csr": csr.decode(), "signed_at": at,
            "signature": base64.b64encode(sig).decode()}  # fmt: skip


def test_a_revoked_or_impostor_device_cannot_renew(
    system: tuple[httpx.Client, Services], tmp_path: Path
) -> None:
    client, services = system
    url = str(client.base_url)
    answer = client.post("/v1/enroll-tokens", json={"device_id": "cam-2"},
                         headers=bearer(services, "operator"))  # fmt: skip
    ident = enroll(url, "cam-2", tmp_path / "agent", answer.json()["token"])
    files = IdentityFiles(ident.cert, ident.key, ident.ca)
    http = ControllerHttp(url, "cam-2")
    try:
        renew(http, "cam-2", files, datetime.now(timezone.utc))  # an enrolled device may
        # A device whose clock is a day off signs again with the controller's Date.
        renew(http, "cam-2", files, datetime.now(timezone.utc) - timedelta(days=1))
        now = datetime.now(timezone.utc)
        # Holding the certificate is not enough: the current key must sign.
        forged = _signed(files, "cam-2", ec.generate_private_key(ec.SECP256R1()), now)
        refused = client.post("/v1/devices/cam-2/certificate", json=forged)
        assert refused.status_code == 400 and "not signed by" in refused.json()["detail"]
        # A signature from yesterday is refused (a captured request cannot be replayed).
        from cryptography.hazmat.primitives import serialization

        key = serialization.load_pem_private_key(files.key.read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        stale = _signed(files, "cam-2", key, now - timedelta(days=1))
        refused = client.post("/v1/devices/cam-2/certificate", json=stale)
        assert refused.status_code == 400 and "signed_at" in refused.json()["detail"]
        # Another device's name with cam-2's certificate and key.
        other = _signed(files, "cam-3", key, now)
        refused = client.post("/v1/devices/cam-3/certificate", json=other)
        assert refused.status_code == 400 and "another device" in refused.json()["detail"]

        revoked = client.post("/v1/devices/cam-2/revoke", headers=bearer(services, "admin"))
        assert revoked.status_code == 200, revoked.text
        before = files.cert.read_bytes(), files.key.read_bytes()
        with pytest.raises(TrustError, match="revoked"):
            renew(http, "cam-2", files, datetime.now(timezone.utc))
        assert (files.cert.read_bytes(), files.key.read_bytes()) == before
    finally:
        http.close()


def _enrolled(services: Services, tmp_path: Path) -> tuple[DevicePki, IdentityFiles]:
    from edgefleet.controller.models.devices import DeviceCert

    pki = DevicePki(services.settings.data_dir / "pki")
    pki.init(("localhost",))
    files = _identity(tmp_path / "agent", pki, "cam-4", timedelta(days=365), timedelta(days=300))
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    with Session(services.engine) as session:
        session.add(DeviceCert(serial=str(cert.serial_number), device_id="cam-4",
                               pem=files.cert.read_text()))  # fmt: skip
        session.commit()
    return pki, files


def _proof(files: IdentityFiles) -> Any:
    from cryptography.hazmat.primitives import serialization
    from edgefleet.controller.enrollment import Proof

    key = serialization.load_pem_private_key(files.key.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    now = datetime.now(timezone.utc)
    body = _signed(files, "cam-4", key, now)
    return Proof(body["cert"].encode(), body["csr"].encode(), body["signed_at"],
                 base64.b64decode(body["signature"]), now)  # fmt: skip


def _all_revoked(services: Services, pki: DevicePki) -> bool:
    from edgefleet.controller.models.devices import DeviceCert
    from sqlmodel import select

    with Session(services.engine) as session:
        serials = session.exec(select(DeviceCert.serial)).all()
    crl = x509.load_pem_x509_crl(pki.crl_path.read_bytes())
    return len(serials) == 2 and all(
        crl.get_revoked_certificate_by_serial_number(int(s)) is not None for s in serials
    )


def test_a_revoke_while_the_renewal_is_signed_revokes_the_new_certificate(
    services: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgefleet.controller.enrollment import renew_certificate, revoke_device

    pki, files = _enrolled(services, tmp_path)
    sign = pki.sign_csr

    def sign_while_revoked(csr: bytes, device_id: str) -> bytes:
        with Session(services.engine) as other:  # the admin's request, in between
            revoke_device(other, pki, device_id, "admin")
        return sign(csr, device_id)

    monkeypatch.setattr(pki, "sign_csr", sign_while_revoked)
    with Session(services.engine) as session, pytest.raises(TrustError, match="revoked"):
        renew_certificate(session, pki, "cam-4", _proof(files))
    assert _all_revoked(services, pki)


def test_a_renewal_while_the_revoke_runs_is_revoked_with_the_rest(
    services: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgefleet.controller.enrollment import renew_certificate, revoke_device

    pki, files = _enrolled(services, tmp_path)
    revoke, renewed = pki.revoke, []

    def revoke_after_a_renewal(pem: bytes, device_id: str) -> None:
        if not renewed:  # the device's renewal lands after revoke_device read the certs
            with Session(services.engine) as other:
                renewed.append(renew_certificate(other, pki, "cam-4", _proof(files)))
        revoke(pem, device_id)

    monkeypatch.setattr(pki, "revoke", revoke_after_a_renewal)
    with Session(services.engine) as session:
        serials = revoke_device(session, pki, "cam-4", "admin")
    assert renewed and len(serials) == 2
    assert _all_revoked(services, pki)
