"""The rollout lease's fencing token on real SQLite and PostgreSQL: a holder that paused
past its lease has its writes refused, and a takeover waits for a commit in flight."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from edgefleet.controller.db import make_engine
from edgefleet.controller.models.audit import AuditEntry
from edgefleet.controller.rollouts import lease
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from tests.controller.test_postgres import pg_url  # noqa: F401 - a fresh database per test

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
TTL_S = 10.0


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    url = (request.getfixturevalue("pg_url") if request.param == "postgres"
           else f"sqlite:///{tmp_path / 'edgefleet.db'}")  # fmt: skip
    engine = make_engine(url)
    yield engine
    engine.dispose()


def _actions(engine: Engine) -> list[str]:
    with Session(engine) as s:
        return [a.action for a in s.exec(select(AuditEntry)).all()]


def test_a_paused_holder_is_refused_after_a_takeover(engine: Engine) -> None:
    old = lease.acquire(engine, "a", T0, TTL_S)
    assert old == 1
    with Session(engine) as paused:
        lease.fence_commits(paused, "a", old)
        paused.add(AuditEntry(actor="a", action="next_stage", target="rollout/1"))
        # "a" stops here (GC, a stopped VM) past its lease; "b" takes it over and acts.
        later = T0 + timedelta(seconds=TTL_S + 1)
        assert lease.acquire(engine, "b", later, TTL_S) == old + 1
        with Session(engine) as b:
            lease.fence_commits(b, "b", old + 1)
            b.add(AuditEntry(actor="b", action="next_stage", target="rollout/1"))
            b.commit()
        with pytest.raises(lease.LeaseLostError, match="no longer held by a"):
            paused.commit()
        paused.rollback()
    assert _actions(engine) == ["next_stage"]  # once, by "b"
    assert lease.acquire(engine, "a", later, TTL_S) is None


def test_the_token_grows_on_every_change_of_holder_and_never_goes_back(engine: Engine) -> None:
    assert lease.acquire(engine, "a", T0, TTL_S) == 1
    assert lease.acquire(engine, "a", T0 + timedelta(seconds=5), TTL_S) == 1  # a renewal
    lease.release(engine, "a")
    assert lease.acquire(engine, "b", T0 + timedelta(seconds=6), TTL_S) == 2  # at once
    lease.release(engine, "b")
    assert lease.acquire(engine, "a", T0 + timedelta(seconds=7), TTL_S) == 3
    with Session(engine) as s, pytest.raises(lease.LeaseLostError):
        lease.fence(s, "a", 1)  # a token from before is refused even to the same holder


def test_a_takeover_waits_for_the_holders_commit(engine: Engine) -> None:
    token = lease.acquire(engine, "a", T0, TTL_S)
    assert token is not None
    took: list[int | None] = []
    with Session(engine) as s:
        lease.fence(s, "a", token)  # the row is locked until this transaction ends
        s.add(AuditEntry(actor="a", action="next_stage", target="rollout/1"))
        s.flush()
        later = T0 + timedelta(seconds=TTL_S + 1)
        taker = threading.Thread(target=lambda: took.append(lease.acquire(engine, "b", later,
                                                                           TTL_S)))  # fmt: skip
        taker.start()
        taker.join(timeout=1.0)
        assert taker.is_alive() and not took  # it waits on the lock: no write beside ours
        s.commit()
    taker.join(timeout=60)
    assert took == [token + 1]
    assert _actions(engine) == ["next_stage"]
