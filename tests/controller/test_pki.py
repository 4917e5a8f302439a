"""controller/pki.py: CSR signing forces the CN, bad CSRs refused, revocation lands in the CRL."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from edgefleet.controller.pki import DevicePki, make_csr, new_key
from edgefleet.shared.errors import ConfigError, TrustError


def test_csr_signed_with_cn_forced_to_device_id_and_revoked(tmp_path: Path) -> None:
    pki = DevicePki(tmp_path / "pki")
    pki.init()
    csr = make_csr(new_key(), "cam-a").public_bytes(serialization.Encoding.PEM)
    cert_pem = pki.sign_csr(csr, "cam-b")  # the token said cam-b: the CSR's name is ignored
    cert = x509.load_pem_x509_certificate(cert_pem)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "cam-b"
    assert not pki.is_revoked(cert)
    pki.revoke(cert_pem, "cam-b")
    crl = x509.load_pem_x509_crl(pki.crl_path.read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None
    assert pki.is_revoked(cert)
    with pytest.raises(TrustError):
        pki.sign_csr(b"not a csr", "cam-c")
    with pytest.raises(ConfigError):
        pki.init()


def _ou(cert: x509.Certificate) -> list[str]:
    return [
        str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    ]


def test_service_certificates_carry_the_marker_and_device_certificates_never_do(
    tmp_path: Path,
) -> None:
    from edgefleet.controller.pki import SERVICE_OU, is_service_certificate

    pki = DevicePki(tmp_path / "pki")
    pki.init()
    for stem in ("controller", "broker"):
        cert = x509.load_pem_x509_certificate((pki.folder / f"{stem}.pem").read_bytes())
        assert _ou(cert) == [SERVICE_OU] and is_service_certificate(cert)
    # A CSR that asks for the marker and the controller's name gets neither: the subject is
    # built from the token's device id alone.
    rogue = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, SERVICE_OU),
                    x509.NameAttribute(NameOID.COMMON_NAME, "edgefleet-controller"),
                ]
            )
        )
        .sign(new_key(), hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    cert = x509.load_pem_x509_certificate(pki.sign_csr(rogue, "cam-9"))
    assert _ou(cert) == [] and not is_service_certificate(cert)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "cam-9"
    # No issuance path gives a reserved name without the marker, or the marker to a device.
    with pytest.raises(TrustError, match="reserved"):
        pki.issue_pair("x", "edgefleet-controller")
    with pytest.raises(TrustError, match="must start with"):
        pki.issue_pair("y", "cam-9", service=True)
    replica = pki.issue_pair("replica", "edgefleet-controller-r2", service=True)
    assert is_service_certificate(x509.load_pem_x509_certificate(replica.cert.read_bytes()))


def test_pki_issue_refuses_a_service_name_in_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    DevicePki(tmp_path / "pki").init()
    out = subprocess.run([sys.executable, "-m", "edgefleet", "pki", "issue", "--data",
                          str(tmp_path), "edgefleet-controller"],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode != 0
    assert "reserved" in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
