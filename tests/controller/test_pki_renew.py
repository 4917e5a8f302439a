"""`edgefleet pki renew`: service certificates re-issued from the CA, same subject, SANs,
usages and key (unless rotated), file mode kept; `pki status` says what renews each."""

from __future__ import annotations

import ssl
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from edgefleet.controller.pki import DevicePki, is_service_certificate


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgefleet", *args], capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _spki(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _short_lived(pki: DevicePki) -> None:
    """Broker and controller certificates with 2 days left, as a year from now would be."""
    for stem in ("broker", "controller"):
        pki.renew_service(stem, timedelta(days=2))


def test_renew_keeps_subject_sans_key_and_mode(tmp_path: Path) -> None:
    pki = DevicePki(tmp_path / "pki")
    pki.init(("broker.example", "10.0.0.5"))
    pki.issue_replica("2")
    _short_lived(pki)
    broker = pki.folder / "broker.pem"
    before = _cert(broker)
    broker.chmod(0o640)
    status = _cli("pki", "status", "--data", str(tmp_path))
    assert status.returncode == 0, status.stderr
    assert "renew soon" in status.stdout and "renew: edgefleet pki renew broker" in status.stdout
    assert "renew: edgefleet pki renew controller-2" in status.stdout

    out = _cli("pki", "renew", "--data", str(tmp_path), "broker", "--days", "90")
    assert out.returncode == 0, out.stderr
    assert "SIGHUP the broker" in out.stdout
    after = _cert(broker)
    assert after.serial_number != before.serial_number
    assert after.subject == before.subject and is_service_certificate(after)
    san = x509.SubjectAlternativeName
    assert (after.extensions.get_extension_for_class(san).value
            == before.extensions.get_extension_for_class(san).value)  # fmt: skip
    assert (after.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
            == before.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)  # fmt: skip
    assert _spki(after) == _spki(before)  # the key is kept
    left = after.not_valid_after_utc - datetime.now(timezone.utc)
    assert timedelta(days=89) < left < timedelta(days=91)
    assert broker.stat().st_mode & 0o777 == 0o640
    ca = _cert(pki.ca_path)
    after.verify_directly_issued_by(ca)

    rotated = _cli("pki", "renew", "--data", str(tmp_path), "--all-services", "--rotate-key")
    assert rotated.returncode == 0, rotated.stderr
    for stem in ("broker", "controller", "controller-2"):
        cert = _cert(pki.folder / f"{stem}.pem")
        key = serialization.load_pem_private_key((pki.folder / f"{stem}.key").read_bytes(), None)
        assert _spki(cert) == key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        assert (pki.folder / f"{stem}.key").stat().st_mode & 0o777 == 0o600
    assert _spki(_cert(broker)) != _spki(after)
    status = _cli("pki", "status", "--data", str(tmp_path))
    assert "renew soon" not in status.stdout


def test_renew_copies_to_the_broker_dir_and_refuses_bad_names_in_one_line(
    tmp_path: Path,
) -> None:
    pki = DevicePki(tmp_path / "pki")
    pki.init(("localhost",))
    pki.issue_pair("device-cam-1", "cam-1")
    dest = tmp_path / "broker-files"
    dest.mkdir()
    for name in ("broker.pem", "broker.key"):
        (dest / name).write_bytes((pki.folder / name).read_bytes())
    (dest / "broker.key").chmod(0o440)
    out = _cli("pki", "renew", "--data", str(tmp_path), "broker", "--rotate-key",
               "--broker-dir", str(dest))  # fmt: skip
    assert out.returncode == 0, out.stderr
    for name in ("broker.pem", "broker.key"):
        assert (dest / name).read_bytes() == (pki.folder / name).read_bytes()
    assert (dest / "broker.key").stat().st_mode & 0o777 == 0o440

    for args, words in (
        (("device-cam-1",), "no service certificate 'device-cam-1'"),
        ((), "give one service certificate"),
        (("broker", "--all-services"), "give one service certificate"),
        (("broker", "--days", "0"), "--days 0"),
    ):
        bad = _cli("pki", "renew", "--data", str(tmp_path), *args)
        assert bad.returncode != 0
        assert words in bad.stderr and "Traceback" not in bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr


def test_status_lists_devices_whose_renewal_is_failing(tmp_path: Path) -> None:
    from edgefleet.controller.db import make_engine
    from edgefleet.controller.models.devices import DeviceCert, DeviceRevocation
    from edgefleet.controller.pki import cert_pem, issue, new_key
    from sqlmodel import Session

    pki = DevicePki(tmp_path / "pki")
    pki.init()
    ca, ca_key = pki._ca()
    engine = make_engine(f"sqlite:///{tmp_path / 'edgefleet.db'}")
    with Session(engine) as session:
        issued = (("cam-ok", 365), ("cam-late", 10), ("cam-late", 3),
                  ("cam-renewed", 3), ("cam-renewed", 365), ("cam-gone", 5))  # fmt: skip
        for device, days in issued:
            cert = issue(ca, ca_key, new_key().public_key(), device, lifetime=timedelta(days=days))
            session.add(DeviceCert(serial=str(cert.serial_number), device_id=device,
                                   pem=cert_pem(cert).decode()))  # fmt: skip
        session.add(DeviceRevocation(device_id="cam-gone", actor="test"))
        session.commit()
    engine.dispose()
    out = _cli("pki", "status", "--data", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "3 enrolled, 1 with under 90 days left" in out.stdout
    late = [ln for ln in out.stdout.splitlines() if ln.startswith("  cam-")]
    assert len(late) == 1 and late[0].split()[0] == "cam-late" and "9 days left" in late[0]


class Crash(BaseException):
    """A power cut: nothing after it runs."""


def test_a_key_rotation_cut_between_its_renames_is_finished_by_the_next_renew(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    pki = DevicePki(tmp_path / "pki")
    pki.init(("localhost",))
    real_replace, calls = os.replace, [0]

    def replace(src: str | Path, dst: str | Path) -> None:
        calls[0] += 1
        if calls[0] == 4:  # staged key (1), staged cert (2), key renamed (3): cut here
            raise Crash
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(Crash):
        pki.renew_service("broker", rotate_key=True)
    monkeypatch.setattr(os, "replace", real_replace)
    key_path, cert_path = pki.folder / "broker.key", pki.folder / "broker.pem"
    assert not _matches(cert_path, key_path)  # what the broker would refuse to load

    staged = _cert(pki.folder / "broker.pem.next")
    pki.renew_service("broker")  # finishes the staged switch first, then renews
    assert _matches(cert_path, key_path)
    assert _spki(_cert(cert_path)) == _spki(staged)  # the rotated key was kept
    assert not list(pki.folder.glob("*.next"))
    ssl.create_default_context().load_cert_chain(str(cert_path), str(key_path))


def _matches(cert_path: Path, key_path: Path) -> bool:
    key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    return _spki(_cert(cert_path)) == key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.mark.broker
def test_a_running_mosquitto_serves_the_renewed_certificate_after_sighup(tmp_path: Path) -> None:
    import socket

    from edgefleet.devbroker import BrokerTls, DevBroker
    from tests.waiting import wait_for

    pki = DevicePki(tmp_path / "pki")
    pki.init(("localhost",))
    pki.issue_pair("cam-a", "cam-a")
    f = pki.folder
    broker = DevBroker(tmp_path / "mosquitto", tls=BrokerTls(
        f / "device-ca.pem", f / "broker.pem", f / "broker.key", pki.crl_path)).start()  # fmt: skip

    def served() -> int:
        ctx = ssl.create_default_context(cafile=str(pki.ca_path))
        ctx.load_cert_chain(str(f / "cam-a.pem"), str(f / "cam-a.key"))
        with socket.create_connection(("localhost", broker.port), timeout=10) as raw, \
                ctx.wrap_socket(raw, server_hostname="localhost") as tls:  # fmt: skip
            der = tls.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der).serial_number

    try:
        before = served()
        pki.renew_service("broker", rotate_key=True)
        assert served() == before  # Mosquitto holds what it read until told
        broker.reload()  # SIGHUP, as `pki renew` says
        renewed = _cert(f / "broker.pem").serial_number
        wait_for("the broker to serve the renewed certificate", lambda: served() == renewed)
    finally:
        broker.stop()
