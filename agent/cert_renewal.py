"""The agent renews its own certificate before it expires, so no device is locked out.

When less than a third of the certificate's lifetime is left (:data:`RENEW_FRACTION`) the
agent makes a new key, sends a CSR for it to ``POST /v1/devices/{id}/certificate`` signed
with its *current* key (shared/renewal.py: the controller checks the current certificate
is its CA's, names this device, is valid and not revoked), checks the answer against the
CA it already pins, and switches to the new pair crash-safely:

1. ``device.key.next`` then ``device.pem.next`` are written durably beside the old pair;
   the second write is the commit point.
2. ``device.key.next`` is renamed over ``device.key``, then ``device.pem.next`` over
   ``device.pem``.

A crash anywhere leaves either the old pair, or a committed ``.next`` certificate that
:func:`recover` (run at start and before each renewal) finishes switching to: the pair on
disk always matches. Then the MQTT link reloads its TLS identity and reconnects.
"""

from __future__ import annotations

import base64
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from edgefleet.agent.backoff import Backoff
from edgefleet.agent.enroll import make_csr
from edgefleet.shared.durable import fsync_dir, write_bytes
from edgefleet.shared.errors import TransportError, TrustError
from edgefleet.shared.renewal import RENEW_FRACTION, renewal_message

log = logging.getLogger(__name__)

CHECK_INTERVAL_S = 3600.0  # seconds between looks at the certificate's expiry
RETRY_S = (60.0, 3600.0)  # seconds: backoff after a failed renewal, first and at most


@dataclass(frozen=True)
class IdentityFiles:
    cert: Path  # PEM: this device's certificate (config tls.cert)
    key: Path  # PEM: its key (config tls.key)
    ca: Path  # PEM: the device CA the agent pins (config tls.ca)

    @property
    def next_cert(self) -> Path:
        return self.cert.with_name(self.cert.name + ".next")

    @property
    def next_key(self) -> Path:
        return self.key.with_name(self.key.name + ".next")


def renewal_due(cert: x509.Certificate, now: datetime, fraction: float = RENEW_FRACTION) -> bool:
    """True when less than ``fraction`` of the certificate's lifetime is left."""
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    return (end - now) < (end - start) * fraction


def recover(files: IdentityFiles) -> str:
    """Finish or undo a switch a crash interrupted: "none", "finished" or "discarded"."""
    if not files.next_cert.exists():  # not committed: the old pair is whole
        if files.next_key.exists():
            files.next_key.unlink()
            return "discarded"
        return "none"
    key = files.next_key if files.next_key.exists() else files.key
    if not _pair_matches(files.next_cert, key):  # not ours (should not happen): keep the old
        files.next_cert.unlink()
        files.next_key.unlink(missing_ok=True)
        return "discarded"
    _switch(files)
    return "finished"


def install(files: IdentityFiles, key_pem: bytes, cert_pem: bytes) -> None:
    """Write the new pair beside the old one, commit, switch (see the module docstring)."""
    write_bytes(files.next_key, key_pem)  # a 0600 temp file renamed: never readable by others
    files.next_key.chmod(0o600)
    write_bytes(files.next_cert, cert_pem)  # the commit point
    _switch(files)


def _switch(files: IdentityFiles) -> None:
    if files.next_key.exists():
        os.replace(files.next_key, files.key)  # noqa: PTH105 - the durable-write idiom
    os.replace(files.next_cert, files.cert)  # noqa: PTH105
    fsync_dir(files.key.parent)
    fsync_dir(files.cert.parent)


def _pair_matches(cert_path: Path, key_path: Path) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    except (OSError, ValueError, TypeError):
        return False
    return _spki(cert.public_key()) == _spki(key.public_key())


def _spki(public: Any) -> bytes:
    return bytes(
        public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


class HttpPoster(Protocol):
    """The one method of agent/controller_http.py's ControllerHttp used here."""

    def request(self, method: str, path: str, **kwargs: Any) -> Any: ...


def renew(http: HttpPoster, device_id: str, files: IdentityFiles, now: datetime) -> datetime:
    """One renewal: new key, signed request, answer checked, pair switched; the new expiry."""
    current_pem = files.cert.read_bytes()
    current_key = _load_key(files.key, device_id)
    key = ec.generate_private_key(ec.SECP256R1())
    csr = make_csr(key, device_id)
    path = f"/v1/devices/{device_id}/certificate"
    answer = http.request("POST", path, json=_body(device_id, current_pem, current_key, csr, now))
    server_now = _server_time(answer)
    if answer.status == 400 and "signed_at" in answer.detail() and server_now is not None:
        # This device's clock is off (no RTC, no NTP yet): sign with the controller's time
        # rather than never renew.
        body = _body(device_id, current_pem, current_key, csr, server_now)
        answer = http.request("POST", path, json=body)
    if answer.status != 200:
        raise TrustError(f"certificate renewal refused: {answer.detail()}", device_id=device_id)
    cert_pem = str(answer.json().get("cert", "")).encode()
    cert = _check_renewed(cert_pem, key, device_id, files.ca)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())  # fmt: skip
    install(files, key_pem, cert_pem)
    return cert.not_valid_after_utc


def _body(
    device_id: str, current_pem: bytes, current_key: ec.EllipticCurvePrivateKey, csr: bytes,
    at: datetime,
) -> dict[str, str]:  # fmt: skip
    signed_at = at.isoformat()
    signature = current_key.sign(renewal_message(device_id, signed_at, csr),
                                 ec.ECDSA(hashes.SHA256()))  # fmt: skip
    return {"cert": current_pem.decode(), "csr": csr.decode(), "signed_at": signed_at,
            "signature": base64.b64encode(signature).decode()}  # fmt: skip


def _server_time(answer: Any) -> datetime | None:
    """The controller's clock from the answer's Date header; None without one."""
    try:
        return parsedate_to_datetime(answer.headers["date"])
    except (KeyError, TypeError, ValueError):
        return None


def _load_key(path: Path, device_id: str) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), None)
    except (OSError, ValueError, TypeError) as e:
        raise TrustError(f"cannot read the device key {path}: {e}", device_id=device_id) from e
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TrustError(f"{path} is not an EC key", device_id=device_id)
    return key


def _check_renewed(
    pem: bytes, key: ec.EllipticCurvePrivateKey, device_id: str, ca_path: Path
) -> x509.Certificate:
    """The new certificate chains to the CA we already pin, names us and is for our key."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
        cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca_path.read_bytes()))
    except (OSError, ValueError, TypeError) as e:
        raise TrustError(f"renewed certificate refused: {e}", device_id=device_id) from e
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if [str(c.value) for c in cns] != [device_id]:
        raise TrustError("the renewed certificate names another device", device_id=device_id)
    if _spki(cert.public_key()) != _spki(key.public_key()):
        raise TrustError("the renewed certificate is not for the new key", device_id=device_id)
    return cert


class CertRenewer:
    """The agent's loop that renews the device certificate when it is due."""

    def __init__(
        self,
        http: HttpPoster,
        device_id: str,
        files: IdentityFiles,
        on_renewed: Callable[[], None],  # e.g. MqttLink.reload_identity
        clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    ) -> None:
        self.http, self.device_id, self.files = http, device_id, files
        self.on_renewed, self.clock = on_renewed, clock
        self.renewals = 0

    def check(self) -> bool:
        """Renew if due; True if it did. TrustError / TransportError when it failed."""
        recovered = recover(self.files)
        if recovered != "none":
            log.warning("device certificate switch %s after an interruption", recovered)
        cert = x509.load_pem_x509_certificate(self.files.cert.read_bytes())
        now = self.clock()
        if not renewal_due(cert, now):
            return False
        expires = renew(self.http, self.device_id, self.files, now)
        self.renewals += 1
        log.info("device certificate renewed; valid until %s", expires.isoformat())
        self.on_renewed()
        return True

    def run(self, stop: threading.Event, interval_s: float = CHECK_INTERVAL_S) -> None:
        backoff = Backoff(*RETRY_S)
        while not stop.is_set():
            try:
                self.check()
                backoff.ok()
                wait = interval_s
            except (TrustError, TransportError, OSError) as e:
                log.error("device certificate renewal failed: %s", e)  # noqa: TRY400 - one line
                wait = min(interval_s, backoff.fault())
            stop.wait(wait)
