"""deploy/compose/broker-entrypoint.sh, the compose broker's stand-in for
deploy/systemd/edgefleet-crl.path, run here with a real Mosquitto on the shipped config's
shape: a device connects, the controller revokes it (a new CRL in its data folder), the
entrypoint copies the CRL and reloads the broker, and the device is refused from then on."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
from edgefleet.agent.tls import TlsSettings
from edgefleet.controller.pki import DevicePki

from edgefleet.devbroker import ACL, DYNSEC_EMPTY, BrokerTls, free_port, render_tls_config
from tests.agent.test_broker_acl import Client
from tests.waiting import wait_for

pytestmark = pytest.mark.broker

ENTRYPOINT = Path(__file__).resolve().parent.parent / "deploy" / "compose" / "broker-entrypoint.sh"


def _connects(port: int, device: TlsSettings) -> bool:
    client = Client(port, device, "cam-1")
    try:
        return client.ok()
    finally:
        client.close()


def test_a_revocation_reaches_the_broker_through_the_entrypoint(tmp_path: Path) -> None:
    pki = DevicePki(tmp_path / "controller" / "pki")
    pki.init(("localhost",))
    issued = pki.issue_pair("cam-1", "cam-1")
    target = tmp_path / "broker-pki" / "device-ca.crl"  # absent until the entrypoint copies it
    target.parent.mkdir()
    port = free_port()
    tls = BrokerTls(pki.ca_path, pki.folder / "broker.pem", pki.folder / "broker.key", target)
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(render_tls_config(port, tmp_path, tls))
    (tmp_path / "edgefleet.acl").write_text(ACL)
    (tmp_path / "dynamic-security.json").write_text(DYNSEC_EMPTY)
    env = {
        "PATH": f"{os.environ.get('PATH', '')}:/usr/sbin",
        "EDGEFLEET_BROKER_CONF": str(conf),
        "EDGEFLEET_CRL_SOURCE": str(pki.crl_path),
        "EDGEFLEET_CRL_TARGET": str(target),
        "EDGEFLEET_CRL_POLL_S": "0.2",
    }
    log = tmp_path / "entrypoint.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(["sh", str(ENTRYPOINT)], env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    device = TlsSettings(pki.ca_path, pki.folder / "cam-1.pem", pki.folder / "cam-1.key")
    try:
        wait_for("the CRL copied before the broker starts",
                 lambda: target.is_file() and target.read_bytes() == pki.crl_path.read_bytes(),
                 timeout=30)  # fmt: skip
        wait_for("the device to connect", lambda: _connects(port, device), timeout=60)

        pki.revoke(issued.cert.read_bytes(), "cam-1")
        wait_for("the new CRL in the broker's folder",
                 lambda: target.read_bytes() == pki.crl_path.read_bytes(), timeout=60)  # fmt: skip
        wait_for("the broker to refuse the revoked device",
                 lambda: not _connects(port, device), timeout=60)  # fmt: skip
        assert "new device CRL from the controller; reloading" in log.read_text()

        proc.send_signal(signal.SIGTERM)  # docker stop: the broker goes down with it
        assert proc.wait(timeout=30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
