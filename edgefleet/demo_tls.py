"""The demo over mTLS: a device PKI and a private Mosquitto that requires client certs.

For the lead to call from the demo (edgefleet/demo_run.py is not touched here)::

    setup = start_tls_broker(work / "pki-demo")
    agent_tls = setup.device("cam-1")        # TlsSettings for MqttLink / agent config tls:
    ...
    setup.broker.stop()

The broker runs deploy/mosquitto's shape (require_certificate, use_identity_as_username,
use_username_as_clientid, %u ACLs, CRL, no anonymous). The controller connects with
``setup.controller`` (CN edgefleet-controller); its MQTT link must pass it on (not wired
into controller/mqtt_link.py yet: see docs/TRUST.md "Missing").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgefleet.agent.tls import TlsSettings
from edgefleet.controller.pki import DevicePki
from edgefleet.devbroker import BrokerTls, DevBroker


@dataclass
class TlsDemo:
    pki: DevicePki
    broker: DevBroker
    controller: TlsSettings  # the controller's client identity

    def device(self, device_id: str) -> TlsSettings:
        """Issue (or reuse) ``device_id``'s certificate; its TLS settings for the agent."""
        f = self.pki.folder
        if not (f / f"device-{device_id}.pem").exists():
            self.pki.issue_pair(f"device-{device_id}", device_id)
        return TlsSettings(
            self.pki.ca_path, f / f"device-{device_id}.pem", f / f"device-{device_id}.key"
        )


def start_tls_broker(folder: Path) -> TlsDemo:
    """Create ``folder/pki`` once, start the mTLS broker on a free port (``mqtts://localhost``)."""
    pki = DevicePki(folder / "pki")
    if not pki.exists():
        pki.init(("localhost",))
    f = pki.folder
    tls = BrokerTls(pki.ca_path, f / "broker.pem", f / "broker.key", pki.crl_path)
    broker = DevBroker(folder / "mosquitto", tls=tls).start()
    controller = TlsSettings(pki.ca_path, f / "controller.pem", f / "controller.key")
    return TlsDemo(pki, broker, controller)
