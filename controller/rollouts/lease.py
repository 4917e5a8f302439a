"""A lease in the database: with several controllers on one database, one advances rollouts.

A row per lease name holds the holder, an expiry and an ``epoch``, the fencing token.
Taking or renewing it is one conditional UPDATE (mine already, or expired), so two
processes cannot both win; the first INSERT is guarded by the primary key. Every change
of holder adds one to the epoch, and the row is never deleted (a release only expires
it), so the epoch never goes back.

The token fences a holder that paused (a GC pause, a stopped VM, a slow disk) past its
expiry: :func:`fence` runs as the first statement of every commit the scheduler makes
(:func:`fence_commits`), a conditional UPDATE of the lease row on ``holder = me AND
epoch = token``. It locks the row until the commit, so a takeover waits for the commit
(or the commit sees the takeover and is refused with :class:`LeaseLostError`, its writes
rolled back). Works the same on SQLite (the UPDATE takes the database's write lock) and
PostgreSQL (a row lock).
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import datetime, timedelta, timezone

from edgefleet.controller.models.rollouts import SchedulerLease
from edgefleet.shared.errors import EdgefleetError
from sqlalchemy import event, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

ROLLOUTS = "rollouts"
LEASE_TTL_S = 10.0  # seconds; a holder that stops renewing is replaced after this
ALERTS = "alerts"  # the drift alert loop: one replica judges the windows and alerts
EXPIRED = datetime(1970, 1, 1, tzinfo=timezone.utc)  # a released lease: anyone may take it


def default_holder() -> str:
    """This process, unique among the controllers on one database: host, pid, a nonce."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class LeaseLostError(EdgefleetError):
    """This process no longer holds the lease its work was started under."""


def acquire(
    engine: Engine, holder: str, now: datetime, ttl_s: float, name: str = ROLLOUTS
) -> int | None:
    """Take or renew the lease until ``now + ttl_s``: the fencing token while held, None
    while someone else holds it."""
    until = now + timedelta(seconds=ttl_s)
    row = col(SchedulerLease.name) == name
    with Session(engine) as s:
        renew = update(SchedulerLease).where(row, col(SchedulerLease.holder) == holder)
        take = update(SchedulerLease).where(row, col(SchedulerLease.expires_at) < now)
        for stmt in (
            renew.values(expires_at=until),
            take.values(holder=holder, expires_at=until, epoch=col(SchedulerLease.epoch) + 1),
        ):
            if s.exec(stmt).rowcount == 1:
                epoch = s.get_one(SchedulerLease, name).epoch
                s.commit()
                return epoch
        s.rollback()
        if s.get(SchedulerLease, name) is not None:
            return None
        s.add(SchedulerLease(name=name, holder=holder, expires_at=until, epoch=1))
        try:
            s.commit()
        except IntegrityError:  # another process inserted it first
            s.rollback()
            return None
        return 1


def fence(session: Session, holder: str, token: int, name: str = ROLLOUTS) -> None:
    """Lock the lease row for the rest of ``session``'s transaction if ``holder`` still
    holds it under ``token``; LeaseLostError otherwise."""
    stmt = (
        update(SchedulerLease)
        .where(col(SchedulerLease.name) == name, col(SchedulerLease.holder) == holder,
               col(SchedulerLease.epoch) == token)
        .values(epoch=token)
    )  # fmt: skip
    if session.exec(stmt).rowcount != 1:
        raise LeaseLostError(f"lease {name!r} is no longer held by {holder} (token {token})")


def fence_commits(session: Session, holder: str, token: int, name: str = ROLLOUTS) -> None:
    """Every later commit of ``session`` first runs :func:`fence` in its transaction."""

    def check(s: Session) -> None:
        fence(s, holder, token, name)

    event.listen(session, "before_commit", check)


def release(engine: Engine, holder: str, name: str = ROLLOUTS) -> None:
    """Give the lease up at shutdown so another controller takes over at once (the row
    stays, expired: its epoch must not start again at 1)."""
    with Session(engine) as s:
        s.exec(
            update(SchedulerLease)
            .where(col(SchedulerLease.name) == name, col(SchedulerLease.holder) == holder)
            .values(expires_at=EXPIRED)
        )
        s.commit()


def holder_of(engine: Engine, name: str = ROLLOUTS) -> str | None:
    with Session(engine) as s:
        row = s.get(SchedulerLease, name)
        return row.holder if row else None
