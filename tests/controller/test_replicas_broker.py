"""Two controller replicas on the production broker config (deploy/mosquitto, paths moved
to a temp folder, a free port): each has its own certificate identity, so neither takes
the other's session over, and they split the fleet's telemetry through the shared
subscription (issue 11, item 6)."""

from __future__ import annotations

import getpass
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from edgefleet.agent.tls import TlsSettings
from edgefleet.controller.ingest_queue import Delivery
from edgefleet.controller.mqtt_link import MqttLink
from edgefleet.controller.pki import DevicePki, replica_cn
from edgefleet.controller.settings import Settings
from edgefleet.shared.topics import Channel, device_topic

from edgefleet.devbroker import _wait_listening, find_mosquitto, free_port
from tests.agent.test_broker_acl import Client

pytestmark = pytest.mark.broker

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto"
RUN_S = 60.0  # seconds both replicas stay connected while devices publish: the issue's minute
RATE_HZ = 10.0  # telemetry messages per second, across the devices


def production_config(tmp: Path, port: int, pki: Path) -> str:
    """deploy/mosquitto/mosquitto.conf with its paths in ``tmp`` and a loopback port."""
    conf = (DEPLOY / "mosquitto.conf").read_text()
    (tmp / "edgefleet.acl").write_text((DEPLOY / "edgefleet.acl").read_text())
    swaps = [(r"^listener 8883$", f"listener {port} 127.0.0.1"),
             (r"/etc/edgefleet/pki/", f"{pki}/"),
             (r"^acl_file .*$", f"acl_file {tmp}/edgefleet.acl"),
             (r"^persistence_location .*$", f"persistence_location {tmp}/")]  # fmt: skip
    for pattern, new in swaps:
        conf, n = re.subn(pattern, new, conf, flags=re.MULTILINE)
        assert n >= 1, pattern  # the shipped file still has the line we move
    # As root Mosquitto drops to "mosquitto", which cannot read the 0700 temp folders.
    return conf + (f"user {getpass.getuser()}\nlog_dest file {tmp}/mosquitto.log\n"
                   "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
                   "connection_messages true\n")  # fmt: skip


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[tuple[int, Path, DevicePki]]:
    pki = DevicePki(tmp_path / "data" / "pki")
    pki.init(("localhost",))
    port = free_port()
    folder = tmp_path / "mosquitto"
    folder.mkdir()
    (folder / "mosquitto.conf").write_text(production_config(folder, port, pki.folder))
    log = folder / "mosquitto.log"
    proc = subprocess.Popen([find_mosquitto(), "-c", str(folder / "mosquitto.conf")])
    try:
        _wait_listening(port, proc, log)
        yield port, log, pki
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _replica(data: Path, port: int, name: str | None, got: list[str]) -> MqttLink:
    settings = Settings(data_dir=data, mqtt_url=f"mqtts://localhost:{port}", replica=name)
    link = MqttLink(settings.broker, settings.client_id, tls_files=settings.mqtt_tls_files)

    def sink(delivery: Delivery) -> None:
        got.append(delivery.payload.decode())
        delivery.ack()

    link.sink = sink
    return link


def test_two_replicas_share_the_ingest_without_taking_each_others_session(
    broker: tuple[int, Path, DevicePki],
) -> None:
    port, log, pki = broker
    pki.issue_replica("2")
    devices = ["cam-1", "cam-2"]
    for device in devices:
        pki.issue_pair(device, device)
    got: dict[str, list[str]] = {"one": [], "two": []}
    one = _replica(pki.folder.parent, port, None, got["one"])
    two = _replica(pki.folder.parent, port, "2", got["two"])
    clients = [Client(port, TlsSettings(pki.ca_path, pki.folder / f"{d}.pem",
                                        pki.folder / f"{d}.key"), d) for d in devices]  # fmt: skip
    sent: list[str] = []
    try:
        for link in (one, two):
            link.start()
            assert link.wait_connected(10)
        assert all(c.ok() for c in clients)
        time.sleep(0.5)  # both replicas' SUBSCRIBEs are in before the first message
        start = time.monotonic()
        while time.monotonic() - start < RUN_S:
            n = len(sent)
            device = devices[n % len(devices)]
            clients[n % len(devices)].publish(device_topic(device, Channel.TELEMETRY),
                                              f"m{n}".encode())  # fmt: skip
            sent.append(f"m{n}")
            time.sleep(1 / RATE_HZ)
        deadline = time.monotonic() + 15
        while len(got["one"]) + len(got["two"]) < len(sent) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert one.connected and two.connected
    finally:
        for link in (one, two):
            link.stop()
        for c in clients:
            c.close()
    text = log.read_text()
    # Every message once, split between the replicas (MQTT 5 shared subscription).
    assert sorted(got["one"] + got["two"]) == sorted(sent)
    assert got["one"] and got["two"], {k: len(v) for k, v in got.items()}
    # One connection each for the whole run, and no takeover.
    assert "already connected, closing old connection" not in text
    for cn in ("edgefleet-controller", replica_cn("2")):
        assert len(re.findall(rf"New client connected .* as {re.escape(cn)} ", text)) == 1, cn
    print(f"{len(sent)} messages in {RUN_S:.0f} s: {len(got['one'])} / {len(got['two'])}")


def test_a_replica_name_is_checked_and_needs_its_certificate(tmp_path: Path) -> None:
    from edgefleet.shared.errors import ConfigError

    from edgefleet.cli import parse_args

    args = parse_args(
        [
            "controller",
            "serve",
            "--data",
            str(tmp_path),
            "--mqtt",
            "mqtts://localhost:8883",
            "--replica",
            "../x",
        ]
    )
    with pytest.raises(ConfigError, match="--replica"):
        Settings.from_flags(args)
    settings = Settings(data_dir=tmp_path, mqtt_url="mqtts://localhost:8883", replica="2")
    assert settings.client_id == "edgefleet-controller-2"
    with pytest.raises(ConfigError, match="pki replica"):
        settings.mqtt_tls_files  # noqa: B018 - the property raises
