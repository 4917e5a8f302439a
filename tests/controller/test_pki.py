"""controller/pki.py: CSR signing forces the CN, bad CSRs refused, revocation lands in the CRL."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
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
