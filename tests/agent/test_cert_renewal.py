"""agent/cert_renewal.py without a network: when renewal is due, and a crash at every step
of the switch to the new key and certificate leaves a usable, matching pair."""

from __future__ import annotations

import os
import ssl
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from edgefleet.agent.cert_renewal import IdentityFiles, install, recover, renewal_due
from edgefleet.controller.pki import DevicePki, cert_pem, issue, key_pem, new_key

NOW = datetime(2026, 6, 1, tzinfo=timezone.utc)


def test_renewal_is_due_when_less_than_a_third_of_the_lifetime_is_left(tmp_path: Path) -> None:
    pki = DevicePki(tmp_path / "pki")
    pki.init()
    ca, ca_key = pki._ca()
    start = NOW - timedelta(days=200)
    cert = issue(ca, ca_key, new_key().public_key(), "cam-1", not_before=start,
                 lifetime=timedelta(days=300))  # fmt: skip
    assert not renewal_due(cert, NOW)  # 100 days of 300 left: exactly a third
    assert renewal_due(cert, NOW + timedelta(days=1))
    assert renewal_due(cert, NOW + timedelta(days=120))  # expired: due too


class Crash(BaseException):
    """A power cut: nothing after it runs (not an Exception, so nothing catches it)."""


def _pair(pki: DevicePki) -> tuple[bytes, bytes]:
    ca, ca_key = pki._ca()
    key = new_key()
    return key_pem(key), cert_pem(issue(ca, ca_key, key.public_key(), "cam-1"))


def _usable(files: IdentityFiles) -> bytes:
    """The certificate on disk, after checking OpenSSL accepts it with the key on disk."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(files.ca))
    ctx.load_cert_chain(str(files.cert), str(files.key))  # SSLError on a mismatched pair
    return files.cert.read_bytes()


@pytest.mark.parametrize("crash_at", [1, 2, 3, 4, None])
def test_a_crash_at_any_step_leaves_a_usable_pair(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash_at: int | None
) -> None:
    pki = DevicePki(tmp_path / "pki")
    pki.init()
    ident = tmp_path / "identity"
    ident.mkdir()
    files = IdentityFiles(ident / "device.pem", ident / "device.key", pki.ca_path)
    old_key, old_cert = _pair(pki)
    files.key.write_bytes(old_key)
    files.key.chmod(0o600)  # as enrollment wrote it
    files.cert.write_bytes(old_cert)
    new_key_pem, new_cert = _pair(pki)

    # Every rename of the switch goes through os.replace: the two durable writes of the
    # .next files (1, 2: the commit), the key's rename (3) and the certificate's (4).
    real_replace, calls = os.replace, [0]

    def replace(src: str | Path, dst: str | Path) -> None:
        calls[0] += 1
        if calls[0] == crash_at:
            raise Crash
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    if crash_at is None:
        install(files, new_key_pem, new_cert)
    else:
        with pytest.raises(Crash):
            install(files, new_key_pem, new_cert)
    monkeypatch.setattr(os, "replace", real_replace)

    # The agent restarts: recover() runs before anything reads the pair.
    outcome = recover(files)
    committed = crash_at is None or crash_at > 2
    assert _usable(files) == (new_cert if committed else old_cert)
    assert files.key.read_bytes() == (new_key_pem if committed else old_key)
    assert outcome == ("none" if crash_at in (None, 1) else
                       "discarded" if crash_at == 2 else "finished")  # fmt: skip
    assert not files.next_cert.exists() and not files.next_key.exists()
    assert files.key.stat().st_mode & 0o077 == 0  # the key was never readable by others
    assert x509.load_pem_x509_certificate(files.cert.read_bytes()).subject


def test_agent_start_finishes_a_switch_and_runs_the_renewal_loop_only_on_mtls(
    tmp_path: Path,
) -> None:
    import queue
    import threading

    import yaml
    from edgefleet.agent import daemon
    from edgefleet.agent.config import load_config
    from edgefleet.agent.mqtt_link import MqttLink
    from edgefleet.agent.tls import TlsSettings

    pki = DevicePki(tmp_path / "pki")
    pki.init()
    ident = tmp_path / "identity"
    ident.mkdir()
    _, old_cert = _pair(pki)
    new_key_pem, new_cert = _pair(pki)
    (ident / "device.key").write_bytes(new_key_pem)  # cut after the key's rename (step 3)
    (ident / "device.pem").write_bytes(old_cert)
    (ident / "device.pem.next").write_bytes(new_cert)
    (ident / "ca.pem").write_bytes(pki.ca_path.read_bytes())
    base = {"device_id": "cam-1", "controller_url": "http://127.0.0.1:9/",
            "data_dir": "data", "source": {"kind": "folder", "path": "frames"}}  # fmt: skip
    mtls = {**base, "mqtt_url": "mqtts://localhost:8883",
            "tls": {"ca": "identity/ca.pem", "cert": "identity/device.pem",
                    "key": "identity/device.key"}}  # fmt: skip
    (tmp_path / "agent.yaml").write_text(yaml.safe_dump(mtls))
    config = load_config(tmp_path / "agent.yaml")

    files = daemon._identity_files(config)
    assert files is not None
    assert _usable(files) == new_cert and not files.next_cert.exists()
    stop = threading.Event()
    link = MqttLink("cam-1", "localhost", 8883, queue.Queue(1),
                    tls=TlsSettings(files.ca, files.cert, files.key))  # fmt: skip
    loops = daemon._renewal_loop(config, files, link, stop)
    assert [name for name, _ in loops] == ["cert-renewal"]
    (tmp_path / "plain.yaml").write_text(yaml.safe_dump({**base, "mqtt_url": "mqtt://x:1"}))
    plain = load_config(tmp_path / "plain.yaml")
    assert daemon._identity_files(plain) is None
    assert daemon._renewal_loop(plain, None, link, stop) == []
