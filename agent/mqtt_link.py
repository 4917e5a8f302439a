"""The agent's MQTT 5 connection: status, state, events and telemetry out; hints in.

paho runs its own network thread (``loop_start``) and reconnects by itself, including the
first connection, so an agent started while the broker is down keeps serving its current
model and logs one line. paho's callbacks do no work: an incoming ``desired`` or
``refresh`` command becomes a :class:`Hint` on a bounded queue that the reconcile loop
waits on; ``drift``, ``settings`` and ``card`` commands call the ``on_*`` hooks, which
only set flags for the threads that act. A hint carries no trust; it only says "refresh
now". Malformed payloads (a command this agent does not know among them) are counted,
reported as a :class:`RejectedEvent` (rate limited) and dropped.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from edgefleet.agent.tls import TlsSettings
from edgefleet.shared.errors import ProtocolError
from edgefleet.shared.protocol import (
    Command,
    DesiredHint,
    DeviceState,
    IngestPressure,
    PhaseEvent,
    RejectedEvent,
    Status,
    TelemetryWindow,
    decode,
)
from edgefleet.shared.topics import FLEET_INGEST, Channel, device_topic, parse_device_topic
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 24 * 3600  # seconds the broker keeps our session and queued messages
REJECT_REPORT_EVERY_S = 5.0  # seconds; at most one RejectedEvent per interval
QOS = 1


@dataclass(frozen=True)
class Hint:
    """Something said "look again". Never trusted: it only triggers a refresh."""

    source: str  # "desired", "command" or "poll"
    director_version: int | None = None


class MqttLink:
    def __init__(
        self,
        device_id: str,
        host: str,
        port: int,
        hints: queue.Queue[Hint],
        *,
        keepalive: int = 30,  # seconds
        reconnect_delay: tuple[int, int] = (1, 30),  # seconds, min and max backoff
        max_queued: int = 1000,  # outgoing messages kept while offline
        tls: TlsSettings | None = None,  # mTLS to the broker; None: plain MQTT (loopback)
    ) -> None:
        self.device_id, self.host, self.port = device_id, host, port
        self.hints = hints
        # a drift alert pushed on ``commands`` (hold seconds or None); set before start()
        self.on_drift: Callable[[float | None], None] | None = None
        # announcements on ``commands``, set before start(): the sampling settings changed
        # (also called on every connect: one sent while the link was down may be lost) ...
        self.on_settings: Callable[[], None] | None = None
        # ... and the card of a model version (model, version) arrived
        self.on_card: Callable[[str, str], None] | None = None
        # the controller's ingest backpressure on the fleet topic, with the broker's
        # remaining message expiry in seconds (None: none); set before start()
        self.on_pressure: Callable[[IngestPressure, float | None], None] | None = None
        self.keepalive = keepalive
        self.connected = threading.Event()
        self.subscribed = threading.Event()  # the broker acknowledged desired + commands
        self.malformed = 0
        self._last_reject_at = float("-inf")
        self._failed_once = False
        self._last_state: DeviceState | None = None
        self._state_queued = False  # the newest state waits in paho's offline queue
        self._lock = threading.Lock()
        self._tls = tls
        self._ssl: ssl.SSLContext | None = None
        self._client = self._build_client(reconnect_delay, max_queued)

    def _topic(self, channel: Channel) -> str:
        return str(device_topic(self.device_id, channel))

    def _build_client(self, reconnect_delay: tuple[int, int], max_queued: int) -> mqtt.Client:
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.device_id,
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        offline = Status(device_id=self.device_id, online=False)
        c.will_set(self._topic(Channel.STATUS), offline.to_bytes(), qos=QOS, retain=True)
        if self._tls is not None:
            self._ssl = self._tls.context()
            c.tls_set_context(self._ssl)  # CA pinned, host name checked
        c.reconnect_delay_set(*reconnect_delay)
        c.max_queued_messages_set(max_queued)
        c.on_connect = self._on_connect
        c.on_connect_fail = self._on_connect_fail
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_subscribe = lambda *_: self.subscribed.set()
        return c

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background; never raises for an unreachable broker."""
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        self._client.connect_async(
            self.host, self.port, self.keepalive, clean_start=False, properties=props
        )
        self._client.loop_start()

    def reload_identity(self) -> None:
        """Present the renewed device certificate (agent/cert_renewal.py): load it into the
        TLS context, then drop the connection; paho reconnects with it on its own, into the
        same persistent session (the broker publishes the offline Will in between)."""
        if self._tls is None or self._ssl is None:
            return
        self._ssl.load_cert_chain(str(self._tls.cert), str(self._tls.key))
        sock = self._client.socket()
        if isinstance(sock, socket.socket):  # an SSLSocket; paho types it loosely
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def wait_connected(self, timeout: float) -> bool:
        return self.connected.wait(timeout)

    def wait_subscribed(self, timeout: float) -> bool:
        """Connected, and messages on ``desired`` and ``commands`` now reach this link."""
        return self.connected.wait(timeout) and self.subscribed.wait(timeout)

    def stop(self, timeout: float = 3.0) -> None:
        """Say offline (retained), disconnect cleanly, end paho's thread."""
        if self.connected.is_set():
            offline = Status(device_id=self.device_id, online=False)
            info = self._client.publish(
                self._topic(Channel.STATUS), offline.to_bytes(), qos=QOS, retain=True
            )
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError) as e:
                log.warning("offline status not confirmed: %s", e)
        self._client.disconnect()
        self._client.loop_stop()

    # -- outgoing ----------------------------------------------------------------------

    def publish_state(self, state: DeviceState) -> None:
        with self._lock:
            self._last_state = state
            rc = self._publish(Channel.STATE, state.to_bytes(), retain=True)
            # Queued while offline: paho sends the queue in order on connect, newest last.
            self._state_queued = rc == mqtt.MQTT_ERR_NO_CONN

    def publish_event(self, event: PhaseEvent | RejectedEvent) -> None:
        self._publish(Channel.EVENTS, event.to_bytes())

    def publish_telemetry(self, window: TelemetryWindow) -> None:
        self._publish(Channel.TELEMETRY, window.to_bytes())

    def publish_confirmed(self, channel: Channel, payload: bytes, timeout: float) -> bool:
        """QoS 1 and wait for the broker's PUBACK: False when offline or not acked in time
        (the caller keeps the payload and tries again; the broker may then see it twice)."""
        if not self.connected.is_set():
            return False
        info = self._client.publish(self._topic(channel), payload, qos=QOS)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            return False
        try:
            info.wait_for_publish(timeout)
        except (RuntimeError, ValueError):
            return False
        return info.is_published()

    def _publish(self, channel: Channel, payload: bytes, *, retain: bool = False) -> int:
        # While offline paho keeps QoS 1 messages and sends them after reconnecting.
        info = self._client.publish(self._topic(channel), payload, qos=QOS, retain=retain)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            log.warning("publish to %s not queued: %s", channel.value, mqtt.error_string(info.rc))
        return int(info.rc)

    # -- paho callbacks (paho's thread: no blocking work here) -------------------------

    def _on_connect(self, client: mqtt.Client, _u: Any, flags: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            log.warning("broker %s:%s refused the connection: %s", self.host, self.port, reason)
            return
        log.info(
            "connected to broker %s:%s (session present: %s)",
            self.host, self.port, flags.session_present,
        )  # fmt: skip
        self._failed_once = False
        client.subscribe(
            [
                (self._topic(Channel.DESIRED), QOS),
                (self._topic(Channel.COMMANDS), QOS),
                (FLEET_INGEST, QOS),  # retained: a hold in force arrives at once
            ]
        )
        online = Status(device_id=self.device_id, online=True)
        client.publish(self._topic(Channel.STATUS), online.to_bytes(), qos=QOS, retain=True)
        with self._lock:
            # Republish the newest state (the broker may have lost it) unless it is queued:
            # then paho sends the queued states right after this callback, in order, and a
            # republish here would put the newest first and an older one last.
            state = None if self._state_queued else self._last_state
            self._state_queued = False
        if state is not None:
            client.publish(self._topic(Channel.STATE), state.to_bytes(), qos=QOS, retain=True)
        self.connected.set()
        self._hint(Hint("reconnect"))
        if self.on_settings is not None:
            self.on_settings()

    def _on_connect_fail(self, _c: mqtt.Client, _u: Any) -> None:
        if not self._failed_once:
            log.warning(
                "cannot reach broker %s:%s; serving the current model and retrying",
                self.host, self.port,
            )  # fmt: skip
            self._failed_once = True

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self.connected.clear()
        self.subscribed.clear()
        if reason.is_failure:
            log.warning("lost the broker (%s); reconnecting", reason)

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if not msg.payload:
            return  # a retained message being cleared
        if msg.topic == FLEET_INGEST:
            self._pressure(msg)
            return
        try:
            hint = self._parse(msg.topic, bytes(msg.payload))
        except ProtocolError as e:
            self._reject(msg.topic, e.reason)
            return
        if hint is not None:
            self._hint(hint)

    def _parse(self, topic: str, payload: bytes) -> Hint | None:
        channel = parse_device_topic(topic).channel
        if channel is Channel.DESIRED:
            return Hint("desired", decode(DesiredHint, payload).director_version)
        if channel is Channel.COMMANDS:
            return self._command(decode(Command, payload))
        raise ProtocolError(f"unexpected message on {topic}")

    def _command(self, command: Command) -> Hint | None:
        if command.command == "refresh":
            return Hint("command")
        if command.command == "drift" and self.on_drift is not None:
            self.on_drift(command.hold_s)
        elif command.command == "settings" and self.on_settings is not None:
            self.on_settings()
        elif command.command == "card" and self.on_card and command.model and command.version:
            self.on_card(command.model, command.version)  # a decoded card names both
        return None

    def _pressure(self, msg: mqtt.MQTTMessage) -> None:
        try:
            pressure = decode(IngestPressure, bytes(msg.payload))
        except ProtocolError as e:
            self._reject(msg.topic, e.reason)
            return
        expiry = getattr(msg.properties, "MessageExpiryInterval", None)
        if self.on_pressure is not None:
            self.on_pressure(pressure, float(expiry) if expiry is not None else None)

    def _hint(self, hint: Hint) -> None:
        # When full, a refresh is already pending; one is as good as many.
        with contextlib.suppress(queue.Full):
            self.hints.put_nowait(hint)

    def _reject(self, topic: str, reason: str) -> None:
        self.malformed += 1
        log.warning("dropped a malformed message on %s: %s", topic, reason)
        now = time.monotonic()
        if now - self._last_reject_at < REJECT_REPORT_EVERY_S:
            return
        self._last_reject_at = now
        event = RejectedEvent(device_id=self.device_id, what=f"message on {topic}", reason=reason)
        self._client.publish(self._topic(Channel.EVENTS), event.to_bytes(), qos=QOS)
