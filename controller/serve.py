"""``edgefleet controller serve``: build everything in one place and run it.

REST and TUF files over uvicorn, the MQTT link on paho's thread, a small thread that
re-signs the online TUF roles before they expire, and the rollout scheduler's thread.
SIGINT / SIGTERM stop uvicorn: open responses get ``shutdown_grace`` seconds, then the
scheduler, the link and the refresher are stopped; whatever is still stuck then (a client
that stopped reading, a database that does not answer), :class:`ShutdownDeadline` ends the
process ``shutdown_deadline`` seconds after the signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any

from edgefleet.controller.artifact_store import LocalStore, S3Store, open_backend
from edgefleet.controller.artifacts import ArtifactStore
from edgefleet.controller.db import make_engine
from edgefleet.controller.enrollment import RevokedDevices
from edgefleet.controller.ingest_pressure import PressureWatch
from edgefleet.controller.ingest_queue import IngestPipeline
from edgefleet.controller.mqtt_link import MqttLink
from edgefleet.controller.pki import CrlRenewer, DevicePki
from edgefleet.controller.retention import RetentionConfig
from edgefleet.controller.rollouts.context import Deps
from edgefleet.controller.rollouts.scheduler import Scheduler
from edgefleet.controller.services import Services
from edgefleet.controller.settings import Settings
from edgefleet.controller.trust import Signing, TufSigning
from edgefleet.shared.errors import ConfigError, TransportError
from edgefleet.shared.protocol import utcnow
from sqlalchemy.engine import Engine

log = logging.getLogger("edgefleet.controller")
GC_YOUNG_THRESHOLD = 20_000  # allocations between young-generation collections (default 700)


class RoleRefresher:
    """Calls ``signing.refresh_online_roles`` now and every ``interval`` seconds."""

    def __init__(
        self, signing: Signing, interval: float, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self.signing = signing
        self.interval = interval  # seconds
        self.clock = clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tuf-refresh", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.signing.refresh_online_roles(self.clock())
            except Exception:  # keep refreshing; a failed round is retried next interval
                log.exception("refreshing the online TUF roles failed")
            self._stop.wait(self.interval)


def _open_signing(settings: Settings, engine: Engine) -> TufSigning:
    if settings.tuf_store != "database":
        return TufSigning.open(settings.data_dir)
    # One connection at a time holds the signing lock per process (its thread lock comes
    # first): a pool of its own, so it never waits for one the request threads hold.
    lock_engine = make_engine(settings.db_url, pool_size=1)
    return TufSigning.open(settings.data_dir, engine, lock_engine)


def build_services(settings: Settings) -> tuple[Services, MqttLink]:
    """Open the data folder: database, artifact store, TUF repositories, MQTT link."""
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create the data folder {settings.data_dir}: {e}") from e
    backend = open_backend(settings.artifact_store, settings.artifacts_dir)
    if isinstance(backend, S3Store):
        backend.check()
    engine = make_engine(settings.db_url, settings.db_pool_size)
    root = backend.root if isinstance(backend, LocalStore) else settings.artifacts_dir
    store = ArtifactStore(root, settings.max_upload_bytes, backend)
    signing = _open_signing(settings, engine)
    link = MqttLink(
        settings.broker,
        settings.client_id,
        keepalive=settings.mqtt_keepalive,
        session_expiry=settings.mqtt_session_expiry,
        tls_files=settings.mqtt_tls_files,  # mqtts://: DATA/pki's controller identity
    )
    services = Services(settings, engine, store, signing, link)
    link.stats = services.stats
    revoked = RevokedDevices(engine)
    revoked.load()
    services.revoked = revoked  # a revoked device's messages are dropped at once
    link.revoked = revoked  # ... and its session kicked again while the CRL reloads
    retention = RetentionConfig(max_age=timedelta(days=settings.telemetry_max_age_days))
    link.pipeline = IngestPipeline.build(
        engine, signing, link, services.stats, revoked=revoked, retention=retention
    )
    link.sink = link.pipeline.queue.put
    queue = link.pipeline.queue
    bound = min(queue.config.capacity, link.receive_maximum)  # what "behind" saturates
    link.pipeline.pressure = PressureWatch(
        lambda: queue.outstanding, bound, link.send_pressure, services.stats
    )
    return services, link


def build_scheduler(services: Services) -> Scheduler:
    """The rollout scheduler over the same database, signing and link as the API."""
    from edgefleet.controller.cards import CardStore

    cards = CardStore(services.settings.data_dir / "cards")  # drift gates' baseline
    deps = Deps(services.signing, services.link, services.store.local_copy, cards)
    return Scheduler(services.engine, deps)


def build_alert_watcher(services: Services) -> Any:
    """Drift alerts (controller/alerts): rules and webhooks from DATA/alerts.yaml."""
    from edgefleet.controller.alerts.config import load_alert_config
    from edgefleet.controller.alerts.push import DriftPush
    from edgefleet.controller.alerts.watch import AlertWatcher
    from edgefleet.controller.cards import CardStore

    data = services.settings.data_dir
    push = DriftPush(services.engine, services.link)  # the alert's devices sample the scene
    return AlertWatcher(services.engine, CardStore(data / "cards"), load_alert_config(data),
                        push=push)  # fmt: skip


def bind(host: str, port: int) -> socket.socket:
    """Bind the listening socket ourselves so "port in use" is one clear line."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as e:
        sock.close()
        raise TransportError(f"cannot listen on {host}:{port}: {e.strerror or e}") from e
    sock.set_inheritable(True)
    return sock


class ShutdownDeadline:
    """Once armed (the first SIGTERM / SIGINT), ends the process after ``seconds`` even if a
    thread is stuck; a clean shutdown returns first and never sees it fire."""

    def __init__(self, seconds: float, exit_now: Callable[[int], Any] = os._exit) -> None:
        self.seconds = seconds
        self._exit_now = exit_now
        self._timer: threading.Timer | None = None

    def arm(self) -> None:
        if self._timer is None:
            self._timer = threading.Timer(self.seconds, self._fire)
            self._timer.daemon = True
            self._timer.start()

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def _fire(self) -> None:
        log.error("shutdown took longer than %.0f s; exiting now", self.seconds)
        logging.shutdown()
        self._exit_now(1)


class _NoCancelledTracebacks(logging.Filter):
    """uvicorn logs each response its graceful-shutdown timeout cancels with a traceback;
    its own "Cancel N running task(s)" line already says all there is to say."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, asyncio.CancelledError)


def _server(app: Any, settings: Settings, deadline: ShutdownDeadline) -> Any:
    """A uvicorn server that stops on SIGINT / SIGTERM without re-raising the signal.

    uvicorn re-raises the signal after its graceful shutdown, which would end the process
    before the MQTT link and the database are closed; we close them, then exit 0. Open
    responses get ``shutdown_grace`` seconds (a slow download is cut), and the request
    threadpool is sized to ``api_threads`` (the database pool is sized to match).
    """
    import anyio.to_thread
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            signals = (signal.SIGINT, signal.SIGTERM)
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in signals}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

        def handle_exit(self, sig: int, frame: Any) -> None:
            deadline.arm()
            super().handle_exit(sig, frame)

        async def serve(self, sockets: list[socket.socket] | None = None) -> None:
            anyio.to_thread.current_default_thread_limiter().total_tokens = settings.api_threads
            await super().serve(sockets)

    grace = max(1, round(settings.shutdown_grace))  # uvicorn takes whole seconds
    config = uvicorn.Config(app, log_level="info", lifespan="off", timeout_graceful_shutdown=grace)
    logging.getLogger("uvicorn.error").addFilter(_NoCancelledTracebacks())
    return Server(config)


def _settle_gc() -> None:
    """Keep what the controller built at start (app, models, SQLAlchemy's caches) out of
    the cyclic collector's full passes, which otherwise walk all of it again and again
    while a telemetry burst allocates; and collect the young generation less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def run(flags: Mapping[str, object]) -> int:
    """The controller with serve's ``flags`` (by name) over its settings, until SIGTERM."""
    from edgefleet.controller.app import create_app

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = Settings.from_flags(flags)
    sock = bind(settings.listen_host, settings.listen_port)
    services, link = build_services(settings)
    refresher = RoleRefresher(services.signing, settings.online_refresh_interval)
    refresher.start()
    crl = CrlRenewer(DevicePki(settings.data_dir / "pki"))  # an expired CRL locks out the fleet
    crl.start()
    link.start()
    scheduler = build_scheduler(services)
    scheduler.start()
    alerts = build_alert_watcher(services)
    alerts.start()
    deadline = ShutdownDeadline(settings.shutdown_deadline)
    server = _server(create_app(services), settings, deadline)
    if not settings.auth:
        log.warning("INSECURE (--insecure-dev): no API tokens; anyone who can reach "
                    "%s:%d acts as admin. Never run a fleet like this.",
                    settings.listen_host, settings.listen_port)  # fmt: skip
    if settings.public_mirror:
        log.warning(
            "--public-mirror: /tuf/image (metadata and every model) is served to "
            "anyone who reaches %s:%d",
            settings.listen_host,
            settings.listen_port,
        )
    log.info("controller listening on http://%s:%d, data in %s", settings.listen_host,
             settings.listen_port, settings.data_dir)  # fmt: skip
    _settle_gc()
    try:
        server.run(sockets=[sock])
    finally:
        deadline.arm()  # the cleanup below is bounded too
        scheduler.stop()
        alerts.stop()
        link.stop()
        refresher.stop()
        crl.stop()
        services.engine.dispose()
        sock.close()
        deadline.disarm()
    return 0
