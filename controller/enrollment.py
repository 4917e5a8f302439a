"""Device enrollment and revocation: one-time tokens, CSR signing, refusing revoked devices.

An operator makes a one-time token for a device id (``edgefleet device token ID``); the
device makes its own key and sends a CSR with the token (``edgefleet agent enroll``); the
controller signs it with the device CA (controller/pki.py, CN forced to the token's device
id) and answers with the certificate, the CA and the bootstrap TUF roots the agent pins.
``renew_certificate`` signs a new key's CSR for a device that proves it holds its current,
valid, unrevoked certificate's key (the agent does it before expiry: agent/cert_renewal.py).
``revoke_device`` puts the device's certificates in the CRL (the broker reads it on
restart / SIGHUP) and the controller stops serving and hearing the device at once
(:class:`RevokedDevices`, checked by the /tuf routes and the MQTT ingest).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from edgefleet.controller.models.audit import AuditEntry
from edgefleet.controller.models.devices import (
    DeviceCert,
    DeviceRevocation,
    EnrollToken,
    UploadCredential,
)
from edgefleet.controller.pki import DevicePki, device_identity
from edgefleet.controller.tokens import digest
from edgefleet.controller.trust import Signing
from edgefleet.shared.errors import NotFoundError, ProtocolError, TrustError
from edgefleet.shared.protocol import utcnow
from edgefleet.shared.renewal import MAX_SKEW_S, renewal_message
from edgefleet.shared.topics import parse_device_topic, validate_device_id
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

ENROLL_PREFIX = "efe_"  # a prefix, not a secret
UPLOAD_PREFIX = "efu_"  # a prefix, not a secret
DEFAULT_TTL = timedelta(hours=24)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Enrolled:
    device_id: str
    cert_pem: str
    ca_pem: str
    image_root: str  # JSON of the newest image root: the agent pins it
    director_root: str  # JSON of the device's newest director root
    upload_token: str = ""  # the device's sample-upload credential, shown this once


def create_enroll_token(
    session: Session, device_id: str, actor: str, ttl: timedelta = DEFAULT_TTL
) -> str:
    """A one-time token for ``device_id``; only its sha256 is stored."""
    device_identity(device_id)
    if session.get(DeviceRevocation, device_id) is not None:
        raise TrustError(f"device {device_id} is revoked", device_id=device_id)
    secret = ENROLL_PREFIX + secrets.token_urlsafe(24)
    session.add(EnrollToken(sha256=digest(secret), device_id=device_id,
                            expires_at=utcnow() + ttl, created_by=actor))  # fmt: skip
    session.add(AuditEntry(actor=actor, action="enroll-token", target=f"device:{device_id}",
                           detail={"expires_s": int(ttl.total_seconds())}))  # fmt: skip
    session.commit()
    return secret


def enroll(
    session: Session, pki: DevicePki, signing: Signing, secret: str, csr_pem: bytes
) -> Enrolled:
    """Redeem a token: sign the CSR (CN = the token's device id), hand out the trust roots."""
    row = session.get(EnrollToken, digest(secret))
    now = utcnow()
    if row is None or row.used_at is not None or _aware(row.expires_at) < now:
        raise TrustError("enrollment token unknown, used or expired")
    device_id = row.device_id
    if session.get(DeviceRevocation, device_id) is not None:
        raise TrustError(f"device {device_id} is revoked", device_id=device_id)
    cert_pem = pki.sign_csr(csr_pem, device_id)
    row.used_at = now
    serial = str(x509.load_pem_x509_certificate(cert_pem).serial_number)
    session.add(row)
    session.add(DeviceCert(serial=serial, device_id=device_id, pem=cert_pem.decode()))
    session.add(AuditEntry(actor=f"device:{device_id}", action="enroll",
                           target=f"device:{device_id}", detail={"serial": serial}))  # fmt: skip
    upload_token = _issue_upload_credential(session, device_id, now)
    signing.ensure_device(device_id)
    session.commit()
    return Enrolled(
        device_id,
        cert_pem.decode(),
        pki.ca_path.read_text(),
        signing.newest_root(signing.image_repo()),
        signing.newest_root(signing.director_repo(device_id)),
        upload_token,
    )


@dataclass(frozen=True)
class Renewed:
    device_id: str
    cert_pem: str
    ca_pem: str


@dataclass(frozen=True)
class Proof:
    """What a device sends to renew: its current certificate, a CSR for its new key, and
    the current key's signature over both (shared/renewal.py)."""

    current_pem: bytes
    csr_pem: bytes
    signed_at: str  # ISO 8601 with a zone, as the device signed it
    signature: bytes  # DER ECDSA over shared.renewal.renewal_message
    now: datetime


def renew_certificate(session: Session, pki: DevicePki, device_id: str, proof: Proof) -> Renewed:
    """A new certificate for the device's new key (its CSR), for a device that proves it
    holds the key of its current, still valid, unrevoked certificate. Audited."""
    device_identity(device_id)
    if session.get(DeviceRevocation, device_id) is not None:
        raise TrustError(f"device {device_id} is revoked", device_id=device_id)
    current = _valid_current(pki, device_id, proof.current_pem, proof.now)
    _check_proof(current, device_id, proof)
    cert_pem = pki.sign_csr(proof.csr_pem, device_id)
    cert = x509.load_pem_x509_certificate(cert_pem)
    if _spki(cert) == _spki(current):
        raise TrustError("the CSR reuses the current key: renew with a new key",
                         device_id=device_id)  # fmt: skip
    serial = str(cert.serial_number)
    session.add(DeviceCert(serial=serial, device_id=device_id, pem=cert_pem.decode()))
    session.add(AuditEntry(actor=f"device:{device_id}", action="renew-cert",
                           target=f"device:{device_id}",
                           detail={"serial": serial, "previous": str(current.serial_number),
                                   "expires": cert.not_valid_after_utc.isoformat()}))  # fmt: skip
    session.commit()
    session.expire_all()  # read again: a revoke may have committed while we signed
    if session.get(DeviceRevocation, device_id) is not None:
        pki.revoke(cert_pem, device_id)  # revoke_device read the certificates before ours
        raise TrustError(f"device {device_id} is revoked", device_id=device_id)
    return Renewed(device_id, cert_pem.decode(), pki.ca_path.read_text())


def _valid_current(pki: DevicePki, device_id: str, pem: bytes, now: datetime) -> x509.Certificate:
    try:
        cert = x509.load_pem_x509_certificate(pem)
        ca = x509.load_pem_x509_certificate(pki.ca_path.read_bytes())
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature) as e:
        raise TrustError(f"the current certificate is not one of this CA's: {e}",
                         device_id=device_id) from e  # fmt: skip
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if [str(c.value) for c in cns] != [device_id]:
        raise TrustError("the current certificate names another device", device_id=device_id)
    if not cert.not_valid_before_utc <= now < cert.not_valid_after_utc:
        raise TrustError("the current certificate has expired: enroll the device again",
                         device_id=device_id)  # fmt: skip
    if pki.is_revoked(cert):
        raise TrustError(f"device {device_id}'s certificate is revoked", device_id=device_id)
    return cert


def _check_proof(cert: x509.Certificate, device_id: str, proof: Proof) -> None:
    try:
        signed_at = datetime.fromisoformat(proof.signed_at)
    except ValueError:
        raise TrustError("signed_at is not an ISO 8601 time", device_id=device_id) from None
    if signed_at.tzinfo is None or abs((proof.now - signed_at).total_seconds()) > MAX_SKEW_S:
        raise TrustError(f"signed_at is more than {MAX_SKEW_S} s from the controller's clock",
                         device_id=device_id)  # fmt: skip
    public = cert.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise TrustError("device keys must be EC P-256", device_id=device_id)
    message = renewal_message(device_id, proof.signed_at, proof.csr_pem)
    try:
        public.verify(proof.signature, message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise TrustError("the renewal is not signed by the current certificate's key",
                         device_id=device_id) from None  # fmt: skip


def _spki(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _issue_upload_credential(session: Session, device_id: str, now: datetime) -> str:
    """A new upload credential for the device (a re-enrollment replaces the old one)."""
    secret = UPLOAD_PREFIX + secrets.token_urlsafe(32)
    row = session.get(UploadCredential, device_id) or UploadCredential(device_id=device_id,
                                                                       sha256="")  # fmt: skip
    row.sha256, row.created_at, row.revoked_at = digest(secret), now, None
    session.add(row)
    return secret


def upload_device(session: Session, secret: str) -> str | None:
    """The device whose live upload credential this is, or None (unknown or revoked)."""
    row = session.exec(select(UploadCredential).where(UploadCredential.sha256 == digest(secret)))
    cred: UploadCredential | None = row.first()  # .where() types as Any (sqlmodel)
    if cred is None or cred.revoked_at is not None:
        return None
    return cred.device_id


def is_enrolled(session: Session, device_id: str) -> bool:
    """Enrolled devices must always authenticate their uploads."""
    if session.get(UploadCredential, device_id) is not None:
        return True
    return (
        session.exec(select(DeviceCert).where(DeviceCert.device_id == device_id)).first()
        is not None
    )


def revoke_device(session: Session, pki: DevicePki, device_id: str, actor: str) -> list[str]:
    """Revoke every certificate of the device (CRL) and refuse it from now on."""
    validate_device_id(device_id)
    certs = session.exec(select(DeviceCert).where(DeviceCert.device_id == device_id)).all()
    legacy = pki.folder / f"device-{device_id}.pem"  # `pki issue` (dev) certificates
    pems = [c.pem.encode() for c in certs] + ([legacy.read_bytes()] if legacy.exists() else [])
    known = session.get(DeviceRevocation, device_id) is not None
    if not pems and not known:
        raise NotFoundError(f"no certificate issued to {device_id}", device_id=device_id)
    for pem in pems:
        pki.revoke(pem, device_id)
    if not known:
        session.add(DeviceRevocation(device_id=device_id, actor=actor))
    cred = session.get(UploadCredential, device_id)
    if cred is not None and cred.revoked_at is None:
        cred.revoked_at = utcnow()
        session.add(cred)
    session.add(AuditEntry(actor=actor, action="revoke", target=f"device:{device_id}",
                           detail={"certificates": len(pems)}))  # fmt: skip
    session.commit()
    # A renewal that committed its certificate after the read above, and looked for a
    # revocation before this commit, is caught here (renew_certificate looks again after).
    late = [c.pem.encode() for c in session.exec(select(DeviceCert).where(
        DeviceCert.device_id == device_id)).all() if c.pem.encode() not in pems]  # fmt: skip
    for pem in late:
        pki.revoke(pem, device_id)
    pems += late
    return [str(x509.load_pem_x509_certificate(p).serial_number) for p in pems]


class RevokedDevices:
    """Which devices are revoked: an immutable set, re-read from the database off the
    request path at most every ``ttl`` seconds.

    A lookup never touches the database and never waits: it reads the current frozenset
    and, when that is older than ``ttl``, starts one background read whose result is
    swapped in. Revocations are permanent, so the set only grows. The process that revokes
    calls :meth:`add`, so its own API and ingest refuse the device at once; other replicas
    within ``ttl`` plus one read. :meth:`load` reads synchronously once, at startup.
    """

    def __init__(
        self, engine: Engine, ttl: float = 2.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._engine = engine
        self._ttl = ttl  # seconds
        self._clock = clock
        self._lock = threading.Lock()  # guards the swap and the "read running" flag, no I/O
        self._ids: frozenset[str] = frozenset()
        self._read_at = clock()
        self._reading = False

    def load(self) -> None:
        """Read the revoked ids now (startup, before requests are served)."""
        self._swap_in(self._read())

    def add(self, device_id: str) -> None:
        self._swap_in(frozenset({device_id}))

    def __contains__(self, device_id: object) -> bool:
        if self._clock() - self._read_at > self._ttl:
            self._refresh_in_background()
        return device_id in self._ids  # one attribute read of an immutable set

    def _read(self) -> frozenset[str]:
        with Session(self._engine) as session:
            return frozenset(session.exec(select(DeviceRevocation.device_id)).all())

    def _swap_in(self, ids: frozenset[str]) -> None:
        with self._lock:
            self._ids = self._ids | ids

    def _refresh_in_background(self) -> None:
        with self._lock:
            if self._reading:
                return
            self._reading = True
        threading.Thread(target=self._refresh, name="revoked-refresh", daemon=True).start()

    def _refresh(self) -> None:
        try:
            self._swap_in(self._read())
        except Exception:  # the database is away: keep the set we have, retry after ttl
            log.warning("reading the revoked devices failed; retrying", exc_info=True)
        finally:
            with self._lock:
                self._read_at = self._clock()
                self._reading = False

    def filter(self, handler: Callable[[str, bytes], None]) -> Callable[[str, bytes], None]:
        """An MQTT handler that drops every message of a revoked device."""

        def handle(topic: str, payload: bytes) -> None:
            try:
                device_id = parse_device_topic(topic).device_id
            except ProtocolError:
                device_id = None
            if device_id is not None and device_id in self:
                return
            handler(topic, payload)

        return handle


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
