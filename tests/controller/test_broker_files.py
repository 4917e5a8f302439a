"""`pki init --broker-user USER[:GROUP]`: the broker's files, readable by the broker's user
(Mosquitto drops to it before reading them) and the key by nobody else (issue 11, item 7)."""

from __future__ import annotations

import grp
import os
import pwd
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from edgefleet.agent.tls import TlsSettings
from edgefleet.controller.pki import BROKER_DIR_MODE, BROKER_FILES, DevicePki

from edgefleet.devbroker import BrokerTls, DevBroker
from tests.agent.test_broker_acl import Client


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgefleet", *args], capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def _me() -> str:
    return f"{pwd.getpwuid(os.getuid()).pw_name}:{grp.getgrgid(os.getgid()).gr_name}"


@pytest.mark.broker
def test_pki_init_writes_the_broker_files_for_its_user_and_the_broker_starts_on_them(
    tmp_path: Path,
) -> None:
    dest = tmp_path / "etc" / "pki"
    done = _cli("pki", "init", "--data", str(tmp_path / "data"), "--broker-name", "localhost",
                "--broker-user", _me(), "--broker-dir", str(dest))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in dest.iterdir()) == sorted(BROKER_FILES)
    for name, mode in BROKER_FILES.items():
        st = (dest / name).stat()
        assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())
        assert stat.S_IMODE(st.st_mode) == mode, name
    assert not stat.S_IMODE((dest / "broker.key").stat().st_mode) & 0o007  # not for others
    assert stat.S_IMODE(dest.stat().st_mode) == BROKER_DIR_MODE
    assert not (dest / "device-ca.key").exists()  # the CA key stays with the controller

    # The broker runs on exactly those files, and a device certificate from the CA connects.
    pki = DevicePki(tmp_path / "data" / "pki")
    pki.issue_pair("cam-1", "cam-1")
    tls = BrokerTls(dest / "device-ca.pem", dest / "broker.pem", dest / "broker.key",
                    dest / "device-ca.crl")  # fmt: skip
    broker = DevBroker(tmp_path / "mosq", tls=tls).start()
    device = TlsSettings(pki.ca_path, pki.folder / "cam-1.pem", pki.folder / "cam-1.key")
    client = Client(broker.port, device, "cam-1")
    try:
        assert client.ok()
    finally:
        client.close()
        broker.stop()


@pytest.mark.parametrize("spec", ["no-such-user-ef", "root:no-such-group-ef"])
def test_an_unknown_broker_user_is_one_line_and_writes_nothing(tmp_path: Path, spec: str) -> None:
    done = _cli("pki", "init", "--data", str(tmp_path / "data"), "--broker-user", spec,
                "--broker-dir", str(tmp_path / "etc"))  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.startswith("edgefleet: error: --broker-user: no ")
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "data" / "pki").exists() and not (tmp_path / "etc").exists()
