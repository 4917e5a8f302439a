"""Two controller replicas writing one PostgreSQL database at once (``EDGEFLEET_TEST_PG_URL``,
a fresh database; skipped, with the reason, when unreachable): each replica is an engine
of its own, and a thread per replica runs what its process would.

Every replica receives every device's retained state and status (plain subscriptions), so
their ingests insert and update the same device rows at the same moment; every replica
runs telemetry retention and the drift alert loop over the same windows.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from edgefleet.controller.alerts.config import AlertConfig
from edgefleet.controller.alerts.watch import AlertWatcher
from edgefleet.controller.cards import CardStore
from edgefleet.controller.db import make_engine
from edgefleet.controller.ingest import Ingest
from edgefleet.controller.models.devices import Device
from edgefleet.controller.models.telemetry import TelemetryHourRow, TelemetryWindowRow
from edgefleet.controller.retention import compact
from edgefleet.controller.rollouts import lease
from edgefleet.controller.services import NoLink
from edgefleet.controller.stats import IngestStats
from edgefleet.shared.protocol import DeviceState, Phase, Status, utcnow
from edgefleet.shared.topics import Channel, device_topic
from sqlalchemy.engine import Engine
from sqlmodel import Session, func, select

from tests.controller.test_ingest_burst import NoRegistrar, window
from tests.controller.test_postgres import pg_url  # noqa: F401  (the fixture)

pytestmark = pytest.mark.postgres

DEVICES = [f"cam-{i:02d}" for i in range(12)]
MESSAGES = 600  # per replica
BATCH = 6


@pytest.fixture
def replicas(pg_url: str) -> Iterator[tuple[Engine, Engine]]:  # noqa: F811
    a, b = make_engine(pg_url), make_engine(pg_url)
    try:
        yield a, b
    finally:
        a.dispose()
        b.dispose()


def _at_once(*jobs: Callable[[], object]) -> None:
    """Run ``jobs`` on threads released together; re-raise the first failure."""
    start = threading.Barrier(len(jobs))
    errors: list[BaseException] = []

    def run(job: Callable[[], object]) -> None:
        start.wait()
        try:
            job()
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            errors.append(e)

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    if errors:
        raise errors[0]


def _batches(seed: int) -> list[list[tuple[str, bytes]]]:
    """Small batches of states, statuses and windows of random devices: a batch updates
    some devices' rows and only touches others' ``last_seen``, as a live fleet's do."""
    rng = random.Random(seed)
    messages = []
    for r in range(MESSAGES):
        d = rng.choice(DEVICES)
        state = DeviceState(device_id=d, version=f"v{r}", phase=Phase.IDLE)
        messages.append(rng.choice([
            (str(device_topic(d, Channel.STATE)), state.to_bytes()),
            (str(device_topic(d, Channel.STATUS)), Status(device_id=d, online=True).to_bytes()),
            (str(device_topic(d, Channel.TELEMETRY)), window(d, r).to_bytes()),
        ]))  # fmt: skip
    return [messages[i : i + BATCH] for i in range(0, MESSAGES, BATCH)]


def test_two_replicas_ingest_the_same_new_devices_at_once(
    replicas: tuple[Engine, Engine], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edgefleet.controller.ingest")
    stats = (IngestStats(), IngestStats())
    ingests = [Ingest(e, None, NoLink(), st, registrar=NoRegistrar())  # type: ignore[arg-type]
               for e, st in zip(replicas, stats, strict=True)]  # fmt: skip
    work = (_batches(1), _batches(2))

    def replica(i: int) -> Callable[[], None]:
        return lambda: [ingests[i].handle_batch(b) for b in work[i]]  # type: ignore[func-returns-value]

    _at_once(replica(0), replica(1))

    assert [st.get("failed") for st in stats] == [0, 0]
    fallbacks = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not fallbacks  # no batch failed into the one-by-one path
    with Session(replicas[0]) as s:
        assert s.exec(select(func.count()).select_from(Device)).one() == len(DEVICES)
        windows = s.exec(select(func.count()).select_from(TelemetryWindowRow)).one()
        assert windows == sum(st.get("stored", "telemetry") for st in stats)


def test_two_replicas_compact_the_same_windows_once(replicas: tuple[Engine, Engine]) -> None:
    a, b = replicas
    messages = [(str(device_topic(d, Channel.TELEMETRY)), window(d, i).to_bytes())
                for d in DEVICES for i in range(100)]  # fmt: skip
    Ingest(a, None, NoLink(), IngestStats(), registrar=NoRegistrar()).handle_batch(messages)  # type: ignore[arg-type]
    later = utcnow() + timedelta(hours=1)

    _at_once(lambda: compact(a, later), lambda: compact(b, later))
    _at_once(lambda: compact(a, later), lambda: compact(b, later))  # what one skipped

    with Session(a) as s:
        assert not s.exec(select(TelemetryWindowRow)).all()
        hours = s.exec(select(TelemetryHourRow)).all()
        assert sum(h.windows for h in hours) == 100 * len(DEVICES)
        assert sum(h.frames for h in hours) == 600 * 100 * len(DEVICES)


def test_one_replica_judges_the_alert_windows(
    replicas: tuple[Engine, Engine], tmp_path: Path
) -> None:
    config = AlertConfig(interval_s=0.2)
    watchers = [AlertWatcher(e, CardStore(tmp_path / f"cards-{i}"), config)
                for i, e in enumerate(replicas)]  # fmt: skip
    results: list[bool] = []
    _at_once(*[lambda w=w: results.append(w.lead()) for w in watchers])
    assert sorted(results) == [False, True]
    leader, other = sorted(watchers, key=lambda w: not w.leading)
    assert leader.lead() and not other.lead()  # renewed: still one

    Ingest(replicas[0], None, NoLink(), IngestStats(), registrar=NoRegistrar()).handle_batch(  # type: ignore[arg-type]
        [(str(device_topic("cam-00", Channel.TELEMETRY)), window("cam-00", 0).to_bytes())]
    )
    lease.release(replicas[0], leader.holder, lease.ALERTS)  # the leader stops
    assert other.lead() and other.last_id > 0  # took over, resumed from the database
    assert not leader.lead()
