"""Between paho's thread and the database: a bounded queue, writer threads, a registrar.

paho's thread only puts each delivery on a queue. Writer threads take up to ``batch_max``
deliveries at a time, store them in one transaction (``Ingest.handle_batch``) and only
then acknowledge them to the broker (MQTT 5 manual ack). With the controller's Receive
Maximum no larger than the queue, the broker never has more than that many messages
unacknowledged with us: the rest wait in the broker's queue for this persistent session,
so a burst becomes a backlog, not a loss (deploy/mosquitto/ sizes that queue).

Order per device is kept: a device's messages always go to the same writer, which
handles them in arrival order. New devices get their director chain signed by the
:class:`Registrar`'s thread, off the write path; their hint is published once it exists.
"""

from __future__ import annotations

import logging
import queue
import threading
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from edgefleet.controller.db import first_line, is_transient
from edgefleet.controller.ingest import Ingest
from edgefleet.controller.ingest_pressure import PressureWatch
from edgefleet.controller.models.devices import Device
from edgefleet.controller.retention import DEFAULT_RETENTION, Retention, RetentionConfig
from edgefleet.controller.rollouts.context import HintSender
from edgefleet.controller.stats import IngestStats
from edgefleet.controller.trust import Signing
from edgefleet.shared.errors import ProtocolError
from edgefleet.shared.topics import parse_device_topic
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

log = logging.getLogger(__name__)
_Item = TypeVar("_Item")

QUEUE_WARN_FRACTION = 0.8  # a warning when the ingest queue is this full
REGISTER_BATCH = 100  # new devices whose director versions are recorded in one transaction


@dataclass(frozen=True)
class Delivery:
    """One message from the broker and how to acknowledge it once it is stored."""

    topic: str
    payload: bytes
    ack: Callable[[], None] = lambda: None


@dataclass(frozen=True)
class QueueConfig:
    capacity: int = 2000  # deliveries queued across writers; >= the link's Receive Maximum
    batch_max: int = 500  # deliveries per transaction
    writers: int = 1  # writer threads (SQLite has one writer anyway; PostgreSQL can use more)


class IngestQueue:
    """Bounded queues and writer threads in front of :meth:`Ingest.handle_batch`."""

    def __init__(
        self,
        ingest: Ingest,
        stats: IngestStats,
        config: QueueConfig = QueueConfig(),
        revoked: Any = None,  # enrollment.RevokedDevices: its messages are dropped at once
    ) -> None:
        self.ingest = ingest
        self.stats = stats
        self.config = config
        self.revoked = revoked
        per_writer = max(1, config.capacity // config.writers)
        self._queues: list[queue.Queue[Delivery | None]] = [
            queue.Queue(per_writer) for _ in range(config.writers)
        ]
        self._threads: list[threading.Thread] = []
        self._writing = [0] * config.writers  # deliveries each writer holds unacked (its own slot)
        self._warned = False
        stats.set_gauge("queue_capacity", config.capacity)

    def start(self) -> None:
        if self._threads:
            return
        for i in range(len(self._queues)):
            t = threading.Thread(target=self._run, args=(i,), name=f"ingest-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 30.0) -> None:  # seconds
        """Store what is queued, then end the writers."""
        for q in self._queues:
            q.put(None)
        for t in self._threads:
            t.join(timeout)
        self._threads = []

    @property
    def depth(self) -> int:
        # The deques' lengths, read without each queue's lock: this runs on every put, and
        # an estimate is all a gauge and a warning need.
        return sum(len(q.queue) for q in self._queues)

    @property
    def outstanding(self) -> int:
        """Deliveries received and not yet acknowledged: queued plus being written (what
        the broker's Receive Maximum counts; ingest_pressure.py watches it)."""
        return self.depth + sum(self._writing)

    def put(self, delivery: Delivery) -> None:
        """On paho's thread: queue ``delivery``; blocks when full (the socket waits)."""
        device_id = _device_of(delivery.topic)
        if device_id is not None and self.revoked is not None and device_id in self.revoked:
            delivery.ack()  # a revoked device's messages are dropped, not redelivered
            return
        self._queues[_writer_of(device_id, len(self._queues))].put(delivery)
        self._watch_depth()

    def _watch_depth(self) -> None:
        """Warn once when the queue fills up (the writers set the depth gauge per batch)."""
        depth = self.depth
        full = depth >= QUEUE_WARN_FRACTION * self.config.capacity
        if full and not self._warned:
            self.stats.set_gauge("queue_depth", depth)
            log.warning(
                "ingest queue %d/%d full: the database is not keeping up, the broker holds "
                "the backlog", depth, self.config.capacity,
            )  # fmt: skip
        self._warned = full

    def _run(self, i: int) -> None:
        while True:
            batch, last = _take(self._queues[i], self.config.batch_max)
            if batch:
                self._writing[i] = len(batch)
                self.ingest.handle_batch([(d.topic, d.payload) for d in batch])
                for d in batch:
                    d.ack()
                self._writing[i] = 0
                self.stats.set_gauge("queue_depth", self.depth)
            if last:
                return


def _take(q: queue.Queue[_Item | None], most: int) -> tuple[list[_Item], bool]:
    """Block for one delivery, then take what is already queued up to ``most``."""
    first = q.get()
    if first is None:
        return [], True
    batch = [first]
    while len(batch) < most:
        try:
            item = q.get_nowait()
        except queue.Empty:
            break
        if item is None:
            return batch, True
        batch.append(item)
    return batch, False


def _device_of(topic: str) -> str | None:
    try:
        return parse_device_topic(topic).device_id
    except ProtocolError:
        return None


def _writer_of(device_id: str | None, writers: int) -> int:
    return zlib.crc32(device_id.encode()) % writers if device_id and writers > 1 else 0


class Registrar:
    """Signs new devices' director chains on its own thread, then publishes their hint.

    The hint is sent only once the chain exists, and only if nothing (a rollout) set the
    device's director version meanwhile: that writer sent its own, newer hint.
    """

    def __init__(self, engine: Engine, signing: Signing, hints: HintSender) -> None:
        self.engine = engine
        self.signing = signing
        self.hints = hints
        self._queue: queue.Queue[str | None] = queue.Queue()  # unbounded: ids are small
        self._pending: set[str] = set()  # queued or being signed
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._idle = threading.Event()
        self._idle.set()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="registrar", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:  # seconds
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            self._thread = None

    def register(self, device_ids: Sequence[str]) -> None:
        """Queue devices without a director chain (each once until it is signed)."""
        with self._lock:
            fresh = [i for i in device_ids if i not in self._pending]
            self._pending.update(fresh)
            if fresh:
                self._idle.clear()
        for device_id in fresh:
            self._queue.put(device_id)

    def wait_idle(self, timeout: float) -> bool:  # seconds
        return self._idle.wait(timeout)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch, stopping = _take(self._queue, REGISTER_BATCH)
            signed = self._sign(batch)
            try:
                self._record(signed)
            except Exception as e:  # the devices' next messages queue them again
                if is_transient(e):  # another replica's
                    log.warning("recording %d director versions: %s; they are queued again "
                                "by their next messages", len(signed), first_line(e))  # fmt: skip
                else:
                    log.exception("recording %d director versions failed", len(signed))
            with self._lock:
                self._pending.difference_update(batch)
                if not self._pending:
                    self._idle.set()

    def _sign(self, batch: list[str]) -> dict[str, int]:
        """The batch's chains in one signing batch (one flush); one by one if that fails,
        so one bad device does not hold up the others."""
        try:
            return self.signing.ensure_devices(batch)
        except Exception:  # noqa: BLE001 - retried device by device just below
            log.warning("signing %d director chains together failed; one by one", len(batch))
        signed: dict[str, int] = {}
        for device_id in batch:
            try:
                signed[device_id] = self.signing.ensure_device(device_id)
            except Exception:  # the device's next message queues it again
                log.exception("signing the director chain of %s failed", device_id)
        return signed

    def _record(self, signed: dict[str, int]) -> None:
        """One transaction for the batch; hints only for rows nothing else set meanwhile.
        Rows are updated in id order, the order the ingest locks them in, so the two
        never deadlock."""
        changed = []
        with Session(self.engine) as s:
            for device_id, version in sorted(signed.items()):
                stmt = (
                    update(Device)
                    .where(
                        col(Device.device_id) == device_id,
                        col(Device.director_version).is_(None),
                    )
                    .values(director_version=version)
                )
                if s.execute(stmt).rowcount:  # type: ignore[attr-defined]
                    changed.append(device_id)
            s.commit()
        for device_id in changed:
            # Retained, so the agent finds it whenever it (re)subscribes.
            self.hints.send_hint(device_id, signed[device_id])
        if changed:
            log.info("%d new device(s) signed and hinted: %s", len(changed), ", ".join(changed[:5]))


@dataclass
class IngestPipeline:
    """The queue, its writers, the registrar and retention, started and stopped together."""

    queue: IngestQueue
    registrar: Registrar
    retention: Retention
    pressure: PressureWatch | None = None  # tells agents to hold telemetry while behind

    @classmethod
    def build(
        cls,
        engine: Engine,
        signing: Signing,
        hints: HintSender,
        stats: IngestStats,
        *,
        revoked: Any = None,
        config: QueueConfig = QueueConfig(),
        retention: RetentionConfig = DEFAULT_RETENTION,
    ) -> IngestPipeline:
        registrar = Registrar(engine, signing, hints)
        ingest = Ingest(engine, signing, hints, stats, registrar=registrar)
        queue = IngestQueue(ingest, stats, config, revoked)
        return cls(queue, registrar, Retention(engine, retention))

    def start(self) -> None:
        self.registrar.start()
        self.queue.start()
        self.retention.start()
        if self.pressure is not None:
            self.pressure.start()

    def stop(self) -> None:
        if self.pressure is not None:
            self.pressure.stop()
        self.queue.stop()
        self.registrar.stop()
        self.retention.stop()
