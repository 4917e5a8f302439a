"""Protocol-level simulated devices: thousands per process, speaking the real protocol.

What ``edgefleet sim --mode agent`` runs is the whole agent stack per device (ONNX
Runtime, frame pipeline, slots): right for a dozen devices, far too heavy for thousands.
A device here is only what the controller can tell apart from a real agent:

* **MQTT**: its own paho client, client id = device id, its own topics, persistent
  session, retained ``status`` (online, and offline as the Last Will) and ``state``,
  ``events`` for every phase and ``telemetry`` windows, ``desired`` / ``commands`` hints.
  All clients of one process share one selector thread (:class:`MqttHub`, paho's
  external-loop API) instead of a thread each.
* **TUF**: python-tuf's ngclient refreshes the device's *own* director repository
  (``/tuf/director/<id>/metadata/``, its root pinned on first use like the agent) and
  every director target is judged by the agent's own ``install_policy.decide`` against
  the image repository. The image repository is refreshed once per process and shared
  (:class:`SharedImage`): it is the same for every device.
* **Downloads**: each distinct artifact is downloaded once per process through ngclient
  (length and sha256 verified) and shared by the devices of that process.
* **Install**: DOWNLOADING, VERIFIED, PREPARING, WARMING, SWAPPED, HEALTH_CHECK,
  COMMITTED, each a ``PhaseEvent`` plus the retained ``DeviceState``, as the agent sends
  them; no model is loaded. ``phase_delay_s`` stretches each phase.

Not simulated: frames and inference (telemetry windows carry a fixed latency and a
confidence spread per version), shadow runs, TensorRT plans, reverts (every verified
artifact commits), mTLS, enrollment: against a controller with auth on the devices fetch
``/tuf`` with the operator token given to ``sim --token`` (enrolling thousands of devices
one by one would meet the enrollment route's rate limit; ``--mode agent`` enrolls each).
"""

from __future__ import annotations

import contextlib
import logging
import platform
import random
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
import urllib3
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from tuf.api import exceptions
from tuf.api.metadata import Metadata, TargetFile
from tuf.ngclient import Updater
from tuf.ngclient.fetcher import FetcherInterface

from edgefleet import __version__
from edgefleet.agent.install_policy import VerifiedTarget, decide
from edgefleet.shared.errors import ConfigError, ProtocolError, TransportError, TrustError
from edgefleet.shared.histogram import CONFIDENCE_EDGES, LATENCY_EDGES_MS, bin_counts
from edgefleet.shared.protocol import (
    Command,
    DesiredHint,
    DeviceState,
    Fingerprint,
    Phase,
    PhaseEvent,
    RejectedEvent,
    Status,
    TelemetryWindow,
    decode,
    utcnow,
)
from edgefleet.shared.topics import Channel, device_topic, parse_device_topic

log = logging.getLogger("edgefleet.simproto")

QOS = 1
SESSION_EXPIRY_S = 3600  # seconds the broker keeps a simulated device's session
KEEPALIVE_S = 60
MISC_EVERY_S = 1.0  # paho's keepalive bookkeeping, for every client
RETRY_S = 5.0  # seconds before a failed refresh is tried again (plus jitter)
IMAGE_FRESH_S = 2.0  # seconds a refreshed image repository answers before a new refresh
INSTALL_PHASES = (
    Phase.DOWNLOADING, Phase.VERIFIED, Phase.PREPARING, Phase.WARMING, Phase.SWAPPED,
    Phase.HEALTH_CHECK,
)  # fmt: skip


# --- HTTP: one pool per process --------------------------------------------------------


class PooledFetcher(FetcherInterface):
    """ngclient's download seam on one urllib3 pool shared by every device of a process.

    Counts what it asked and what came back, so a benchmark can say how many requests
    the controller served."""

    def __init__(self, connections: int, timeout_s: float = 60.0, token: str | None = None) -> None:
        headers = {"User-Agent": f"edgefleet-simproto/{__version__}"}
        if token:  # an operator token: a secured controller serves /tuf to operators
            headers["Authorization"] = f"Bearer {token}"
        self._pool = urllib3.PoolManager(maxsize=connections, retries=False, headers=headers)
        self._timeout = urllib3.Timeout(connect=timeout_s, read=timeout_s)
        self._lock = threading.Lock()
        self.requests = 0
        self.failures = 0  # no answer at all (connection refused, reset, timeout)

    def _fetch(self, url: str) -> Iterator[bytes]:
        with self._lock:
            self.requests += 1
        try:
            r = self._pool.request("GET", url, preload_content=False, redirect=False,
                                   timeout=self._timeout)  # fmt: skip
        except urllib3.exceptions.HTTPError as e:
            with self._lock:
                self.failures += 1
            raise exceptions.DownloadError(f"cannot reach {url}: {type(e).__name__}") from e
        if r.status >= 400:
            r.drain_conn()
            r.release_conn()
            raise exceptions.DownloadHTTPError(f"HTTP {r.status} for {url}", r.status)
        return self._chunks(r, url)

    @staticmethod
    def _chunks(r: urllib3.BaseHTTPResponse, url: str) -> Iterator[bytes]:
        try:
            yield from r.stream(256 * 1024)
        except urllib3.exceptions.HTTPError as e:
            raise exceptions.DownloadError(f"{url} broke off: {type(e).__name__}") from e
        finally:
            r.release_conn()

    def close(self) -> None:
        self._pool.clear()


# --- the image repository and artifacts: once per process ------------------------------


class SharedImage:
    """The image repository, refreshed at most every ``IMAGE_FRESH_S`` seconds and only when
    a device asks for a path it does not list yet; artifacts downloaded once each."""

    def __init__(self, base_url: str, folder: Path, fetcher: PooledFetcher) -> None:
        self.metadata_url = f"{base_url}/tuf/image/metadata/"
        self.targets_url = f"{base_url}/tuf/image/targets/"
        self.folder = folder
        self.fetcher = fetcher
        self._lock = threading.Lock()
        self._root: bytes | None = None
        self._updater: Updater | None = None
        self._refreshed_at = float("-inf")
        self._known: dict[str, TargetFile | None] = {}
        self._artifact_locks: dict[str, threading.Lock] = {}
        self.downloads = 0

    def targetinfo(self, path: str) -> TargetFile | None:
        with self._lock:
            if path in self._known and self._known[path] is not None:
                return self._known[path]  # image targets never change once signed
            if self._updater is None or time.monotonic() - self._refreshed_at > IMAGE_FRESH_S:
                self._refresh()
            assert self._updater is not None
            info = self._updater.get_targetinfo(path)
            self._known[path] = info
            return info

    def _refresh(self) -> None:
        meta = self.folder / "image"
        meta.mkdir(parents=True, exist_ok=True)
        if self._root is None:
            self._root = _first_use_root(self.fetcher, f"{self.metadata_url}1.root.json")
        updater = Updater(str(meta), self.metadata_url, str(self.folder / "artifacts"),
                          self.targets_url, fetcher=self.fetcher, bootstrap=self._root)  # fmt: skip
        updater.refresh()
        self._updater, self._refreshed_at = updater, time.monotonic()
        self._known = {p: t for p, t in self._known.items() if t is not None}

    def artifact(self, target: VerifiedTarget) -> Path:
        """The verified bytes of ``target``: downloaded by the first device that needs
        them, waited for by the others."""
        with self._lock:
            lock = self._artifact_locks.setdefault(target.sha256, threading.Lock())
            updater = self._updater
        dest = self.folder / "artifacts" / target.sha256
        with lock:
            if dest.exists():
                return dest
            if updater is None:
                raise TrustError("no image repository refreshed yet")
            dest.parent.mkdir(parents=True, exist_ok=True)
            part = dest.with_suffix(".part")
            info = TargetFile(target.length, {"sha256": target.sha256}, target.target_path)
            updater.download_target(info, str(part), self.targets_url)  # verifies both
            part.replace(dest)
            self.downloads += 1
            return dest


def _first_use_root(fetcher: FetcherInterface, url: str) -> bytes:
    """Trust on first use, as the agent does: the root must at least sign itself."""
    data = fetcher.download_bytes(url, 512_000)
    try:
        md: Metadata[Any] = Metadata.from_bytes(data)
        md.verify_delegate("root", md)
    except (exceptions.RepositoryError, ValueError) as e:
        raise TrustError(f"first-use root {url} refused: {e}") from e
    return data


# --- MQTT: many clients, one selector thread -------------------------------------------


class MqttHub:
    """paho clients driven by one thread through paho's external-loop callbacks.

    Other threads never touch the selector: paho calls ``register_write`` from whichever
    thread publishes, which queues the change and wakes the loop through a socket pair.
    """

    def __init__(self) -> None:
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._changes: deque[tuple[str, mqtt.Client, Any]] = deque()
        self._clients: dict[int, mqtt.Client] = {}  # fd -> client
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="simproto-mqtt", daemon=True)
        self.tasks: deque[Callable[[], None]] = deque()  # run on the loop thread

    def attach(self, c: mqtt.Client) -> None:
        c.on_socket_open = lambda cl, _u, sock: self._change("open", cl, sock)
        c.on_socket_close = lambda cl, _u, sock: self._change("close", cl, sock)
        c.on_socket_register_write = lambda cl, _u, sock: self._change("write", cl, sock)
        c.on_socket_unregister_write = lambda cl, _u, sock: self._change("nowrite", cl, sock)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake()
        self._thread.join(10)

    def call_soon(self, task: Callable[[], None]) -> None:
        self.tasks.append(task)
        self._wake()

    def _change(self, what: str, c: mqtt.Client, sock: Any) -> None:
        self._changes.append((what, c, sock))
        if threading.current_thread() is not self._thread:
            self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def _apply(self) -> None:
        while self._changes:
            what, c, sock = self._changes.popleft()
            try:
                fd = sock.fileno()
            except (OSError, AttributeError):
                continue
            if fd < 0:
                continue
            if what == "open":
                self._clients[fd] = c
                with contextlib.suppress(KeyError, ValueError, OSError):
                    self._sel.unregister(sock)
                self._sel.register(sock, selectors.EVENT_READ, c)
            elif what == "close":
                self._clients.pop(fd, None)
                with contextlib.suppress(KeyError, ValueError, OSError):
                    self._sel.unregister(sock)
            elif fd in self._clients:
                events = selectors.EVENT_READ | (selectors.EVENT_WRITE if what == "write" else 0)
                with contextlib.suppress(KeyError, ValueError, OSError):
                    self._sel.modify(sock, events, c)

    def _run(self) -> None:
        next_misc = time.monotonic() + MISC_EVERY_S
        while not self._stop.is_set():
            self._apply()
            while self.tasks:
                self._guard(self.tasks.popleft())
            for key, events in self._sel.select(timeout=0.5):
                c = key.data
                if c is None:
                    with contextlib.suppress(BlockingIOError):
                        self._wake_r.recv(4096)
                    continue
                if events & selectors.EVENT_READ:
                    self._guard(c.loop_read)
                if events & selectors.EVENT_WRITE:
                    self._guard(c.loop_write)
            if time.monotonic() >= next_misc:
                next_misc = time.monotonic() + MISC_EVERY_S
                for c in list(self._clients.values()):
                    self._guard(c.loop_misc)

    @staticmethod
    def _guard(call: Callable[[], Any]) -> None:
        try:
            call()
        except Exception:  # one client's trouble must not stop the others
            log.exception("mqtt loop step failed")


# --- one simulated device --------------------------------------------------------------


@dataclass
class Counters:
    installs: int = 0
    refreshes: int = 0
    refresh_errors: int = 0
    rejected: int = 0
    published: int = 0
    last_error: str | None = None


@dataclass(frozen=True)
class ProtoConfig:
    controller_url: str
    mqtt_host: str
    mqtt_port: int
    data_dir: Path
    poll_s: float = 300.0  # seconds between director polls (with +-10 % jitter)
    window_s: float = 60.0  # seconds per telemetry window; 0: none
    phase_delay_s: float = 0.0  # seconds spent in each install phase
    workers: int = 8  # refresh / install threads per process
    fps: float = 1.0  # frames per second the telemetry windows claim
    token: str | None = None  # operator API token for /tuf on a controller with auth on


@dataclass
class ProtoDevice:
    device_id: str
    labels: dict[str, str]
    fleet: ProtoFleet
    model: str | None = None
    version: str | None = None
    target: str | None = None
    sha256: str | None = None
    releases: dict[str, int] = field(default_factory=dict)
    phase: Phase = Phase.IDLE
    error: str | None = None
    connected: bool = False
    next_poll: float = 0.0
    next_window: float = 0.0
    window_start: Any = None
    last_reconnect: float = 0.0
    _root: bytes | None = None
    _busy: bool = False
    _again: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)
    client: mqtt.Client | None = None

    # -- MQTT -----------------------------------------------------------------------------

    def topic(self, channel: Channel) -> str:
        return device_topic(self.device_id, channel)

    def build_client(self) -> mqtt.Client:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.device_id,
                        protocol=MQTTProtocolVersion.MQTTv5)  # fmt: skip
        offline = Status(device_id=self.device_id, online=False)
        c.will_set(self.topic(Channel.STATUS), offline.to_bytes(), qos=QOS, retain=True)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        self.fleet.hub.attach(c)
        self.client = c
        return c

    def connect(self) -> None:
        assert self.client is not None
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        cfg = self.fleet.config
        self.client.connect(cfg.mqtt_host, cfg.mqtt_port, KEEPALIVE_S, clean_start=False,
                            properties=props)  # fmt: skip

    def _on_connect(self, c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            log.warning("%s: broker refused: %s", self.device_id, reason)
            return
        c.subscribe([(self.topic(Channel.DESIRED), QOS), (self.topic(Channel.COMMANDS), QOS)])
        online = Status(device_id=self.device_id, online=True)
        self._publish(Channel.STATUS, online.to_bytes(), retain=True)
        self.publish_state()
        self.connected = True
        self.fleet.connected.release()
        self.request_refresh()  # as the agent: look at the director after (re)connecting

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self.connected = False
        if reason.is_failure and not self.fleet.stopping:
            log.warning("%s: lost the broker (%s)", self.device_id, reason)

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if not msg.payload:
            return
        try:
            channel = parse_device_topic(msg.topic).channel
            if channel is Channel.DESIRED:
                decode(DesiredHint, bytes(msg.payload))
            elif decode(Command, bytes(msg.payload)).command in ("settings", "card"):
                return  # announcements of what it never fetches: no director refresh
        except ProtocolError as e:  # a malformed hint is reported and dropped, as the agent does
            self.fleet.counters.rejected += 1
            event = RejectedEvent(device_id=self.device_id, what=f"message on {msg.topic}",
                                  reason=e.reason[:200])  # fmt: skip
            self._publish(Channel.EVENTS, event.to_bytes())
            return
        self.request_refresh()

    def _publish(self, channel: Channel, payload: bytes, *, retain: bool = False) -> None:
        if self.client is not None:
            self.client.publish(self.topic(channel), payload, qos=QOS, retain=retain)
            self.fleet.counters.published += 1

    def state(self) -> DeviceState:
        return DeviceState(
            device_id=self.device_id, model=self.model, version=self.version,
            target=self.target, sha256=self.sha256, phase=self.phase, error=self.error,
            labels=self.labels, fingerprint=self.fleet.fingerprint, agent_version=__version__,
        )  # fmt: skip

    def publish_state(self) -> None:
        self._publish(Channel.STATE, self.state().to_bytes(), retain=True)

    def transition(self, phase: Phase, target: VerifiedTarget, reason: str | None = None) -> None:
        self.phase = phase
        self.error = reason if phase in (Phase.FAILED, Phase.REVERTED) else None
        event = PhaseEvent(device_id=self.device_id, phase=phase, model=target.model,
                           version=target.version, reason=reason)  # fmt: skip
        self._publish(Channel.EVENTS, event.to_bytes())
        self.publish_state()

    def telemetry(self, now: float) -> None:
        """One window: fixed latency, a confidence spread that depends on the version."""
        end = utcnow()
        start = self.window_start or end - timedelta(seconds=self.fleet.config.window_s)
        self.window_start = end
        frames = max(1, int(self.fleet.config.fps * self.fleet.config.window_s))
        seed = sum(map(ord, self.version or "")) % 7
        conf = [min(0.99, 0.6 + 0.05 * ((i + seed) % 7)) for i in range(frames)]
        w = TelemetryWindow(
            device_id=self.device_id, model=self.model, version=self.version,
            window_start=start, window_end=end, frames=frames,
            latency_edges_ms=list(LATENCY_EDGES_MS),
            latency_counts=bin_counts([8.0] * frames, LATENCY_EDGES_MS),
            confidence_edges=list(CONFIDENCE_EDGES),
            confidence_counts=bin_counts(conf, CONFIDENCE_EDGES),
            detections=frames, low_confidence=sum(c < 0.5 for c in conf),
        )  # fmt: skip
        self._publish(Channel.TELEMETRY, w.to_bytes())

    # -- refresh and install (worker threads) ---------------------------------------------

    def request_refresh(self) -> None:
        """Coalesce: one refresh at a time per device, one more if asked meanwhile."""
        with self._lock:
            if self._busy:
                self._again = True
                return
            self._busy = True
        self.fleet.pool.submit(self._refresh_loop)

    def _refresh_loop(self) -> None:
        while True:
            self._refresh_once()
            with self._lock:
                if not self._again or self.fleet.stopping:
                    self._busy = False
                    return
                self._again = False

    def _refresh_once(self) -> None:
        fleet = self.fleet
        fleet.counters.refreshes += 1
        self.next_poll = time.monotonic() + fleet.config.poll_s * random.uniform(0.9, 1.1)
        try:
            target = self._verified_target()
            if target is not None and target.sha256 != self.sha256:
                self.install(target)
        except (exceptions.DownloadError, TransportError) as e:
            self._failed(f"controller unreachable: {e}", report=False)
        except (exceptions.RepositoryError, TrustError) as e:
            self._failed(f"refused: {e}", report=True)
        except Exception as e:  # the device outlives any bug; counted and retried
            log.exception("%s: refresh failed", self.device_id)
            self._failed(f"{type(e).__name__}: {e}", report=False)

    def _failed(self, reason: str, *, report: bool) -> None:
        fleet = self.fleet
        fleet.counters.refresh_errors += 1
        fleet.counters.last_error = f"{self.device_id}: {reason.splitlines()[0][:300]}"
        self.next_poll = time.monotonic() + RETRY_S * random.uniform(1.0, 2.0)
        if report:
            self.error = reason.splitlines()[0][:300]
            event = RejectedEvent(device_id=self.device_id, what="director metadata",
                                  reason=self.error)  # fmt: skip
            self._publish(Channel.EVENTS, event.to_bytes())
            self.publish_state()

    def _verified_target(self) -> VerifiedTarget | None:
        """The device's own director, verified by ngclient, judged against the image repo."""
        fleet = self.fleet
        url = f"{fleet.config.controller_url}/tuf/director/{self.device_id}/metadata/"
        if self._root is None:
            self._root = _first_use_root(fleet.fetcher, f"{url}1.root.json")
        folder = fleet.config.data_dir / self.device_id / "director"
        folder.mkdir(parents=True, exist_ok=True)
        director = Updater(str(folder), url, fetcher=fleet.fetcher, bootstrap=self._root)
        director.refresh()
        # verified and cached by the refresh just now (ngclient's public API has no getter)
        signed: Metadata[Any] = Metadata.from_file(str(folder / "targets.json"))
        listed: dict[str, TargetFile] = signed.signed.targets
        accepted = []
        for target in listed.values():
            decision = decide(target, fleet.image.targetinfo(target.path), self.releases,
                              fleet.fingerprint, __version__)  # fmt: skip
            if decision.target is None:
                raise TrustError(decision.reason)
            accepted.append(decision.target)
        return accepted[0] if accepted else None

    def install(self, target: VerifiedTarget) -> None:
        delay = self.fleet.config.phase_delay_s
        for phase in INSTALL_PHASES:
            self.transition(phase, target)
            if phase is Phase.DOWNLOADING:
                self.fleet.image.artifact(target)  # verified: length and sha256
            if delay:
                self.fleet.stop_event.wait(delay)
        self.model, self.version = target.model, target.version
        self.target, self.sha256 = target.target_path, target.sha256
        self.releases[target.model] = max(self.releases.get(target.model, 0), target.release)
        self.transition(Phase.COMMITTED, target)
        self.fleet.counters.installs += 1


# --- a fleet in one process ------------------------------------------------------------


class ProtoFleet:
    def __init__(self, config: ProtoConfig, ids: list[str], labels: list[dict[str, str]]) -> None:
        self.config = config
        self.counters = Counters()
        self.stopping = False
        self.stop_event = threading.Event()
        self.connected = threading.Semaphore(0)
        self.fetcher = PooledFetcher(config.workers + 2, token=config.token)
        self.image = SharedImage(config.controller_url, config.data_dir / ".shared", self.fetcher)
        self.hub = MqttHub()
        self.pool = ThreadPoolExecutor(config.workers, thread_name_prefix="simproto")
        self.fingerprint = Fingerprint(arch=platform.machine() or "x86_64", platform="cpu")
        self.devices = [ProtoDevice(d, lab, self) for d, lab in zip(ids, labels, strict=True)]
        self._ticker = threading.Thread(target=self._tick, name="simproto-tick", daemon=True)

    def start(self, connect_timeout_s: float = 120.0) -> None:
        self.hub.start()
        now = time.monotonic()
        for dev in self.devices:
            dev.build_client()
            # Spread the first windows over one window so telemetry does not come in bursts.
            dev.next_window = now + random.uniform(0, self.config.window_s or 1)
            try:
                dev.connect()
            except OSError as e:
                raise TransportError(f"cannot connect {dev.device_id} to the broker: {e}") from e
        deadline = time.monotonic() + connect_timeout_s
        for dev in self.devices:
            if not self.connected.acquire(timeout=max(0.0, deadline - time.monotonic())):
                raise TransportError(f"{dev.device_id}: no CONNACK in {connect_timeout_s:g} s")
        self._ticker.start()

    def _tick(self) -> None:
        """Director polls and telemetry windows, on each device's own timer."""
        while not self.stop_event.wait(0.5):
            now = time.monotonic()
            for dev in self.devices:
                if not dev.connected:
                    if dev.client is not None and not self.stopping:
                        self.hub.call_soon(_reconnector(dev))
                    continue
                if now >= dev.next_poll:
                    dev.request_refresh()
                if self.config.window_s and now >= dev.next_window:
                    dev.next_window = now + self.config.window_s
                    dev.telemetry(now)

    def stop(self) -> None:
        self.stopping = True
        self.stop_event.set()
        self.pool.shutdown(wait=True, cancel_futures=True)
        for dev in self.devices:
            if dev.connected and dev.client is not None:
                offline = Status(device_id=dev.device_id, online=False)
                dev._publish(Channel.STATUS, offline.to_bytes(), retain=True)
                dev.client.disconnect()
        deadline = time.monotonic() + 10
        while any(d.connected for d in self.devices) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.hub.stop()
        self.fetcher.close()

    def summary(self) -> dict[str, Any]:
        c = self.counters
        versions: dict[str, int] = {}
        for dev in self.devices:
            key = f"{dev.model}:{dev.version}:{dev.phase.value}"
            versions[key] = versions.get(key, 0) + 1
        return {
            "devices": len(self.devices), "installs": c.installs, "refreshes": c.refreshes,
            "refresh_errors": c.refresh_errors, "last_error": c.last_error,
            "rejected_hints": c.rejected, "published": c.published,
            "http_requests": self.fetcher.requests, "http_failures": self.fetcher.failures,
            "artifact_downloads": self.image.downloads, "running": versions,
        }  # fmt: skip


_RECONNECT_EVERY_S = 2.0


def _reconnector(dev: ProtoDevice) -> Callable[[], None]:
    def attempt() -> None:
        now = time.monotonic()
        if dev.connected or now - dev.last_reconnect < _RECONNECT_EVERY_S or dev.client is None:
            return
        dev.last_reconnect = now
        with contextlib.suppress(OSError, ValueError):
            dev.client.reconnect()

    return attempt


def parse_mqtt_url(url: str) -> tuple[str, int]:
    u = urlparse(url)
    if u.scheme != "mqtt" or not u.hostname:
        raise ConfigError(f"bad --mqtt {url!r}: the protocol-level sim speaks mqtt://HOST:PORT")
    return u.hostname, u.port or 1883


def device_ids(prefix: str, first: int, count: int) -> list[str]:
    return [f"{prefix}-{i:05d}" for i in range(first, first + count)]


def deal_labels(labels: dict[str, list[str]], first: int, count: int) -> list[dict[str, str]]:
    """Label values dealt round-robin by device index, the same in every process."""
    return [
        {k: values[i % len(values)] for k, values in labels.items()}
        for i in range(first, first + count)
    ]
