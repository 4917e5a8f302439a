"""The device PKI: a device CA, the broker's and controller's certificates, and a CRL.

Layout of ``DATA/pki/`` (``edgefleet pki init``)::

    device-ca.pem / device-ca.key     the CA that signs device, broker and controller certs
    broker.pem / broker.key           server cert of Mosquitto (SAN: the broker host names)
    controller.pem / controller.key   client cert of the controller (CN edgefleet-controller)
    device-ca.crl                     revoked device certificates, read by Mosquitto
    revoked.json                      serial -> device id, the source of the CRL

A device certificate's CN is its device id: Mosquitto's ``use_identity_as_username``
turns it into the MQTT username that the ACL patterns (``%u``) check. Keys are EC P-256,
written 0600 with the durable write of ``shared/durable.py``. Pure functions over
``cryptography`` objects plus a small :class:`DevicePki` facade for the folder.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from edgefleet.shared.durable import fsync_dir, write_bytes
from edgefleet.shared.errors import ConfigError, TrustError
from edgefleet.shared.topics import validate_device_id

log = logging.getLogger(__name__)

CONTROLLER_CN = "edgefleet-controller"  # the user the broker ACL grants fleet topics
# Service identities (controller, replicas, broker, bridges) all start with this; no device
# may be enrolled under such a name, or its certificate would get the service's broker rights.
SERVICE_PREFIX = "edgefleet-"
# The marker every service certificate carries (OU), and only they: :func:`issue` refuses a
# reserved CN without it and the marker on any other CN, so for every certificate this CA
# signs "CN starts with edgefleet-" and "is a service" are the same thing. Mosquitto 2.0's
# acl_file can only key on the username (= CN, use_identity_as_username); that is why the
# controller's ACL user is a reserved CN and the CA, not the broker, enforces the marker.
SERVICE_OU = "edgefleet-service"


def replica_cn(name: str) -> str:
    """The broker identity (CN, hence username and client id) of controller replica ``name``."""
    return f"{CONTROLLER_CN}-{validate_device_id(name)}"


def device_identity(device_id: str) -> str:
    """``device_id`` when it may name a device certificate; TrustError for a service name."""
    validate_device_id(device_id)
    if device_id.lower().startswith(SERVICE_PREFIX):
        raise TrustError(
            f"device id {device_id!r} is reserved: names starting {SERVICE_PREFIX!r} are "
            "service identities (controller, broker, replicas)",
            device_id=device_id,
        )
    return device_id


CA_LIFETIME = timedelta(days=3650)
CERT_LIFETIME = timedelta(days=365)
CRL_LIFETIME = timedelta(days=30)  # re-issued on every revoke, by `pki crl` and the controller
# The controller re-signs the CRL when less than this is left: a broker holding an expired
# CRL refuses every certificate, the controller's included, and locks the fleet out.
CRL_RENEW_BEFORE = timedelta(days=20)
CRL_CHECK_INTERVAL = 3600.0  # seconds between the controller's looks at the CRL's expiry

Key = ec.EllipticCurvePrivateKey


def new_key() -> Key:
    return ec.generate_private_key(ec.SECP256R1())


def _name(cn: str, service: bool = False) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edgefleet")]
    if service:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, SERVICE_OU))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def is_reserved(cn: str) -> bool:
    """True for a service identity's name (controller, replicas, broker, bridges)."""
    return cn.lower().startswith(SERVICE_PREFIX)


def is_service_certificate(cert: x509.Certificate) -> bool:
    """A reserved CN carrying the service marker: what the CA issues to services only."""
    subject = cert.subject
    cns = subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    ous = subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    return (len(cns) == 1 and is_reserved(str(cns[0].value))
            and [str(o.value) for o in ous] == [SERVICE_OU])  # fmt: skip


def make_ca(
    key: Key, cn: str = "edgefleet device CA", now: datetime | None = None
) -> x509.Certificate:
    now = now or datetime.now(timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )


def issue(
    ca_cert: x509.Certificate,
    ca_key: Key,
    public_key: ec.EllipticCurvePublicKey,
    cn: str,
    *,
    server_names: Sequence[str] = (),
    client: bool = True,
    not_before: datetime | None = None,
    lifetime: timedelta = CERT_LIFETIME,
    service: bool = False,
) -> x509.Certificate:
    """A leaf certificate for ``cn``: a TLS client cert, or a server cert with SANs.

    ``service`` adds the service marker (OU); it is required for a reserved CN and refused
    for any other, so no device certificate can carry a service's name or marker.
    """
    if is_reserved(cn) and not service:
        raise TrustError(f"certificate CN {cn!r} is reserved: names starting "
                         f"{SERVICE_PREFIX!r} are service identities")  # fmt: skip
    if service and not is_reserved(cn):
        raise TrustError(f"service certificate CN {cn!r} must start with {SERVICE_PREFIX!r}")
    start = not_before or datetime.now(timezone.utc) - timedelta(minutes=5)
    usage = [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
    if server_names:
        usage.append(ExtendedKeyUsageOID.SERVER_AUTH)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn, service))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + lifetime)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
    )
    if server_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(_sans(server_names)), False)
    return builder.sign(ca_key, hashes.SHA256())


def _sans(names: Sequence[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for n in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            out.append(x509.DNSName(n))
    return out


def make_crl(
    ca_cert: x509.Certificate, ca_key: Key, serials: Sequence[int], now: datetime | None = None
) -> x509.CertificateRevocationList:
    now = now or datetime.now(timezone.utc)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - timedelta(minutes=5))
        .next_update(now + CRL_LIFETIME)
    )
    for serial in serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build()
        )
    return builder.sign(ca_key, hashes.SHA256())


def key_pem(key: Key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def make_csr(key: Key, device_id: str) -> x509.CertificateSigningRequest:
    """What a device sends to enroll: its own key never leaves it."""
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(_name(validate_device_id(device_id)))
        .sign(key, hashes.SHA256())
    )


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


class DevicePki:
    """The ``DATA/pki/`` folder: create it once, then issue and revoke device certs."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @property
    def ca_path(self) -> Path:
        return self.folder / "device-ca.pem"

    @property
    def crl_path(self) -> Path:
        return self.folder / "device-ca.crl"

    def exists(self) -> bool:
        return self.ca_path.exists()

    def init(self, broker_names: Sequence[str] = ("localhost", "127.0.0.1")) -> None:
        """Create the CA, broker and controller certs and an empty CRL; refuse to overwrite."""
        if self.exists():
            raise ConfigError(f"{self.folder} already holds a device CA; refusing to replace it")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.folder.chmod(0o700)
        ca_key = new_key()
        ca = make_ca(ca_key)
        self._write_key("device-ca.key", ca_key)
        write_bytes(self.ca_path, cert_pem(ca))
        self.issue_pair("broker", "edgefleet-broker", server_names=broker_names, client=False,
                        service=True)  # fmt: skip
        self.issue_pair("controller", CONTROLLER_CN, service=True)
        write_bytes(self.folder / "revoked.json", b"{}")
        self._write_crl({})

    def issue_pair(
        self,
        stem: str,
        cn: str,
        *,
        server_names: Sequence[str] = (),
        client: bool = True,
        not_before: datetime | None = None,
        lifetime: timedelta = CERT_LIFETIME,
        service: bool = False,
    ) -> Issued:
        """A new key and certificate ``<stem>.key`` / ``<stem>.pem`` signed by the CA."""
        ca, ca_key = self._ca()
        key = new_key()
        cert = issue(ca, ca_key, key.public_key(), cn, server_names=server_names,
                     client=client, not_before=not_before, lifetime=lifetime,
                     service=service)  # fmt: skip
        issued = Issued(self.folder / f"{stem}.pem", self.folder / f"{stem}.key")
        self._write_key(issued.key.name, key)
        write_bytes(issued.cert, cert_pem(cert))
        return issued

    def issue_replica(self, name: str) -> Issued:
        """``controller-<name>.pem`` / ``.key``: a controller replica's own broker identity,
        so replicas never take each other's session (``controller serve --replica NAME``)."""
        return self.issue_pair(f"controller-{name}", replica_cn(name), service=True)

    def sign_csr(self, csr_pem: bytes, device_id: str) -> bytes:
        """The device's certificate (PEM) for its CSR; CN is forced to ``device_id``.

        Nothing of the CSR's subject is copied (no OU, so never the service marker), and a
        reserved ``device_id`` is refused."""
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as e:
            raise TrustError(f"not a PEM certificate signing request: {e}") from e
        if not csr.is_signature_valid:
            raise TrustError("the CSR's signature does not verify", device_id=device_id)
        public = csr.public_key()
        if not isinstance(public, ec.EllipticCurvePublicKey):
            raise TrustError("device keys must be EC P-256", device_id=device_id)
        ca, ca_key = self._ca()
        return cert_pem(issue(ca, ca_key, public, device_identity(device_id)))

    def revoke(self, cert_pem_bytes: bytes, device_id: str) -> None:
        cert = x509.load_pem_x509_certificate(cert_pem_bytes)
        revoked = self.revoked()
        revoked[str(cert.serial_number)] = device_id
        write_bytes(self.folder / "revoked.json", json.dumps(revoked, indent=1).encode())
        self._write_crl(revoked)

    def revoked(self) -> dict[str, str]:
        path = self.folder / "revoked.json"
        data: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
        return data

    def is_revoked(self, cert: x509.Certificate) -> bool:
        return str(cert.serial_number) in self.revoked()

    def _write_crl(self, revoked: dict[str, str], now: datetime | None = None) -> None:
        ca, ca_key = self._ca()
        crl = make_crl(ca, ca_key, [int(s) for s in revoked], now)
        write_bytes(self.crl_path, crl.public_bytes(serialization.Encoding.PEM))

    def crl_next_update(self) -> datetime | None:
        """When the CRL on disk expires; None when there is none or it cannot be read."""
        try:
            crl = x509.load_pem_x509_crl(self.crl_path.read_bytes())
        except (OSError, ValueError):
            return None
        return crl.next_update_utc

    def renew_crl(self, now: datetime | None = None) -> datetime:
        """Re-sign the CRL with the same revoked serials; its new expiry."""
        self._write_crl(self.revoked(), now)
        renewed = self.crl_next_update()
        assert renewed is not None  # just written
        return renewed

    def renew_crl_if_due(self, now: datetime, before: timedelta = CRL_RENEW_BEFORE) -> bool:
        """Re-sign when the CRL expires within ``before`` (or is missing); True if it did."""
        expires = self.crl_next_update()
        if expires is not None and expires - now > before:
            return False
        self.renew_crl(now)
        return True

    def status(self) -> list[tuple[str, str, datetime | None]]:
        """(what, file, expiry) of the CA, the CRL and the service certificates."""
        rows: list[tuple[str, str, datetime | None]] = []
        replicas = [(f"replica {p.stem.removeprefix('controller-')}", p.name)
                    for p in sorted(self.folder.glob("controller-*.pem"))]  # fmt: skip
        for what, name in (("device CA", "device-ca.pem"), ("broker", "broker.pem"),
                           ("controller", "controller.pem"), *replicas):  # fmt: skip
            path = self.folder / name
            try:
                cert = x509.load_pem_x509_certificate(path.read_bytes())
            except (OSError, ValueError):
                rows.append((what, str(path), None))
                continue
            rows.append((what, str(path), cert.not_valid_after_utc))
        rows.append(("CRL", str(self.crl_path), self.crl_next_update()))
        return rows

    def renew_service(self, stem: str, lifetime: timedelta = CERT_LIFETIME,
                      rotate_key: bool = False) -> datetime:  # fmt: skip
        """Re-issue ``<stem>.pem`` from the CA: same subject (CN, service marker), SANs and
        usages, the same key unless ``rotate_key``; each file keeps its owner and mode.
        Returns the new expiry."""
        cert_path, key_path = self.folder / f"{stem}.pem", self.folder / f"{stem}.key"
        finish_pair(key_path, cert_path)  # a renewal an interruption cut short
        try:
            old = x509.load_pem_x509_certificate(cert_path.read_bytes())
            old_key = serialization.load_pem_private_key(key_path.read_bytes(), None)
        except (OSError, ValueError) as e:
            raise ConfigError(f"no readable certificate and key {cert_path.name} / "
                              f"{key_path.name} in {self.folder}: {e}") from e  # fmt: skip
        if not isinstance(old_key, ec.EllipticCurvePrivateKey):
            raise ConfigError(f"{key_path} is not an EC key")
        if not is_service_certificate(old):
            raise ConfigError(f"{cert_path} is not a service certificate; devices renew "
                              "their own (the agent does, before expiry)")  # fmt: skip
        for path in (key_path, cert_path) if rotate_key else (cert_path,):
            check_owner(path)
        key = new_key() if rotate_key else old_key
        ca, ca_key = self._ca()
        cn = str(old.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)
        cert = issue(ca, ca_key, key.public_key(), cn, server_names=_san_names(old),
                     client=_is_client(old), lifetime=lifetime, service=True)  # fmt: skip
        replace_pair(key_path, key_pem(key) if rotate_key else None, cert_path, cert_pem(cert))
        return cert.not_valid_after_utc

    def service_stems(self) -> list[str]:
        """The service certificates of the folder: broker, controller, replicas."""
        return [s for s in ("broker", "controller") if (self.folder / f"{s}.pem").exists()] + [
            p.stem for p in sorted(self.folder.glob("controller-*.pem"))
        ]

    def _ca(self) -> tuple[x509.Certificate, Key]:
        try:
            ca = x509.load_pem_x509_certificate(self.ca_path.read_bytes())
            key = serialization.load_pem_private_key(
                (self.folder / "device-ca.key").read_bytes(), None
            )
        except (OSError, ValueError) as e:
            raise ConfigError(
                f"no usable device CA in {self.folder}: run `edgefleet pki init`"
            ) from e
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ConfigError(f"{self.folder}/device-ca.key is not an EC key")
        return ca, key

    def _write_key(self, name: str, key: Key) -> None:
        path = self.folder / name
        write_bytes(path, key_pem(key))
        path.chmod(0o600)


def _san_names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(n.value) for n in san if isinstance(n, (x509.DNSName, x509.IPAddress))]


def _is_client(cert: x509.Certificate) -> bool:
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return ExtendedKeyUsageOID.CLIENT_AUTH in list(eku)


def check_owner(path: Path) -> None:
    """ConfigError, before anything is written, when a renewed ``path`` could not keep its
    owner (only root may give a file to another user, e.g. mosquitto)."""
    import os

    st = path.stat()
    if (st.st_uid, st.st_gid) != (os.getuid(), os.getgid()) and os.geteuid() != 0:
        raise ConfigError(f"{path} belongs to uid {st.st_uid} gid {st.st_gid}: run as root "
                          "so the renewed file keeps its owner")  # fmt: skip


def replace_pair(key_path: Path, key_data: bytes | None, cert_path: Path, cert: bytes) -> None:
    """Replace a certificate (and its key, unless None) so that an interruption leaves a
    matching pair: both are staged as ``.next`` beside the old ones with the old owner and
    mode, the certificate last (the commit), then renamed over them (:func:`finish_pair`)."""
    for path in (key_path, cert_path) if key_data is not None else (cert_path,):
        check_owner(path)
    if key_data is not None:
        _stage(key_path, key_data)
    _stage(cert_path, cert)
    finish_pair(key_path, cert_path)


def finish_pair(key_path: Path, cert_path: Path) -> bool:
    """Rename a committed staged pair over the old one, or drop an uncommitted staged key;
    True if a pair was switched."""
    import os

    next_key, next_cert = _staged(key_path), _staged(cert_path)
    if not next_cert.exists():
        next_key.unlink(missing_ok=True)
        return False
    if next_key.exists():
        os.replace(next_key, key_path)  # noqa: PTH105 - the durable-write idiom
    os.replace(next_cert, cert_path)  # noqa: PTH105
    fsync_dir(cert_path.parent)
    return True


def _staged(path: Path) -> Path:
    return path.with_name(path.name + ".next")


def _stage(path: Path, data: bytes) -> None:
    import os

    st = path.stat()
    staged = _staged(path)
    write_bytes(staged, data)  # the temp file is 0600 until the chmod below
    if (st.st_uid, st.st_gid) != (os.getuid(), os.getgid()):
        os.chown(staged, st.st_uid, st.st_gid)
    staged.chmod(st.st_mode & 0o7777)


# What Mosquitto reads (deploy/mosquitto/mosquitto.conf), and the mode each gets in the
# broker's folder: Mosquitto 2.0 drops to its own user before it reads them, so they must be
# readable by that user, and the key by nobody else.
BROKER_FILES = {"device-ca.pem": 0o644, "broker.pem": 0o644, "broker.key": 0o440,
                "device-ca.crl": 0o644}  # fmt: skip
BROKER_DIR_MODE = 0o750


def owner_ids(spec: str) -> tuple[int, int]:
    """``USER[:GROUP]`` -> (uid, gid); the group defaults to the user's own. ConfigError
    for an unknown name."""
    import grp
    import pwd

    user, _, group = spec.partition(":")
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise ConfigError(f"--broker-user: no user {user!r} on this machine") from None
    if not group:
        return entry.pw_uid, entry.pw_gid
    try:
        return entry.pw_uid, grp.getgrnam(group).gr_gid
    except KeyError:
        raise ConfigError(f"--broker-user: no group {group!r} on this machine") from None


def export_broker_files(pki: DevicePki, dest: Path, owner: tuple[int, int]) -> list[Path]:
    """Copy the broker's CA, certificate, key and CRL to ``dest``, owned by ``owner``
    (uid, gid), the folder 0750 and the key 0440 (BROKER_FILES)."""
    import os

    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for name, mode in BROKER_FILES.items():
        target = dest / name
        write_bytes(target, (pki.folder / name).read_bytes())
        os.chown(target, *owner)
        target.chmod(mode)
        written.append(target)
    os.chown(dest, *owner)
    dest.chmod(BROKER_DIR_MODE)
    return written


def acl_with_user(acl: str, cn: str) -> str | None:
    """The broker ACL (deploy/mosquitto/edgefleet.acl) with a block for ``cn`` that grants
    exactly the rules of the ``user edgefleet-controller`` block; None if ``cn`` already
    has a block. Mosquitto matches ACL user names exactly, so every replica needs one."""
    lines = acl.splitlines()
    if any(ln.split() == ["user", cn] for ln in lines):
        return None
    try:
        start = next(i for i, ln in enumerate(lines) if ln.split() == ["user", CONTROLLER_CN])
    except StopIteration:
        raise ConfigError(f"the ACL has no 'user {CONTROLLER_CN}' block to copy") from None
    rules = []
    for ln in lines[start + 1 :]:
        if ln.split()[:1] in (["user"], ["pattern"]):
            break
        if ln.split()[:1] == ["topic"]:
            rules.append(ln)
    block = [f"user {cn}", *rules]
    return acl.rstrip("\n") + "\n\n" + "\n".join(block) + "\n"


def add_acl_user(acl_file: Path, cn: str) -> bool:
    """Add ``cn``'s block to ``acl_file`` in place (owner and mode kept); False if present."""
    import os

    new = acl_with_user(read_acl(acl_file), cn)
    if new is None:
        return False
    st = acl_file.stat()
    write_bytes(acl_file, new.encode())
    os.chown(acl_file, st.st_uid, st.st_gid)
    acl_file.chmod(st.st_mode & 0o7777)
    return True


def read_acl(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as e:
        raise ConfigError(f"--acl: cannot read {path}: {e.strerror}") from e


class CrlRenewer:
    """The controller's thread that keeps the CRL from expiring (checked every hour)."""

    def __init__(
        self,
        pki: DevicePki,
        interval: float = CRL_CHECK_INTERVAL,  # seconds
        clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    ) -> None:
        self.pki, self.interval, self.clock = pki, interval, clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="crl-renew", daemon=True)
        self.renewals = 0

    def start(self) -> None:
        if self.pki.exists():  # no PKI (plain mqtt://, no enrollment): nothing to renew
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def check(self) -> bool:
        try:
            renewed = self.pki.renew_crl_if_due(self.clock())
        except (ConfigError, OSError) as e:
            log.error("cannot renew the device CRL: %s", e)  # noqa: TRY400 - one line
            return False
        if renewed:
            self.renewals += 1
            log.warning("device CRL re-signed before it expires: %s (SIGHUP the broker)",
                        self.pki.crl_path)  # fmt: skip
        return renewed

    def _run(self) -> None:
        while not self._stop.is_set():
            self.check()
            self._stop.wait(self.interval)
