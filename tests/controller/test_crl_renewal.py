"""An expired CRL would make the broker refuse every certificate, the controller's too: the
controller re-signs it well before expiry, `pki crl` does it by hand, `pki status` shows it."""

from __future__ import annotations

import ssl
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography import x509
from edgefleet.controller.pki import CRL_LIFETIME, CRL_RENEW_BEFORE, CrlRenewer, DevicePki

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _crl_serials(pki: DevicePki) -> set[int]:
    crl = x509.load_pem_x509_crl(pki.crl_path.read_bytes())
    return {r.serial_number for r in crl}


def _revoked_pki(tmp_path: Path) -> tuple[DevicePki, int]:
    pki = DevicePki(tmp_path / "pki")
    pki.init()
    issued = pki.issue_pair("device-cam-1", "cam-1")
    pem = issued.cert.read_bytes()
    pki.revoke(pem, "cam-1")
    return pki, x509.load_pem_x509_certificate(pem).serial_number


def test_renewal_happens_only_when_due_and_keeps_the_revoked_serials(tmp_path: Path) -> None:
    pki, serial = _revoked_pki(tmp_path)
    pki.renew_crl(T0)
    assert pki.crl_next_update() == T0 + CRL_LIFETIME
    # Not due yet: a fresh CRL is left alone.
    assert not pki.renew_crl_if_due(T0 + timedelta(days=1))
    # Due when less than CRL_RENEW_BEFORE is left: re-signed, still listing the device.
    later = T0 + CRL_LIFETIME - CRL_RENEW_BEFORE + timedelta(hours=1)
    assert pki.renew_crl_if_due(later)
    assert pki.crl_next_update() == later + CRL_LIFETIME
    assert _crl_serials(pki) == {serial}


def test_the_controller_thread_renews_a_crl_about_to_expire(tmp_path: Path) -> None:
    pki, serial = _revoked_pki(tmp_path)
    pki.renew_crl(T0)
    now = [T0 + CRL_LIFETIME - timedelta(days=2)]  # two days from locking the fleet out
    renewer = CrlRenewer(pki, clock=lambda: now[0])
    assert renewer.check()
    assert pki.crl_next_update() == now[0] + CRL_LIFETIME
    assert not renewer.check()  # renewed once, not on every look
    assert renewer.renewals == 1 and _crl_serials(pki) == {serial}


def test_a_renewed_crl_verifies_against_the_ca(tmp_path: Path) -> None:
    # What the broker does with it: OpenSSL loads CA + CRL and accepts the CRL's signature.
    pki, _ = _revoked_pki(tmp_path)
    pki.renew_crl()
    ctx = ssl.create_default_context(cafile=str(pki.ca_path))
    ctx.load_verify_locations(cafile=str(pki.crl_path))
    ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    ca = x509.load_pem_x509_certificate(pki.ca_path.read_bytes())
    crl = x509.load_pem_x509_crl(pki.crl_path.read_bytes())
    assert crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgefleet", *args], capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def test_pki_crl_and_status_commands(tmp_path: Path) -> None:
    pki, _ = _revoked_pki(tmp_path)
    pki.renew_crl(T0)  # long expired
    status = _cli("pki", "status", "--data", str(tmp_path))
    assert status.returncode == 0, status.stderr
    assert "CRL" in status.stdout and "EXPIRED" in status.stdout
    assert "device CA" in status.stdout and "controller" in status.stdout
    renewed = _cli("pki", "crl", "--data", str(tmp_path))
    assert renewed.returncode == 0, renewed.stderr
    expires = pki.crl_next_update()
    assert expires is not None and expires > datetime.now(timezone.utc) + timedelta(days=29)
    status = _cli("pki", "status", "--data", str(tmp_path))
    assert "EXPIRED" not in status.stdout
    missing = _cli("pki", "status", "--data", str(tmp_path / "nowhere"))
    assert missing.returncode == 1 and "pki init" in missing.stderr
