"""A lease in the database: with several controllers on one database, one advances rollouts.

A row per lease name holds the holder and an expiry. Taking or renewing it is one
conditional UPDATE (mine already, or expired), so two processes cannot both win; the
first INSERT is guarded by the primary key. Works the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from edgefleet.controller.models.rollouts import SchedulerLease
from sqlalchemy import or_, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

ROLLOUTS = "rollouts"


def acquire(engine: Engine, holder: str, now: datetime, ttl_s: float, name: str = ROLLOUTS) -> bool:
    """Take or renew the lease until ``now + ttl_s``; False while someone else holds it."""
    until = now + timedelta(seconds=ttl_s)
    with Session(engine) as s:
        stmt = (
            update(SchedulerLease)
            .where(col(SchedulerLease.name) == name)
            .where(or_(col(SchedulerLease.holder) == holder, col(SchedulerLease.expires_at) < now))
            .values(holder=holder, expires_at=until)
        )
        if s.exec(stmt).rowcount == 1:
            s.commit()
            return True
        s.rollback()
        if s.get(SchedulerLease, name) is not None:
            return False
        s.add(SchedulerLease(name=name, holder=holder, expires_at=until))
        try:
            s.commit()
        except IntegrityError:  # another process inserted it first
            s.rollback()
            return False
        return True


def release(engine: Engine, holder: str, name: str = ROLLOUTS) -> None:
    """Give the lease up at shutdown so another controller takes over at once."""
    with Session(engine) as s:
        row = s.get(SchedulerLease, name)
        if row is not None and row.holder == holder:
            s.delete(row)
            s.commit()


def holder_of(engine: Engine, name: str = ROLLOUTS) -> str | None:
    with Session(engine) as s:
        row = s.get(SchedulerLease, name)
        return row.holder if row else None
