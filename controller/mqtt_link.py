"""The controller's MQTT connection (paho-mqtt 2.x, MQTT 5).

paho runs its network loop on its own thread (``loop_start``); incoming messages go to a
handler on that thread, which must stay short and must never raise into paho. The link
reconnects by itself, and a controller started while the broker is down keeps serving
REST and retries in the background.

Subscriptions: ``events`` and ``telemetry`` use the shared subscription
(``$share/edgefleet/...``) so replicas split them. ``state`` and ``status`` are retained
and idempotent; MQTT 5 never delivers retained messages to a shared subscription, so
those two are plain subscriptions: every replica gets the fleet's snapshot when it
(re)connects, and upserting the same state twice is harmless.

Flow control: the session is persistent (``clean_start=False``, a session expiry), every
subscription is QoS 1, and messages are acknowledged by hand (``Delivery.ack``) once they
are stored. The CONNECT's Receive Maximum bounds how many the broker sends before an ack,
so a controller slower than a burst leaves the backlog queued in the broker instead of
in our memory. The broker's own count of dropped messages (``$SYS``) is watched: any
increase is logged as a warning and exported as a metric.

Revocation (:meth:`MqttLink.kick`): Mosquitto keeps a session open when its CRL changes,
so the controller asks the broker's dynamic security plugin (deploy/mosquitto) to
``disableClient`` the device, which closes its live connection at once. With
``use_identity_as_username`` the plugin's password check is never consulted, so the kick
does not refuse a reconnect: the CRL does, once the broker has reloaded it. Until then a
revoked device that comes back is kicked again on its first message (``revoked``).
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
from collections.abc import Callable, Container
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from edgefleet.controller.ingest_queue import Delivery
from edgefleet.controller.settings import BrokerAddress
from edgefleet.controller.stats import IngestStats
from edgefleet.shared.errors import ProtocolError
from edgefleet.shared.protocol import Command, DesiredHint, IngestPressure
from edgefleet.shared.topics import (
    FLEET_INGEST,
    Channel,
    device_topic,
    fleet_filter,
    parse_device_topic,
)
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

log = logging.getLogger(__name__)

Sink = Callable[[Delivery], None]

SHARED = (Channel.EVENTS, Channel.TELEMETRY)
PLAIN = (Channel.STATE, Channel.STATUS)
RECONNECT_MIN, RECONNECT_MAX = 1, 30  # seconds between reconnect attempts
RECEIVE_MAXIMUM = 1000  # messages the broker may send us before we acknowledge one
# Mosquitto's count of messages dropped for full queues or inflight windows, all clients.
BROKER_DROPPED = "$SYS/broker/publish/messages/dropped"
# Mosquitto's dynamic security plugin: the controller's user may write here (edgefleet.acl).
DYNSEC_TOPIC = "$CONTROL/dynamic-security/v1"
KICK_AGAIN_S = 1.0  # at most one repeated kick a second per revoked device


def kick_payload(device_id: str) -> bytes:
    """Dynsec commands that close the live session of the device's certificate user.

    ``disableClient`` kicks every connection with that username; the plugin knows only
    clients it holds, so it is created first (a second revoke's "already exists" is
    harmless). It holds no password: nobody logs in as it.
    """
    commands = [{"command": "createClient", "username": device_id},
                {"command": "disableClient", "username": device_id}]  # fmt: skip
    return json.dumps({"commands": commands}).encode()


def subscriptions() -> list[tuple[str, SubscribeOptions]]:
    opts = SubscribeOptions(qos=1)
    return (
        [(fleet_filter(c, shared=True), opts) for c in SHARED]
        + [(fleet_filter(c), opts) for c in PLAIN]
        + [(BROKER_DROPPED, SubscribeOptions(qos=0))]
    )


class MqttLink:
    """One paho client: subscribe to the fleet, publish hints and commands."""

    def __init__(
        self,
        address: BrokerAddress,
        client_id: str,
        *,
        keepalive: int = 30,  # seconds
        session_expiry: int = 3600,  # seconds
        tls_files: tuple[Path, Path, Path] | None = None,  # (CA, cert, key) for mqtts://
        receive_maximum: int = RECEIVE_MAXIMUM,  # messages; <= the ingest queue's capacity
        stats: IngestStats | None = None,  # where the broker's dropped count goes
    ) -> None:
        self.address = address
        self.keepalive = keepalive
        self.session_expiry = session_expiry
        self.receive_maximum = receive_maximum
        self.stats = stats or IngestStats()
        self.sink: Sink | None = None  # gets every device message; acks it once stored
        self.pipeline: Any = None  # started before connecting, drained after (ingest_queue)
        self._generation = 0  # connections so far: an ack never crosses a reconnect
        self._dropped: int | None = None
        self._accepting = True  # False while stopping: deliveries wait in the broker
        self._connected = threading.Event()
        self._warned = False
        self._pending: dict[str, int] = {}  # device -> director version not yet published
        self._lock = threading.Lock()
        # Revoked devices (enrollment.RevokedDevices): a message from one is a session the
        # broker let back in before it reloaded the CRL; it is dropped and kicked again.
        self.revoked: Container[str] | None = None
        self._kicked: dict[str, float] = {}  # device -> monotonic time of its last kick
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            manual_ack=True,
        )
        self._client.reconnect_delay_set(RECONNECT_MIN, RECONNECT_MAX)
        if address.tls:
            self._client.tls_set_context(_tls_context(tls_files))
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:  # seconds
        return self._connected.wait(timeout)

    def start(self) -> None:
        """Connect in the background; never blocks on the broker."""
        if self.pipeline is not None:
            self.pipeline.start()
        self._accepting = True
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho: untyped
        props.SessionExpiryInterval = self.session_expiry
        props.ReceiveMaximum = self.receive_maximum
        self._client.connect_async(
            self.address.host,
            self.address.port,
            keepalive=self.keepalive,
            clean_start=False,
            properties=props,
        )
        self._client.loop_start()

    def stop(self) -> None:
        """Store and ack what is queued, then disconnect.

        Messages arriving meanwhile are left unacknowledged: the broker sends them again
        to this session's next connection, so nothing is stored twice or lost.
        """
        self._accepting = False
        if self.pipeline is not None:
            self.pipeline.stop()
        self._client.disconnect()
        self._client.loop_stop()
        self._connected.clear()

    # --- publishing ----------------------------------------------------------------------

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> bool:
        """True when handed to paho while connected (paho then delivers with QoS 1)."""
        if not self.connected:
            return False
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        return info.rc == mqtt.MQTT_ERR_SUCCESS

    def send_hint(self, device_id: str, director_version: int) -> None:
        """Retained ``desired`` hint; kept and sent on reconnect when the broker is away."""
        topic = device_topic(device_id, Channel.DESIRED)
        payload = DesiredHint(director_version=director_version).to_bytes()
        with self._lock:
            if self.publish(topic, payload, retain=True):
                self._pending.pop(device_id, None)
                return
            self._pending[device_id] = director_version
        log.info("broker unreachable: hint for %s kept until it is back", device_id)

    def send_command(self, device_id: str, command: Command) -> bool:
        return self.publish(device_topic(device_id, Channel.COMMANDS), command.to_bytes())

    def send_pressure(self, pressure: IngestPressure) -> bool:
        """Retained on the fleet topic; a hold also expires in the broker after its
        ``seconds`` (MQTT 5 Message Expiry), so a controller that dies mid-hold leaves
        nothing that stops agents for longer. True when handed to paho while connected."""
        if not self.connected:
            return False
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]  # paho: untyped
        if pressure.hold:
            props.MessageExpiryInterval = max(1, int(pressure.seconds))
        info = self._client.publish(
            FLEET_INGEST, pressure.to_bytes(), qos=1, retain=True, properties=props
        )
        return info.rc == mqtt.MQTT_ERR_SUCCESS

    def kick(self, device_id: str) -> bool:
        """Ask the broker to close the device's live session; True when handed to paho."""
        self._kicked[device_id] = time.monotonic()
        sent = self.publish(DYNSEC_TOPIC, kick_payload(device_id))
        if sent:
            log.info("asked the broker to close %s's session", device_id)
        else:
            log.warning("broker unreachable: %s's session was not kicked", device_id)
        return sent

    def _kick_again(self, device_id: str) -> None:
        if time.monotonic() - self._kicked.get(device_id, -KICK_AGAIN_S) >= KICK_AGAIN_S:
            self.kick(device_id)

    def _revoked_sender(self, topic: str) -> str | None:
        if self.revoked is None:
            return None
        try:
            device_id = parse_device_topic(topic).device_id
        except ProtocolError:
            return None
        return device_id if device_id in self.revoked else None

    # --- paho callbacks (paho's thread) --------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        if reason_code.is_failure:
            log.warning("broker %s refused the connection: %s", self._where(), reason_code)
            return
        with self._lock:
            self._generation += 1
        client.subscribe(subscriptions())
        self._connected.set()
        if self._warned:
            log.warning("connected to the broker at %s again", self._where())
        else:
            log.info("connected to the broker at %s", self._where())
        self._warned = False
        self._flush_pending()

    def _on_connect_fail(self, client, userdata) -> None:  # type: ignore[no-untyped-def]
        if not self._warned:
            log.warning(
                "cannot reach the MQTT broker at %s; serving REST and retrying every %d s",
                self._where(),
                RECONNECT_MAX,
            )
            self._warned = True

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        was = self._connected.is_set()
        self._connected.clear()
        if was and not self._warned:
            log.warning("lost the broker at %s (%s); reconnecting", self._where(), reason_code)
            self._warned = True

    def _on_message(self, client, userdata, message) -> None:  # type: ignore[no-untyped-def]
        if message.topic == BROKER_DROPPED:
            self._on_broker_dropped(message.payload)
            return
        if not self._accepting:
            return
        ack = self._acker(message.mid, message.qos)
        revoked = self._revoked_sender(message.topic)
        if revoked is not None:
            ack()  # dropped, not redelivered
            self._kick_again(revoked)
            return
        sink = self.sink
        if sink is None:
            ack()
            return
        try:
            sink(Delivery(message.topic, message.payload, ack))
        except Exception:  # a bad message must never stop paho's loop
            log.exception("ingest of a message on %s failed", message.topic)
            ack()

    def _acker(self, mid: int, qos: int) -> Callable[[], None]:
        generation = self._generation

        def ack() -> None:
            # After a reconnect the broker resends what we did not ack, under packet ids
            # that may be reused: an old ack would acknowledge the wrong message.
            if qos > 0 and generation == self._generation and self.connected:
                self._client.ack(mid, qos)

        return ack

    def _on_broker_dropped(self, payload: bytes) -> None:
        try:
            dropped = int(payload.decode().strip())
        except (UnicodeDecodeError, ValueError):
            return
        if self._dropped is not None and dropped > self._dropped:
            log.warning(
                "the broker dropped %d message(s) (%d in all): a queue or inflight limit "
                "is too small for the load", dropped - self._dropped, dropped,
            )  # fmt: skip
        self._dropped = dropped
        self.stats.set_gauge("broker_dropped", dropped)

    def _flush_pending(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
        for device_id, version in pending.items():
            self.send_hint(device_id, version)

    def _where(self) -> str:
        return f"{self.address.host}:{self.address.port}"


def _tls_context(files: tuple[Path, Path, Path] | None) -> ssl.SSLContext:
    """Verify the broker (pinned device CA, host name) and show the controller's cert."""
    if files is None:
        return ssl.create_default_context()
    ca, cert, key = files
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key))
    return ctx
