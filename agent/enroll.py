"""``edgefleet agent enroll``: the device's own key, a CSR, and the trust it is handed back.

The key is made here and never leaves the device. The controller answers (``POST
/v1/enroll``) with the certificate (CN = device id), the device CA and the bootstrap TUF
roots; they are written durably into the agent's data folder::

    data_dir/identity/device.key   EC P-256, 0600
    data_dir/identity/device.pem   this device's certificate
    data_dir/identity/ca.pem       the device CA: pins the broker (and an https controller)
    data_dir/identity/upload-token the sample-upload credential (Bearer), 0600
    data_dir/trust/image-root.json, director-root.json   pinned roots: no trust on first use
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from edgefleet.shared.durable import write_bytes
from edgefleet.shared.errors import TransportError, TrustError
from edgefleet.shared.topics import validate_device_id

TIMEOUT_S = 30.0  # seconds for the whole enrollment request


@dataclass(frozen=True)
class Identity:
    key: Path
    cert: Path
    ca: Path
    upload_token: Path | None = None  # None: the controller issued no upload credential


UPLOAD_TOKEN_FILE = "upload-token"  # noqa: S105 - a file name under data_dir/identity/


def read_upload_token(data_dir: Path) -> str | None:
    """The sample-upload credential from enrollment, or None (not enrolled, or unreadable)."""
    try:
        text = (data_dir / "identity" / UPLOAD_TOKEN_FILE).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text or None


def make_csr(key: ec.EllipticCurvePrivateKey, device_id: str) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, validate_device_id(device_id))])
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


def check_answer(answer: dict[str, Any], key: ec.EllipticCurvePrivateKey, device_id: str) -> None:
    """The certificate is ours (our key, our id) and chains to the CA we are handed."""
    try:
        cert = x509.load_pem_x509_certificate(str(answer["cert"]).encode())
        ca = x509.load_pem_x509_certificate(str(answer["ca"]).encode())
        cert.verify_directly_issued_by(ca)
    except (KeyError, ValueError, TypeError) as e:
        raise TrustError(f"enrollment answer refused: {e}", device_id=device_id) from e
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not cns or cns[0].value != device_id:
        raise TrustError("the certificate names another device", device_id=device_id)
    mine = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    theirs = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if mine != theirs:
        raise TrustError("the certificate is not for this device's key", device_id=device_id)
    for field in ("image_root", "director_root"):
        _check_root(str(answer.get(field, "")), field, device_id)


def _check_root(text: str, field: str, device_id: str) -> None:
    from tuf.api.exceptions import RepositoryError
    from tuf.api.metadata import Metadata

    try:
        md: Metadata[Any] = Metadata.from_bytes(text.encode())
        if md.signed.type != "root":
            raise TrustError(f"{field} is not root metadata", device_id=device_id)
        md.verify_delegate("root", md)
    except (RepositoryError, ValueError) as e:
        raise TrustError(f"{field} refused: {e}", device_id=device_id) from e


def write_identity(
    data_dir: Path, key: ec.EllipticCurvePrivateKey, answer: dict[str, Any]
) -> Identity:
    ident = data_dir / "identity"
    ident.mkdir(parents=True, exist_ok=True)
    ident.chmod(0o700)
    out = Identity(ident / "device.key", ident / "device.pem", ident / "ca.pem")
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_bytes(out.key, pem)
    out.key.chmod(0o600)
    write_bytes(out.cert, str(answer["cert"]).encode())
    write_bytes(out.ca, str(answer["ca"]).encode())
    upload_token = str(answer.get("upload_token") or "").strip()
    if upload_token:
        path = ident / UPLOAD_TOKEN_FILE
        write_bytes(path, upload_token.encode())
        path.chmod(0o600)
        out = Identity(out.key, out.cert, out.ca, path)
    trust = data_dir / "trust"
    trust.mkdir(parents=True, exist_ok=True)
    write_bytes(trust / "image-root.json", str(answer["image_root"]).encode())
    write_bytes(trust / "director-root.json", str(answer["director_root"]).encode())
    return out


def post_enroll(controller_url: str, token: str, csr: bytes, ca: Path | None) -> dict[str, Any]:
    import urllib3

    url = f"{controller_url.rstrip('/')}/v1/enroll"
    pool = urllib3.PoolManager(ca_certs=str(ca) if ca else None, retries=False,
                               timeout=urllib3.Timeout(total=TIMEOUT_S))  # fmt: skip
    try:
        response = pool.request("POST", url, json={"token": token, "csr": csr.decode()})
    except urllib3.exceptions.HTTPError as e:
        raise TransportError(f"cannot reach the controller at {url}: {e}") from e
    finally:
        pool.clear()  # one request: no idle connection left to the controller
    try:
        body = json.loads(response.data)
    except ValueError:
        body = {}
    if response.status != 200:
        detail = body.get("detail") if isinstance(body, dict) else None
        raise TrustError(f"enrollment refused: {detail or response.status}")
    if not isinstance(body, dict):
        raise TrustError("enrollment answer is not a JSON object")
    return body


def enroll(
    controller_url: str, device_id: str, data_dir: Path, token: str, ca: Path | None = None
) -> Identity:
    key = ec.generate_private_key(ec.SECP256R1())
    answer = post_enroll(controller_url, token, make_csr(key, device_id), ca)
    check_answer(answer, key, device_id)
    return write_identity(data_dir, key, answer)
